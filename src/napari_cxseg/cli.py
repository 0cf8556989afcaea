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
import csv
import json
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .images import CxsegError, Image

PROG = "napari-cxseg"
LABEL_EXTS = (".nii.gz", ".nii", ".png", ".dcm")
IMAGE_EXTS = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg")
FORMATS = {"auto": None, "nii.gz": ".nii.gz", "nii": ".nii", "png": ".png", "dcm": ".dcm"}


@dataclass
class InputItem:
    """One input of a run: what to read, with which options, and the output's stem."""

    path: Path
    stem: str
    options: dict[str, Any] = field(default_factory=dict)


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
    pr.add_argument("--trust", action="store_true", help="allow MONAI bundles whose config contains code ($ expressions)")
    pr.add_argument("--overwrite", action="store_true", help="replace existing label files")
    pr.add_argument("--format", choices=sorted(FORMATS), default="auto",
                    help="output format: auto = .nii.gz for volumes, .png for 2D images")
    pr.set_defaults(func=cmd_predict)

    mo = sub.add_parser("models", help="list model cards and the state of their weights")
    mo.add_argument("--json", action="store_true", help="machine-readable output")
    mo.set_defaults(func=cmd_models)

    de = sub.add_parser("demo", help="run the demo (segments the sample CXR and CT)")
    de.add_argument("--output", "-o", required=True, help="folder for the demo's outputs")
    de.set_defaults(func=cmd_demo)

    from .cli_train import add_parsers

    add_parsers(sub)
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
    predictor = Predictor(args.model, device=args.device, trust=args.trust)
    ext = FORMATS[args.format]
    if not batch:
        return _predict_single(predictor, items[0], Path(args.output).expanduser(), ext, args.overwrite)
    return _predict_batch(predictor, items, Path(args.output).expanduser(), ext, args.overwrite)


def collect_inputs(src: Path) -> tuple[list[InputItem], bool]:
    """The inputs named by ``src`` and whether it is a batch.

    A file is one input (a ``.csv`` is a list of inputs). A folder is an MSD task when it holds
    ``dataset.json`` (its test images), one DICOM series when it holds DICOM files of one CT/MR
    series only, and otherwise a batch of its image files, DICOM files and series sub-folders.
    """
    if src.is_file():
        if src.suffix.lower() == ".csv":
            return _csv_items(src), True
        return [InputItem(src, _stem(src))], False
    if (src / "dataset.json").is_file():
        return _msd_items(src), True
    return _folder_items(src)


def _stem(p: Path) -> str:
    name = p.name
    low = name.lower()
    for e in (*IMAGE_EXTS, ".dcm"):
        if low.endswith(e):
            return name[: -len(e)]
    return name


def _csv_items(path: Path) -> list[InputItem]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise CxsegError(f"cannot read CSV {path}: {e}") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise CxsegError(f"CSV {path} is empty")
    header = [c.strip().lower() for c in rows[0]]
    col = header.index("image") if "image" in header else 0
    first_is_header = "image" in header or not _looks_like_path(rows[0][col], path.parent)
    items = []
    for r in rows[1:] if first_is_header else rows:
        if col >= len(r) or not r[col].strip():
            continue
        p = Path(r[col].strip()).expanduser()
        if not p.is_absolute():
            p = path.parent / p
        items.append(InputItem(p, _stem(p)))
    if not items:
        raise CxsegError(f"CSV {path} lists no images (column 'image' or the first column)")
    return _unique_stems(items)


def _looks_like_path(s: str, base: Path) -> bool:
    p = Path(s.strip()).expanduser()
    return (p if p.is_absolute() else base / p).exists() or s.strip().lower().endswith((*IMAGE_EXTS, ".dcm"))


def _msd_items(folder: Path) -> list[InputItem]:
    try:
        meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CxsegError(f"cannot read {folder / 'dataset.json'}: {e}") from None
    mod = meta.get("modality") or meta.get("channel_names") or {}
    names = [str(mod[k]) for k in sorted(mod, key=lambda k: int(k))] if isinstance(mod, dict) else []
    opts: dict[str, Any] = {"as_labels": False}
    if len(names) > 1:
        opts["channel_names"] = names
    from .io.msd import modality_of

    modality = modality_of(names) if names else ""
    if modality:
        opts["modality"] = modality
    tests = meta.get("test") or []
    paths = [folder / (t["image"] if isinstance(t, dict) else t) for t in tests]
    paths = [p for p in paths if p.exists()] or sorted((folder / "imagesTs").glob("*.nii*"))
    if not paths:
        raise CxsegError(f"MSD task {folder} has no test images (dataset.json 'test' or imagesTs/)")
    return _unique_stems([InputItem(p.resolve(), _stem(p), dict(opts)) for p in paths])


def _folder_items(folder: Path) -> tuple[list[InputItem], bool]:
    from . import io as cxio

    entries = sorted((e for e in folder.iterdir() if not e.name.startswith(".")), key=lambda e: e.name)
    images = [e for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTS)]
    subdirs = [e for e in entries if e.is_dir() and cxio.detect_format(e) in ("dicom", "msd")]
    dicoms = [e for e in entries if e.is_file() and e not in images and cxio.detect_format(e) == "dicom"]
    if dicoms and not images and not subdirs:
        series = _dicom_series(folder)
        if len(series) == 1 and not _all_radiographs(dicoms):
            return [InputItem(folder, folder.name)], False
    items = [InputItem(e, _stem(e), {"as_labels": False} if e.name.lower().endswith(IMAGE_EXTS) else {})
             for e in images]
    items += [InputItem(e, e.name) for e in subdirs]
    if dicoms:
        if _all_radiographs(dicoms):
            items += [InputItem(e, _stem(e)) for e in dicoms]
        else:
            for uid in _dicom_series(folder):
                items.append(InputItem(folder, f"{folder.name}_{uid[-12:]}", {"series_uid": uid}))
    if not items:
        raise CxsegError(f"folder {folder} holds no images (NIfTI, PNG, JPEG, DICOM)")
    return _unique_stems(items), True


def _dicom_series(folder: Path) -> dict[str, list[Path]]:
    from .io.dicom_series import find_series

    return find_series(folder)


def _all_radiographs(files: list[Path]) -> bool:
    import pydicom

    from .io import RADIOGRAPH_MODALITIES

    for f in files[:16]:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True, force=True)
        except Exception:  # unreadable files are reported when read
            continue
        if str(getattr(ds, "Modality", "")).upper() not in RADIOGRAPH_MODALITIES:
            return False
    return True


def _unique_stems(items: list[InputItem]) -> list[InputItem]:
    seen: dict[str, int] = {}
    for it in items:
        seen[it.stem] = seen.get(it.stem, 0) + 1
    for it in items:
        if seen[it.stem] > 1:
            suffix = it.path.name[len(it.stem):].lstrip(".").replace(".", "_")
            it.stem = f"{it.stem}_{suffix}" if suffix else it.stem
    return items


def read_image(item: InputItem) -> Image:
    """The first image of an input (label maps in the same file are ignored)."""
    from . import io as cxio

    opts = dict(item.options)
    fmt = cxio.detect_format(item.path)
    if fmt not in ("nifti", "png", "jpeg", "msd"):
        opts.pop("as_labels", None)
    if fmt != "nifti":
        opts.pop("channel_names", None)
        opts.pop("modality", None)
    objs = cxio.read(item.path, **opts)
    imgs = [o for o in objs if isinstance(o, Image)]
    if not imgs:
        raise CxsegError(f"{item.path} holds no image (only label maps)")
    return imgs[0]


def _output_path(out: Path, stem: str, image: Image, ext: str | None) -> Path:
    if ext is None:
        ext = ".png" if image.geometry.ndim == 2 else ".nii.gz"
    if ext == ".png" and image.geometry.ndim != 2:
        raise CxsegError(f"cannot write a {image.geometry.ndim}D result as PNG ({out}); use .nii.gz")
    return out / f"{stem}{ext}"


def _predict_single(predictor: Any, item: InputItem, out: Path, ext: str | None, overwrite: bool) -> int:
    from tqdm import tqdm

    from . import io as cxio

    image = read_image(item)
    if out.name.lower().endswith(LABEL_EXTS):
        target = out
    else:
        target = _output_path(out, item.stem, image, ext)
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


def _existing_output(out: Path, stem: str, ext: str | None) -> Path | None:
    for e in ([ext] if ext else LABEL_EXTS):
        if (out / f"{stem}{e}").exists():
            return out / f"{stem}{e}"
    return None


def _predict_batch(predictor: Any, items: list[InputItem], out: Path, ext: str | None, overwrite: bool) -> int:
    from tqdm import tqdm

    from . import io as cxio

    if out.exists() and not out.is_dir():
        raise CxsegError(f"output {out} must be a folder for a batch of {len(items)} inputs")
    out.mkdir(parents=True, exist_ok=True)
    todo: list[InputItem] = []
    skipped = 0
    for it in items:
        if not overwrite and _existing_output(out, it.stem, ext) is not None:
            skipped += 1
        else:
            todo.append(it)
    done = 0
    failed: list[tuple[InputItem, str]] = []
    with ThreadPoolExecutor(max_workers=1) as pool:  # read the next input while this one runs
        futures: list[Future] = [pool.submit(read_image, todo[0])] if todo else []
        bar = tqdm(todo, desc=predictor.card.name, unit="image", file=sys.stderr, disable=None)
        for i, it in enumerate(bar):
            if i + 1 < len(todo):
                futures.append(pool.submit(read_image, todo[i + 1]))
            try:
                image = futures[i].result()
                futures[i] = None  # free the image once used
                labels = predictor.predict(image)
                cxio.write_labels(labels, _output_path(out, it.stem, image, ext), overwrite=overwrite)
                done += 1
            except CxsegError as e:
                failed.append((it, _one_line(str(e))))
            except Exception as e:  # one bad case must not end a night-long batch
                failed.append((it, _one_line(f"{type(e).__name__}: {e}")))
        bar.close()
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
