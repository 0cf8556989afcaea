"""Model-space probabilities to labels on the source grid, without resampling every channel.

MONAI's ``Invertd`` resamples every class channel of the probabilities onto the whole source
grid before the argmax: for a 512 x 512 x 130 CT and 9 classes a 1.2 GB float tensor, built by a
general ``grid_sample``; for a 2048 x 2500 radiograph three full-size channels. When the model
grid is an axis-aligned scaling of the source grid (what ``Orientationd`` + ``Spacingd`` give
volumes, and ``Resized`` + ``SpatialPadd`` give radiographs), each source voxel's value is a
blend of the 2^n model voxels around it with weights that are products of 1D linear weights.
If those 2^n corners share one strict argmax, every blend of them has it too: such voxels
(nearly all of them) take it directly; only voxels in cells that straddle a class boundary are
interpolated, all channels, with ``grid_sample`` / ``interpolate``'s own weights (voxel centres
at integer indices, coordinates clamped to the grid). The labels equal ``Invertd`` + argmax up
to float rounding at exact ties; memory stays at the model-space probabilities plus one slab.

:func:`source_mapping` says whether this applies to a preprocessed image (None: use
``Invertd``); :func:`labels_on_source_grid` computes the labels.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

#: Per source axis: (model axis, scale, offset, lowest, highest model coordinate).
AxisMap = tuple[int, float, float, float, float]

_RESAMPLE_OPS = {"SpatialResample", "Spacing", "Spacingd"}
_VOLUME_OPS = {"Orientation", "Orientationd", *_RESAMPLE_OPS}


def _is(value: Any, *names: str) -> bool:
    return str(value).split(".")[-1].lower() in names


def source_mapping(image: Any) -> tuple[list[AxisMap], tuple[int, ...]] | None:
    """How a preprocessed MetaTensor's source grid maps onto its model grid, or None.

    Volumes: applied operations only orientation and bilinear spacing with border padding
    (``align_corners=False``). Radiographs: a bilinear ``Resize`` then optionally a
    ``SpatialPad``. Anything else (or axes that mix, or a model axis of one voxel) gives None.

    Returns
    -------
    tuple or None
        ``(axes, source shape)``: per source axis an :data:`AxisMap`.
    """
    ops = getattr(image, "applied_operations", None)
    if ops is None or min(int(s) for s in image.shape[1:]) < 2:
        return None
    nd = image.ndim - 1
    names = [str(op.get("class", "")) for op in ops]
    if nd == 3 and all(n in _VOLUME_OPS for n in names):
        for op, n in zip(ops, names, strict=True):
            info = op.get("extra_info") or {}
            if n in _RESAMPLE_OPS and (not _is(info.get("mode"), "bilinear") or not _is(info.get("padding_mode"), "border")
                                       or bool(info.get("align_corners", False))):
                return None
        if ops:
            info = ops[0].get("extra_info") or {}
            src_affine = info.get("original_affine", info.get("src_affine"))
            src_shape = ops[0].get("orig_size")
        else:
            src_affine, src_shape = image.affine, image.shape[1:]
        if src_affine is None or src_shape is None or len(src_shape) != 3:
            return None
        axes = separable_map(np.asarray(src_affine, dtype=np.float64), np.asarray(image.affine, dtype=np.float64))
        if axes is None:
            return None
        model = image.shape[1:]
        return [(a, s, o, 0.0, float(model[a]) - 1.0) for a, s, o in axes], tuple(int(s) for s in src_shape)
    if nd == 2 and names in (["Resize"], ["Resize", "SpatialPad"]):
        info = ops[0].get("extra_info") or {}
        if not _is(info.get("mode"), "bilinear") or info.get("align_corners") not in (None, False, "none"):
            return None
        orig = [int(s) for s in ops[0]["orig_size"]]
        inner = [int(s) for s in (ops[1]["orig_size"] if len(ops) > 1 else image.shape[1:])]
        lo = [0, 0]
        if len(ops) > 1:
            padded = ops[1].get("extra_info", {}).get("padded")
            if padded is None or len(padded) != 3:
                return None
            lo = [int(padded[1][0]), int(padded[2][0])]
        axes = []
        for j in range(2):
            scale = inner[j] / orig[j]  # torch interpolate, align_corners=False
            axes.append((j, scale, 0.5 * scale - 0.5 + lo[j], float(lo[j]), float(lo[j] + inner[j] - 1)))
        return axes, tuple(orig)
    return None


def separable_map(src_affine: Any, model_affine: Any, tol: float = 1e-6) -> list[tuple[int, float, float]] | None:
    """Per source axis ``(model axis, scale, offset)`` with model index = scale * source index + offset.

    Parameters
    ----------
    src_affine, model_affine
        4 x 4 index-to-world affines of the source grid and of the model grid (same world).

    Returns
    -------
    list or None
        None when the mapping mixes axes (use ``Invertd``).
    """
    src = np.asarray(src_affine, dtype=np.float64)
    mod = np.asarray(model_affine, dtype=np.float64)
    if src.shape != (4, 4) or mod.shape != (4, 4):
        return None
    m = np.linalg.solve(mod, src)
    r = m[:3, :3]
    scale = np.abs(r).max()
    out: list[tuple[int, float, float]] = []
    used: set[int] = set()
    for j in range(3):
        col = np.abs(r[:, j])
        i = int(np.argmax(col))
        if col[i] <= tol * scale or np.any(np.delete(col, i) > tol * scale) or i in used:
            return None
        used.add(i)
        out.append((i, float(r[i, j]), float(m[i, 3])))
    return out


def _cells(n_out: int, axis: AxisMap) -> tuple[np.ndarray, np.ndarray]:
    """Cell index (lower corner) and weight of the upper corner for each source index on one axis."""
    _, scale, offset, lo, hi = axis
    c = np.clip(scale * np.arange(n_out, dtype=np.float64) + offset, lo, hi)
    i0 = np.minimum(np.floor(c), hi - 1).astype(np.int64)
    return i0, (c - i0).astype(np.float32)


def labels_on_source_grid(probs: Any, axes: list[AxisMap], src_shape: tuple[int, ...], lut: np.ndarray,
                          dtype: Any = np.uint8, slab_voxels: int = 2**23) -> np.ndarray:
    """Argmax labels on the source grid of channel-first model-space probabilities.

    Parameters
    ----------
    probs
        ``(C, *model_shape)`` float tensor (softmax probabilities) in model space.
    axes
        From :func:`source_mapping`.
    src_shape
        The source grid's shape (its own axis order).
    lut
        Channel -> class id.
    dtype
        Output dtype.
    slab_voxels
        Source voxels handled at once (bounds the index arrays).

    Returns
    -------
    numpy.ndarray
        Labels of shape ``src_shape``: ``lut[argmax_c resampled(probs)]``.
    """
    import torch

    probs = torch.as_tensor(probs).float().contiguous()
    k = int(probs.shape[0])
    model_shape = tuple(int(s) for s in probs.shape[1:])
    src_shape = tuple(int(s) for s in src_shape)
    nd = len(model_shape)
    lut = np.asarray(lut)
    top = torch.topk(probs, min(2, k), dim=0)
    amax = top.indices[0].numpy()
    strict = (top.values[0] > top.values[1]).numpy() if k > 1 else np.ones(model_shape, bool)
    # a cell (i, i+1 on every axis) is uniform when its 2^n corners share one strict argmax
    inner = tuple(s - 1 for s in model_shape)
    base = amax[tuple(slice(0, n) for n in inner)]
    uniform = np.ones(inner, bool)
    corners = list(itertools.product((0, 1), repeat=nd))
    for corner in corners:
        sl = tuple(slice(d, d + n) for d, n in zip(corner, inner, strict=True))
        uniform &= strict[sl]
        if any(corner):
            uniform &= amax[sl] == base
    cell_label = lut[base]
    cells = [_cells(src_shape[j], axes[j]) for j in range(nd)]
    flat = probs.reshape(k, -1)
    strides = np.array([int(np.prod(model_shape[a + 1:])) for a in range(nd)], np.int64)
    out = np.empty(src_shape, dtype=dtype)
    rows = max(1, slab_voxels // max(int(np.prod(src_shape[1:])), 1))
    lut_t = torch.as_tensor(lut, dtype=torch.int64)
    for start in range(0, src_shape[0], rows):
        stop = min(start + rows, src_shape[0])
        cell: list[Any] = [None] * nd  # in model-axis order: index arrays broadcast over the slab
        wts: list[Any] = [None] * nd
        for j in range(nd):
            i0, w = cells[j]
            if j == 0:
                i0, w = i0[start:stop], w[start:stop]
            shape = [1] * nd
            shape[j] = -1
            cell[axes[j][0]] = i0.reshape(shape)
            wts[axes[j][0]] = w.reshape(shape)
        uni = uniform[tuple(cell)]
        lab = cell_label[tuple(cell)].astype(dtype, copy=False)
        todo = np.nonzero(~uni)
        if todo[0].size:
            c = [np.broadcast_to(cell[a], uni.shape)[todo] for a in range(nd)]
            w = [np.broadcast_to(wts[a], uni.shape)[todo] for a in range(nd)]
            acc = None
            for corner in corners:
                lin = sum((c[a] + corner[a]) * strides[a] for a in range(nd))
                wt = np.prod([w[a] if corner[a] else 1 - w[a] for a in range(nd)], axis=0)
                term = flat.index_select(1, torch.from_numpy(lin)) * torch.from_numpy(wt)
                acc = term if acc is None else acc.add_(term)
            lab[todo] = lut_t[torch.argmax(acc, dim=0)].numpy().astype(dtype, copy=False)
        out[start:stop] = lab
    return out
