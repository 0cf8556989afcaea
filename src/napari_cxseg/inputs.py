"""The inputs of a run: what a file, folder, CSV or MSD task holds, and where each output goes.

``napari-cxseg predict``, ``evaluate`` and dataset runs on a cluster (:mod:`napari_cxseg.batch`)
collect their cases here: a file is one input (a ``.csv`` lists inputs in its ``image`` or first
column); a folder is an MSD task when it holds ``dataset.json`` (its test images), one DICOM series
when it holds the files of one CT/MR series, and otherwise a batch of its images, DICOM files and
series sub-folders. Output names are the inputs' stems, made unique.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .images import CxsegError, Image

LABEL_EXTS = (".nii.gz", ".nii", ".png", ".dcm")
IMAGE_EXTS = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg")


@dataclass
class InputItem:
    """One input of a run: what to read, with which options, and the output's stem."""

    path: Path
    stem: str
    options: dict[str, Any] = field(default_factory=dict)



def collect_inputs(src: Path) -> tuple[list[InputItem], bool]:
    """The inputs named by ``src`` and whether it is a batch.

    A file is one input (a ``.csv`` is a list of inputs). A folder is an MSD task when it holds
    ``dataset.json`` (its test images), one DICOM series when it holds DICOM files of one CT/MR
    series only, and otherwise a batch of its image files, DICOM files and series sub-folders.
    """
    if src.is_file():
        if src.suffix.lower() == ".csv":
            return csv_items(src), True
        return [InputItem(src, stem(src))], False
    if (src / "dataset.json").is_file():
        return msd_items(src), True
    return folder_items(src)


def stem(p: Path) -> str:
    name = p.name
    low = name.lower()
    for e in (*IMAGE_EXTS, ".dcm"):
        if low.endswith(e):
            return name[: -len(e)]
    return name


def csv_items(path: Path) -> list[InputItem]:
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
    first_is_header = "image" in header or not looks_like_path(rows[0][col], path.parent)
    items = []
    for r in rows[1:] if first_is_header else rows:
        if col >= len(r) or not r[col].strip():
            continue
        p = Path(r[col].strip()).expanduser()
        if not p.is_absolute():
            p = path.parent / p
        items.append(InputItem(p, stem(p)))
    if not items:
        raise CxsegError(f"CSV {path} lists no images (column 'image' or the first column)")
    return unique_stems(items)


def looks_like_path(s: str, base: Path) -> bool:
    p = Path(s.strip()).expanduser()
    return (p if p.is_absolute() else base / p).exists() or s.strip().lower().endswith((*IMAGE_EXTS, ".dcm"))


def msd_items(folder: Path) -> list[InputItem]:
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
    return unique_stems([InputItem(p.resolve(), stem(p), dict(opts)) for p in paths])


def folder_items(folder: Path) -> tuple[list[InputItem], bool]:
    from . import io as cxio

    entries = sorted((e for e in folder.iterdir() if not e.name.startswith(".")), key=lambda e: e.name)
    images = [e for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTS)]
    subdirs = [e for e in entries if e.is_dir() and cxio.detect_format(e) in ("dicom", "msd")]
    dicoms = [e for e in entries if e.is_file() and e not in images and cxio.detect_format(e) == "dicom"]
    if dicoms and not images and not subdirs:
        series = _dicom_series(folder)
        if len(series) == 1 and not _all_radiographs(dicoms):
            return [InputItem(folder, folder.name)], False
    items = [InputItem(e, stem(e), {"as_labels": False} if e.name.lower().endswith(IMAGE_EXTS) else {})
             for e in images]
    items += [InputItem(e, e.name) for e in subdirs]
    if dicoms:
        if _all_radiographs(dicoms):
            items += [InputItem(e, stem(e)) for e in dicoms]
        else:
            for uid in _dicom_series(folder):
                items.append(InputItem(folder, f"{folder.name}_{uid[-12:]}", {"series_uid": uid}))
    if not items:
        raise CxsegError(f"folder {folder} holds no images (NIfTI, PNG, JPEG, DICOM)")
    return unique_stems(items), True


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



def unique_stems(items: list[InputItem]) -> list[InputItem]:
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


def output_path(out: Path, stem: str, image: Image, ext: str | None) -> Path:
    if ext is None:
        ext = ".png" if image.geometry.ndim == 2 else ".nii.gz"
    if ext == ".png" and image.geometry.ndim != 2:
        raise CxsegError(f"cannot write a {image.geometry.ndim}D result as PNG ({out}); use .nii.gz")
    return out / f"{stem}{ext}"



def existing_output(out: Path, stem: str, ext: str | None) -> Path | None:
    for e in ([ext] if ext else LABEL_EXTS):
        if (out / f"{stem}{e}").exists():
            return out / f"{stem}{e}"
    return None


