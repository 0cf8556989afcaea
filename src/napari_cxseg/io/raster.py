"""PNG/JPEG radiographs and 2D masks (Pillow).

Radiographs live in their detector plane (``frame="image"``, world = (row, column) mm, 1 mm
pixels unless the sidecar says otherwise) and are shown as stored. Masks become label maps:
lossy JPEG masks (CXLSeg) are thresholded at half their maximum.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import Geometry
from ..images import CxsegError, Image, LabelClass, LabelMap
from .nifti import count_values, default_classes, integer_valued, to_label_array
from .sidecar import classes_from_sidecar, has_label_name, label_stem, read_sidecar

#: Without a hint, a lossless grey image with at most this many values is a mask.
FEW_VALUES = 16
#: With a name hint, at most this many values (or colours) still make a mask.
HINTED_VALUES = 256

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def raster_kind(path: str | os.PathLike) -> str | None:
    """The raster format of a file from its first bytes.

    Parameters
    ----------
    path
        Any file.

    Returns
    -------
    str or None
        ``"png"``, ``"jpeg"`` or ``None`` (also when the file cannot be read).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    return None


def _open(path: Path) -> Any:
    from PIL import Image as PILImage

    if not path.exists():
        raise CxsegError(f"no such file: {path}")
    if path.is_dir():
        raise CxsegError(f"{path} is a folder, not an image file")
    if path.stat().st_size == 0:
        raise CxsegError(f"cannot read {path}: the file is empty")
    try:
        im = PILImage.open(path)
        im.load()
    except Exception as e:  # UnidentifiedImageError, truncated data (OSError), bombs ...
        raise CxsegError(f"cannot read {path} as a PNG/JPEG image: {e}") from e
    return im


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma (Pillow's ``convert("L")`` weights) in float32."""
    rgb = rgb[..., :3].astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _grey(im: Any, path: Path) -> np.ndarray:
    """Grey pixel values as stored: uint8/uint16/float32 grey, float32 luminance for colour."""
    mode = im.mode
    if mode in ("L", "P", "LA", "La", "PA"):
        if mode.startswith("P"):
            rgb = np.asarray(im.convert("RGB"))
            if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
                return rgb[..., 0]
            return _luminance(rgb)
        a = np.asarray(im)
        return a[..., 0] if a.ndim == 3 else a
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if mode == "I":
        a = np.asarray(im)
        if a.size and a.min() >= 0 and a.max() <= 65535:
            return a.astype(np.uint16)
        return a.astype(np.float32)
    if mode == "F":
        return np.asarray(im, dtype=np.float32)
    if mode == "1":
        return np.asarray(im).astype(np.uint8)
    rgb = np.asarray(im.convert("RGB")) if mode not in ("RGB", "RGBA", "RGBX") else np.asarray(im)
    if rgb.ndim != 3:
        raise CxsegError(f"cannot read {path}: unsupported pixel mode {mode}")
    return _luminance(rgb)


def _is_colour(im: Any) -> bool:
    return im.mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _colour_ids(rgb: np.ndarray) -> tuple[np.ndarray, dict[int, LabelClass]]:
    """Class ids for a colour mask: black is background, each other colour one class."""
    rgb = np.ascontiguousarray(rgb[..., :3])
    packed = (
        rgb[..., 0].astype(np.uint32) << 16 | rgb[..., 1].astype(np.uint32) << 8 | rgb[..., 2]
    )
    colours, inverse = np.unique(packed, return_inverse=True)
    ids = np.zeros(colours.size, dtype=np.int64)
    classes: dict[int, LabelClass] = {}
    next_id = 1
    for i, c in enumerate(colours):
        if c == 0:
            continue
        ids[i] = next_id
        hexc = f"#{int(c):06x}"
        classes[next_id] = LabelClass(f"class {next_id}", hexc)
        next_id += 1
    return ids[inverse.reshape(packed.shape)], classes


def _decide(
    im: Any, grey: np.ndarray, path: Path, kind: str, as_labels: bool | None, sidecar: dict | None
) -> bool:
    if as_labels is not None:
        return bool(as_labels)
    if sidecar and isinstance(sidecar.get("classes"), dict):
        return True
    hinted = has_label_name(path)
    if kind == "jpeg":  # lossy: values spread, only the name can tell
        return hinted
    if im.mode.startswith("P"):  # palette indices are class ids (VOC-style masks)
        return hinted or count_values(np.asarray(im), FEW_VALUES) is not None
    if _is_colour(im) and not _grey_rgb(im):
        return hinted and _n_colours(im) <= HINTED_VALUES
    if not integer_valued(grey):
        return False
    return count_values(grey, HINTED_VALUES if hinted else FEW_VALUES) is not None


def _grey_rgb(im: Any) -> bool:
    if im.mode not in ("RGB", "RGBA", "RGBX"):
        return False
    a = np.asarray(im)
    return np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])


def _n_colours(im: Any) -> int:
    a = np.asarray(im.convert("RGB"))
    packed = a[..., 0].astype(np.uint32) << 16 | a[..., 1].astype(np.uint32) << 8 | a[..., 2]
    return int(np.unique(packed).size)


def _geometry(shape: tuple[int, int], sidecar: dict | None, source: dict[str, Any]) -> Geometry:
    """Detector-plane geometry: the sidecar's when it fits, else 1 mm pixels at the origin."""
    aff = np.eye(3)
    g = (sidecar or {}).get("geometry") if sidecar else None
    if isinstance(g, dict):
        try:
            a = np.asarray(g.get("affine"), dtype=float)
            if a.shape == (3, 3) and np.isfinite(a).all() and abs(np.linalg.det(a)) > 0:
                aff = a
            elif g.get("spacing") is not None:
                sp = np.asarray(g["spacing"], dtype=float)
                if sp.shape == (2,) and (sp > 0).all():
                    aff = np.diag([sp[0], sp[1], 1.0])
        except (TypeError, ValueError):
            pass
    return Geometry(affine=aff, frame="image", disk_shape=shape, source=source)


def read_raster(path: str | os.PathLike, as_labels: bool | None = None) -> Image | LabelMap:
    """Read a PNG or JPEG as a radiograph :class:`Image` or a 2D :class:`LabelMap`.

    Parameters
    ----------
    path
        ``.png``, ``.jpg`` or ``.jpeg`` file.
    as_labels
        Force (True) or forbid (False) a label map. By default: a sidecar with classes, a name
        hint (``*mask*``, ``*label*``, ``*seg*``), or (PNG) few distinct grey values.

    Returns
    -------
    Image or LabelMap
        Images: 8-bit grey as float32 (values kept), 16-bit grey as uint16, colour as float32
        luminance; ``frame="image"``, modality ``"XR"``. Label maps: JPEG masks thresholded at
        half their maximum (class 1); binary 0/255 PNG masks become 0/1; palette PNGs keep their
        indices; colour masks get one class per colour.

    Raises
    ------
    CxsegError
        Missing, empty or undecodable file (names it).
    """
    path = Path(path)
    im = _open(path)
    kind = raster_kind(path) or ("jpeg" if (im.format or "").upper() == "JPEG" else "png")
    sidecar = read_sidecar(path)
    grey = _grey(im, path)
    is_labels = _decide(im, grey, path, kind, as_labels, sidecar)
    source = {"path": str(path), "format": kind, "role": "labels" if is_labels else "image"}
    geom = _geometry(tuple(grey.shape), sidecar, source)
    meta: dict[str, Any] = {"source_path": str(path), "name": label_stem(path), "warnings": []}
    if not is_labels:
        if grey.dtype == np.uint8:
            meta["window"] = (0.0, 255.0)
            grey = grey.astype(np.float32)
        return Image(array=np.ascontiguousarray(grey), geometry=geom, modality="XR", meta=meta)

    classes = classes_from_sidecar(sidecar)
    if sidecar and sidecar.get("reference_image"):
        meta["reference_image_path"] = str(sidecar["reference_image"])
    if kind == "jpeg":
        g = grey.astype(np.float32)
        hi = float(g.max()) if g.size else 0.0
        ids = (g > hi / 2).astype(np.uint8) if hi > 0 else np.zeros(g.shape, np.uint8)
        default = {1: LabelClass("foreground")}
        if len(classes) == 1:  # a one-class sidecar names the mask's class
            (cid, cls), = classes.items()
            ids = ids * np.uint8(cid) if cid <= 255 else ids.astype(np.uint16) * np.uint16(cid)
            default = {cid: cls}
        arr = to_label_array(ids, path)
        return LabelMap(array=np.array(arr, copy=True), geometry=geom, classes=classes or default, meta=meta)
    if im.mode.startswith("P"):
        arr = to_label_array(np.asarray(im), path)
    elif _is_colour(im) and not _grey_rgb(im):
        ids, colour_classes = _colour_ids(np.asarray(im.convert("RGB")))
        arr = to_label_array(ids, path)
        classes = classes or colour_classes
    else:
        arr = to_label_array(grey, path)
        values = np.unique(arr)
        if not classes and values.size == 2 and values[0] == 0 and values[1] in (255, 65535):
            arr = (arr > 0).astype(np.uint8)  # a 0/255 binary mask: one class
    return LabelMap(array=np.ascontiguousarray(arr), geometry=geom, classes=classes or default_classes(arr), meta=meta)


def raster_holds_labels(path: str | os.PathLike) -> bool:
    """True when an existing PNG/JPEG holds a mask or class ids (not a photo or radiograph).

    Parameters
    ----------
    path
        A PNG or JPEG file.

    Returns
    -------
    bool
        False for unreadable files.
    """
    p = Path(path)
    try:
        im = _open(p)
        grey = _grey(im, p)
    except CxsegError:
        return False
    kind = raster_kind(p) or "png"
    return _decide(im, grey, p, kind, None, read_sidecar(p))


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
    check_target(path, label_map, overwrite)
    pil = PILImage.fromarray(np.ascontiguousarray(arr))
    atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))
    geom = label_map.geometry
    gdict = geom.to_dict()
    if geom.ndim == 2:
        gdict["spacing"] = [float(s) for s in geom.spacing]
    ref = label_map.meta.get("reference_image_path")
    src = geom.source or {}
    if not ref and src.get("role") == "image" and src.get("path") and str(src["path"]) != str(path):
        ref = str(src["path"])
    sc = write_sidecar(label_map, path, geometry=gdict, reference_image=ref)
    return [str(path), sc]
