"""Files of the viewer's training set: images copied or written with their geometry, thumbnails.

See :mod:`napari_cxseg.training.trainset` for the layout and the rules (a source file is copied
byte for byte; otherwise volumes are written as NIfTI, radiographs as 8/16-bit PNG).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..images import CxsegError, Image, LabelClass

if TYPE_CHECKING:
    from .trainset import Entry, TrainingSet

_COPY_2D = (".png", ".jpg", ".jpeg", ".dcm")
_COPY_3D = (".nii.gz", ".nii")


def write_image(image: Image, folder: Path, case: str) -> tuple[Path, Any]:
    """Copy the image's source file or write it; returns the file and the geometry its labels use."""
    from ..geometry import Geometry

    src = image.meta.get("source_path")
    dims = image.geometry.ndim
    low = str(src).lower() if src else ""
    ext = next((e for e in (_COPY_3D if dims == 3 else _COPY_2D) if low.endswith(e)), None)
    if src and ext and Path(src).is_file() and (image.geometry.source or {}).get("format") != "msd":
        target = folder / f"{case}{ext}"
        _copy_atomic(Path(src), target)
        return target, image.geometry
    if dims == 3:
        target = folder / f"{case}.nii.gz"
        _write_nifti_image(image, target)
        return target, image.geometry
    target = folder / f"{case}.png"
    arr = _radiograph_pixels(np.asarray(image.array), src or case)
    from PIL import Image as PILImage

    from ..io.atomic import atomic_write

    atomic_write(target, lambda tmp: PILImage.fromarray(arr).save(tmp, format="PNG"))
    geom = Geometry(affine=image.geometry.affine.copy(), frame="image", disk_shape=arr.shape,
                    source={"path": str(target), "format": "png", "role": "image"})
    return target, geom


def _copy_atomic(src: Path, target: Path) -> None:
    from ..io.atomic import atomic_write

    atomic_write(target, lambda tmp: shutil.copyfile(src, tmp))


def _write_nifti_image(image: Image, target: Path) -> None:
    """A volume (channels last on disk) as NIfTI with the affine its labels get."""
    import nibabel as nib

    from ..io.atomic import atomic_write

    geom = image.geometry
    held = np.asarray(image.array)
    if image.channel_names:
        parts = [geom.nifti_array_and_affine(held[c]) for c in range(held.shape[0])]
        arr, aff = np.stack([p[0] for p in parts], axis=-1), parts[0][1]
    else:
        arr, aff = geom.nifti_array_and_affine(held)
    img = nib.Nifti1Image(np.ascontiguousarray(arr), np.asarray(aff, float))
    img.header.set_xyzt_units("mm")
    img.header.set_sform(aff, code="scanner")
    img.header.set_qform(aff, code="scanner")
    atomic_write(target, lambda tmp: nib.save(img, tmp))


def _radiograph_pixels(arr: np.ndarray, name: Any) -> np.ndarray:
    """Pixels for a PNG: kept as they are when they fit 8 or 16 bits, else scaled to 16 bits."""
    if arr.ndim != 2:
        raise CxsegError(f"{name}: a radiograph must be 2D to be written as PNG, got shape {arr.shape}")
    finite = np.isfinite(arr).all() if arr.dtype.kind == "f" else True
    whole = finite and np.array_equal(arr, np.round(arr))
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if whole and lo >= 0 and hi <= 255:
        return arr.astype(np.uint8)
    if whole and lo >= 0 and hi <= 65535:
        return arr.astype(np.uint16)
    a = np.nan_to_num(arr.astype(np.float64), nan=lo)
    return np.round((a - lo) / max(hi - lo, 1e-12) * 65535).astype(np.uint16)


def write_thumbnail(tset: TrainingSet, entry: Entry, size: int = 96) -> Path:
    """A small RGB picture of a radiograph entry with its labels (``.thumbnails/<case>.png``)."""
    from PIL import Image as PILImage

    from ..io import read
    from ..io.atomic import atomic_write

    image = read(entry.image, as_labels=False)[0]
    labels = read(entry.label, as_labels=True)[0]
    rgb = thumbnail_array(np.asarray(image.array), np.asarray(labels.array), labels.classes, size)
    path = tset.thumbnail_path(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: PILImage.fromarray(rgb).save(tmp, format="PNG"))
    return path


def thumbnail_array(image: np.ndarray, labels: np.ndarray, classes: dict[int, LabelClass],
                    size: int = 96) -> np.ndarray:
    """``(h, w, 3)`` uint8: the image scaled to ``size`` on its long side, labels tinted over it."""
    from PIL import ImageColor

    step = max(1, int(np.ceil(max(image.shape) / size)))
    img = np.asarray(image, float)[::step, ::step]
    lab = np.asarray(labels)[::step, ::step] if labels.shape == image.shape else np.zeros(img.shape, int)
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
    grey = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for k, c in classes.items():
        m = lab == k
        if m.any():
            try:
                colour = np.array(ImageColor.getrgb(c.colour or "#ff0000")[:3], float) / 255
            except ValueError:
                colour = np.array([1.0, 0.0, 0.0])
            rgb[m] = 0.55 * rgb[m] + 0.45 * colour
    return (rgb * 255).astype(np.uint8)
