"""The size a NIfTI header implies, checked before nibabel touches the voxels.

The header (348 bytes for NIfTI-1, 540 for NIfTI-2) is read on its own, through ``gzip`` for a
compressed file, and parsed by nibabel's header classes. Its dimensions x element size must fit
in the file (uncompressed: exactly, from the data offset; gzip: within deflate's largest
expansion of the compressed size, because the gzip ISIZE trailer is only the size modulo 2**32)
and in the memory budget of :mod:`.limits`.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from pathlib import Path

from .limits import check_budget, check_deflate, check_file_holds, dims_text

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
            magic = f.read(2)
        if magic == _GZIP_MAGIC:
            with gzip.open(p, "rb") as g:
                head = g.read(540)
        else:
            with open(p, "rb") as f:
                head = f.read(540)
    except (OSError, EOFError, zlib.error):
        return  # unreadable: nibabel's own error names the problem
    hdr = _header(head)
    if hdr is None:
        return
    try:
        stored, in_memory, what = implied_bytes(hdr)
        offset = int(hdr.get_data_offset())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - inconsistent header: nibabel's load will say why
        return
    if magic == _GZIP_MAGIC:
        check_deflate(p, offset + stored, size, what)
    else:
        check_file_holds(p, stored, max(size - offset, 0), what)
    check_budget(p, in_memory, what)
