"""``napari-cxseg train`` and ``napari-cxseg evaluate``: thin faces over :mod:`napari_cxseg.training`.

``train`` finds the labelled cases in ``--data`` (an MSD task, a CXLSeg dataset, images +
masks folders, pairs), splits them by patient, trains a card (made from the data, or the
``--from`` model's to fine-tune it), writes a MONAI bundle into ``--out`` and registers a card
for it so that ``predict`` and the Segment widget offer it. Under ``torchrun`` (several GPUs or
machines; gloo on CPUs) every process trains its share and rank 0 validates and writes. ``evaluate`` compares predictions
with references (files, folders, CSVs or MSD tasks, matched by name) and writes a table, a CSV
and a plot.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from .images import CxsegError

_PRED_TAGS = ("_seg", "-seg", "_pred", "-pred", "_label", "_labels", "_mask", "-mask", "_trans")


def add_parsers(sub: Any) -> None:
    """Add the ``train`` and ``evaluate`` subcommands to the main parser."""
    tr = sub.add_parser("train", help="train (or fine-tune) a model on labelled data; writes a MONAI bundle",
                        description="Train a segmentation network with the package's Trainer and write a MONAI "
                                    "bundle (configs, models/model.pt, docs) into --out; a card for it is "
                                    "registered so that predict and the Segment widget offer it.")
    tr.add_argument("--data", required=True, help="MSD task folder, CXLSeg dataset, images/ + masks/ folder, pairs")
    tr.add_argument("--out", required=True, help="bundle folder to write (checkpoints in <out>/train)")
    tr.add_argument("--network", default="UNet", help="UNet, BasicUNet, AttentionUnet, SegResNet, DynUNet, "
                                                      "SwinUNETR or SAUNet (ignored with --from)")
    tr.add_argument("--from", dest="start", default=None, help="card, card file or bundle to fine-tune")
    tr.add_argument("--name", default=None, help="name of the new model (default: the --out folder's name)")
    tr.add_argument("--epochs", type=int, default=50)
    tr.add_argument("--batch", type=int, default=None, help="samples per step (default 8 in 2D, 2 in 3D)")
    tr.add_argument("--lr", type=float, default=None, help="learning rate (default 2e-3; 3e-4 with --from)")
    tr.add_argument("--patch", type=int, nargs="+", default=None, help="3D patch / 2D input size in voxels")
    tr.add_argument("--val-split", type=float, default=0.2, help="fraction of patients for validation")
    tr.add_argument("--val-every", type=int, default=1)
    tr.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda, cuda:N or mps")
    tr.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--minutes", type=float, default=None, help="stop after this wall time (resume continues)")
    tr.add_argument("--resume", action="store_true", help="continue from <out>/train/last.pt")
    tr.add_argument("--no-register", action="store_true", help="do not add a card to the user's cards")
    tr.add_argument("--progress-json", action="store_true",
                    help="print one JSON line on stdout per event (start with the split, each epoch's loss, "
                         "lr and validation Dice, done with the bundle and card) instead of a progress bar")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="Dice, IoU, HD95 and surface distance of predictions against references",
                        description="Compare label files with references (matched by name; folders, CSVs and MSD "
                                    "tasks as for predict) and write <out>.txt, <out>.csv and <out>.png.")
    ev.add_argument("--pred", required=True, help="prediction file, folder or CSV")
    ev.add_argument("--ref", required=True, help="reference file, folder, CSV or MSD task (its labelsTr)")
    ev.add_argument("--out", default="evaluation", help="output prefix (default ./evaluation)")
    ev.set_defaults(func=cmd_evaluate)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model; see the ``train`` help."""
    from .training import TrainConfig, Trainer, find_cases, split_cases
    from .training.bundle_export import bundle_readme, export_bundle, register_card
    from .training.card_builder import card_for_training

    out = Path(args.out).expanduser()
    cases = find_cases(args.data)
    train, val = split_cases(cases, val_fraction=args.val_split, seed=args.seed)
    name = args.name or out.resolve().name
    card = card_for_training(train, name, network=args.network, patch=args.patch, start=args.start)
    three_d = card.spatial_dims == 3
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch or (2 if three_d else 8),
                      lr=args.lr or (3e-4 if args.start else 2e-3), val_every=args.val_every, seed=args.seed,
                      device=args.device, num_workers=args.workers, max_minutes=args.minutes,
                      patch=tuple(args.patch) if (args.patch and three_d) else None)
    print(f"{name}: {card.network.name} ({card.spatial_dims}D), classes "
          f"{', '.join(c.name for c in card.classes.values())}; {len(train)} training / {len(val)} validation cases",
          file=sys.stderr)
    emit = _emitter(getattr(args, "progress_json", False) and int(os.environ.get("RANK", "0")) == 0)
    trainer = Trainer(card, train, val, out, cfg, init=args.start, progress=emit is None)
    if trainer.skipped:
        print(f"left out (masks lack a class): {', '.join(trainer.skipped)}", file=sys.stderr)
    if emit is not None:
        emit({"event": "start", "name": name, "out": str(out), "epochs": cfg.epochs, "network": card.network.name,
              "spatial_dims": card.spatial_dims, "train": [c.key for c in trainer.train_cases],
              "val": [c.key for c in trainer.val_cases], "skipped": trainer.skipped, "resume": bool(args.resume)})
    res = trainer.fit(resume=args.resume,
                      on_epoch=None if emit is None else lambda rec: emit({"event": "epoch", "epochs": cfg.epochs,
                                                                           **rec}))
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # torchrun: rank 0 exports and registers
    if res.weights is None:
        raise CxsegError(f"training of {name} produced no weights")
    metrics = {"val_mean_dice": round(res.best_dice, 4), **{f"val_dice_{k.replace(' ', '_')}": round(v, 4)
                                                           for k, v in res.per_class.items()}}
    export_bundle(card, res.weights, out, metrics=metrics, readme=bundle_readme(card, train, val, res, cfg),
                  data_source=str(Path(args.data).resolve()))
    print(f"bundle {out} (best validation Dice {res.best_dice:.4f} at epoch {res.best_epoch}, {res.stopped})")
    for src, d in res.per_source.items():
        print(f"  {src}: " + ", ".join(f"{k} {v:.4f}" for k, v in d.items()))
    path = None
    if not args.no_register:
        from dataclasses import replace

        path = register_card(replace(card, metrics=metrics), out, name)
        print(f"card {path} (model '{name}')")
    if emit is not None:
        emit({"event": "done", "name": name, "bundle": str(out), "card": str(path) if path else None,
              "best_dice": res.best_dice, "best_epoch": res.best_epoch, "per_class": res.per_class,
              "stopped": res.stopped, "curve": str(trainer.train_dir / "training_curve.png")})
    return 0


def _emitter(on: bool) -> Any:
    """``--progress-json``: a function printing one JSON object per line on stdout (else None)."""
    if not on:
        return None

    def emit(obj: dict[str, Any]) -> None:
        print(json.dumps(obj), flush=True)

    return emit


def _key(stem: str) -> str:
    s = stem
    for tag in _PRED_TAGS:
        if s.lower().endswith(tag):
            s = s[: -len(tag)]
            break
    return re.sub(r"_0000$", "", s)


def _label_files(src: Path) -> dict[str, Path]:
    """``{case key: label file}`` of a file, a folder, a CSV or an MSD task (its training labels)."""
    from .inputs import LABEL_EXTS, csv_items, stem

    if src.is_file() and src.suffix.lower() == ".csv":
        return {_key(it.stem): it.path for it in csv_items(src)}
    if src.is_file():
        return {_key(stem(src)): src}
    if (src / "dataset.json").is_file():
        meta = json.loads((src / "dataset.json").read_text(encoding="utf-8"))
        out = {}
        for e in meta.get("training") or []:
            if isinstance(e, dict) and "label" in e:
                p = src / str(e["label"])
                if p.exists():
                    out[_key(stem(p))] = p
        return out
    folder = src / "labelsTr" if (src / "labelsTr").is_dir() else src
    return {_key(stem(p)): p for p in sorted(folder.iterdir())
            if p.is_file() and p.name.lower().endswith(LABEL_EXTS) and not p.name.endswith(".labels.json")}


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate predictions against references; see the ``evaluate`` help."""
    from .training.evaluation import evaluate_pairs, write_report

    pred_src, ref_src = Path(args.pred).expanduser(), Path(args.ref).expanduser()
    for p in (pred_src, ref_src):
        if not p.exists():
            raise CxsegError(f"{p} does not exist")
    preds, refs = _label_files(pred_src), _label_files(ref_src)
    if pred_src.is_file() and ref_src.is_file():
        pairs = [(next(iter(preds)), pred_src, ref_src)]
        missing: list[str] = []
    else:
        pairs = [(k, preds[k], refs[k]) for k in sorted(preds) if k in refs]
        missing = sorted(set(preds) ^ set(refs))
    if not pairs:
        raise CxsegError(f"no prediction in {pred_src} matches a reference in {ref_src} by name")
    report = evaluate_pairs(pairs)
    report.missing = missing
    paths = write_report(report, args.out)
    print(report.table())
    print("\n" + ", ".join(f"{k}: {v}" for k, v in paths.items()))
    return 0
