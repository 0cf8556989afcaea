"""Smooth the outline of a class (3D Slicer's "Smoothing" effect) with mm-sized kernels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from ._grid import (
    as_spacing,
    bounding_slices,
    check_label_array,
    ellipsoid_footprint,
    grow_slices,
    paint,
)

Method = Literal["median", "opening", "closing", "gaussian"]


def smooth(
    labels: np.ndarray,
    label: int,
    method: Method = "median",
    kernel_mm: float = 3.0,
    spacing: float | Sequence[float] | None = None,
    overwrite: bool = False,
) -> np.ndarray:
    """Smooth class ``label`` with a kernel sized in mm.

    Parameters
    ----------
    labels
        Integer label array, 2D or 3D.
    label
        The class to smooth (> 0).
    method
        ``"median"``: majority vote in the kernel (removes spurs and fills notches smaller than
        the kernel, keeps the volume); ``"opening"``: removes protrusions and islands thinner
        than the kernel; ``"closing"``: fills gaps and holes narrower than the kernel;
        ``"gaussian"``: blurs the mask with a Gaussian of standard deviation ``kernel_mm / 2``
        and thresholds it at 0.5 (rounds corners).
    kernel_mm
        Kernel diameter in mm. The kernel is an ellipsoid in voxels (a ball in mm); along an
        axis whose voxel is larger than the kernel radius it is one voxel thick, so that axis is
        not smoothed.
    spacing
        Voxel size in mm per array axis (``None`` = 1 mm).
    overwrite
        Whether voxels that smoothing adds may take over other classes (default: they only
        fill background).

    Returns
    -------
    numpy.ndarray
        New label array. Voxels removed from the class become background.
    """
    arr = check_label_array(labels)
    if int(label) == 0:
        raise ValueError("label 0 is the background: choose a class to smooth")
    if kernel_mm <= 0:
        raise ValueError(f"kernel_mm must be positive, got {kernel_mm}")
    sp = as_spacing(spacing, arr.ndim)
    mask_full = arr == label
    box0 = bounding_slices(mask_full)
    if box0 is None:
        return arr.copy()
    radius = kernel_mm / 2.0
    footprint = ellipsoid_footprint(radius, sp)
    # work on the class's box plus a margin wide enough for the kernel (and Gaussian tails)
    pad = np.array(footprint.shape) // 2 + 1
    if method == "gaussian":
        pad = np.ceil(4 * radius / sp).astype(int) + 1
    box = grow_slices(box0, pad, arr.shape)
    mask = mask_full[box]

    if method == "median":
        # the median of a binary mask is a majority vote: count with a correlation
        counts = ndi.correlate(
            mask.astype(np.float32), footprint.astype(np.float32), mode="constant"
        )
        new = counts > footprint.sum() / 2.0
    elif method == "opening":
        new = ndi.binary_opening(mask, structure=footprint)
    elif method == "closing":
        # pad so that the closing is not cut by the crop edge
        p = np.array(footprint.shape)
        padded = np.pad(mask, [(int(q), int(q)) for q in p])
        closed = ndi.binary_closing(padded, structure=footprint)
        new = closed[tuple(slice(int(q), int(q) + n) for q, n in zip(p, mask.shape, strict=True))]
    elif method == "gaussian":
        blurred = ndi.gaussian_filter(mask.astype(np.float32), sigma=radius / sp, mode="constant")
        new = blurred >= 0.5
    else:
        raise ValueError(
            f"unknown method {method!r}: use 'median', 'opening', 'closing' or 'gaussian'"
        )
    return paint(arr, int(label), new, overwrite=overwrite, region=box)
