"""Reading DICOM headers safely: a parse bounded by the file, and header values checked.

pydicom reads an element by allocating the length its header claims, then reading: one damaged
length field (``0x80808080``) asks for 2 GiB before the read finds that the file is 40 KiB.
:func:`dcmread` parses through a read-only memory map of the file instead, whose ``read`` returns
at most what the file holds, so no element of any file can make the parse allocate more than the
file's size (top level and inside sequences alike). Every DICOM file napari-cxseg reads goes
through it (highdicom objects are built from the datasets it returns), and it reads regular files
only: a device (``/dev/zero``) or a pipe would never end. pydicom converts an element's bytes
only when it is first used, so a damaged one (an unknown VR) would raise wherever that happens:
:func:`dcmread` converts them at once (the top level, or everything: the elements inside
sequences cost several times more) and refuses the file, naming it.

Header values are text the file may fill with anything (``PixelSpacing = abc\\nan``), and pydicom
converts them only when they are used. :func:`numbers`, :func:`number` and :func:`integer` read
the ones the readers compute with and raise a :class:`~napari_cxseg.images.CxsegError` naming the
file and the attribute when a value is not what the standard allows (not a number, NaN or
infinite, the wrong count, out of range).
"""

from __future__ import annotations

import math
import mmap
import os
import stat
import warnings
from pathlib import Path
from typing import Any

from ..images import CxsegError

__all__ = ["dcmread", "integer", "number", "numbers"]


def dcmread(path: str | os.PathLike, convert: str = "top", **kwargs: Any) -> Any:
    """``pydicom.dcmread`` of a regular file through a memory map (see the module docstring).

    Parameters
    ----------
    path
        The file.
    convert
        Which elements to convert now: ``"top"`` (the top level), ``"all"`` (inside sequences
        too: readers that walk the functional groups of a multi-frame object) or ``"none"``
        (a size check that reads a few values, each of which may then fail on its own).
    **kwargs
        Passed to ``pydicom.dcmread`` (``stop_before_pixels``, ``force``, ``defer_size``; a
        deferred value can only be read while the map is open, so callers use its length only).

    Returns
    -------
    pydicom.Dataset
        With ``filename`` set to ``path``.

    Raises
    ------
    CxsegError
        When ``path`` is not a regular file or is empty.
    Exception
        Whatever pydicom raises for content that is not DICOM (the readers report it).
    """
    import pydicom

    p = Path(path)
    with open(p, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise CxsegError(f"cannot read {p}: it is not a regular file (a device, pipe or socket)")
        if st.st_size == 0:
            raise CxsegError(f"cannot read {p}: the file is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on each odd value; the readers decide
            ds = pydicom.dcmread(m, **kwargs)
            if convert != "none":
                _convert(ds, p, deep=convert == "all")
    ds.filename = str(p)
    return ds


def _convert(ds: Any, path: Path, deep: bool) -> None:
    """Convert the elements now (pydicom does it on first use, where a damaged one would raise
    anything, anywhere): a structurally damaged element refuses the file, naming it."""
    try:
        for _ in ds.iterall() if deep else ds:
            pass
    except Exception as e:  # noqa: BLE001 - unknown VRs, undecodable values, bad sequences ...
        raise CxsegError(f"cannot read {path}: a header element is damaged ({type(e).__name__}: {e})") from None


def _raw(ds: Any, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except Exception as e:  # noqa: BLE001 - pydicom converts raw bytes on access, and may fail
        return _Unreadable(e)


class _Unreadable:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"<unreadable: {type(self.error).__name__}: {self.error}>"


def _show(value: Any) -> str:
    text = repr(value if not hasattr(value, "__iter__") or isinstance(value, str | bytes)
                else [v for v in value])
    return text if len(text) <= 80 else text[:77] + "..."


def numbers(ds: Any, keyword: str, path: str | os.PathLike, count: int | None = None,
            positive: bool = False, required: bool = True) -> tuple[float, ...] | None:
    """A multi-valued numeric attribute (DS, IS, FD ...) as finite floats.

    Parameters
    ----------
    ds
        The dataset.
    keyword
        The attribute, e.g. ``"ImageOrientationPatient"``.
    path
        The file, named in errors.
    count
        The number of values the attribute must have (``None``: any, at least one).
    positive
        Every value must be above zero (spacings).
    required
        Raise when the attribute is missing or empty (else return ``None``).

    Returns
    -------
    tuple of float or None

    Raises
    ------
    CxsegError
        ``cannot read <file>: its <keyword> <value> is not ...``.
    """
    value = _raw(ds, keyword)
    if value is None or value == "" or (hasattr(value, "__len__") and not isinstance(value, _Unreadable)
                                        and len(value) == 0):
        if required:
            raise CxsegError(f"cannot read {path}: it has no {keyword}")
        return None
    items = [value] if isinstance(value, str | bytes | int | float) else value
    want = f"{count} numbers" if count else "numbers"
    try:
        out = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        out = ()
    if not out or (count is not None and len(out) != count) or not all(math.isfinite(v) for v in out) \
            or (positive and not all(v > 0 for v in out)):
        what = f"{'positive ' if positive else ''}finite {want}"
        raise CxsegError(f"cannot read {path}: its {keyword} {_show(value)} is not {what}")
    return out


def number(ds: Any, keyword: str, path: str | os.PathLike, default: float | None = None,
           positive: bool = False) -> float:
    """A single numeric attribute (its first value when several) as a finite float.

    ``default`` is returned when the attribute is missing or empty; without one, that is an
    error too. Raises :class:`CxsegError` naming the file and the attribute otherwise.
    """
    vals = numbers(ds, keyword, path, None, positive, required=default is None)
    return float(default) if vals is None else vals[0]


def integer(ds: Any, keyword: str, path: str | os.PathLike, default: int,
            lo: int | None = None, hi: int | None = None) -> int:
    """An integer attribute (IS, US ...), ``default`` when missing or empty, within ``[lo, hi]``.

    Raises
    ------
    CxsegError
        When the value is not an integer or out of range (names the file and the attribute).
    """
    value = _raw(ds, keyword)
    if value is None or value == "":
        return int(default)
    try:
        f = float(value)
        ok = math.isfinite(f) and f == int(f)
    except (TypeError, ValueError):
        ok = False
    if not ok or (lo is not None and int(f) < lo) or (hi is not None and int(f) > hi):
        rng = f" in [{lo}, {hi}]" if lo is not None or hi is not None else ""
        raise CxsegError(f"cannot read {path}: its {keyword} {_show(value)} is not an integer{rng}")
    return int(f)
