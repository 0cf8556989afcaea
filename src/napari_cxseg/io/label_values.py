"""What the values of an array say about it being a label map (shared by the NIfTI, PNG/JPEG
readers and the sidecar rules): distinct-value counts, integer checks, label dtypes, and the
content tests that a sidecar's claim "this file holds labels" must pass.
"""

from __future__ import annotations

import os

import numpy as np

from ..images import CxsegError, LabelClass

#: A label map's non-zero pixels mostly equal their neighbours (regions, thin boundaries); a
#: radiograph's or scan's do not. Share of equal neighbour pairs a sidecar's claim needs
#: (measured: label maps 0.80-0.99 even on a coarse 2 x 2 x 5 mm grid; radiographs and CT
#: 0.12-0.30).
PIECEWISE_CONSTANT_SHARE = 0.6
#: Pixels looked at when testing for regions (a strided sample of large arrays).
_SAMPLE_PAIRS = 2_000_000


def count_values(arr: np.ndarray, limit: int) -> int | None:
    """Number of distinct values in ``arr`` when it is at most ``limit``, else ``None``.

    Integer data in ``[0, 65535]`` are counted with ``bincount`` (fast on big volumes); other data
    are screened on a subsample first so that images with many values stop early.

    Parameters
    ----------
    arr
        Any array.
    limit
        Largest count of interest.

    Returns
    -------
    int or None
    """
    a = arr.ravel()
    if a.size == 0:
        return 0
    step = max(1, a.size // 100_000)
    if np.unique(a[::step]).size > limit:
        return None
    counts = _bincount(a)
    n = int(np.count_nonzero(counts)) if counts is not None else int(np.unique(a).size)
    return n if n <= limit else None


def _bincount(a: np.ndarray) -> np.ndarray | None:
    """Counts of the values of flat non-negative integer data below 65536, in bounded memory."""
    if a.dtype.kind not in "uib" or a.size == 0 or a.min() < 0 or int(a.max()) >= 65536:
        return None
    hi = int(a.max())
    counts = np.zeros(hi + 1, dtype=np.int64)
    chunk = 1 << 22
    for i in range(0, a.size, chunk):
        counts += np.bincount(a[i : i + chunk].astype(np.intp), minlength=hi + 1)
    return counts


def integer_valued(arr: np.ndarray) -> bool:
    """True for non-negative integer data, or floats that hold only such values.

    Parameters
    ----------
    arr
        Any array.

    Returns
    -------
    bool
        False for negative, fractional or non-finite values.
    """
    if arr.size == 0:
        return True
    if arr.dtype.kind == "b":
        return True
    if arr.dtype.kind in "iu":
        return arr.min() >= 0
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or arr.min() < 0:
            return False
        return bool(np.all(arr == np.round(arr)))
    return False


def to_label_array(arr: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """Class ids in the smallest unsigned type that holds them (int32 beyond uint16).

    Parameters
    ----------
    arr
        Non-negative integer values (any dtype).
    path
        The file, named in errors.

    Returns
    -------
    numpy.ndarray
        uint8, uint16 or int32.

    Raises
    ------
    CxsegError
        For negative or non-integer values (names ``path``).
    """
    if not integer_valued(arr):
        raise CxsegError(
            f"{path} cannot be a label map: its values are not non-negative integers "
            f"(dtype {arr.dtype})"
        )
    hi = int(arr.max()) if arr.size else 0
    if hi <= 255:
        dtype = np.uint8
    elif hi <= 65535:
        dtype = np.uint16
    elif hi <= np.iinfo(np.int32).max:
        dtype = np.int32
    else:
        raise CxsegError(f"{path}: class id {hi} is too large for a label map")
    return arr.astype(dtype, copy=False)


def default_classes(arr: np.ndarray) -> dict[int, LabelClass]:
    """Generic names for the classes present in a label array.

    Parameters
    ----------
    arr
        Non-negative integer label array.

    Returns
    -------
    dict
        ``{id: LabelClass("class <id>")}`` for every non-zero id present.
    """
    a = arr.ravel()
    counts = _bincount(a)
    ids = np.flatnonzero(counts) if counts is not None else np.unique(a)
    return {int(i): LabelClass(f"class {int(i)}") for i in ids if int(i) != 0}


def piecewise_constant(arr: np.ndarray, share: float = PIECEWISE_CONSTANT_SHARE) -> bool:
    """True when the array is made of regions: most neighbour pairs that touch a non-zero value
    are equal.

    Parameters
    ----------
    arr
        Any array (2D or 3D spatial).
    share
        Smallest share of equal pairs (averaged over the axes) among pairs where one value is
        non-zero.

    Returns
    -------
    bool
        True also for arrays with no non-zero pairs (all background).
    """
    a = np.asarray(arr)
    equal = touched = 0
    step = max(1, -(-a.size // _SAMPLE_PAIRS))
    for axis in range(a.ndim):
        n = a.shape[axis]
        if n < 2:
            continue
        lo, hi = [slice(None)] * a.ndim, [slice(None)] * a.ndim
        lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
        if a.ndim > 1:  # sample big arrays along another axis (views: no copy until compared)
            other = 1 if axis == 0 else 0
            lo[other] = hi[other] = slice(None, None, min(step, a.shape[other]))
        first, second = a[tuple(lo)], a[tuple(hi)]
        mask = (first != 0) | (second != 0)
        touched += int(np.count_nonzero(mask))
        equal += int(np.count_nonzero(first[mask] == second[mask]))
    return touched == 0 or equal >= share * touched


def values_are_classes(arr: np.ndarray, class_ids: set[int] | frozenset[int]) -> bool:
    """True when every non-zero value of ``arr`` is one of ``class_ids`` (non-negative integers).

    Parameters
    ----------
    arr
        Label candidate.
    class_ids
        Ids named by a sidecar.

    Returns
    -------
    bool
    """
    if not integer_valued(arr):
        return False
    if count_values(arr, len(class_ids) + 1) is None:
        return False
    counts = _bincount(arr.ravel())
    present = np.flatnonzero(counts) if counts is not None else np.unique(arr)
    return all(int(v) == 0 or int(v) in class_ids for v in present)
