"""Export the product's lung predictions as a CXLSeg-style dataset (for dataset building).

Layout written into the output folder (the layout :func:`napari_cxseg.cxlseg.read_tables` and
the CXLSeg companion code read):

* ``<rel>/<dicom_id>-mask.jpg``: both lungs in one class (0/255 grey JPEG), at ``mask_size``
  (224 x 224 as CXLSeg ships them; 0 keeps the radiograph's stored size);
* ``<rel>/<dicom_id>.jpg``: the segmented image (the radiograph inside the lungs, 3 channels, the
  same size as the mask);
* ``CXLSeg-mask.csv`` / ``CXLSeg-segmented.csv`` (``dicom_id, subject_id, study_id, DicomPath``),
  ``CXLSeg-split.csv`` (``split``: train / validate / test, by patient: 80 / 10 / 10 from a hash of
  the subject id, as CXLSeg's sizes), ``CXLSeg-metadata.csv`` (``ViewPosition``, ``Rows``,
  ``Columns``, the model and the lung areas in pixels).

``<rel>`` is the image's folder relative to the input folder (MIMIC-CXR-JPG's
``files/pNN/pNNNNNNNN/sNNNNNNNN``), or ``files`` for single files. Subject and study ids come from
such paths (or CSV columns), else the subject is the dicom_id. Existing masks are kept (resume)
unless ``overwrite``; CSV rows of images not in this run are kept.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cxlseg import KEYS, MASK_CSV, METADATA_CSV, SEGMENTED_CSV, SPLIT_CSV
from .images import CxsegError, Image

_MIMIC = re.compile(r"p(\d+)[/\\]s(\d+)[/\\]?$")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".dcm")


@dataclass
class ExportItem:
    """One radiograph to export."""

    path: Path
    dicom_id: str
    subject_id: str
    study_id: str = ""
    rel: str = "files"


@dataclass
class ExportResult:
    """What an export wrote."""

    out: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def split_of(subject_id: str, seed: int = 0) -> str:
    """``train`` / ``validate`` / ``test`` (80 / 10 / 10) from a hash of the patient."""
    h = int.from_bytes(hashlib.sha256(f"{seed}|{subject_id}".encode()).digest()[:8], "big") / 2**64
    return "train" if h < 0.8 else "validate" if h < 0.9 else "test"


def export_items(source: str | Path) -> list[ExportItem]:
    """The radiographs of a file, a folder (searched recursively) or a CSV (``path``/``image`` column).

    Raises
    ------
    CxsegError
        When the source holds no radiograph or a CSV lacks a path column.
    """
    src = Path(source)
    if src.is_file() and src.suffix.lower() == ".csv":
        return _csv_items(src)
    if src.is_file():
        return [_item(src, None)]
    if not src.is_dir():
        raise CxsegError(f"{src} does not exist")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                   and not p.name.lower().endswith(("-mask.jpg", "-mask.png")))
    if not files:
        raise CxsegError(f"{src} holds no radiographs ({', '.join(IMAGE_EXTS)})")
    return [_item(f, src) for f in files]


def _item(path: Path, base: Path | None, **ids: str) -> ExportItem:
    did = ids.get("dicom_id") or path.name.split(".")[0]
    rel = "files"
    if base is not None:
        r = path.parent.relative_to(base).as_posix()
        rel = r if r not in ("", ".") else "files"
    m = _MIMIC.search(path.parent.as_posix() + "/")
    subject = ids.get("subject_id") or (m.group(1) if m else did)
    study = ids.get("study_id") or (m.group(2) if m else "")
    return ExportItem(path, did, subject, study, rel)


def _csv_items(path: Path) -> list[ExportItem]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CxsegError(f"cannot read {path}: {e}") from None
    col = next((c for c in ("path", "image", "DicomPath") if rows and c in rows[0]), None)
    if col is None:
        raise CxsegError(f"{path} needs a 'path' (or 'image') column naming the radiographs")
    out = []
    for r in rows:
        p = Path(r[col])
        p = p if p.is_absolute() else path.parent / p
        if p.suffix.lower() == ".dcm" and not p.exists() and p.with_suffix(".jpg").exists():
            p = p.with_suffix(".jpg")  # MIMIC-CXR paths point at DICOMs; MIMIC-CXR-JPG has JPEGs
        out.append(_item(p, path.parent, **{k: str(r[k]) for k in KEYS if r.get(k)}))
    return out


def lung_mask(label_map: Any) -> np.ndarray:
    """Both lungs of a prediction as one boolean mask (any class named as a lung)."""
    from .anatomy.structures import masks_from_label_map

    s = masks_from_label_map(label_map)
    lungs = [m for k, m in s.items() if k in ("right lung", "left lung")]
    arr = np.asarray(label_map.array)
    if not lungs:
        names = {c.name.lower(): k for k, c in label_map.classes.items()}
        k = names.get("lung") or names.get("lungs")
        return arr == k if k else np.zeros(arr.shape, bool)
    return np.any(lungs, axis=0)


def _resized(a: np.ndarray, size: tuple[int, int], binary: bool) -> np.ndarray:
    from PIL import Image as PILImage

    if a.shape[:2] == tuple(size):
        return a
    im = PILImage.fromarray(a.astype(np.float32)).resize((size[1], size[0]), PILImage.BILINEAR)
    r = np.asarray(im)
    return (r >= 0.5) if binary else r


def write_case(item: ExportItem, image: Image, lungs: np.ndarray, out: Path, mask_size: int = 224) -> dict[str, Any]:
    """Write one case's mask and segmented image; returns its CSV fields."""
    from PIL import Image as PILImage

    from .io.atomic import atomic_write

    disk_lungs = np.asarray(image.geometry.to_disk(lungs), bool)
    disk_img = np.asarray(image.geometry.to_disk(np.asarray(image.array, np.float32)))
    size = (mask_size, mask_size) if mask_size else disk_lungs.shape
    m = _resized(disk_lungs, size, True)
    lo, hi = np.percentile(disk_img, [0.5, 99.5])
    grey = np.clip((disk_img - lo) / max(hi - lo, 1e-6), 0, 1) * 255.0
    g = _resized(grey, size, False)
    seg = np.repeat((g * m)[..., None], 3, axis=2).astype(np.uint8)
    folder = out / item.rel
    folder.mkdir(parents=True, exist_ok=True)
    mask_rel = f"{item.rel}/{item.dicom_id}-mask.jpg"
    seg_rel = f"{item.rel}/{item.dicom_id}.jpg"
    atomic_write(out / mask_rel, lambda t: PILImage.fromarray(np.where(m, 255, 0).astype(np.uint8)).save(
        t, format="JPEG", quality=95))
    atomic_write(out / seg_rel, lambda t: PILImage.fromarray(seg).save(t, format="JPEG", quality=95))
    return {"mask": mask_rel, "segmented": seg_rel, "rows": disk_lungs.shape[0], "cols": disk_lungs.shape[1]}


def export_predictions(
    source: str | Path | Sequence[ExportItem], out: str | Path, model: str = "cxr-lungs", device: str = "auto",
    mask_size: int = 224, overwrite: bool = False, seed: int = 0, cancel: Any = None,
) -> Generator[tuple[int, int, str], None, ExportResult]:
    """Predict the lungs of every radiograph and write a CXLSeg-style dataset (a generator).

    Yields ``(done, total, dicom_id)``; returns an :class:`ExportResult`. A radiograph that fails
    is reported in ``failed`` and the export goes on.

    Raises
    ------
    CxsegError
        When the source holds nothing, the output is inside the source images' folder tree of a
        single image, or the model cannot be loaded.
    """
    from .inference import Predictor
    from .io import read

    items = export_items(source) if isinstance(source, str | Path) else list(source)
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(model, device=device)
    rows = _existing_rows(dest)
    result = ExportResult(dest)
    for i, it in enumerate(items):
        yield i, len(items), it.dicom_id
        if cancel is not None and cancel():
            break
        if (dest / it.rel / f"{it.dicom_id}-mask.jpg").exists() and not overwrite and it.dicom_id in rows:
            result.skipped.append(it.dicom_id)
            continue
        try:
            image = next((o for o in read(it.path) if isinstance(o, Image)), None)
            if image is None or image.geometry.ndim != 2:
                raise CxsegError(f"{it.path} is not a 2D radiograph")
            lab = predictor.predict(image)
            lungs = lung_mask(lab)
            f = write_case(it, image, lungs, dest, mask_size)
        except CxsegError as e:
            result.failed[it.dicom_id] = str(e)
            continue
        sides = {k: int((np.asarray(lab.array) == c).sum()) for c, k in
                 ((c, cls.name) for c, cls in lab.classes.items()) if k in ("right lung", "left lung")}
        rows[it.dicom_id] = {"dicom_id": it.dicom_id, "subject_id": it.subject_id, "study_id": it.study_id,
                             "mask": f["mask"], "segmented": f["segmented"], "split": split_of(it.subject_id, seed),
                             "ViewPosition": image.meta.get("view_position") or "", "Rows": f["rows"],
                             "Columns": f["cols"], "model": model, "right_lung_px": sides.get("right lung", ""),
                             "left_lung_px": sides.get("left lung", ""), "source_image": str(it.path)}
        result.written.append(it.dicom_id)
    write_csvs(dest, rows)
    yield len(items), len(items), "CSVs"
    return result


def _existing_rows(dest: Path) -> dict[str, dict[str, Any]]:
    p = dest / METADATA_CSV
    if not p.is_file():
        return {}
    with open(p, newline="", encoding="utf-8") as f:
        return {r["dicom_id"]: dict(r) for r in csv.DictReader(f) if r.get("dicom_id")}


def write_csvs(dest: Path, rows: dict[str, dict[str, Any]]) -> None:
    """Write the four CXLSeg CSVs for ``rows`` (atomically)."""
    from .io.atomic import atomic_write

    meta_cols = ["dicom_id", "subject_id", "study_id", "mask", "segmented", "split", "ViewPosition", "Rows",
                 "Columns", "model", "right_lung_px", "left_lung_px", "source_image"]
    tables = {
        MASK_CSV: (["dicom_id", "subject_id", "study_id", "DicomPath"], lambda r: [*[r[k] for k in KEYS], r["mask"]]),
        SEGMENTED_CSV: (["dicom_id", "subject_id", "study_id", "DicomPath"],
                        lambda r: [*[r[k] for k in KEYS], r["segmented"]]),
        SPLIT_CSV: (["dicom_id", "subject_id", "study_id", "split"], lambda r: [*[r[k] for k in KEYS], r["split"]]),
        METADATA_CSV: (meta_cols, lambda r: [r.get(k, "") for k in meta_cols]),
    }
    for name, (head, fn) in tables.items():
        def w(tmp: str, head: list[str] = head, fn: Any = fn) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                wr = csv.writer(f)
                wr.writerow(head)
                for r in rows.values():
                    wr.writerow(fn(r))

        atomic_write(dest / name, w)
