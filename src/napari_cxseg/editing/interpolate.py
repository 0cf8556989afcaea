"""Fill a class between sparsely drawn slices (3D Slicer's "Fill between slices").

Shape-based interpolation: each drawn slice becomes a signed distance map (negative inside),
maps of consecutive drawn slices are blended linearly along the slice axis, and the zero level
set of the blend is the interpolated outline. Unlike blending the masks themselves, this moves
the outline smoothly from one drawn shape to the next.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from ._grid import as_spacing, bounding_slices, check_label_array, grow_slices


def annotated_slices(labels: np.ndarray, label: int, axis: int = 0) -> np.ndarray:
    """Indices along ``axis`` of the slices that contain ``label``."""
    arr = check_label_array(labels)
    other = tuple(a for a in range(arr.ndim) if a != axis % arr.ndim)
    return np.flatnonzero((arr == label).any(axis=other))


def _signed_distance(mask: np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """Distance to the outline in mm: negative inside ``mask``, positive outside."""
    return ndi.distance_transform_edt(~mask, sampling=sampling) - ndi.distance_transform_edt(
        mask, sampling=sampling
    )


def interpolate_slices(
    labels: np.ndarray,
    label: int,
    axis: int = 0,
    spacing: float | Sequence[float] | None = None,
) -> np.ndarray:
    """Fill class ``label`` on the slices between the slices where it was drawn.

    Parameters
    ----------
    labels
        Integer label array, 2D or 3D (held axes, e.g. ``(z, y, x)``).
    label
        The class to interpolate (> 0).
    axis
        The slice axis (0 = axial for a held ``(z, y, x)`` volume).
    spacing
        Voxel size in mm per array axis. Only the in-slice entries matter: they make the
        distance maps Euclidean in mm on grids with non-square pixels. ``None`` = 1 mm.

    Returns
    -------
    numpy.ndarray
        A new array of the same shape and dtype. Between the first and the last slice that
        contain ``label``, every slice without ``label`` receives the interpolated shape, on
        background voxels only (voxels of other classes are never changed). Drawn slices and
        everything outside that range are unchanged.

    Raises
    ------
    ValueError
        If ``label`` is 0.
    """
    arr = check_label_array(labels)
    if int(label) == 0:
        raise ValueError("label 0 is the background: choose a class to interpolate")
    axis = axis % arr.ndim
    sp = as_spacing(spacing, arr.ndim)
    in_plane = np.delete(sp, axis)
    out = arr.copy()
    drawn = annotated_slices(arr, label, axis)
    if drawn.size < 2:
        return out
    # move the slice axis first on a view; writing into it writes into ``out``
    vol = np.moveaxis(out, axis, 0)
    src = np.moveaxis(arr, axis, 0)
    mask = src[drawn[0] : drawn[-1] + 1] == label
    # the blend is inside only where one of the drawn shapes is inside, so their joint
    # bounding box (plus one background voxel, so distances inside are exact) is enough
    box = grow_slices(bounding_slices(mask.any(axis=0)), 1, mask.shape[1:])
    for lo, hi in zip(drawn[:-1], drawn[1:], strict=True):
        if hi - lo < 2:
            continue
        d_lo = _signed_distance(src[lo][box] == label, in_plane)
        d_hi = _signed_distance(src[hi][box] == label, in_plane)
        for k in range(lo + 1, hi):
            w = (k - lo) / (hi - lo)
            inside = (1.0 - w) * d_lo + w * d_hi < 0
            sl = vol[k][box]
            sl[inside & (sl == 0)] = label
    return out
