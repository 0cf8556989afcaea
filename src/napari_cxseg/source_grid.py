"""Model-space probabilities to labels on the source grid, in slabs, when the grids are axis aligned.

MONAI's ``Invertd`` of ``Orientationd`` + ``Spacingd`` resamples every class channel of the
probabilities onto the whole source grid (trilinear, border padding, ``align_corners=False``)
before the argmax: for a 512 x 512 x 130 CT and 9 classes that is a 1.2 GB float tensor, built
with a general ``grid_sample``. When the two grids differ only by axis flips, permutations,
scales and shifts (what ``Orientationd`` and ``Spacingd`` produce), that trilinear resampling is
separable: :func:`labels_on_source_grid` does it one axis at a time with two gathers and a
blend per axis, one slab of the source grid at a time, and takes the argmax of each slab at
once. The interpolation weights are those of ``grid_sample`` (voxel centres at integer
indices, coordinates clamped to the grid for border padding), so the labels equal MONAI's up
to float rounding at exact ties; memory stays at the model-space probabilities plus one slab.

:func:`separable_map` says whether the shortcut applies (None otherwise: callers keep
``Invertd``); :func:`invertible_trace` checks that an image's applied transforms are ones whose
inverse is this resampling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Applied MONAI operations whose inverse is an axis-aligned linear resampling (or exact).
_SPATIAL_OPS = {"Orientation", "Orientationd", "SpatialResample", "Spacing", "Spacingd"}


def invertible_trace(image: Any) -> bool:
    """True when ``image`` (a MetaTensor) went only through orientation and bilinear/border spacing."""
    ops = getattr(image, "applied_operations", None)
    if ops is None:
        return False
    for op in ops:
        name = str(op.get("class", ""))
        if name not in _SPATIAL_OPS:
            return False
        info = op.get("extra_info") or {}
        if name in ("SpatialResample", "Spacing", "Spacingd"):
            if str(info.get("mode", "")) not in ("bilinear", "GridSampleMode.BILINEAR") \
                    or str(info.get("padding_mode", "")) not in ("border", "GridSamplePadMode.BORDER") \
                    or bool(info.get("align_corners", False)):
                return False
    return True


def source_mapping(image: Any) -> tuple[list[tuple[int, float, float]], tuple[int, int, int]] | None:
    """``(separable_map, source shape)`` of a preprocessed 3D MetaTensor, or None (use ``Invertd``).

    The source grid is the one the first applied operation started from (what ``Invertd``
    brings the prediction back to).
    """
    if not invertible_trace(image) or image.ndim != 4:
        return None
    ops = image.applied_operations
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
    return axes, tuple(int(s) for s in src_shape)


def separable_map(src_affine: Any, model_affine: Any, tol: float = 1e-6) -> list[tuple[int, float, float]] | None:
    """Per source axis ``(model axis, scale, offset)`` with model index = scale * source index + offset.

    Parameters
    ----------
    src_affine, model_affine
        4 x 4 index-to-world affines of the source grid and of the model grid (same world).

    Returns
    -------
    list or None
        None when the mapping mixes axes (an oblique grid: use ``Invertd``).
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


def _weights(n_out: int, size_in: int, scale: float, offset: float) -> tuple[Any, Any, Any]:
    """Indices and weights of 1D linear interpolation with border clamping (``grid_sample`` rules)."""
    import torch

    c = np.clip(scale * np.arange(n_out, dtype=np.float64) + offset, 0.0, size_in - 1.0)
    i0 = np.minimum(np.floor(c), max(size_in - 2, 0)).astype(np.int64)
    w = (c - i0).astype(np.float32)
    i1 = np.minimum(i0 + 1, size_in - 1)
    return torch.from_numpy(i0), torch.from_numpy(i1), torch.from_numpy(w)


def _interp_axis(t: Any, dim: int, idx: tuple[Any, Any, Any]) -> Any:
    i0, i1, w = idx
    shape = [1] * t.ndim
    shape[dim] = -1
    w = w.to(t.device).view(shape)
    a = t.index_select(dim, i0.to(t.device))
    b = t.index_select(dim, i1.to(t.device))
    return a + (b - a) * w


def labels_on_source_grid(probs: Any, axes: list[tuple[int, float, float]], src_shape: tuple[int, int, int],
                          lut: np.ndarray, dtype: Any = np.uint8, slab_voxels: int = 2**23) -> np.ndarray:
    """Argmax labels on the source grid of channel-first model-space probabilities.

    Where all eight model voxels around a source voxel have the same strict argmax, any
    trilinear blend of them has it too, so that voxel takes it without interpolating; only the
    source voxels in cells that straddle a boundary are interpolated (all channels, the eight
    corners weighted as ``grid_sample`` weights them).

    Parameters
    ----------
    probs
        ``(C, *model_shape)`` float tensor (softmax probabilities) in model space.
    axes
        :func:`separable_map` of the source grid onto the model grid.
    src_shape
        The source grid's shape, in the order of the source affine's axes.
    lut
        Channel -> class id.
    dtype
        Output dtype.
    slab_voxels
        Source voxels handled at once (bounds the index arrays).

    Returns
    -------
    numpy.ndarray
        Labels of shape ``src_shape`` (source axis order): ``lut[argmax_c resampled(probs)]``.
    """
    import torch

    probs = torch.as_tensor(probs).float().contiguous()
    k = int(probs.shape[0])
    model_shape = tuple(int(s) for s in probs.shape[1:])
    src_shape = tuple(int(s) for s in src_shape)
    lut = np.asarray(lut)
    if min(model_shape) < 2 or k < 2:
        return _labels_by_slabs(probs, axes, src_shape, lut, dtype)
    top = torch.topk(probs, 2, dim=0)
    amax = top.indices[0].numpy()
    strict = (top.values[0] > top.values[1]).numpy()
    # a cell (i, i+1) per axis is uniform when its 8 corners share one strict argmax
    uniform = np.ones(tuple(s - 1 for s in model_shape), bool)
    base = amax[:-1, :-1, :-1]
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                sl = (slice(dx, dx + model_shape[0] - 1), slice(dy, dy + model_shape[1] - 1),
                      slice(dz, dz + model_shape[2] - 1))
                uniform &= strict[sl]
                if dx or dy or dz:
                    uniform &= amax[sl] == base
    cell_label = lut[base]
    # per source axis j: its model axis, cell index and weight
    idx = []
    for j in range(3):
        i0, _, w = _weights(src_shape[j], model_shape[axes[j][0]], axes[j][1], axes[j][2])
        idx.append((axes[j][0], i0.numpy(), w.numpy()))
    flat = probs.reshape(k, -1)
    strides = np.array([model_shape[1] * model_shape[2], model_shape[2], 1], np.int64)
    out = np.empty(src_shape, dtype=dtype)
    rows = max(1, slab_voxels // max(src_shape[1] * src_shape[2], 1))
    lut_t = torch.as_tensor(lut, dtype=torch.int64)
    for start in range(0, src_shape[0], rows):
        stop = min(start + rows, src_shape[0])
        cell = [None, None, None]  # model-axis order: broadcastable index arrays over the slab
        wts = [None, None, None]
        for j in range(3):
            axis, i0, w = idx[j]
            if j == 0:
                i0, w = i0[start:stop], w[start:stop]
            shape = [1, 1, 1]
            shape[j] = -1
            cell[axis] = i0.reshape(shape)
            wts[axis] = w.reshape(shape)
        uni = uniform[cell[0], cell[1], cell[2]]
        lab = cell_label[cell[0], cell[1], cell[2]].astype(dtype, copy=False)
        todo = np.nonzero(~uni)
        if todo[0].size:
            c = [np.broadcast_to(cell[a], uni.shape)[todo] for a in range(3)]
            w = [np.broadcast_to(wts[a], uni.shape)[todo] for a in range(3)]
            acc = None
            for dx in (0, 1):
                for dy in (0, 1):
                    for dz in (0, 1):
                        lin = (c[0] + dx) * strides[0] + (c[1] + dy) * strides[1] + (c[2] + dz) * strides[2]
                        wt = ((w[0] if dx else 1 - w[0]) * (w[1] if dy else 1 - w[1])
                              * (w[2] if dz else 1 - w[2]))
                        term = flat.index_select(1, torch.from_numpy(lin)) * torch.from_numpy(wt)
                        acc = term if acc is None else acc.add_(term)
            lab[todo] = lut_t[torch.argmax(acc, dim=0)].numpy().astype(dtype, copy=False)
        out[start:stop] = lab
    return out


def _labels_by_slabs(probs: Any, axes: list[tuple[int, float, float]], src_shape: tuple[int, int, int],
                     lut: np.ndarray, dtype: Any, slab_bytes: int = 64 * 2**20) -> np.ndarray:
    """The same labels by separable interpolation of every voxel, one slab at a time (tiny grids)."""
    import torch

    k = int(probs.shape[0])
    model_shape = tuple(int(s) for s in probs.shape[1:])
    idx = [_weights(int(src_shape[j]), model_shape[axes[j][0]], axes[j][1], axes[j][2]) for j in range(3)]
    lut_t = torch.as_tensor(lut, dtype=torch.int64)
    out = np.empty(src_shape, dtype=dtype)
    rows = max(1, int(slab_bytes // max(k * src_shape[1] * src_shape[2] * 4, 1)))
    perm = [axes[j][0] + 1 for j in range(3)]  # model dims (after channel) of source axes 0, 1, 2
    for start in range(0, src_shape[0], rows):
        stop = min(start + rows, src_shape[0])
        t = _interp_axis(probs, perm[0], tuple(a[start:stop] for a in idx[0]))
        for j in (1, 2):
            t = _interp_axis(t, perm[j], idx[j])
        lab = torch.argmax(t.permute(0, *perm), dim=0)
        out[start:stop] = lut_t[lab].numpy().astype(dtype, copy=False)
    return out
