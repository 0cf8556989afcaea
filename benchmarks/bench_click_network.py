"""Click-to-segment: the shipped click networks against the model-free method, Dice and ms per click.

Run::

    python benchmarks/bench_click_network.py [--clicks 3] [--device cpu|cuda] [--threads 2]
    python benchmarks/bench_click_network.py --films ../shared/data/cxr [--n-films 4]

For the sample radiograph's lungs and the sample CT's organs (and, with ``--films``, the lungs,
heart and clavicles of real validation films: the first ``--n-films`` per source of the
patient-level split the shipped models use, :func:`napari_cxseg.training.split_cases` seed 0,
20 %) it simulates a user (first click deep inside the object, then clicks in the largest
error; see :func:`napari_cxseg.editing.interactive.simulate_clicks`) with the ``network``
backend and, in the same run, with the model-free ``classical`` backend (the reference), and
prints Dice after each click, the milliseconds of the first click and the median of the later
ones (a later click on the same object starts from the working grid the previous one ended on,
see :mod:`napari_cxseg.models.click_state`), and the ratio of the later clicks' times. The
network's weights are loaded, and each image normalised once, before timing (the widget does
both once per image; the warm-up call is then forgotten, so the first timed click starts its
AutoZoom afresh). Both samples are of the patient the networks were first trained on (see
cards/clicks/*.yaml).
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from collections.abc import Iterator

import numpy as np

from napari_cxseg.editing.interactive import simulate_clicks
from napari_cxseg.io import read
from napari_cxseg.sample_data_files import sample_paths

CT_OBJECTS = ("liver", "spleen", "right kidney", "left kidney", "heart", "aorta", "right lung", "left lung")
FILM_OBJECTS = {"jsrt_scr": ("right lung", "left lung", "heart", "right clavicle", "left clavicle"),
                "shenzhen": ("right lung", "left lung")}


def cases() -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(name, image, spacing, reference)`` for every benchmarked object of the bundled samples."""
    for key, objects in (("chest_xray", ("right lung", "left lung")), ("chest_ct", CT_OBJECTS)):
        img_p, lab_p = sample_paths(key)
        img, lab = read(img_p)[0], read(lab_p)[0]
        ids = {c.name: k for k, c in lab.classes.items()}
        arr = np.asarray(img.array, np.float32)
        for name in objects:
            yield f"{key} {name}", arr, np.asarray(img.geometry.spacing), np.asarray(lab.array) == ids[name]


def film_cases(folder: str, n_films: int) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """The same for the first ``n_films`` validation films per source of a ``data/cxr``-style folder."""
    from napari_cxseg.training import find_cases, split_cases
    from napari_cxseg.training.targets import build_target

    _, val = split_cases([c for c in find_cases(folder) if c.source in FILM_OBJECTS], 0.2, seed=0)
    for source, objects in FILM_OBJECTS.items():
        for case in [c for c in val if c.source == source][:n_films]:
            image = read(case.image)[0]
            target = build_target({i + 1: n for i, n in enumerate(objects)}, case, image, multi_label=True)
            arr = np.asarray(image.array, np.float32)
            for i, name in enumerate(objects):
                if target[i].any():
                    yield f"{case.key} {name}", arr, np.asarray(image.geometry.spacing), target[i].astype(bool)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--films", default="", help="real films with masks (layout of data/cxr): add their validation films")
    ap.add_argument("--n-films", type=int, default=4, help="validation films per source with --films")
    args = ap.parse_args(argv)
    import torch

    from napari_cxseg.models.guided import DEFAULT_NETS, get_segmenter

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    dev = "GPU " + torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU, {args.threads} threads"
    print(f"click-to-segment ({dev}); Dice after click 1..{args.clicks}, ms of click 1 and median ms of "
          f"clicks 2..{args.clicks} (warm)")
    print(f"{'object':36s} {'network':>20s} {'ms 1':>6s} {'ms 2+':>6s}   {'classical (reference)':>22s} "
          f"{'ms 1':>6s} {'ms 2+':>6s}  time ratio 2+")
    objects = cases() if not args.films else (*cases(), *film_cases(args.films, args.n_films))
    warmed: set[int] = set()
    all_net: list[float] = []
    later_net: list[float] = []
    for name, img, sp, ref in objects:
        seg = get_segmenter(DEFAULT_NETS[img.ndim], args.device)  # weights loaded outside the timing
        if id(img) not in warmed:  # the image normalised once, as the widget does
            simulate_clicks(img, ref, sp, 1, "network", device=args.device)
            warmed.add(id(img))
        seg.forget_calls()  # a new object: its first click starts afresh
        net = simulate_clicks(img, ref, sp, args.clicks, "network", device=args.device)
        cls = simulate_clicks(img, ref, sp, args.clicks, "classical")
        all_net += [1000 * t for _, t in net]
        later_net += [1000 * t for _, t in net[1:]]

        def times(r: list[tuple[float, float]]) -> tuple[float, float]:
            later = [t for _, t in r[1:]] or [r[0][1]]
            return 1000 * r[0][1], 1000 * statistics.median(later)

        def dices(r: list[tuple[float, float]]) -> str:
            return " ".join(f"{d:.3f}" for d, _ in r)

        (n1, n2), (c1, c2) = times(net), times(cls)
        print(f"{name:36s} {dices(net):>20s} {n1:6.0f} {n2:6.0f}   {dices(cls):>22s} {c1:6.0f} {c2:6.0f}  "
              f"{n2 / c2:6.1f}x")
    print(f"network: median {statistics.median(all_net):.0f} ms per click, 90th percentile "
          f"{np.percentile(all_net, 90):.0f} ms over {len(all_net)} clicks; clicks after the first: median "
          f"{statistics.median(later_net or all_net):.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
