"""Click-to-segment on the bundled samples: the shipped click network against the model-free method.

Run::

    python benchmarks/bench_click_network.py [--clicks 3] [--device cpu|cuda]

For the sample radiograph's lungs and the sample CT's organs it simulates a user (first click
deep inside the object, then clicks in the largest error; see
:func:`napari_cxseg.editing.interactive.simulate_clicks`) with the ``network`` backend and,
in the same run, with the model-free ``classical`` backend (the reference), and prints Dice
against the bundled reference after each click, the median seconds per click and the ratio of
the two times. The network's weights are loaded before timing (the widget loads them once).
Both samples are of the patient the networks were trained on (see cards/clicks/*.yaml for
figures on patients never used for training).
"""

from __future__ import annotations

import argparse
import statistics
import warnings

import numpy as np

from napari_cxseg.editing.interactive import simulate_clicks
from napari_cxseg.io import read
from napari_cxseg.sample_data_files import sample_paths

CT_OBJECTS = ("liver", "spleen", "right kidney", "left kidney", "heart", "aorta", "right lung", "left lung")


def cases() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(name, image, spacing, reference)`` for every benchmarked object."""
    out = []
    for key, objects in (("chest_xray", ("right lung", "left lung")), ("chest_ct", CT_OBJECTS)):
        img_p, lab_p = sample_paths(key)
        img, lab = read(img_p)[0], read(lab_p)[0]
        ids = {c.name: k for k, c in lab.classes.items()}
        for name in objects:
            out.append((f"{key} {name}", np.asarray(img.array, np.float32), np.asarray(img.geometry.spacing),
                        np.asarray(lab.array) == ids[name]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args(argv)
    import torch

    from napari_cxseg.models.guided import DEFAULT_NETS, get_segmenter

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    dev = "GPU " + torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU, {args.threads} threads"
    print(f"click-to-segment on the bundled samples ({dev}); Dice after click 1..{args.clicks}, median s/click")
    print(f"{'object':28s} {'network':>24s} {'s':>6s}   {'classical (reference)':>24s} {'s':>6s}  time ratio")
    for name, img, sp, ref in cases():
        get_segmenter(DEFAULT_NETS[img.ndim], args.device)  # weights loaded outside the timing
        net = simulate_clicks(img, ref, sp, args.clicks, "network", device=args.device)
        cls = simulate_clicks(img, ref, sp, args.clicks, "classical")
        t_net = statistics.median(t for _, t in net)
        t_cls = statistics.median(t for _, t in cls)

        def dices(r: list[tuple[float, float]]) -> str:
            return " ".join(f"{d:.3f}" for d, _ in r)

        print(f"{name:28s} {dices(net):>24s} {t_net:6.2f}   {dices(cls):>24s} {t_cls:6.2f}  {t_net / t_cls:6.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
