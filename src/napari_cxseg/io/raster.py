"""PNG/JPEG radiographs and 2D masks (Pillow).

Radiographs live in their detector plane (``frame="image"``, world = (row, column) mm, 1 mm
pixels unless the sidecar says otherwise). An EXIF orientation (tag 274, PNG or JPEG) is
honoured as a transpose/flip of the held array (``PIL.ImageOps.exif_transpose`` semantics,
inverted exactly by the writer); without one the image is shown as stored and
``meta["orientation"]["known"]`` is False. Masks become label maps: lossy JPEG masks (CXLSeg) are
thresholded at half their maximum. The header's size is checked against the file and the memory
budget (:mod:`.limits`) before any pixel is decoded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import Geometry, radiograph_geometry
from ..images import CxsegError, Image, LabelClass, LabelMap
from .label_values import count_values, default_classes, integer_valued, to_label_array
from .orientation import EXIF_ORIENTATION_TAG, Orientation, from_exif
from .png_labels import write_png_labels
from .sidecar import (
    classes_from_sidecar,
    find_sidecar,
    has_label_name,
    label_stem,
    note_sidecar,
    read_sidecar,
    sidecar_confirms_labels,
)

__all__ = ["raster_kind", "read_raster", "raster_holds_labels", "write_png_labels"]

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


#: Fewest bits a stored pixel of each Pillow mode can take in a PNG (1-bit grey and palettes).
_PNG_MIN_BITS = {"LA": 16, "RGB": 24, "RGBA": 32, "I;16": 16, "I;16B": 16, "I": 16}
#: Bytes per pixel of the decoded image in Pillow, by mode (default 1 per band).
_BAND_BYTES = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}


def _header_image(path: Path, kind: str | None) -> Any:
    """The Pillow image with only its header read (no pixel decoded, no size limit of its own)."""
    from PIL import Image as PILImage
    from PIL import JpegImagePlugin, PngImagePlugin

    if kind == "png":
        return PngImagePlugin.PngImageFile(str(path))
    if kind == "jpeg":
        return JpegImagePlugin.JpegImageFile(str(path))
    return PILImage.open(path)  # another format under a PNG/JPEG name: Pillow's own checks


def check_raster_size(im: Any, path: Path, kind: str | None) -> None:
    """Refuse a PNG/JPEG whose header claims more pixels than the file or the budget allows.

    Parameters
    ----------
    im
        The Pillow image, header read only.
    path
        Its file.
    kind
        ``"png"``, ``"jpeg"`` or ``None``.

    Raises
    ------
    CxsegError
        A PNG whose scanlines could not come out of a file this size (deflate expands at most
        1032:1), more pixels than Pillow's decompression-bomb limit (twice
        ``PIL.Image.MAX_IMAGE_PIXELS``, as ``PIL.Image.open`` enforces; ``None`` lifts it), or a
        decoded image (plus its float32 grey copy) beyond the memory budget.
    """
    from PIL import Image as PILImage

    from .limits import check_budget, check_deflate

    w, h = (int(v) for v in im.size)
    bands = len(im.getbands())
    what = f"a {w} x {h} {im.mode} image"
    if kind == "png":
        bits = _PNG_MIN_BITS.get(im.mode, 1)
        check_deflate(path, h * (1 + (w * bits + 7) // 8), path.stat().st_size, what)
    limit = PILImage.MAX_IMAGE_PIXELS
    if limit and w * h > 2 * limit:
        raise CxsegError(
            f"cannot read {path}: its header describes {what} ({w * h} pixels, in a file of "
            f"{path.stat().st_size} bytes), more than Pillow's decompression-bomb limit of "
            f"{2 * int(limit)} pixels (PIL.Image.MAX_IMAGE_PIXELS)"
        )
    check_budget(path, w * h * (bands * _BAND_BYTES.get(im.mode, 1) + 4), what)


def _open(path: Path) -> Any:
    from .limits import input_file_size

    input_file_size(path, "an image file")  # missing, a folder, a pipe, empty: named refusals
    kind = raster_kind(path)
    try:
        im = _header_image(path, kind)
    except Exception as e:  # UnidentifiedImageError, SyntaxError, bombs, broken headers ...
        raise CxsegError(f"cannot read {path} as a PNG/JPEG image: {e}") from e
    check_raster_size(im, path, kind)
    try:
        im.load()
    except Exception as e:  # truncated data (OSError), decoder errors ...
        raise CxsegError(f"cannot read {path} as a PNG/JPEG image: {e}") from e
    return im


def _exif_orientation(im: Any) -> Any:
    """The EXIF orientation tag (274) of a loaded image, or ``None``."""
    try:
        return im.getexif().get(EXIF_ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 - damaged EXIF: treated as absent
        return None


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
    hinted = has_label_name(path)
    if kind == "jpeg":  # lossy: values spread, only the name can tell (never a sidecar)
        return hinted
    if im.mode.startswith("P"):  # palette indices are class ids (VOC-style masks)
        ids = np.asarray(im)
        return hinted or count_values(ids, FEW_VALUES) is not None or sidecar_confirms_labels(ids, sidecar)
    if _is_colour(im) and not _grey_rgb(im):
        return hinted and _n_colours(im) <= HINTED_VALUES
    if integer_valued(grey) and count_values(grey, HINTED_VALUES if hinted else FEW_VALUES) is not None:
        return True
    # a sidecar only confirms lossless grey data that already look like labels
    return sidecar_confirms_labels(grey, sidecar)


def _grey_rgb(im: Any) -> bool:
    if im.mode not in ("RGB", "RGBA", "RGBX"):
        return False
    a = np.asarray(im)
    return np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])


def _n_colours(im: Any) -> int:
    a = np.asarray(im.convert("RGB"))
    packed = a[..., 0].astype(np.uint32) << 16 | a[..., 1].astype(np.uint32) << 8 | a[..., 2]
    return int(np.unique(packed).size)


def _sidecar_affine(sidecar: dict | None) -> np.ndarray | None:
    """The held affine a sidecar records (its ``affine``, else its ``spacing``), when valid."""
    g = (sidecar or {}).get("geometry")
    if not isinstance(g, dict):
        return None
    try:
        a = np.asarray(g.get("affine"), dtype=float)
        if a.shape == (3, 3) and np.isfinite(a).all() and abs(np.linalg.det(a)) > 0:
            return a
        if g.get("spacing") is not None:
            sp = np.asarray(g["spacing"], dtype=float)
            if sp.shape == (2,) and np.isfinite(sp).all() and (sp > 0).all():
                return np.diag([sp[0], sp[1], 1.0])
    except (TypeError, ValueError):
        pass
    return None


def _sidecar_orientation(sidecar: dict | None, shape: tuple[int, int]) -> Orientation | None:
    """The stored->held orientation a label file's sidecar recorded for its image, if it fits."""
    g = (sidecar or {}).get("geometry")
    if not isinstance(g, dict) or g.get("disk_ornt") is None:
        return None
    try:
        ornt = np.asarray(g["disk_ornt"], dtype=float)
        fits = tuple(int(v) for v in g.get("disk_shape") or ()) == tuple(shape)
    except (TypeError, ValueError):
        return None
    if ornt.shape != (2, 2) or not fits or sorted(ornt[:, 0]) != [0, 1] or not set(ornt[:, 1]) <= {-1, 1}:
        return None
    src = g.get("source") if isinstance(g.get("source"), dict) else {}
    info = dict(src.get("orientation") or {}) if isinstance(src.get("orientation"), dict) else {}
    info.update(known=True, via="sidecar")
    info.setdefault("source", "none")
    return Orientation(ornt, info)


def _orientation(im: Any, is_labels: bool, sidecar: dict | None, shape: tuple[int, int]) -> Orientation:
    """EXIF orientation of the file; for a label file without one, its sidecar's (its image's)."""
    value = _exif_orientation(im)
    if value is None and is_labels:
        found = _sidecar_orientation(sidecar, shape)
        if found is not None:
            return found
    return from_exif(value)


def _geometry(
    shape: tuple[int, int], sidecar: dict | None, source: dict[str, Any], orientation: Orientation
) -> Geometry:
    """Detector-plane geometry: the sidecar's affine when it has one, else 1 mm pixels."""
    return radiograph_geometry(
        shape, (1.0, 1.0), orientation.ornt, source=source, affine=_sidecar_affine(sidecar)
    )


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
    lookup = find_sidecar(path)
    sidecar = lookup.data
    grey = _grey(im, path)
    is_labels = _decide(im, grey, path, kind, as_labels, sidecar)
    shape = (int(grey.shape[0]), int(grey.shape[1]))
    orientation = _orientation(im, is_labels, sidecar, shape)
    source = {
        "path": str(path),
        "format": kind,
        "role": "labels" if is_labels else "image",
        "orientation": orientation.info,
    }
    geom = _geometry(shape, sidecar, source, orientation)
    meta: dict[str, Any] = {
        "source_path": str(path),
        "name": label_stem(path),
        "warnings": [],
        "orientation": orientation.info,
    }
    note_sidecar(lookup, meta)
    if not is_labels:
        if grey.dtype == np.uint8:
            meta["window"] = (0.0, 255.0)
            grey = grey.astype(np.float32)
        held = np.ascontiguousarray(geom.from_disk(grey))
        return Image(array=held, geometry=geom, modality="XR", meta=meta)

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
        held = np.array(geom.from_disk(arr), copy=True)
        return LabelMap(array=held, geometry=geom, classes=classes or default, meta=meta)
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
    held = np.array(geom.from_disk(arr), copy=True)  # a writable copy (PIL's arrays are not)
    return LabelMap(
        array=held, geometry=geom, classes=classes or default_classes(arr), meta=meta
    )


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
