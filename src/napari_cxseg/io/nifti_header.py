"""The size a NIfTI header implies, checked before nibabel touches the voxels.

The header (348 bytes for NIfTI-1, 540 for NIfTI-2) is read on its own, through ``gzip`` for a
compressed file, and parsed by nibabel's header classes. Its dimensions x element size must fit
in the file (uncompressed: exactly, from the data offset; gzip: within deflate's largest
expansion of the compressed size, because the gzip ISIZE trailer is only the size modulo 2**32)
and in the memory budget of :mod:`.limits`. Header extensions are walked as nibabel will read
them (it allocates each one's claimed size before reading it), and each must lie in the file.

:func:`check_nifti_size` runs before ``nibabel.load``; :func:`check_loaded_header` repeats the
size check on the header nibabel itself parsed (the one its data proxy will use), so a header
this module cannot parse the same way (a NIfTI-1 file whose ``sizeof_hdr`` says NIfTI-2, for
example) cannot slip past.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from pathlib import Path

from ..images import CxsegError
from .limits import MAX_DEFLATE_RATIO, check_budget, check_deflate, check_file_holds, dims_text

_GZIP_MAGIC = b"\x1f\x8b"


def _header(head: bytes) -> object | None:
    """A nibabel NIfTI-1/2 header parsed from the first bytes, or ``None`` when it is not one."""
    import nibabel as nib

    if len(head) < 348:
        return None
    for size, cls in ((348, nib.Nifti1Header), (540, nib.Nifti2Header)):
        if head[:4] in (size.to_bytes(4, "little"), size.to_bytes(4, "big")) and len(head) >= size:
            try:
                return cls.from_fileobj(io.BytesIO(head[:size]), check=False)
            except Exception:  # noqa: BLE001 - malformed header: nibabel's load will say why
                return None
    return None


def implied_bytes(header: object) -> tuple[int, int, str]:
    """Bytes of voxel data a header implies, bytes of the array nibabel will make, and a text.

    Parameters
    ----------
    header
        A ``nibabel`` NIfTI-1 or NIfTI-2 header.

    Returns
    -------
    stored, in_memory, what
        ``prod(dims) x itemsize``; the same for the scaled (float64) array when the header
        has a slope/intercept; e.g. ``"a 512 x 512 x 300 int16 array"``.
    """
    shape = [int(s) for s in header.get_data_shape()]  # type: ignore[attr-defined]
    dtype = header.get_data_dtype()  # type: ignore[attr-defined]
    n = math.prod(max(s, 0) for s in shape)
    stored = n * int(dtype.itemsize)
    slope, inter = header.get_slope_inter()  # type: ignore[attr-defined]
    scaled = (slope is not None and slope != 1) or (inter is not None and inter != 0)
    in_memory = n * (max(int(dtype.itemsize), 8) if scaled else int(dtype.itemsize))
    return stored, in_memory, dims_text(shape, str(dtype))


def _check_extensions(path: Path, stream, header: object, offset: int, available: int | None,
                      bound: int) -> None:
    """Refuse header extensions nibabel would read past the file (or allocate beyond the budget).

    ``stream`` is positioned after the 348/540-byte header; nibabel reads extensions (each an
    8-byte ``esize``/``ecode`` pair, ``esize`` counting those 8 bytes) while 16 or more bytes
    remain before the data offset, and allocates ``esize - 8`` bytes for each before reading.
    """
    from .limits import check_budget, exact

    flag = stream.read(4)
    if len(flag) < 4 or flag[:1] == b"\x00":
        return
    little = header.endianness == "<"  # type: ignore[attr-defined]
    pos = stream.tell()
    left = offset - pos
    total = 0
    while left >= 16:
        head = stream.read(8)
        if len(head) < 8:
            return  # nibabel says the extension header is missing
        esize = int.from_bytes(head[:4], "little" if little else "big", signed=True)
        room = bound if available is None else available - (pos + 8)
        if esize < 8 or esize - 8 > room:
            why = "less than its own 8-byte header" if esize < 8 else "beyond the end of the file"
            raise CxsegError(
                f"cannot read {path}: its header extension at byte {pos} claims "
                f"{exact(esize) if esize > 0 else f'{esize} bytes'}, {why}"
            )
        total += esize
        check_budget(path, total, f"header extensions of {exact(total)}")
        stream.seek(esize - 8, 1)
        pos += esize
        left -= esize


def _sizes(path: Path, header: object, size: int, gzipped: bool) -> None:
    """Refuse a header whose voxels exceed the file (or what it can inflate to) or the budget."""
    try:
        stored, in_memory, what = implied_bytes(header)
        offset = int(header.get_data_offset())  # type: ignore[attr-defined]
    except CxsegError:
        raise
    except Exception as e:  # noqa: BLE001 - nibabel's own error for an inconsistent header
        raise CxsegError(f"cannot read {path} as NIfTI: its header is inconsistent ({e})") from None
    if gzipped:
        check_deflate(path, offset + stored, size, what)
    else:
        check_file_holds(path, stored, max(size - offset, 0), what)
    check_budget(path, in_memory, what)


def check_loaded_header(path: str | os.PathLike, header: object) -> None:
    """Refuse, before any voxel is read, the header ``nibabel.load`` parsed if it claims too much.

    Parameters
    ----------
    path
        The ``.nii`` or ``.nii.gz`` file.
    header
        ``img.header`` of the loaded (not yet read) image.

    Raises
    ------
    CxsegError
        As :func:`check_nifti_size`, and for a header whose size cannot be worked out.
    """
    p = Path(path)
    with open(p, "rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
    _sizes(p, header, p.stat().st_size, gzipped)


def check_nifti_size(path: str | os.PathLike) -> None:
    """Refuse a NIfTI file whose header claims more data than the file or the budget can hold.

    Parameters
    ----------
    path
        A ``.nii`` or ``.nii.gz`` file.

    Raises
    ------
    CxsegError
        When the header's dimensions x element size exceed the file's data (``.nii``), what
        the compressed size can expand to (``.nii.gz``), or the memory budget. Headers that do
        not parse are left to nibabel, whose error the reader reports.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            gzipped = f.read(2) == _GZIP_MAGIC
        opener = gzip.open if gzipped else open
        with opener(p, "rb") as stream:
            head = stream.read(540)
            hdr = _header(head)
            if hdr is None:
                return
            try:
                offset = int(hdr.get_data_offset())  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - inconsistent header: nibabel's load will say why
                return
            stream.seek(len(hdr.binaryblock))  # type: ignore[attr-defined]
            bound = MAX_DEFLATE_RATIO * size + 4096
            _check_extensions(p, stream, hdr, offset, None if gzipped else size, bound)
    except (OSError, EOFError, zlib.error):
        return  # unreadable: nibabel's own error names the problem
    try:
        implied_bytes(hdr)
    except Exception:  # noqa: BLE001 - inconsistent header: checked again after nibabel's load
        return
    _sizes(p, hdr, size, gzipped)
