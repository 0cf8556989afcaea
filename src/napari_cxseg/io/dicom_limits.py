"""The size a DICOM header implies, checked before any pixel is decoded.

Rows x Columns x SamplesPerPixel x NumberOfFrames x BitsAllocated must fit in the Pixel Data
element the file really holds (native transfer syntaxes; compressed pixel data are bounded by
the memory budget only) and the decoded array in the memory budget of :mod:`.limits`. The
header is read with :func:`~.dicom_header.dcmread` (``defer_size``): the pixel data element is
located, never loaded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .limits import check_budget, check_file_holds

#: Pixel data elements (native integer, float, double float).
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_UNDEFINED = 0xFFFFFFFF


def _int(ds: Any, keyword: str, default: int) -> int:
    try:
        v = ds.get(keyword, default)
        return default if v in (None, "") else int(v)
    except Exception:  # noqa: BLE001 - an unconverted element may fail any way: the reader says why
        return default


def pixel_geometry(ds: Any) -> tuple[int, int, int, int, int]:
    """``(rows, columns, samples, frames, bits_allocated)`` from a header (missing -> 0/1).

    Parameters
    ----------
    ds
        A pydicom dataset (pixel data not needed).

    Returns
    -------
    tuple of int
    """
    return (
        max(_int(ds, "Rows", 0), 0),
        max(_int(ds, "Columns", 0), 0),
        max(_int(ds, "SamplesPerPixel", 1), 1),
        max(_int(ds, "NumberOfFrames", 1), 1),
        max(_int(ds, "BitsAllocated", 16), 1),
    )


def stored_pixel_bytes(ds: Any) -> tuple[int, int, str]:
    """Bytes the pixel data occupy uncompressed, pixel count, and a description.

    Parameters
    ----------
    ds
        A pydicom dataset.

    Returns
    -------
    nbytes, pixels, what
        ``ceil(rows x columns x samples x frames x bits / 8)``; ``rows x columns x samples x
        frames``; e.g. ``"1000 frames of 65535 x 65535 pixels, 16 bits"``.
    """
    rows, cols, samples, frames, bits = pixel_geometry(ds)
    pixels = rows * cols * samples * frames
    what = f"{frames} frame(s) of {rows} x {cols} pixel(s)"
    if samples > 1:
        what += f" x {samples} samples"
    what += f", {bits} bits allocated"
    return math.ceil(pixels * bits / 8), pixels, what


def _is_compressed(ds: Any) -> bool:
    try:
        meta = getattr(ds, "file_meta", None)
        ts = meta.get("TransferSyntaxUID") if meta is not None else None
        return bool(ts is not None and ts.is_compressed)
    except Exception:  # noqa: BLE001 - unknown or damaged UID: treated as native (checked exactly)
        return False


def check_dicom_pixels(
    path: str | os.PathLike, working_itemsize: int | Callable[[Any], int] = 8
) -> Any:
    """Refuse a DICOM file whose header claims more pixel data than the file or budget holds.

    Parameters
    ----------
    path
        A DICOM file.
    working_itemsize
        Bytes per decoded sample the reader works in (8 for the float64 display pipeline), or
        a function of the header that gives it.

    Returns
    -------
    pydicom.Dataset or None
        The header (pixel data deferred), or ``None`` when it cannot be parsed (the reader's
        own read then says why).

    Raises
    ------
    CxsegError
        Pixel data shorter than the header implies (native transfer syntaxes), a Pixel Data
        length beyond the end of the file, or a decoded size beyond the memory budget.
    """
    from .dicom_header import dcmread

    p = Path(path)
    try:
        ds = dcmread(p, convert="none", defer_size=1024, force=True)  # bounded by the file
        size = p.stat().st_size
    except Exception:  # noqa: BLE001 - unreadable header: the reader reports it
        return None
    stored, pixels, what = stored_pixel_bytes(ds)
    element = None
    for tag in _PIXEL_TAGS:
        element = ds.get_item(tag, keep_deferred=True)
        if element is not None:
            break
    if element is not None and not _is_compressed(ds):
        length = getattr(element, "length", None)
        tell = getattr(element, "value_tell", None)
        if length is None:  # already read (small element): its value is all there is
            value = getattr(element, "value", b"") or b""
            length = len(value) if isinstance(value, bytes | bytearray) else stored
        if length != _UNDEFINED:
            available = int(length)
            if tell is not None:
                available = min(available, max(size - int(tell), 0))
            check_file_holds(p, stored, available, what)
    itemsize = working_itemsize(ds) if callable(working_itemsize) else working_itemsize
    check_budget(p, pixels * int(itemsize), what)
    return ds


def check_series_pixels(
    files: list[tuple[Path, Any]], itemsize: int = 4
) -> None:
    """Refuse a series whose slice headers claim more than the files or the budget hold.

    Parameters
    ----------
    files
        ``(path, header)`` of each slice (headers read with ``stop_before_pixels``).
    itemsize
        Bytes per voxel of the volume the reader allocates.

    Raises
    ------
    CxsegError
        A slice (native transfer syntax) whose file is smaller than its pixel data must be, or
        a volume (all slices together) beyond the memory budget; the message names the file.
    """
    total = 0
    for path, ds in files:
        stored, pixels, what = stored_pixel_bytes(ds)
        if not _is_compressed(ds):
            try:
                size = path.stat().st_size
            except OSError:
                continue
            check_file_holds(path, stored, size, what)
        total += pixels
    if files:
        first = files[0][0]
        folder = first.parent if len(files) > 1 else first
        rows, cols, _, _, _ = pixel_geometry(files[0][1])
        check_budget(
            folder, total * itemsize, f"a volume of {len(files)} slice(s) of {rows} x {cols}"
        )


def check_volume_budget(path: str | os.PathLike, shape: tuple[int, ...], itemsize: int) -> None:
    """Refuse a volume (e.g. a SEG's reconstructed grid) beyond the memory budget.

    Parameters
    ----------
    path
        The file.
    shape
        The array the reader would allocate.
    itemsize
        Bytes per element.

    Raises
    ------
    CxsegError
    """
    n = math.prod(int(max(s, 0)) for s in shape)
    if n * itemsize <= 0:
        return
    check_budget(path, n * itemsize, f"a {' x '.join(str(int(s)) for s in shape)} grid")


__all__ = [
    "check_dicom_pixels",
    "check_series_pixels",
    "check_volume_budget",
    "pixel_geometry",
    "stored_pixel_bytes",
]
