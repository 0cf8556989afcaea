"""CXLSeg datasets (lung masks of MIMIC-CXR frontal films, PhysioNet ``chest-x-ray-segmentation``).

Layout (see the dataset's companion code): metadata CSVs ``CXLSeg-mask.csv`` (``DicomPath`` of
each mask), ``CXLSeg-split.csv`` (``split``: train / validate / test) and optionally
``CXLSeg-segmented.csv`` / ``CXLSeg-metadata.csv``, joined on ``dicom_id`` / ``subject_id`` /
``study_id``, either in the dataset folder or in its ``metadata files/`` sub-folder. Masks are
``<dicom_id>-mask.jpg`` (lossy, low resolution, both lungs in one mask); the images are the
MIMIC-CXR-JPG originals, found under an images root at the mask's relative path (``.dcm``
paths are mapped to ``.jpg`` as MIMIC-CXR-JPG names them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .images import CxsegError

MASK_CSV = "CXLSeg-mask.csv"
SPLIT_CSV = "CXLSeg-split.csv"
KEYS = ("dicom_id", "subject_id", "study_id")


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
        img = next((p for p in (image_for_mask(r["mask_path"], ir) for ir in roots) if p.is_file()), None)
        if img is None:
            continue
        split = str(r.get("split") or "") or None
        cases.append(Case(str(r.get("dicom_id") or mask.stem), img, {"lung": mask}, source="cxlseg",
                          patient=str(r.get("subject_id") or ""), split=split))
    if not cases:
        raise CxsegError(f"CXLSeg dataset {root}: none of the {len(table)} masks listed has both its mask and "
                         f"its MIMIC-CXR-JPG image on disk (looked under {', '.join(map(str, roots))})")
    return cases
