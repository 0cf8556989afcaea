"""Connected components of a class (3D Slicer's "Islands" effect).

Connectivity is 1 (face neighbours: 4 in 2D, 6 in 3D) by default, as in Slicer; pass
``connectivity=labels.ndim`` for full (8 / 26) neighbourhoods.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from ._grid import as_spacing, check_label_array, fits_dtype


def _components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Component image and the voxel count of each component (index ``i`` = component ``i+1``)."""
    if not 1 <= connectivity <= mask.ndim:
        raise ValueError(f"connectivity must be between 1 and {mask.ndim}, got {connectivity}")
    structure = ndi.generate_binary_structure(mask.ndim, connectivity)
    comp, n = ndi.label(mask, structure=structure)
    sizes = np.bincount(comp.ravel(), minlength=n + 1)[1:]
    return comp, sizes


def _classes(labels: np.ndarray, label: int | None) -> list[int]:
    if label is not None:
        if int(label) == 0:
            raise ValueError("label 0 is the background: choose a class")
        return [int(label)]
    return [int(v) for v in np.unique(labels) if v != 0]


def voxel_size(spacing: float | Sequence[float] | None, ndim: int) -> float:
    """Area (mm², 2D) or volume (mm³, 3D) of one voxel."""
    return float(np.prod(as_spacing(spacing, ndim)))


def component_sizes(
    labels: np.ndarray,
    label: int,
    spacing: float | Sequence[float] | None = None,
    connectivity: int = 1,
) -> list[tuple[int, float]]:
    """Sizes of the islands of class ``label``, largest first.

    Returns
    -------
    list of (int, float)
        ``(voxels, size)`` per island, where size is in mm² (2D) or mm³ (3D) for the given
        ``spacing`` (``None`` = 1 mm voxels, so size equals the voxel count).
    """
    arr = check_label_array(labels)
    _, sizes = _components(arr == int(label), connectivity)
    unit = voxel_size(spacing, arr.ndim)
    return [(int(n), float(n) * unit) for n in sorted(sizes.tolist(), reverse=True)]


def keep_largest(labels: np.ndarray, label: int | None = None, connectivity: int = 1) -> np.ndarray:
    """Keep only the largest island of ``label`` (of every class when ``None``).

    Returns
    -------
    numpy.ndarray
        New array; removed islands become background (0). Ties keep the first island found.
    """
    arr = check_label_array(labels)
    out = arr.copy()
    for k in _classes(arr, label):
        comp, sizes = _components(arr == k, connectivity)
        if sizes.size > 1:
            out[(comp > 0) & (comp != int(np.argmax(sizes)) + 1)] = 0
    return out


def remove_small(
    labels: np.ndarray,
    min_size_mm: float,
    spacing: float | Sequence[float] | None,
    label: int | None = None,
    connectivity: int = 1,
) -> np.ndarray:
    """Remove islands smaller than ``min_size_mm``.

    Parameters
    ----------
    labels
        Integer label array (2D or 3D).
    min_size_mm
        Smallest island to keep: mm² for 2D arrays, mm³ for 3D arrays (1 mL = 1000 mm³).
        Islands of exactly this size are kept.
    spacing
        Voxel size in mm per axis (``None`` = 1 mm, i.e. the threshold counts voxels).
    label
        Class to clean, or ``None`` for every class.
    connectivity
        1 = face neighbours, ``ndim`` = full neighbourhood.

    Returns
    -------
    numpy.ndarray
        New array; removed islands become background (0).
    """
    arr = check_label_array(labels)
    unit = voxel_size(spacing, arr.ndim)
    out = arr.copy()
    for k in _classes(arr, label):
        comp, sizes = _components(arr == k, connectivity)
        small = np.flatnonzero(sizes * unit < min_size_mm - 1e-9) + 1
        if small.size:
            out[np.isin(comp, small)] = 0
    return out


def split_islands(
    labels: np.ndarray,
    label: int,
    start_label: int | None = None,
    connectivity: int = 1,
) -> tuple[np.ndarray, list[int]]:
    """Give every island of ``label`` its own class.

    The largest island keeps ``label``; the others, from larger to smaller, get consecutive new
    ids from ``start_label`` (default: one above the largest id in the array), skipping ids that
    are already used.

    Returns
    -------
    labels : numpy.ndarray
        New array (its dtype is widened when the new ids do not fit).
    new_ids : list of int
        The ids created, largest island first (empty when there was one island or none).
    """
    arr = check_label_array(labels)
    if int(label) == 0:
        raise ValueError("label 0 is the background: choose a class")
    comp, sizes = _components(arr == int(label), connectivity)
    if sizes.size < 2:
        return arr.copy(), []
    used = set(np.unique(arr).tolist())
    nxt = int(arr.max()) + 1 if start_label is None else int(start_label)
    if nxt <= 0:
        raise ValueError(f"start_label must be positive, got {start_label}")
    order = np.argsort(-sizes, kind="stable") + 1  # component numbers, largest first
    new_ids: list[int] = []
    for _ in order[1:]:
        while nxt in used:
            nxt += 1
        new_ids.append(nxt)
        used.add(nxt)
    out = arr.astype(fits_dtype(max(new_ids), arr.dtype), copy=True)
    lut = np.zeros(sizes.size + 1, dtype=out.dtype)
    lut[order[1:]] = new_ids
    moved = lut[comp]
    out[moved > 0] = moved[moved > 0]
    return out, new_ids
