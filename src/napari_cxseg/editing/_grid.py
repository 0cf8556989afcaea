"""Voxel-grid arithmetic shared by the editing tools: spacing, mm-sized footprints, crops."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_spacing(spacing: float | Sequence[float] | np.ndarray | None, ndim: int) -> np.ndarray:
    """Voxel size in mm per array axis as a float array of length ``ndim``.

    ``None`` means 1 mm along every axis; a scalar is used for every axis.
    """
    if spacing is None:
        return np.ones(ndim)
    sp = np.asarray(spacing, dtype=float)
    if sp.ndim == 0:
        sp = np.full(ndim, float(sp))
    if sp.shape != (ndim,):
        raise ValueError(f"spacing {tuple(sp.tolist())} does not match a {ndim}D array")
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be positive, got {tuple(sp.tolist())}")
    return sp


def mm_to_voxels(mm: float | Sequence[float], spacing: np.ndarray) -> np.ndarray:
    """Whole number of voxels per axis that covers ``mm`` millimetres (rounded up)."""
    return np.ceil(np.asarray(mm, float) / spacing - 1e-9).astype(int)


def ellipsoid_footprint(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Boolean structuring element holding the voxels within ``radius_mm`` of the centre.

    On an anisotropic grid this is an ellipsoid in voxel units (a sphere in mm). An axis whose
    voxel is larger than the radius gets an extent of one voxel.
    """
    half = np.floor(radius_mm / spacing + 1e-9).astype(int)
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    d2 = sum((g * s) ** 2 for g, s in zip(grids, spacing, strict=True))
    return d2 <= radius_mm**2 + 1e-9


def bounding_slices(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of the True voxels as slices, or ``None`` for an empty mask."""
    if not mask.any():
        return None
    out = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        hit = np.flatnonzero(mask.any(axis=other))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def grow_slices(
    slices: Sequence[slice], pad: int | Sequence[int], shape: Sequence[int]
) -> tuple[slice, ...]:
    """Enlarge a box by ``pad`` voxels per axis, clipped to ``shape``."""
    pad = np.broadcast_to(np.asarray(pad, int), (len(shape),))
    return tuple(
        slice(max(0, s.start - int(p)), min(int(n), s.stop + int(p)))
        for s, p, n in zip(slices, pad, shape, strict=True)
    )


def fits_dtype(value: int, dtype: np.dtype) -> np.dtype:
    """``dtype`` if it can hold ``value``, else the smallest integer type that can."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer) and np.iinfo(dtype).min <= value <= np.iinfo(dtype).max:
        return dtype
    if not np.issubdtype(dtype, np.integer):  # boolean masks become small integer arrays
        dtype = np.dtype(np.uint8)
    return np.promote_types(dtype, np.min_scalar_type(int(value)))


def check_label_array(labels: np.ndarray) -> np.ndarray:
    """The label array as an ndarray, refusing non-integer data with a clear message."""
    arr = np.asarray(labels)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise TypeError(f"labels must be an integer array, got dtype {arr.dtype}")
    return arr


def paint(
    labels: np.ndarray,
    label: int,
    new_mask: np.ndarray,
    overwrite: bool = False,
    region: tuple[slice, ...] | None = None,
) -> np.ndarray:
    """Copy of ``labels`` where class ``label`` becomes ``new_mask``.

    Voxels of ``label`` outside ``new_mask`` become background. Voxels inside ``new_mask`` get
    ``label`` when they are background (or ``label``), or any class when ``overwrite``.
    ``region`` says where ``new_mask`` lies inside ``labels`` (its shape is then the crop's).
    """
    out = labels.copy()
    view = out if region is None else out[region]
    old = view == label
    view[old & ~new_mask] = 0
    target = new_mask if overwrite else new_mask & ((view == 0) | old)
    view[target] = label
    return out
