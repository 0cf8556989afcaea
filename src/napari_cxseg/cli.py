"""``napari-cxseg`` command line: a thin face over the same engine the napari widgets use.

Subcommands
-----------
``predict``  segment one image (NIfTI, DICOM file or series folder, PNG, JPEG) or a batch (a
             folder, a CSV with an ``image`` column, an MSD task folder) with a model card.
``models``   list the model cards and where each one's weights are (or what is missing).
``demo``     run the bundled demo (``napari_cxseg.demo.run_demo``).
``train``    train or fine-tune a model on labelled data into a MONAI bundle (:mod:`.cli_train`).
``evaluate`` Dice, IoU, HD95 and surface distance of predictions against references.

Every failure ends with a non-zero exit status and a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .device import PRECISION_CHOICES
from .images import CxsegError
from .inputs import LABEL_EXTS, InputItem, collect_inputs, existing_output, output_path, read_image
from .models.onnx_runtime import RUNTIME_CHOICES

PROG = "napari-cxseg"
FORMATS = {"auto": None, "nii.gz": ".nii.gz", "nii": ".nii", "png": ".png", "dcm": ".dcm"}


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands ``predict``, ``models``, ``demo``, ``train``, ``evaluate``)."""
    p = argparse.ArgumentParser(prog=PROG, description="MONAI segmentation of chest X-rays and CT/MRI volumes.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    pr = sub.add_parser("predict", help="segment an image, a folder, a CSV list or an MSD task",
                        description="Segment images with a model card. A folder (not a DICOM series), "
                                    "a CSV (column 'image' or the first column) or an MSD task folder "
                                    "is a batch: one output per input in the --output folder, existing "
                                    "outputs are skipped (resume).")
    pr.add_argument("--model", "-m", required=True, help="card name, card .yaml, MONAI bundle folder/.zip, "
                                                         "or .ts/.pt with a <stem>.yaml card beside it")
    pr.add_argument("--input", "-i", required=True, help="image file, DICOM series folder, folder, CSV or MSD task")
    pr.add_argument("--output", "-o", required=True, help="output file (single input) or folder (batch)")
    pr.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda, cuda:N or mps")
    pr.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                    help="network arithmetic: auto (float16 on CUDA, float32 elsewhere), float32, bfloat16 "
                         "(about 2x faster on CPUs with AMX, labels differ in a few boundary voxels), float16")
    pr.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto",
                    help="what computes the network on CPU: auto (2D networks in ONNX Runtime when installed and the "
                         "precision is float32: about 0.75x of PyTorch's time, exported once to the cache and checked against PyTorch's "
                         "logits; a few near-tie voxels may take the other label; else PyTorch), torch, onnx")
    pr.add_argument("--trust", action="store_true", help="allow MONAI bundles whose config contains code ($ expressions)")
    pr.add_argument("--overwrite", action="store_true", help="replace existing label files")
    pr.add_argument("--format", choices=sorted(FORMATS), default="auto",
                    help="output format: auto = .nii.gz for volumes, .png for 2D images")
    pr.add_argument("--scheduler", default=None, help="batch on a running Dask scheduler (tcp://host:8786)")
    pr.add_argument("--workers", type=int, default=None,
                    help="batch on a Dask LocalCluster of N worker processes (one task per case)")
    pr.set_defaults(func=cmd_predict)

    mo = sub.add_parser("models", help="list model cards and the state of their weights")
    mo.add_argument("--json", action="store_true", help="machine-readable output")
    mo.set_defaults(func=cmd_models)

    de = sub.add_parser("demo", help="run the demo (segments the sample CXR and CT)")
    de.add_argument("--output", "-o", required=True, help="folder for the demo's outputs")
    de.set_defaults(func=cmd_demo)

    from .cli_train import add_parsers

    add_parsers(sub)
    from .cli_regions import add_parsers as add_region_parsers

    add_region_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except CxsegError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as e:  # one line for the user; the traceback would hide the cause
        _fail(f"{type(e).__name__}: {e}")
    return 1


def _fail(msg: str) -> None:
    print(f"{PROG}: error: {_one_line(msg)}", file=sys.stderr)


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


# ---------------------------------------------------------------------------- models
def cmd_models(args: argparse.Namespace) -> int:
    """Print every card with task, modality and where its weights are or what is missing."""
    from .models.cards import PACKAGE_CARDS_DIR, list_cards, user_cards_dir
    from .models.weights import weights_status

    errors: list[tuple[Path, str]] = []
    cards = list_cards(errors)
    rows = []
    for c in cards:
        ok, where = weights_status(c)
        rows.append({"name": c.name, "task": c.task, "modality": c.modality, "spatial_dims": c.spatial_dims,
                     "classes": [k.name for k in c.classes.values()], "weights_ready": ok, "weights": where,
                     "card": str(c.path) if c.path else None})
    if args.json:
        print(json.dumps({"cards": rows, "invalid": [{"card": str(p), "error": m} for p, m in errors]}, indent=2))
        return 0
    print(f"Model cards (package: {PACKAGE_CARDS_DIR}; yours: {user_cards_dir()})\n")
    for r in rows:
        mark = "ready  " if r["weights_ready"] else "MISSING"
        print(f"{r['name']}  [{'/'.join(r['modality'])}, {r['spatial_dims']}D]  {r['task']}")
        print(f"    classes: {', '.join(r['classes'])}")
        print(f"    weights: {mark} {r['weights']}")
    for p, m in errors:
        print(f"INVALID {p}: {m}")
    ready = sum(r["weights_ready"] for r in rows)
    print(f"\n{len(rows)} cards, {ready} with weights here, {len(rows) - ready} missing"
          + (f", {len(errors)} invalid" if errors else ""))
    return 0


# ---------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    """Run ``napari_cxseg.demo.run_demo`` into the output folder."""
    from .demo import run_demo

    return int(run_demo(Path(args.output)) or 0)


# ---------------------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    """Segment one input or a batch; see the ``predict`` help."""
    from .inference import Predictor

    src = Path(args.input).expanduser()
    if not src.exists():
        raise CxsegError(f"input {src} does not exist")
    items, batch = collect_inputs(src)
    predictor = Predictor(args.model, device=args.device, trust=args.trust, precision=args.precision,
                          runtime=args.runtime)
    ext = FORMATS[args.format]
    if not batch:
        return _predict_single(predictor, items[0], Path(args.output).expanduser(), ext, args.overwrite)
    if args.scheduler or args.workers:
        return _predict_on_cluster(args, items, ext)
    return _predict_batch(predictor, items, Path(args.output).expanduser(), ext, args.overwrite)


def _predict_on_cluster(args: argparse.Namespace, items: list[InputItem], ext: str | None) -> int:
    from .batch import run_on_cluster

    out = Path(args.output).expanduser()
    results = run_on_cluster(items, args.model, out, ext=ext, overwrite=args.overwrite, scheduler=args.scheduler,
                             workers=args.workers or 2, device=args.device, trust=args.trust,
                             precision=args.precision, runtime=args.runtime)
    counts = {k: sum(r.status == k for r in results) for k in ("done", "skipped", "failed")}
    print(f"done {counts['done']}, skipped {counts['skipped']} (output exists), failed {counts['failed']} -> {out} "
          f"(summary {out / 'summary.csv'})")
    for r in results:
        if r.status == "failed":
            print(f"  failed {r.input}: {r.error}")
    if counts["failed"]:
        print(f"{PROG}: error: {counts['failed']} of {len(items)} inputs failed (see above)", file=sys.stderr)
        return 1
    return 0


def _predict_single(predictor: Any, item: InputItem, out: Path, ext: str | None, overwrite: bool) -> int:
    from tqdm import tqdm

    from . import io as cxio

    image = read_image(item)
    if out.name.lower().endswith(LABEL_EXTS):
        target = out
    else:
        target = output_path(out, item.stem, image, ext)
    if target.exists() and not overwrite:
        raise CxsegError(f"output {target} exists (use --overwrite to replace it)")
    with tqdm(total=1, desc=f"{predictor.card.name} {item.stem}", unit="batch", file=sys.stderr,
              leave=False, disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        labels = predictor.predict(image, progress=progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    written = cxio.write_labels(labels, target, overwrite=overwrite)
    print(f"wrote {written[0]}" + (f" (+{len(written) - 1} sidecar)" if len(written) > 1 else ""))
    return 0


def _predict_batch(predictor: Any, items: list[InputItem], out: Path, ext: str | None, overwrite: bool) -> int:
    from tqdm import tqdm

    from . import io as cxio

    if out.exists() and not out.is_dir():
        raise CxsegError(f"output {out} must be a folder for a batch of {len(items)} inputs")
    out.mkdir(parents=True, exist_ok=True)
    todo: list[InputItem] = []
    skipped = 0
    for it in items:
        if not overwrite and existing_output(out, it.stem, ext) is not None:
            skipped += 1
        else:
            todo.append(it)
    from .prefetch import prepared_cases

    done = 0
    failed: list[tuple[InputItem, str]] = []
    writing: list[tuple[InputItem, Future]] = []
    # the next cases are read and preprocessed in worker processes, the results written by a thread
    with ThreadPoolExecutor(max_workers=1) as writer:
        bar = tqdm(total=len(todo), desc=predictor.card.name, unit="image", file=sys.stderr, disable=None)
        for it, prepared, error in prepared_cases(predictor, todo):
            bar.update(1)
            if prepared is None:
                failed.append((it, error))
                continue
            try:
                labels = predictor.predict(None, prepared=prepared)
                target = output_path(out, it.stem, prepared.image, ext)
                writing.append((it, writer.submit(cxio.write_labels, labels, target, overwrite)))
            except CxsegError as e:
                failed.append((it, _one_line(str(e))))
            except Exception as e:  # one bad case must not end a night-long batch
                failed.append((it, _one_line(f"{type(e).__name__}: {e}")))
        bar.close()
        for it, fut in writing:
            try:
                fut.result()
                done += 1
            except CxsegError as e:
                failed.append((it, _one_line(str(e))))
            except Exception as e:
                failed.append((it, _one_line(f"{type(e).__name__}: {e}")))
    order = {id(it): i for i, it in enumerate(items)}
    failed.sort(key=lambda f: order.get(id(f[0]), 0))
    print(f"{predictor.card.name}: done {done}, skipped {skipped} (output exists), failed {len(failed)} "
          f"-> {out}")
    for it, why in failed:
        print(f"  failed {it.path}{_opts_note(it)}: {why}")
    if failed:
        print(f"{PROG}: error: {len(failed)} of {len(items)} inputs failed (see above)", file=sys.stderr)
        return 1
    return 0


def _opts_note(it: InputItem) -> str:
    uid = it.options.get("series_uid")
    return f" [series {uid}]" if uid else ""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
