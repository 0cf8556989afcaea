"""2D label maps -> PNG files of class ids, on the source image's own pixel grid.

A radiograph turned for display when it was read (DICOM PatientOrientation, EXIF orientation)
is turned back, so pixel (r, c) of the PNG labels pixel (r, c) of the file the image came from.
The PNG carries the EXIF orientation that turns it for display again, and its sidecar
(``<name>.png.labels.json``) records the classes and the geometry (that reorientation included),
so reading the PNG back lands on the held image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import Geometry
from ..images import CxsegError, LabelMap
from .label_values import to_label_array
from .orientation import EXIF_ORIENTATION_TAG, exif_value_of


def _file_grid(arr: np.ndarray, geom: Geometry, path: Path) -> tuple[np.ndarray, Any]:
    """Held labels back on the source file's own pixel grid, and the EXIF to write with them.

    The PNG gets the EXIF orientation that turns its stored grid into the held display (the
    source's own tag for a JPEG/PNG source, the equivalent of its PatientOrientation for a DICOM
    one), so the labels read back the right way round even without their sidecar, and
    EXIF-aware tools show them as the source is shown.
    """
    if geom.ndim != 2 or geom.disk_ornt is None:
        return arr, None
    stored = geom.to_disk(arr)
    if geom.disk_shape is not None and tuple(stored.shape) != tuple(geom.disk_shape):
        raise CxsegError(
            f"cannot write {path}: the label array (shape {arr.shape}) does not fit the grid of "
            f"its source image {geom.source.get('path')} (shape {geom.disk_shape} as stored)"
        )
    from PIL import Image as PILImage

    exif = PILImage.Exif()
    exif[EXIF_ORIENTATION_TAG] = exif_value_of(geom.disk_ornt)
    return stored, exif


def write_png_labels(
    label_map: LabelMap, path: str | os.PathLike, overwrite: bool = False
) -> list[str]:
    """Write a 2D label map as a PNG of class ids, plus its ``.labels.json`` sidecar.

    Parameters
    ----------
    label_map
        2D integer label map (leading axes of length 1 are dropped). Ids up to 255 are written
        as 8-bit, up to 65535 as 16-bit grey.
    path
        ``.png`` target.
    overwrite
        Replace an existing label file (never an image: see :func:`~.atomic.check_target`).

    Returns
    -------
    list of str
        The PNG path and the sidecar path (class names, colours, geometry with ``spacing``).
        The PNG is on the source image's own pixel grid: a radiograph that was turned for
        display (DICOM PatientOrientation, EXIF) is turned back, and the EXIF orientation that
        turns it for display again is written with it.

    Raises
    ------
    CxsegError
        A label map that is not 2D, ids above 65535 or not non-negative integers, an unsafe
        target, an unwritable folder. Nothing is written then.
    """
    from PIL import Image as PILImage

    from .atomic import atomic_write, check_target
    from .sidecar import write_sidecar

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise CxsegError(f"cannot write {path} as PNG: the name must end in .png")
    arr = np.asarray(label_map.array)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise CxsegError(
            f"cannot write {path}: PNG holds 2D labels only, this label map has shape "
            f"{label_map.array.shape}; save it as NIfTI (.nii.gz) or DICOM SEG (.dcm)"
        )
    arr = to_label_array(arr, path)
    if arr.dtype == np.int32:
        raise CxsegError(f"cannot write {path}: class ids above 65535 do not fit in a PNG")
    geom = label_map.geometry
    stored, exif = _file_grid(arr, geom, path)
    check_target(path, label_map, overwrite)
    pil = PILImage.fromarray(np.ascontiguousarray(stored))
    if exif is None:
        atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))
    else:
        atomic_write(path, lambda tmp: pil.save(tmp, format="PNG", exif=exif))
    gdict = geom.to_dict()
    if geom.ndim == 2:
        gdict["spacing"] = [float(s) for s in geom.spacing]
    ref = label_map.meta.get("reference_image_path")
    src = geom.source or {}
    if not ref and src.get("role") == "image" and src.get("path") and str(src["path"]) != str(path):
        ref = str(src["path"])
    sc = write_sidecar(label_map, path, geometry=gdict, reference_image=ref)
    return [str(path), sc]
