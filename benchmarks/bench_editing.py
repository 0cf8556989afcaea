"""Editing: the correction tools on a 512 x 512 x 133 CT's labels, and seconds per click.

Tools (:mod:`napari_cxseg.editing`), median of ``repeats`` calls on the real LIDC-IDRI-0001 CT
(512 x 512 x 133) with its TotalSegmentator liver and spleen (``scripts/fetch_public_data.py``;
a synthetic volume of the same size otherwise): slice interpolation of the liver drawn on every
5th slice, grow from seeds (watershed on the whole volume; random walker in the seeds' box),
keep-largest / remove-small / split islands, a 5 mm margin.

Clicks: every click-to-segment backend (``available_backends()``) on the bundled sample CT and
radiograph objects of ``bench_click_network.py`` (its cases reused), simulated as a user clicks
(:func:`~napari_cxseg.editing.interactive.simulate_clicks`), after one warm-up session per image
(weights loaded, image normalised once, as the widget does). The figure is the median time of
the clicks after the first; the ``classical`` backend is the reference of the others.
"""

from __future__ import annotations

import statistics
import warnings
from typing import Any

import numpy as np
from _common import Config, Row, time_call

CT_SPACING = (2.5, 0.703125, 0.703125)
LIVER, SPLEEN = 5, 1  # TotalSegmentator ids in the public LIDC-IDRI-0001 mask


# ---------------------------------------------------------------------------- inputs
def volume(cfg: Config) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], str]:
    """``(image, labels, spacing, what)``: held (z, y, x), labels with liver 5 and spleen 1 only."""
    from napari_cxseg import public_data

    if not cfg.tiny and public_data.available():
        import nibabel as nib

        ct = np.asarray(nib.load(public_data.ct_nifti()).dataobj, dtype=np.float32).transpose(2, 1, 0)
        seg = np.asarray(nib.load(public_data.ct_mask_nifti()).dataobj).transpose(2, 1, 0)
        labels = np.where(np.isin(seg, (LIVER, SPLEEN)), seg, 0).astype(np.uint8)
        return np.ascontiguousarray(ct), np.ascontiguousarray(labels), CT_SPACING, "LIDC-IDRI-0001 CT"
    shape = (24, 64, 64) if cfg.tiny else (133, 512, 512)
    z, y, x = np.ogrid[0:shape[0], 0:shape[1], 0:shape[2]]
    liver = ((z - shape[0] / 2) / (0.35 * shape[0])) ** 2 + ((y - 0.55 * shape[1]) / (0.2 * shape[1])) ** 2 \
        + ((x - 0.35 * shape[2]) / (0.18 * shape[2])) ** 2 <= 1
    spleen = ((z - shape[0] / 2) / (0.2 * shape[0])) ** 2 + ((y - 0.6 * shape[1]) / (0.08 * shape[1])) ** 2 \
        + ((x - 0.75 * shape[2]) / (0.06 * shape[2])) ** 2 <= 1
    labels = np.zeros(shape, np.uint8)
    labels[liver] = LIVER
    labels[spleen] = SPLEEN
    rng = np.random.default_rng(0)
    image = np.where(labels > 0, 60.0, -50.0).astype(np.float32) + rng.normal(0, 15, shape).astype(np.float32)
    return image, labels, CT_SPACING, f"synthetic {'x'.join(map(str, shape))}"


def _seeds(labels: np.ndarray, organ: int) -> np.ndarray:
    """Object seeds (the organ shrunk) and background seeds (a shell 10-14 voxels outside it)."""
    from scipy import ndimage as ndi

    obj = labels == organ
    box = ndi.find_objects(obj.astype(np.uint8))[0]
    pad = tuple(slice(max(0, s.start - 16), s.stop + 16) for s in box)
    sub = obj[pad]
    seeds = np.zeros(labels.shape, np.uint8)
    core = ndi.binary_erosion(sub, iterations=3)
    far = ndi.binary_dilation(sub, iterations=4)
    seeds[pad][core] = 1
    seeds[pad][far & ~ndi.binary_dilation(sub, iterations=2)] = 2
    return seeds


# ---------------------------------------------------------------------------- tools
def tools(cfg: Config) -> list[Row]:
    """Seconds of each correction tool on the volume."""
    from napari_cxseg.editing import (
        grow_from_seeds,
        interpolate_slices,
        keep_largest,
        margin,
        remove_small,
        split_islands,
    )

    image, labels, spacing, what = volume(cfg)
    sparse = labels.copy()
    keep = np.zeros(labels.shape[0], bool)
    keep[::5] = True
    sparse[~keep] = 0
    seeds = _seeds(labels, SPLEEN)
    noisy = labels.copy()
    rng = np.random.default_rng(1)
    idx = tuple(rng.integers(0, s, 2000) for s in labels.shape)
    noisy[idx] = LIVER  # 2000 one-voxel islands
    cases = {
        "interpolate liver (drawn every 5th slice)": lambda: interpolate_slices(sparse, LIVER, 0, spacing),
        "grow from seeds, watershed (whole volume)": lambda: grow_from_seeds(image, seeds, spacing, "watershed"),
        "grow from seeds, random walker (seeds' box)": lambda: grow_from_seeds(image, seeds, spacing, roi="seeds"),
        "islands: keep largest (2000 islands)": lambda: keep_largest(noisy, LIVER),
        "islands: remove small < 50 mm3": lambda: remove_small(noisy, 50.0, spacing),
        "islands: split (2000 islands)": lambda: split_islands(noisy, LIVER),
        "margin liver +5 mm": lambda: margin(labels, LIVER, 5.0, spacing),
        "margin liver -5 mm": lambda: margin(labels, LIVER, -5.0, spacing),
    }
    if cfg.tiny:  # no object core on the tiny volume: the random walker has nothing to grow
        cases.pop("grow from seeds, random walker (seeds' box)")
    rows = []
    shape = "x".join(map(str, labels.shape[::-1]))
    for name, fn in cases.items():
        cfg.log(f"[editing] {name}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t, _ = time_call(fn, max(1, cfg.repeats), warmup=0)
        rows.append(Row("editing", f"{name}, {what} ({shape})", "napari_cxseg.editing", t, unit="s"))
    return rows


# ---------------------------------------------------------------------------- clicks
def click_cases(cfg: Config) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """The sample CXR and CT objects of ``bench_click_network.cases`` (a few with --quick)."""
    from bench_click_network import cases

    wanted = {"chest_xray right lung", "chest_xray left lung", "chest_ct liver", "chest_ct spleen",
              "chest_ct right kidney", "chest_ct heart"}
    if cfg.quick or cfg.tiny:
        wanted = {"chest_xray right lung", "chest_ct spleen"}
    return [c for c in cases() if c[0] in wanted]


def clicks(cfg: Config) -> tuple[list[Row], dict[str, Any]]:
    """Median seconds per click after the first, per backend and object."""
    from napari_cxseg.editing.interactive import available_backends, simulate_clicks

    n_clicks = 2 if cfg.tiny else 4
    raw: dict[str, Any] = {}
    warmed: set[tuple[str, int]] = set()
    rows = []
    for name, img, sp, ref in click_cases(cfg):
        if cfg.tiny:  # a corner around the object: seconds, not minutes
            from scipy import ndimage as ndi

            box = tuple(slice(max(0, s.start - 4), s.stop + 4) for s in ndi.find_objects(ref.astype(np.uint8))[0])
            img, ref = np.ascontiguousarray(img[box]), np.ascontiguousarray(ref[box])
        per: dict[str, float] = {}
        for backend in available_backends():
            opts = {"device": cfg.device} if backend != "classical" else {}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if (backend, id(img)) not in warmed:
                        simulate_clicks(img, ref, sp, 1, backend, **opts)
                        warmed.add((backend, id(img)))
                    if backend == "network":  # the warm-up's calls forgotten: click 1 below starts afresh
                        from napari_cxseg.models.guided import DEFAULT_NETS, get_segmenter

                        get_segmenter(DEFAULT_NETS[img.ndim], cfg.device).forget_calls()
                    res = simulate_clicks(img, ref, sp, n_clicks, backend, **opts)
            except Exception as e:  # a backend without weights here (VISTA3D needs a user's bundle)
                raw[f"{name} {backend}"] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                cfg.log(f"[clicks] {name} {backend}: not available ({type(e).__name__})")
                continue
            times = [t for _, t in res]
            later = times[1:] or times
            per[backend] = statistics.median(later)
            raw[f"{name} {backend}"] = {"dice": [d for d, _ in res], "seconds": times}
            cfg.log(f"[clicks] {name} {backend}: {1000 * per[backend]:.0f} ms/click, Dice {res[-1][0]:.3f}")
        ct = img.ndim == 3
        for backend, t in per.items():
            ref_t = per.get("classical") if backend != "classical" else None
            target = "<= 300 ms after the first" if ct else "<= 50 ms"
            met = 1000 * t <= (300.0 if ct else 50.0)
            dices = raw[f"{name} {backend}"]["dice"]
            rows.append(Row("clicks", f"{name} ({'x'.join(map(str, img.shape))}), click 2..{len(dices)}",
                            f"backend {backend}", 1000 * t, "backend classical" if ref_t else "",
                            1000 * ref_t if ref_t else None, "ms", None, target, met,
                            f"Dice vs reference after each click: {' '.join(f'{d:.3f}' for d in dices)}; "
                            f"first click {1000 * raw[f'{name} {backend}']['seconds'][0]:.0f} ms"))
    return rows, raw


def run(cfg: Config) -> tuple[list[Row], dict[str, Any]]:
    """The editing part: tools and clicks."""
    rows = tools(cfg)
    more, raw = clicks(cfg)
    return rows + more, {"clicks": raw}


if __name__ == "__main__":
    import sys

    print("run through benchmarks/run_benchmarks.py", file=sys.stderr)
    sys.exit(2)
