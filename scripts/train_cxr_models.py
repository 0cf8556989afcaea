"""Train the shipped chest X-ray models on real films with the package's Trainer, and install them.

The data are never copied into the repository: pass the folder (the layout of
``../shared/data/cxr``: ``jsrt_scr/`` with SCR lungs, heart and clavicles, ``shenzhen/`` with
both lungs in one mask). Validation is a patient-level split of each source
(:func:`napari_cxseg.training.sources.split_cases`, seed 0, 20 %), measured with the product's
Predictor on each film's own grid.

Usage::

    python scripts/train_cxr_models.py train --model cxr-lungs --data ../shared/data/cxr --out runs/cxr-lungs
    python scripts/train_cxr_models.py train --model cxr-lungs --network SAUNet --data ... --out runs/cxr-lungs-saunet
    python scripts/train_cxr_models.py train --model cxr-anatomy-demo --data ../shared/data/cxr --out runs/cxr-anatomy
    python scripts/train_cxr_models.py install --run runs/cxr-lungs --data ../shared/data/cxr [--compare runs/cxr-lungs-saunet]

``train`` writes a MONAI bundle (plus ``train/`` checkpoints, history and curve) into ``--out``
and can resume (``--resume``). ``install`` copies the best weights into
``src/napari_cxseg/weights`` (fp16), re-measures the installed card on the validation films
with the Predictor (per source and per class, sides checked, sanity on rotated / small /
low-contrast / marked films) and rewrites the card with those figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "napari_cxseg"
TERMS = ("Weights: research use only; non-commercial where the training data require it (Shenzhen masks: "
         "CC BY-NC-SA 4.0, Stirenko et al. 2018; Shenzhen images: NLM public research data, cite Jaeger et al. "
         "2014; JSRT / SCR: research and education with citation, Shiraishi et al. 2000, van Ginneken et al. 2006). "
         "napari-cxseg code: Apache-2.0.")
JSRT_TERMS = ("Weights: research use only (JSRT / SCR: research and education with citation, Shiraishi et al. 2000, "
              "van Ginneken et al. 2006). napari-cxseg code: Apache-2.0.")
INTENDED = "Research use only. Not for clinical use."


def counts_of(keys: list[str]) -> dict[str, int]:
    """Films per source in ``source/case`` keys."""
    out: dict[str, int] = {}
    for k in keys:
        out[k.split("/")[0]] = out.get(k.split("/")[0], 0) + 1
    return out

NETWORKS = {
    "UNet": lambda out: {"name": "UNet", "args": {"spatial_dims": 2, "in_channels": 1, "out_channels": out,
                                                  "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2],
                                                  "num_res_units": 2}},
    "SAUNet": lambda out: {"name": "SAUNet", "args": {"spatial_dims": 2, "in_channels": 1, "out_channels": out,
                                                      "features": [16, 32, 64, 128], "block_size": 7,
                                                      "keep_prob": 0.9}},
}

CLASSES = {
    "cxr-lungs": {1: {"name": "right lung", "colour": "#1f77b4"}, 2: {"name": "left lung", "colour": "#ff7f0e"}},
    "cxr-anatomy-demo": {
        1: {"name": "right lung", "colour": "#1f77b4"}, 2: {"name": "left lung", "colour": "#ff7f0e"},
        3: {"name": "heart", "colour": "#d62728"}, 4: {"name": "right clavicle", "colour": "#2ca02c"},
        5: {"name": "left clavicle", "colour": "#9467bd"},
    },
}
TASKS = {
    "cxr-lungs": "Right and left radiographic lung fields on frontal chest radiographs (trained on real films)",
    "cxr-anatomy-demo": "Lung fields, heart and clavicles on frontal chest radiographs (SCR convention, real films)",
}
WEIGHT_FILES = {"cxr-lungs": "cxr_lungs.pt", "cxr-anatomy-demo": "cxr_anatomy_demo.pt"}


def card_dict(model: str, network: str, size: int = 256) -> dict[str, Any]:
    """The card of a model before training (figures are added by ``install``)."""
    sigmoid = model == "cxr-anatomy-demo"
    classes = CLASSES[model]
    out = len(classes) if sigmoid else len(classes) + 1
    return {
        "name": model if network == "UNet" else f"{model}-{network.lower()}",
        "task": TASKS[model],
        "modality": ["CR", "DX", "XR"],
        "spatial_dims": 2,
        "input": {"channels": ["radiograph"], "orientation": None, "spacing": None, "size": [size, size], "fit": "pad",
                  "intensity": {"type": "percentiles", "lower": 0.5, "upper": 99.5, "b_min": 0.0, "b_max": 1.0,
                                "clip": True}},
        "network": NETWORKS[network](out),
        "inference": {"roi_size": [size, size], "overlap": 0.0, "sw_batch_size": 1, "mode": "constant"},
        "output": ({"activation": "sigmoid", "threshold": 0.5, "largest_component": True, "overlap": "smallest"}
                   if sigmoid else {"activation": "softmax", "threshold": 0.5, "largest_component": True}),
        "classes": classes,
        "weights": {"source": "package", "file": WEIGHT_FILES[model]},
        "license": TERMS,
        "training_data": "",
        "metrics": {},
        "intended_use": INTENDED,
    }


def cases_for(model: str, data: Path) -> tuple[list, list]:
    """Training and validation cases (patient-level split per source)."""
    from napari_cxseg.training import find_cases, split_cases

    cases = find_cases(data)
    if model == "cxr-anatomy-demo":
        cases = [c for c in cases if {"lungs", "heart", "clavicles"} <= set(c.masks)]
    return split_cases(cases, val_fraction=0.2, seed=0)


def cmd_train(args: argparse.Namespace) -> None:
    from napari_cxseg.models.cards import card_from_dict
    from napari_cxseg.training import TrainConfig, Trainer
    from napari_cxseg.training.bundle_export import bundle_readme, export_bundle

    card = card_from_dict(card_dict(args.model, args.network, args.size))
    train, val = cases_for(args.model, Path(args.data))
    print(f"[train] {card.name}: {len(train)} training / {len(val)} validation films", flush=True)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, val_every=args.val_every,
                      seed=args.seed, device=args.device, num_workers=args.workers, threads=args.threads,
                      max_minutes=args.minutes)
    t0 = time.time()
    trainer = Trainer(card, train, val, args.out, cfg, init=args.init)

    def report(r: dict[str, Any]) -> None:
        d = r.get("dice_per_class")
        extra = " ".join(f"{k} {v:.4f}" for k, v in d.items()) if d else ""
        dice = f"dice {r['dice']:.4f} " if "dice" in r else ""
        print(f"  epoch {r['epoch']} loss {r['loss']:.4f} lr {r['lr']:.2e} {r['seconds']:.0f} s {dice}{extra}",
              flush=True)

    res = trainer.fit(resume=args.resume, on_epoch=report)
    minutes = (time.time() - t0) / 60
    print(f"[train] best mean Dice {res.best_dice:.4f} at epoch {res.best_epoch} ({res.stopped}), {minutes:.1f} min")
    for src, d in res.per_source.items():
        print(f"  {src}: " + " ".join(f"{k} {v:.4f}" for k, v in d.items()))
    metrics = {"val_mean_dice": round(res.best_dice, 4)}
    export_bundle(card, res.weights, args.out, metrics=metrics,
                  readme=bundle_readme(card, train, val, res, cfg), data_source=str(args.data))
    summary = {"card": card.name, "network": args.network, "size": args.size, "best_dice": res.best_dice, "best_epoch": res.best_epoch,
               "per_class": res.per_class, "per_source": res.per_source, "stopped": res.stopped,
               "minutes": minutes, "train": [c.key for c in train], "val": [c.key for c in val],
               "config": cfg.to_dict(), "history": res.history}
    (Path(args.out) / "result.json").write_text(json.dumps(summary, indent=1))


# ---------------------------------------------------------------------------- measuring
def lung_sides_ok(labels: np.ndarray) -> bool:
    """Right lung (1) on the image's left of the left lung (2), both present."""
    if not (labels == 1).any() or not (labels == 2).any():
        return False
    cols = np.arange(labels.shape[1])
    c1 = (cols * (labels == 1).sum(0)).sum() / (labels == 1).sum()
    c2 = (cols * (labels == 2).sum(0)).sum() / (labels == 2).sum()
    return bool(c1 < c2)


def sane(labels: np.ndarray) -> dict[str, bool]:
    """Lungs present, one (8-connected) part each, sides right, apices below the film's top edge and
    the lungs centred in the film's height (films are often cropped at the bases, so the bases may
    touch the lower edge)."""
    from scipy import ndimage

    ok = {"present": bool((labels == 1).any() and (labels == 2).any()), "sides": lung_sides_ok(labels)}
    eight = np.ones((3, 3), bool)
    ok["two_components"] = (all(ndimage.label(labels == k, structure=eight)[1] == 1 for k in (1, 2))
                            if ok["present"] else False)
    rows = np.nonzero((labels == 1) | (labels == 2))[0]
    h = labels.shape[0]
    ok["inside_thorax"] = bool(rows.size and rows.min() > 0 and 0.2 * h < rows.mean() < 0.8 * h)
    return ok


def variants(image: Any) -> dict[str, Any]:
    """Harder versions of a film: rotated 12 deg, small (256 px), low-contrast 'portable' with markers."""
    from copy import deepcopy

    from PIL import Image as PILImage
    from PIL import ImageDraw

    a = np.asarray(image.array, np.float32)
    out = {}
    lo, hi = float(a.min()), float(a.max())
    for name in ("rotated", "small", "portable"):
        im = deepcopy(image)
        if name == "rotated":
            p = PILImage.fromarray(a).rotate(12, resample=PILImage.BILINEAR, fillcolor=lo)
            im.array = np.asarray(p, np.float32)
        elif name == "small":
            p = PILImage.fromarray(a).resize((256, int(round(256 * a.shape[0] / a.shape[1]))), PILImage.BILINEAR)
            im.array = np.asarray(p, np.float32)
            im.geometry = deepcopy(image.geometry)
            from napari_cxseg.geometry import Geometry

            im.geometry = Geometry(affine=np.diag([a.shape[0] / im.array.shape[0], a.shape[1] / im.array.shape[1], 1.0]),
                                   frame="image")
        else:
            g = lo + (hi - lo) * (0.25 + 0.5 * ((a - lo) / max(hi - lo, 1e-6)) ** 0.7)
            p = PILImage.fromarray(g)
            d = ImageDraw.Draw(p)
            d.text((int(0.85 * a.shape[1]), int(0.05 * a.shape[0])), "PORTABLE AP", fill=hi)
            d.rectangle([int(0.05 * a.shape[1]), int(0.05 * a.shape[0]), int(0.1 * a.shape[1]), int(0.1 * a.shape[0])],
                        fill=hi)
            im.array = np.asarray(p, np.float32)
        out[name] = im
    return out


def measure(card: Any, cases: list, png_dir: Path | None = None) -> dict[str, Any]:
    """Dice per source and class, side swaps and sanity on variants, with the installed card."""
    from napari_cxseg.inference import Predictor
    from napari_cxseg.io import read
    from napari_cxseg.training.evaluation import dice_per_class
    from napari_cxseg.training.targets import build_target

    pred = Predictor(card, device="cpu")
    names = {k: c.name for k, c in card.classes.items()}
    multi = card.output.activation == "sigmoid"
    rows: dict[str, list[dict[str, float]]] = {}
    swapped, insane = [], []
    for i, case in enumerate(cases):
        image = read(case.image)[0]
        target = build_target(names, case, image, multi)
        if multi:
            from napari_cxseg.inference import combine_masks

            ref = combine_masks(target.astype(bool), card.channel_label_map(target.shape[0]), card.output.overlap)
        else:
            ref = target[0]
        lab = pred.predict(image).array
        d = dice_per_class(lab, ref, names)
        rows.setdefault(case.source, []).append(d)
        if "right lung" in d:
            lungs = np.isin(lab, [1, 2])
            d["lungs"] = float(2 * (lungs & np.isin(ref, [1, 2])).sum() / max(1, lungs.sum() + np.isin(ref, [1, 2]).sum()))
            if not lung_sides_ok(lab):
                swapped.append(case.key)
        if i % 8 == 0:  # sanity on harder variants of every 8th film
            for vname, v in variants(image).items():
                s = sane(pred.predict(v).array)
                if not all(s.values()):
                    insane.append(f"{case.key}:{vname}:{','.join(k for k, ok in s.items() if not ok)}")
        if png_dir is not None and i < 6:
            _overlay(image.array, lab, card, png_dir / f"{card.name}_{case.source}_{case.case_id}.png",
                     " ".join(f"{k} {v:.3f}" for k, v in d.items()))
    per_source = {s: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for s, rs in rows.items()}
    return {"per_source": per_source, "n": {s: len(rs) for s, rs in rows.items()}, "side_swaps": swapped,
            "variant_failures": insane,
            "min_lung_dice": {s: float(min(r.get("lungs", 1.0) for r in rs)) for s, rs in rows.items()}}


def _overlay(gray: np.ndarray, labels: np.ndarray, card: Any, path: Path, title: str) -> None:
    from PIL import Image as PILImage
    from PIL import ImageDraw

    g = np.asarray(gray, np.float32)
    lo, hi = np.percentile(g, [0.5, 99.5])
    g = np.clip((g - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    rgb = np.stack([g] * 3, -1)
    for k, c in card.classes.items():
        m = labels == k
        col = np.array([int(c.colour[i:i + 2], 16) for i in (1, 3, 5)], float)
        rgb[m] = 0.55 * rgb[m] + 0.45 * col
    im = PILImage.fromarray(rgb.astype(np.uint8))
    ImageDraw.Draw(im).text((4, 4), title, fill=(255, 255, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def cmd_install(args: argparse.Namespace) -> None:
    import torch
    import yaml

    from napari_cxseg.models.cards import card_from_dict, load_card
    from napari_cxseg.models.weights import load_state_dict

    run = Path(args.run)
    result = json.loads((run / "result.json").read_text())
    model = "cxr-anatomy-demo" if "anatomy" in result["card"] else "cxr-lungs"
    d = card_dict(model, result["network"], int(result.get("size", 256)))
    wfile = PKG / "weights" / WEIGHT_FILES[model]
    sd = load_state_dict(run / "train" / "best.pt")
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, wfile)
    d["name"] = model
    card = card_from_dict(d)
    _, val = cases_for(model, Path(args.data))
    m = measure(card, val, Path(args.png) if args.png else None)
    multi_label = card.output.activation == "sigmoid"
    print(json.dumps(m, indent=1))
    metrics: dict[str, Any] = {}
    for src, vals in m["per_source"].items():
        for k, v in vals.items():
            metrics[f"dice_{k.replace(' ', '_')}_{src}_val"] = round(v, 4)
    metrics["side_swaps_val"] = len(m["side_swaps"])
    metrics["variant_failures_val"] = len(m["variant_failures"])
    overlap_note = (" Dice of the displayed label map: where structures overlap (clavicles over the lung fields) "
                    "the smaller one is shown, in the prediction and in the reference alike." if multi_label else "")
    metrics["evaluated_on"] = (
        "Validation films of patients never used for training (patient-level split of each source, seed 0, 20 %): "
        + ", ".join(f"{n} {src}" for src, n in m["n"].items())
        + f".{overlap_note} Predictor on each film's own grid (JSRT 1024 px, Shenzhen 512 px). Variants (rotated 12 deg, "
        "256 px, low-contrast with markers) of every 8th film checked for lungs present, one component each, "
        "sides, inside the film. Never measured: MIMIC-CXR / CXLSeg, AP portable films of ill patients."
    )
    if args.compare:
        other = json.loads((Path(args.compare) / "result.json").read_text())
        for src, vals in other["per_source"].items():
            for k, v in vals.items():
                metrics[f"{other['network'].lower()}_dice_{k.replace(' ', '_')}_{src}_val"] = round(v, 4)
    if set(counts_of(result["train"])) == {"jsrt_scr"}:
        d["license"] = JSRT_TERMS
    counts = counts_of(result["train"])
    shenzhen = ("Shenzhen films with both lungs in one mask (Stirenko 2018) split into right and left by anatomy. "
                if "shenzhen" in counts else "")
    d["training_data"] = (
        f"Real frontal radiographs with manual masks: {len(result['train'])} training films "
        f"({', '.join(f'{s} {n}' for s, n in sorted(counts.items()))}); "
        f"JSRT films with SCR lungs / heart / clavicles (van Ginneken 2006). {shenzhen}"
        " Radiographic lung fields (the SCR / CXLSeg "
        "convention, not the whole anatomical lung). Case lists: docs/README.md of the training bundle and "
        "the card notes."
    )
    d["metrics"] = metrics
    d["notes"] = (
        f"Trained with `python scripts/train_cxr_models.py train --model {model} --network {result['network']}` "
        f"({result['config']['epochs']} epochs, batch {result['config']['batch_size']}, AdamW {result['config']['lr']}, "
        f"best epoch {result['best_epoch']}, {result['minutes']:.0f} min on {result['config'].get('threads') or 'all'} CPU "
        f"threads; stopped: {result['stopped']}). Validation films: {', '.join(result['val'])}. "
        "Classes are the patient's sides: on a PA view the right lung is on the image's left."
    )
    header = (f"{TASKS[model]}.\nTrained by scripts/train_cxr_models.py on real films "
              f"({' and '.join(sorted(counts))});\n"
              "figures measured on validation patients never used for training. Not for clinical use.")
    text = "".join(f"# {line}\n" for line in header.splitlines())
    text += yaml.safe_dump(d, sort_keys=False, width=100, allow_unicode=True)
    path = PKG / "cards" / f"{model}.yaml"
    path.write_text(text)
    load_card(path)
    print(f"[install] {path} and {wfile} ({wfile.stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--model", choices=sorted(CLASSES), required=True)
    t.add_argument("--network", choices=sorted(NETWORKS), default="UNet")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=int, default=60)
    t.add_argument("--size", type=int, default=256, help="model input side in pixels")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--val-every", type=int, default=3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--workers", type=int, default=0)
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--minutes", type=float, default=None)
    t.add_argument("--init", default=None, help="start from a card, bundle or weights file")
    t.add_argument("--resume", action="store_true")
    i = sub.add_parser("install")
    i.add_argument("--run", required=True)
    i.add_argument("--data", required=True)
    i.add_argument("--compare", default=None, help="another run (e.g. SA-UNet) whose figures go into the card")
    i.add_argument("--png", default=None, help="write overlays of the first validation films here")
    args = p.parse_args()
    {"train": cmd_train, "install": cmd_install}[args.cmd](args)


if __name__ == "__main__":
    main()
