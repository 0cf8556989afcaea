"""Time click-to-segment on CPU: real CT organs and a radiograph-like image.

Run::

    python benchmarks/bench_interactive.py                 # needs scripts/fetch_public_data.py
    python benchmarks/bench_interactive.py --full-volume   # reference on the whole CT volume

For each case it prints the time per click of
:func:`napari_cxseg.editing.interactive.segment_from_prompts` (median of ``--repeats`` runs) and,
measured in the same run, the time of a plain scikit-image ``random_walker`` with the same click
as the object seed and the image border as the background seed, with the ratio and both Dice
scores against the reference mask. The plain random walker runs in a child process stopped
after ``--ref-timeout`` seconds; a stopped run prints ``>`` bounds. On the CT it runs on the
organ's bounding box grown by 30 mm (the whole 512 x 512 x 133 volume with ``--full-volume``,
which needs several GB of memory).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import numpy as np
from scipy import ndimage as ndi

from napari_cxseg.editing.interactive import segment_from_prompts

CT_SPACING = (2.5, 0.703125, 0.703125)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


def deepest(region: np.ndarray, spacing) -> tuple[int, ...]:
    """The point of ``region`` farthest from its border: where a user clicks."""
    box = ndi.find_objects(region.astype(np.uint8))[0]
    dt = ndi.distance_transform_edt(np.pad(region[box], 1), sampling=spacing)
    idx = np.unravel_index(np.argmax(dt), dt.shape)
    return tuple(int(i) - 1 + s.start for i, s in zip(idx, box, strict=True))


def time_click(image, point, spacing, repeats: int) -> tuple[float, np.ndarray]:
    times, mask = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        mask = segment_from_prompts(image, [point], spacing=spacing)
        times.append(time.perf_counter() - t)
    return statistics.median(times), mask


def _plain_random_walker(image, point, spacing, box, queue) -> None:
    """scikit-image's random walker as a user would call it: click = object, border = background."""
    from skimage.segmentation import random_walker

    sub = image if box is None else image[box]
    seeds = np.zeros(sub.shape, np.int32)
    border = np.ones(sub.shape, bool)
    border[tuple(slice(1, -1) for _ in sub.shape)] = False
    seeds[border] = 2
    start = [0] * len(point) if box is None else [b.start for b in box]
    seeds[tuple(p - s for p, s in zip(point, start, strict=True))] = 1
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = random_walker(sub.astype(np.float32), seeds, beta=130, mode="cg_j", spacing=spacing)
    queue.put((time.perf_counter() - t, np.packbits(out == 1)))


def plain_random_walker(image, point, spacing, timeout: float, box=None):
    """``(seconds, mask)`` of the reference, or ``(timeout, None)`` when it was stopped."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # the child shares the image instead of copying it
    queue = ctx.Queue()
    proc = ctx.Process(target=_plain_random_walker, args=(image, point, spacing, box, queue))
    proc.start()
    try:
        elapsed, packed = queue.get(timeout=timeout)
    except Exception:  # queue.Empty: still running
        proc.terminate()
        proc.join()
        return timeout, None
    proc.join()
    sub_shape = image.shape if box is None else image[box].shape
    sub = np.unpackbits(packed, count=int(np.prod(sub_shape))).astype(bool).reshape(sub_shape)
    full = np.zeros(image.shape, bool)
    full[box if box is not None else ...] = sub
    return elapsed, full


def report(
    name: str, t_click: float, d_click: float, t_ref: float, ref, truth, ref_name: str
) -> None:
    if ref is None:
        ref_text = f"{ref_name} > {t_ref:6.0f} s (stopped)       | ratio > {t_ref / t_click:7.0f}x"
    else:
        ref_text = f"{ref_name} {t_ref:8.2f} s  Dice {dice(ref, truth):.3f} | ratio {t_ref / t_click:7.1f}x"
    print(f"{name:<26} click {t_click:6.3f} s  Dice {d_click:.3f} | {ref_text}", flush=True)


def radiograph_phantom(size: int = 2048, spacing: float = 0.2, seed: int = 0):
    """A chest-radiograph-like image: body, two lung fields crossed by ribs, heart, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) * spacing
    c = size * spacing / 2
    body = ((xx - c) / (0.45 * 2 * c)) ** 2 + ((yy - c) / (0.48 * 2 * c)) ** 2 <= 1
    lung_r = ((xx - c * 0.62) / (0.17 * 2 * c)) ** 2 + ((yy - c * 0.95) / (0.3 * 2 * c)) ** 2 <= 1
    lung_l = ((xx - c * 1.38) / (0.16 * 2 * c)) ** 2 + ((yy - c * 0.95) / (0.29 * 2 * c)) ** 2 <= 1
    heart = ((xx - c * 1.12) / (0.14 * 2 * c)) ** 2 + ((yy - c * 1.2) / (0.12 * 2 * c)) ** 2 <= 1
    lung_r &= ~heart
    lung_l &= ~heart
    img = np.full((size, size), 200.0, np.float32)
    img[body] = 900.0
    img[lung_r | lung_l] = 300.0
    img[heart] = 850.0
    ribs = (np.sin(yy / 9.0 + 0.15 * np.sin(xx / 40.0)) > 0.75) & body
    img[ribs] += 80.0  # rib shadows: brighter by ~1/8 of the lung-to-soft-tissue contrast
    img = ndi.gaussian_filter(img, 3) + rng.normal(0, 25, img.shape).astype(np.float32)
    return img, lung_r, (spacing, spacing)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="clicks timed per case (median)")
    ap.add_argument("--radiograph-size", type=int, default=1024, help="pixels per side")
    ap.add_argument("--ref-timeout", type=float, default=300.0, help="seconds for the reference")
    ap.add_argument("--full-volume", action="store_true", help="CT reference on the whole volume")
    ap.add_argument("--skip-ct", action="store_true", help="only the radiograph-like image")
    args = ap.parse_args(argv)

    import os
    import platform

    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} threads")

    size = args.radiograph_size
    image, lung, spacing = radiograph_phantom(size, 0.2 * 2048 / size)
    point = deepest(lung, spacing)
    t_click, mask = time_click(image, point, spacing, args.repeats)
    t_ref, ref = plain_random_walker(image, point, spacing, args.ref_timeout)
    report(
        f"radiograph {size}x{size} lung",
        t_click,
        dice(mask, lung),
        t_ref,
        ref,
        lung,
        "plain random_walker (full image)",
    )

    if args.skip_ct:
        return 0
    from napari_cxseg import public_data

    if not public_data.available():
        print("real CT missing: run `python scripts/fetch_public_data.py` (or pass --skip-ct)")
        return 1
    import nibabel as nib

    ct = np.asarray(nib.load(public_data.ct_nifti()).dataobj, dtype=np.float32).transpose(2, 1, 0)
    seg = np.asarray(nib.load(public_data.ct_mask_nifti()).dataobj).transpose(2, 1, 0)
    for label, organ in ((1, "spleen"), (5, "liver")):
        truth = seg == label
        point = deepest(truth, CT_SPACING)
        t_click, mask = time_click(ct, point, CT_SPACING, args.repeats)
        box, ref_name = None, "plain random_walker (full volume)"
        if not args.full_volume:
            pad = np.ceil(30.0 / np.array(CT_SPACING)).astype(int)
            organ_box = ndi.find_objects(truth.astype(np.uint8))[0]
            box = tuple(
                slice(max(0, s.start - p), min(n, s.stop + p))
                for s, p, n in zip(organ_box, pad, ct.shape, strict=True)
            )
            ref_name = "plain random_walker (organ box + 30 mm)"
        t_ref, ref = plain_random_walker(ct, point, CT_SPACING, args.ref_timeout, box)
        report(
            f"CT {'x'.join(map(str, ct.shape))} {organ}",
            t_click,
            dice(mask, truth),
            t_ref,
            ref,
            truth,
            ref_name,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
