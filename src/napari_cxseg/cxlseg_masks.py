"""One CXLSeg case on demand: its image and lung mask, and a corrected mask saved back in place.

Masks are read with :func:`napari_cxseg.training.targets.read_mask` (lossy JPEG thresholded at
half its maximum, resized to the image) and split into right and left lung by anatomy
(:func:`~napari_cxseg.training.targets.split_lungs`). A corrected mask is written back to the
mask's own path, size and format (both lungs in one class, 0/255), atomically; the first time
a mask is replaced, the original is copied to ``<dataset>/cxseg-backups/<mask path>`` (never
overwritten later), and every save is logged in ``<dataset>/cxseg-corrections.csv``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cxlseg import find_case_image, image_for_mask
from .images import CxsegError, Image, LabelClass, LabelMap

BACKUP_DIR = "cxseg-backups"
LOG_CSV = "cxseg-corrections.csv"
LUNG_CLASSES = {1: LabelClass("right lung", "#1f77b4"), 2: LabelClass("left lung", "#ff7f0e")}


@dataclass
class LoadedCase:
    """A case's image, its dataset mask (1 right, 2 left lung) and where they came from."""

    dicom_id: str
    image: Image
    mask: LabelMap
    image_path: Path
    mask_path: Path


def image_roots(root: str | Path, images_root: str | Path | None = None) -> list[Path]:
    """Where to look for the MIMIC-CXR-JPG images: the given root, else the dataset and its siblings."""
    r = Path(root)
    if images_root is not None:
        return [Path(images_root)]
    return [r, *sorted(r.parent.glob("mimic-cxr-jpg*"))]


def load_case(root: str | Path, mask_rel: str, dicom_id: str = "", images_root: str | Path | None = None,
              row: dict | None = None) -> LoadedCase:
    """Read one case: the image and its mask split into the two lungs, on the image's grid.

    Parameters
    ----------
    root
        The dataset folder.
    mask_rel
        The mask's ``DicomPath``.
    dicom_id
        The case's id (default: from the mask's name).
    images_root
        Where the MIMIC-CXR-JPG images are (default: :func:`image_roots`).
    row
        The case's table row (its ``source_image`` / ``segmented_path`` guide the image search,
        :func:`napari_cxseg.cxlseg.find_case_image`).

    Raises
    ------
    CxsegError
        When the mask or the image is missing or unreadable (names the paths).
    """
    from .io import read
    from .training.targets import read_mask, split_lungs

    base = Path(root)
    mpath = base / str(mask_rel)
    if not mpath.is_file():
        raise CxsegError(f"mask {mpath} does not exist")
    roots = image_roots(base, images_root)
    ipath = find_case_image({**(row or {}), "mask_path": mask_rel}, base, roots)
    if ipath is None:
        looked = ", ".join(str(image_for_mask(mask_rel, r)) for r in roots)
        raise CxsegError(f"no MIMIC-CXR-JPG image for mask {mpath} (looked for {looked})")
    image = next((o for o in read(ipath) if isinstance(o, Image)), None)
    if image is None or image.geometry.ndim != 2:
        raise CxsegError(f"{ipath} is not a 2D radiograph")
    both = read_mask(mpath, image) > 0
    lungs = split_lungs(both)
    did = dicom_id or mpath.name.split("-mask")[0]
    lab = LabelMap(lungs, image.geometry, dict(LUNG_CLASSES),
                   meta={"name": f"{did} mask", "source_path": str(mpath), "reference_image_path": str(ipath)})
    image.meta.setdefault("name", did)
    return LoadedCase(did, image, lab, ipath, mpath)


def _stored_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            return (im.height, im.width)
    except (OSError, ValueError):
        return None


def mask_to_stored(labels: np.ndarray, image: Image, size: tuple[int, int]) -> np.ndarray:
    """A held label array -> the stored 0/255 lung mask of ``size`` (rows, columns).

    Every non-zero class counts as lung; the mask goes back to the stored pixel order and is
    resized by area (bilinear on the binary mask, then >= 0.5), so thin edits survive.
    """
    from PIL import Image as PILImage

    disk = np.asarray(image.geometry.to_disk(np.asarray(labels) > 0), np.float32)
    if disk.shape != tuple(size):
        im = PILImage.fromarray(disk).resize((size[1], size[0]), PILImage.BILINEAR)
        disk = np.asarray(im)
    return np.where(disk >= 0.5, 255, 0).astype(np.uint8)


def save_corrected_mask(root: str | Path, mask_rel: str, labels: np.ndarray, image: Image,
                        dicom_id: str = "") -> dict[str, Any]:
    """Write a corrected lung mask back to the dataset, keeping the original as a backup.

    Parameters
    ----------
    root
        The CXLSeg dataset folder.
    mask_rel
        The mask's ``DicomPath`` (relative to ``root``).
    labels
        The corrected labels on the image's held grid (any non-zero value is lung).
    image
        The image the labels lie on.
    dicom_id
        For the log.

    Returns
    -------
    dict
        ``{"path", "backup" (None when there was no original), "size"}``.

    Raises
    ------
    CxsegError
        When the target is the image itself, a folder is not writable, or the write fails.
    """
    from PIL import Image as PILImage

    from .io.atomic import atomic_write

    base = Path(root)
    target = base / str(mask_rel)
    src = image.meta.get("source_path")
    if src and Path(str(src)).resolve() == target.resolve():
        raise CxsegError(f"refusing to write the mask over its image {target}")
    if np.asarray(labels).shape != image.spatial_shape:
        raise CxsegError(f"the labels ({np.asarray(labels).shape}) are not on the grid of {src} {image.spatial_shape}")
    size = _stored_size(target) if target.is_file() else None
    size = size or tuple(int(v) for v in (image.geometry.disk_shape or image.spatial_shape))
    stored = mask_to_stored(labels, image, size)
    backup = None
    if target.is_file():
        backup = base / BACKUP_DIR / str(mask_rel)
        if not backup.exists():
            try:
                backup.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(backup, lambda tmp: shutil.copyfile(target, tmp))
            except OSError as e:
                raise CxsegError(f"cannot keep a backup of {target} in {backup.parent}: {e}; nothing was written") from e
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if target.suffix.lower() in (".jpg", ".jpeg") else "PNG"

    def write(tmp: str) -> None:
        PILImage.fromarray(stored).save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))

    atomic_write(target, write)
    _log(base, dicom_id or target.name.split("-mask")[0], target, backup)
    return {"path": target, "backup": backup, "size": size}


def _log(base: Path, dicom_id: str, target: Path, backup: Path | None) -> None:
    log = base / LOG_CSV
    new = not log.exists()
    try:
        with open(log, "a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["time", "dicom_id", "mask_path", "backup"])
            w.writerow([_dt.datetime.now().isoformat(timespec="seconds"), dicom_id, str(target.relative_to(base)),
                        "" if backup is None else str(backup.relative_to(base))])
    except OSError as e:  # the mask is saved; a missing log line must not hide that
        import warnings

        warnings.warn(f"mask {target} saved, but the log {log} could not be written: {e}", stacklevel=2)
