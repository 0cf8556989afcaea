"""CXLSeg datasets (lung masks of MIMIC-CXR frontal films, PhysioNet ``chest-x-ray-segmentation``).

Layout (see the dataset's companion code): metadata CSVs ``CXLSeg-mask.csv`` (``DicomPath`` of
each mask), ``CXLSeg-split.csv`` (``split``: train / validate / test) and optionally
``CXLSeg-segmented.csv`` / ``CXLSeg-metadata.csv``, joined on ``dicom_id`` / ``subject_id`` /
``study_id``, either in the dataset folder or in its ``metadata files/`` sub-folder. Masks are
``<dicom_id>-mask.jpg`` (lossy, low resolution, both lungs in one mask); the images are the
MIMIC-CXR-JPG originals, found under an images root at the mask's relative path (``.dcm``
paths are mapped to ``.jpg`` as MIMIC-CXR-JPG names them).

Browsing (:func:`browse_table`, :func:`filter_rows`): the joined table with the columns a
dataset browser shows (``split``, ``view``, the CheXpert-style finding columns of
``CXLSeg-segmented.csv``); nothing is read from disk but the CSVs, so 243k rows open in seconds.
Loading a case, saving a corrected mask and exporting predictions are in
:mod:`napari_cxseg.cxlseg_masks` and :mod:`napari_cxseg.cxlseg_export`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .images import CxsegError

MASK_CSV = "CXLSeg-mask.csv"
SPLIT_CSV = "CXLSeg-split.csv"
SEGMENTED_CSV = "CXLSeg-segmented.csv"
METADATA_CSV = "CXLSeg-metadata.csv"
KEYS = ("dicom_id", "subject_id", "study_id")
SPLITS = ("train", "validate", "test")

#: CheXpert-style finding columns (MIMIC-CXR-JPG ``chexpert.csv``; 1 positive, 0 negative,
#: -1 uncertain, empty not mentioned), as CXLSeg-segmented.csv carries them.
FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)  # fmt: skip


def metadata_dir(folder: str | Path) -> Path | None:
    """The folder holding the CXLSeg CSVs (the dataset folder or its ``metadata files/``)."""
    f = Path(folder)
    for d in (f, f / "metadata files", f / "metadata_files", f / "metadata"):
        if (d / MASK_CSV).is_file():
            return d
    return None


def is_cxlseg(folder: str | Path) -> bool:
    """Whether ``folder`` is a CXLSeg dataset (it has ``CXLSeg-mask.csv``)."""
    return metadata_dir(folder) is not None


def read_tables(folder: str | Path) -> Any:
    """The CXLSeg CSVs joined into one pandas table (one row per mask).

    Columns: the join keys, ``mask_path`` (the mask's ``DicomPath``), ``split`` when
    ``CXLSeg-split.csv`` exists, and the other CSVs' columns where they share the keys.

    Raises
    ------
    CxsegError
        When a CSV is unreadable or lacks ``DicomPath``, naming the file.
    """
    import pandas as pd

    meta = metadata_dir(folder)
    if meta is None:
        raise CxsegError(f"{folder} is not a CXLSeg dataset: no {MASK_CSV} in it or in 'metadata files/'")

    def load(name: str) -> Any:
        p = meta / name
        try:
            return pd.read_csv(p, dtype={k: str for k in KEYS}, low_memory=False)
        except (OSError, ValueError, pd.errors.ParserError) as e:
            raise CxsegError(f"cannot read {p}: {e}") from None

    masks = load(MASK_CSV)
    if "DicomPath" not in masks.columns:
        raise CxsegError(f"{meta / MASK_CSV} has no DicomPath column (the mask paths)")
    table = masks.rename(columns={"DicomPath": "mask_path"})
    for name in (SPLIT_CSV, "CXLSeg-segmented.csv", "CXLSeg-metadata.csv"):
        if not (meta / name).is_file():
            continue
        other = load(name)
        if name == "CXLSeg-segmented.csv" and "DicomPath" in other.columns:
            other = other.rename(columns={"DicomPath": "segmented_path"})
        on = [k for k in KEYS if k in table.columns and k in other.columns]
        if not on:
            continue
        if "dicom_id" in on:  # one image per dicom_id: a single-key join is the same and faster
            on = ["dicom_id"]
        new = [c for c in other.columns if c not in table.columns or c in on]
        table = table.merge(other[new].drop_duplicates(subset=on), on=on, how="left")
    return table


def image_for_mask(mask_rel: str, images_root: Path) -> Path:
    """The MIMIC-CXR-JPG original for a mask path (``<dicom_id>-mask.jpg`` -> ``<dicom_id>.jpg``)."""
    rel = Path(str(mask_rel))
    name = rel.name
    for tag in ("-mask.jpg", "-mask.png", "-mask.jpeg"):
        if name.lower().endswith(tag):
            name = name[: -len(tag)] + ".jpg"
            break
    if name.lower().endswith(".dcm"):
        name = name[:-4] + ".jpg"
    return images_root / rel.parent / name


def find_case_image(row: dict, root: Path, roots: list[Path]) -> Path | None:
    """The original image of a table row: its ``source_image`` (datasets this package exported),
    else ``<dicom_id>.jpg`` (or ``.jpeg``/``.png``/``.dcm``) at the mask's relative path under the
    first root that has it. CXLSeg's own *segmented* image (``segmented_path``, the lungs cut
    out, 224 px) can sit at that path in the dataset folder: it is never taken for the original.
    """
    src = row.get("source_image")
    if isinstance(src, str) and src and Path(src).is_file():
        return Path(src)
    seg = row.get("segmented_path")
    if not (isinstance(seg, str) and seg):
        meta = metadata_dir(root)
        # CXLSeg keeps its segmented image <dicom_id>.jpg beside the mask
        seg = str(image_for_mask(str(row["mask_path"]), Path("."))) if meta and (meta / SEGMENTED_CSV).is_file() else None
    segmented = (root / str(seg)).resolve() if seg else None
    for r in roots:
        base = image_for_mask(str(row["mask_path"]), r)
        for p in (base, base.with_suffix(".jpeg"), base.with_suffix(".png"), base.with_suffix(".dcm")):
            if p.is_file() and (segmented is None or p.resolve() != segmented):
                return p
    return None


def cxlseg_cases(folder: str | Path, images_root: str | Path | None = None) -> list:
    """Training cases of a CXLSeg dataset whose image and mask files both exist.

    Parameters
    ----------
    folder
        The CXLSeg dataset folder (masks at the CSVs' ``DicomPath``, relative to it).
    images_root
        Where the MIMIC-CXR-JPG images are; default the dataset folder itself, then a sibling
        ``mimic-cxr-jpg*`` folder.

    Returns
    -------
    list of Case
        Structure ``"lung"`` (both lungs, split by anatomy when a card wants sides), the
        patient (``subject_id``) and the dataset's split.
    """
    from .training.sources import Case

    root = Path(folder)
    table = read_tables(root)
    roots = [Path(images_root)] if images_root is not None else [root, *sorted(root.parent.glob("mimic-cxr-jpg*"))]
    cases = []
    for row in table.itertuples(index=False):
        r = row._asdict()
        mask = root / str(r["mask_path"])
        if not mask.is_file():
            continue
        img = find_case_image(r, root, roots)
        if img is None:
            continue
        split = str(r.get("split") or "") or None
        cases.append(Case(str(r.get("dicom_id") or mask.stem), img, {"lung": mask}, source="cxlseg",
                          patient=str(r.get("subject_id") or ""), split=split))
    if not cases:
        raise CxsegError(f"CXLSeg dataset {root}: none of the {len(table)} masks listed has both its mask and "
                         f"its MIMIC-CXR-JPG image on disk (looked under {', '.join(map(str, roots))})")
    return cases


def finding_columns(table: Any) -> list[str]:
    """The finding columns a joined table has (:data:`FINDINGS`, in that order)."""
    return [c for c in FINDINGS if c in table.columns]


def browse_table(folder: str | Path) -> Any:
    """The joined CXLSeg table for browsing: one row per mask, no file checked on disk.

    Columns: ``dicom_id``, ``subject_id``, ``study_id``, ``split`` (empty when there is no split
    CSV), ``view`` (``ViewPosition`` when a CSV carries it, else empty), ``mask_path``, the
    finding columns, and every other column of the CSVs.

    Raises
    ------
    CxsegError
        As :func:`read_tables`.
    """
    t = read_tables(folder)
    if "dicom_id" not in t.columns:
        t["dicom_id"] = [Path(str(p)).name.split("-mask")[0] for p in t["mask_path"]]
    for k in ("subject_id", "study_id"):
        if k not in t.columns:
            t[k] = ""
    t["split"] = t["split"].fillna("").astype(str) if "split" in t.columns else ""
    view = next((c for c in ("ViewPosition", "view_position", "view", "ViewCodeSequence_CodeMeaning")
                 if c in t.columns), None)
    t["view"] = t[view].fillna("").astype(str) if view else ""
    return t.reset_index(drop=True)


def positive_findings(row: Any, columns: list[str]) -> str:
    """The findings marked positive (1) in one row, joined by ``", "``; uncertain ones get a ``?``."""
    out = []
    for c in columns:
        try:
            v = float(row[c])
        except (TypeError, ValueError):
            continue
        if v == 1.0:
            out.append(c)
        elif v == -1.0:
            out.append(f"{c}?")
    return ", ".join(out)


def filter_rows(table: Any, split: str | None = None, view: str | None = None, finding: str | None = None,
                text: str | None = None) -> Any:
    """Row positions (numpy int array) of the table that pass the filters (vectorised).

    Parameters
    ----------
    split, view
        Keep rows with exactly this split / view (None or "" keeps all).
    finding
        Keep rows where this finding column is positive (1).
    text
        Keep rows whose dicom_id, subject_id or study_id contains this text.
    """
    import numpy as np

    keep = np.ones(len(table), bool)
    if split:
        keep &= (table["split"] == split).to_numpy()
    if view:
        keep &= (table["view"] == view).to_numpy()
    if finding:
        if finding not in table.columns:
            raise CxsegError(f"the CXLSeg table has no finding column '{finding}'")
        keep &= (table[finding].astype("float64") == 1.0).to_numpy()
    if text:
        t = str(text).strip()
        hit = np.zeros(len(table), bool)
        for k in KEYS:
            if k in table.columns:
                hit |= table[k].astype(str).str.contains(t, regex=False, na=False).to_numpy()
        keep &= hit
    return np.flatnonzero(keep)
