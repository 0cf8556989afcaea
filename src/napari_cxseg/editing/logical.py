"""Logical operations between classes and masks, and intensity-range painting.

3D Slicer's "Logical operators" and "Threshold"/masking-by-intensity, as functions on boolean
masks and on label arrays.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np

from ._grid import check_label_array, paint

Operation = Literal["union", "subtract", "intersect", "replace"]


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"shapes differ: {np.shape(a)} and {np.shape(b)}")


def union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Voxels in ``a`` or ``b`` (boolean masks of one shape)."""
    _same_shape(a, b)
    return np.logical_or(a, b)


def subtract(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Voxels in ``a`` and not in ``b``."""
    _same_shape(a, b)
    return np.logical_and(a, np.logical_not(b))


def intersect(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Voxels in both ``a`` and ``b``."""
    _same_shape(a, b)
    return np.logical_and(a, b)


def invert(a: np.ndarray) -> np.ndarray:
    """Voxels not in ``a``."""
    return np.logical_not(a)


def class_mask(labels: np.ndarray, ids: int | Iterable[int]) -> np.ndarray:
    """Boolean mask of the voxels whose class is ``ids`` (one id or several)."""
    arr = check_label_array(labels)
    if isinstance(ids, int | np.integer):
        return arr == ids
    return np.isin(arr, list(ids))


def apply_mask(
    labels: np.ndarray,
    label: int,
    operation: Operation,
    modifier: np.ndarray,
    overwrite: bool = False,
) -> np.ndarray:
    """Change class ``label`` by a boolean ``modifier`` mask.

    Parameters
    ----------
    labels
        Integer label array.
    label
        The class that changes (> 0).
    operation
        ``"union"`` (add the modifier), ``"subtract"`` (remove it), ``"intersect"`` (keep only
        the part inside it) or ``"replace"`` (the class becomes the modifier).
    modifier
        Boolean mask of the same shape.
    overwrite
        Whether added voxels may take over other classes (default: background only).

    Returns
    -------
    numpy.ndarray
        New label array; voxels that leave the class become background.
    """
    arr = check_label_array(labels)
    mod = np.asarray(modifier, bool)
    _same_shape(arr, mod)
    if int(label) == 0:
        raise ValueError("label 0 is the background: choose a class")
    cur = arr == label
    ops = {"union": union, "subtract": subtract, "intersect": intersect}
    if operation == "replace":
        new = mod
    elif operation in ops:
        new = ops[operation](cur, mod)
    else:
        raise ValueError(
            f"unknown operation {operation!r}: use 'union', 'subtract', 'intersect' or 'replace'"
        )
    return paint(arr, int(label), new, overwrite=overwrite)


def combine_classes(
    labels: np.ndarray,
    label: int,
    other: int | Iterable[int],
    operation: Operation,
    other_labels: np.ndarray | None = None,
    overwrite: bool = False,
) -> np.ndarray:
    """Class-to-class logical operation: change ``label`` by class ``other``.

    ``other`` is read from ``other_labels`` when given (a second label array on the same grid,
    e.g. another layer) and otherwise from ``labels`` itself. With ``operation="union"`` and one
    array, the other class's voxels are added to ``label`` only when ``overwrite`` is True (they
    are not background); use :func:`napari_cxseg.editing.classes.merge_classes` to merge classes.

    Returns
    -------
    numpy.ndarray
        New label array (see :func:`apply_mask`).
    """
    src = labels if other_labels is None else other_labels
    return apply_mask(labels, label, operation, class_mask(src, other), overwrite=overwrite)


def threshold_mask(
    image: np.ndarray, low: float | None = None, high: float | None = None
) -> np.ndarray:
    """Voxels with ``low <= image <= high`` (a bound of ``None`` is open); NaN is outside."""
    img = np.asarray(image)
    if low is not None and high is not None and low > high:
        raise ValueError(f"low ({low}) is above high ({high})")
    out = ~np.isnan(img) if np.issubdtype(img.dtype, np.floating) else np.ones(img.shape, bool)
    if low is not None:
        out &= img >= low
    if high is not None:
        out &= img <= high
    return out


def paint_in_range(
    labels: np.ndarray,
    mask: np.ndarray,
    label: int,
    image: np.ndarray,
    low: float | None,
    high: float | None,
    preserve_other: bool = True,
) -> np.ndarray:
    """Paint ``label`` into ``mask`` but only where ``low <= image <= high``.

    Parameters
    ----------
    labels
        Integer label array.
    mask
        Boolean brush / fill region of the same shape.
    label
        Class to paint; 0 erases (only voxels in range are erased).
    image
        Intensity array of the same shape (e.g. HU for CT).
    low, high
        Intensity bounds, inclusive, in the image's units; ``None`` leaves a side open.
    preserve_other
        When True (default), voxels of other classes are left alone: only background (and
        ``label`` itself) is painted. Erasing (``label=0``) clears every class in range.

    Returns
    -------
    numpy.ndarray
        New label array; only in-range voxels inside ``mask`` can differ from ``labels``.
    """
    arr = check_label_array(labels)
    m = np.asarray(mask, bool)
    _same_shape(arr, m)
    _same_shape(arr, image)
    target = m & threshold_mask(image, low, high)
    if preserve_other and int(label) != 0:
        target &= (arr == 0) | (arr == label)
    out = arr.copy()
    out[target] = label
    return out
