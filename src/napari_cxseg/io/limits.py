"""How much an input may claim: one memory budget and the checks readers make before allocating.

Every reader works out, from the header alone, how many bytes the pixel data must occupy in the
file and how many the decoded array will take in memory, and calls these checks *before* it
decodes or allocates anything. A header that claims more than the file can hold (a truncated or
forged file) or more than the budget fails at once with a :class:`~napari_cxseg.images.CxsegError`
naming the file and both sizes.

The budget is ``CXSEG_MAX_INPUT_BYTES`` (bytes; ``K``/``M``/``G``/``T`` suffixes are binary
multiples) or, by default, :data:`DEFAULT_FRACTION` of the machine's physical memory. It bounds
the working array of one input (a volume, a radiograph, a label map), not the whole session.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..images import CxsegError

#: Environment variable that sets the budget in bytes.
ENV_VAR = "CXSEG_MAX_INPUT_BYTES"
#: Default budget: this fraction of physical memory (decoding needs a few copies of the array).
DEFAULT_FRACTION = 0.25
#: Budget when physical memory cannot be found.
FALLBACK_BYTES = 4 << 30
#: Deflate (gzip, PNG) expands at most 1032:1 (258-byte matches coded in 2 bits); a header that
#: implies more than this times the compressed size is impossible.
MAX_DEFLATE_RATIO = 1032
#: Largest MSD ``dataset.json`` read (the real ones are under 1 MB).
MAX_DATASET_JSON_BYTES = 64 << 20
#: Largest label sidecar (``*.labels.json``) read.
MAX_SIDECAR_BYTES = 16 << 20
#: Largest model card read (the shipped ones are a few KiB; PyYAML parses about 1 MiB a second).
MAX_CARD_BYTES = 1 << 20

_SUFFIXES = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def physical_memory() -> int | None:
    """Physical memory of this machine in bytes, or ``None`` when the platform does not say.

    Returns
    -------
    int or None
    """
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and size > 0:
            return int(pages) * int(size)
    except (AttributeError, ValueError, OSError):
        pass
    try:  # Windows
        import ctypes

        class _Status(ctypes.Structure):
            _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong)] + [
                (n, ctypes.c_ulonglong)
                for n in ("total", "avail", "tpage", "apage", "tvirt", "avirt", "aext")
            ]

        st = _Status()
        st.length = ctypes.sizeof(_Status)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(st)):  # type: ignore[attr-defined]
            return int(st.total)
    except Exception:  # noqa: BLE001 - any failure means "unknown"
        pass
    return None


def parse_bytes(text: str) -> int:
    """``"8G"`` -> 8589934592; plain integers are bytes.

    Parameters
    ----------
    text
        A non-negative number with an optional ``K``, ``M``, ``G`` or ``T`` suffix (binary
        multiples; a trailing ``B``/``iB`` is accepted).

    Returns
    -------
    int

    Raises
    ------
    ValueError
        For anything else.
    """
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _SUFFIXES else ""
    number = float(t[: len(t) - len(unit)] if unit else t)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"not a positive size: {text!r}")
    return int(number * _SUFFIXES[unit])


def max_input_bytes() -> int:
    """The memory budget for one input, in bytes.

    Returns
    -------
    int
        ``CXSEG_MAX_INPUT_BYTES`` when set, else :data:`DEFAULT_FRACTION` of physical memory
        (:data:`FALLBACK_BYTES` when that is unknown).

    Raises
    ------
    CxsegError
        When ``CXSEG_MAX_INPUT_BYTES`` is set but is not a size.
    """
    value = os.environ.get(ENV_VAR, "").strip()
    if value:
        try:
            return parse_bytes(value)
        except ValueError:
            raise CxsegError(
                f"{ENV_VAR}={value!r} is not a size in bytes (examples: 2000000000, 8G, 512M)"
            ) from None
    mem = physical_memory()
    return int(mem * DEFAULT_FRACTION) if mem else FALLBACK_BYTES


def human(nbytes: int | float) -> str:
    """``1536`` -> ``"1.5 KiB"`` (binary units, for messages).

    Parameters
    ----------
    nbytes
        A byte count.

    Returns
    -------
    str
    """
    n = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"  # pragma: no cover - unreachable


def exact(nbytes: int) -> str:
    """``2400`` -> ``"2.34 KiB (2400 bytes)"``; small counts as plain bytes (for messages).

    Parameters
    ----------
    nbytes
        A byte count.

    Returns
    -------
    str
    """
    n = int(nbytes)
    return f"{n} bytes" if abs(n) < 1024 else f"{human(n)} ({n} bytes)"


def check_budget(path: str | os.PathLike, nbytes: int, what: str) -> None:
    """Refuse an input whose decoded array would exceed the memory budget.

    Parameters
    ----------
    path
        The file (named in the message).
    nbytes
        Bytes the reader would allocate for the decoded array.
    what
        What the header describes, e.g. ``"a 512 x 512 x 300 int16 volume"``.

    Raises
    ------
    CxsegError
        When ``nbytes`` exceeds :func:`max_input_bytes`.
    """
    budget = max_input_bytes()
    if nbytes > budget:
        raise CxsegError(
            f"cannot read {path}: its header describes {what}, which needs {exact(nbytes)} in "
            f"memory, more than the budget of {human(budget)} for one input (set {ENV_VAR} to "
            "raise it if the file is genuine)"
        )


def check_file_holds(
    path: str | os.PathLike, needed: int, available: int, what: str
) -> None:
    """Refuse a header that implies more stored bytes than the file holds.

    Parameters
    ----------
    path
        The file.
    needed
        Bytes the header says the (uncompressed) data occupy in the file.
    available
        Bytes the file really holds for them.
    what
        What the header describes.

    Raises
    ------
    CxsegError
        When ``needed > available``.
    """
    if needed > available:
        raise CxsegError(
            f"cannot read {path}: its header describes {what}, {exact(needed)} of data, but the "
            f"file holds only {exact(available)}: the header is wrong or the file is truncated"
        )


def check_deflate(path: str | os.PathLike, needed: int, compressed: int, what: str) -> None:
    """Refuse a compressed file whose header implies more than deflate can expand to.

    Parameters
    ----------
    path
        The gzip or PNG file.
    needed
        Uncompressed bytes the header implies.
    compressed
        The file's size in bytes.
    what
        What the header describes.

    Raises
    ------
    CxsegError
        When ``needed`` exceeds :data:`MAX_DEFLATE_RATIO` times ``compressed`` (plus a little
        for headers).
    """
    bound = MAX_DEFLATE_RATIO * max(int(compressed), 0) + 4096
    if needed > bound:
        raise CxsegError(
            f"cannot read {path}: its header describes {what}, {exact(needed)} of data, but a "
            f"compressed file of {exact(compressed)} can expand to at most {exact(bound)} "
            f"(deflate packs at most {MAX_DEFLATE_RATIO}:1): the header is wrong or forged"
        )


def input_file_size(path: str | os.PathLike, what: str = "a file", empty_ok: bool = False) -> int:
    """The size of an input that must be a regular, non-empty file.

    Parameters
    ----------
    path
        The file.
    what
        What it should be, for messages (``"an image file"``).
    empty_ok
        Return 0 for an empty file (the caller says why that is wrong) instead of raising.

    Returns
    -------
    int
        Its size in bytes.

    Raises
    ------
    CxsegError
        Missing (or a broken link), a folder, a device, pipe or socket, empty, or a path the
        system refuses (too long, a loop of links); the message names it.
    """
    import stat

    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise CxsegError(f"no such file: {p}") from None
    except OSError as e:  # ENAMETOOLONG, ELOOP, EACCES ...
        raise CxsegError(f"cannot read {p}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CxsegError(f"{p} is a folder, not {what}")
    if not stat.S_ISREG(st.st_mode):
        raise CxsegError(f"cannot read {p}: it is not a regular file (a device, pipe or socket)")
    if st.st_size == 0 and not empty_ok:
        raise CxsegError(f"cannot read {p}: the file is empty")
    return int(st.st_size)


def check_file_size(path: str | os.PathLike, limit: int, what: str) -> None:
    """Refuse a small-by-nature file (JSON) that is larger than ``limit`` bytes.

    Parameters
    ----------
    path
        The file.
    limit
        Largest size accepted.
    what
        What the file should be, e.g. ``"an MSD dataset.json"``.

    Raises
    ------
    CxsegError
        When the file is larger than ``limit``.
    """
    size = Path(path).stat().st_size
    if size > limit:
        raise CxsegError(
            f"cannot read {path}: it is {human(size)}, too large for {what} "
            f"(at most {human(limit)})"
        )


def dims_text(shape: tuple[int, ...] | list[int], dtype: str) -> str:
    """``(512, 512, 300), "int16"`` -> ``"a 512 x 512 x 300 int16 array"``.

    Parameters
    ----------
    shape
        Dimensions from the header.
    dtype
        Element type name.

    Returns
    -------
    str
    """
    return f"a {' x '.join(str(int(s)) for s in shape)} {dtype} array"
