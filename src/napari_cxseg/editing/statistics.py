"""Per-class measurements (3D Slicer's "Segment statistics"): size, intensity, position."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..images import LabelClass
from ._grid import as_spacing, check_label_array


def _axis_names(ndim: int) -> tuple[str, ...]:
    return ("z", "y", "x")[-ndim:] if ndim <= 3 else tuple(f"a{i}" for i in range(ndim))


def label_statistics(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    spacing: float | Sequence[float] | None = None,
    affine: np.ndarray | None = None,
    classes: dict[int, LabelClass] | None = None,
) -> list[dict]:
    """Measure every class.

    Parameters
    ----------
    labels
        Integer label array, 2D ``(y, x)`` or 3D ``(z, y, x)`` (held axes).
    image
        Intensity array on the same grid, or ``None`` to skip intensity columns.
    spacing
        Voxel size in mm per axis. ``None``: taken from ``affine`` (1 mm without one).
    affine
        ``(n+1, n+1)`` index->world matrix (``Geometry.affine``). ``None``: world = index x
        spacing.
    classes
        ``{id: LabelClass}``; rows come in id order for these classes (empty ones included) and
        for any other id present in ``labels``.

    Returns
    -------
    list of dict
        One flat dict per class with keys ``label``, ``name``, ``voxels``, then ``area_mm2``
        (2D) or ``volume_mm3`` and ``volume_ml`` (3D); ``mean``, ``std`` (population), ``min``,
        ``max``, ``median`` of the image's finite values inside the class (NaN when there are
        none, or without image) and, with an image, ``non_finite``: how many NaN/Inf voxels of
        the class were skipped; ``bbox_<axis>_start`` / ``bbox_<axis>_stop`` (index, half-open,
        -1 when empty) and
        ``centroid_<axis>_mm`` (world coordinates of the voxel-centre mean, napari axis order:
        for volumes LPS (S, P, L) in mm).
    """
    arr = check_label_array(labels).astype(np.int64, copy=False)
    n = arr.ndim
    if affine is not None:
        aff = np.asarray(affine, float)
        if aff.shape != (n + 1, n + 1):
            raise ValueError(f"affine must be {(n + 1, n + 1)} for a {n}D label array")
    else:
        aff = None
    if spacing is None and aff is not None:
        sp = np.linalg.norm(aff[:n, :n], axis=0)
    else:
        sp = as_spacing(spacing, n)
    if aff is None:
        aff = np.diag([*sp, 1.0])
    img = None
    if image is not None:
        img = np.asarray(image, dtype=float)
        if img.shape != arr.shape:
            raise ValueError(f"image shape {img.shape} and labels shape {arr.shape} differ")

    classes = classes or {}
    present = set(np.unique(arr).tolist()) - {0}
    ids = sorted(set(classes) | present)
    unit = float(np.prod(sp))
    names = _axis_names(n)
    counts = np.bincount(arr.ravel(), minlength=max(ids, default=0) + 1) if ids else None
    objects = ndi.find_objects(arr) if ids else []
    filled = [k for k in ids if counts[k] > 0]  # scipy divides by the count: skip empty ones
    centroids = {}
    for k in filled:  # within each class's box: no full-size float temporaries
        box = objects[k - 1]
        idx = np.nonzero(arr[box] == k)
        centroids[k] = [float(i.mean()) + b.start for i, b in zip(idx, box, strict=True)]
    intensity: dict[str, dict[int, float]] = {}
    skipped = np.zeros(counts.size if counts is not None else 0, np.int64)
    if img is not None and filled:
        finite = np.isfinite(img)
        measured = arr
        if not finite.all():  # NaN/Inf are left out of the intensities (and counted)
            skipped = np.bincount(arr[~finite], minlength=skipped.size)
            measured = np.where(finite, arr, 0)
            img = np.where(finite, img, 0.0)
        with_values = [k for k in filled if counts[k] > skipped[k]]
        for key, fn in (
            ("mean", ndi.mean),
            ("std", ndi.standard_deviation),
            ("min", ndi.minimum),
            ("max", ndi.maximum),
            ("median", ndi.median),
        ):
            if not with_values:
                intensity[key] = {}
                continue
            with np.errstate(invalid="ignore", divide="ignore"):  # classes of NaN only: 0 / 0
                vals = np.atleast_1d(np.asarray(fn(img, measured, with_values), dtype=float))
            intensity[key] = dict(zip(with_values, vals.tolist(), strict=True))

    rows = []
    for k in ids:
        cnt = int(counts[k]) if k < counts.size else 0
        row: dict = {"label": int(k), "name": classes[k].name if k in classes else str(k)}
        row["voxels"] = cnt
        if n == 2:
            row["area_mm2"] = cnt * unit
        else:
            row["volume_mm3"] = cnt * unit
            row["volume_ml"] = cnt * unit / 1000.0
        for key in ("mean", "std", "min", "max", "median"):
            row[key] = float(intensity[key].get(k, np.nan)) if intensity else float("nan")
        if img is not None:
            row["non_finite"] = int(skipped[k]) if k < skipped.size else 0
        box = objects[k - 1] if 0 < k <= len(objects) else None
        for ax, name in enumerate(names):
            row[f"bbox_{name}_start"] = int(box[ax].start) if box is not None else -1
            row[f"bbox_{name}_stop"] = int(box[ax].stop) if box is not None else -1
        if cnt:
            world = aff @ np.r_[np.asarray(centroids[k], float), 1.0]
        else:
            world = np.full(n + 1, np.nan)
        for ax, name in enumerate(names):
            row[f"centroid_{name}_mm"] = float(world[ax])
        rows.append(row)
    return rows


def statistics_to_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write the rows of :func:`label_statistics` to a CSV file atomically.

    Returns
    -------
    pathlib.Path
        The file written (a temporary file is renamed over it only once complete).
    """
    path = Path(path)
    if not rows:
        raise ValueError(f"no statistics to write to {path}")
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def histogram(
    image: np.ndarray,
    labels: np.ndarray,
    label: int,
    bins: int | Sequence[float] = 64,
    value_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of the image's finite values inside class ``label``.

    Returns
    -------
    counts : numpy.ndarray
        Voxel counts per bin.
    edges : numpy.ndarray
        Bin edges in the image's units (``len(counts) + 1``).
    """
    arr = check_label_array(labels)
    img = np.asarray(image)
    if img.shape != arr.shape:
        raise ValueError(f"image shape {img.shape} and labels shape {arr.shape} differ")
    values = img[arr == label]
    if values.dtype.kind in "fc":  # NaN/Inf have no bin: skipped, as in label_statistics
        values = values[np.isfinite(values)]
    return np.histogram(values, bins=bins, range=value_range)
