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


class _Runs:
    """The source indices of one axis grouped by the model cell they fall in."""

    def __init__(self, i0: np.ndarray, n_cells: int) -> None:
        self.order = np.argsort(i0, kind="stable")
        ranks = i0[self.order]
        cells = np.arange(n_cells)
        self.start = np.searchsorted(ranks, cells, "left")
        self.length = np.searchsorted(ranks, cells, "right") - self.start
        self.referenced = self.length > 0


def _expand(cells: np.ndarray, runs: list[_Runs]) -> tuple[list[np.ndarray], np.ndarray]:
    """Every source voxel of the given cells: source indices per axis and the row of its cell.

    ``cells`` is ``(m, nd)`` in source-axis order; a cell holds the product of its runs.
    """
    row = np.arange(len(cells))
    coords: list[np.ndarray] = []
    for j, r in enumerate(runs):
        v = cells[row, j]
        n = r.length[v]
        total = int(n.sum())
        first = np.repeat(np.cumsum(n) - n, n)
        within = np.arange(total) - first
        row = np.repeat(row, n)
        coords = [np.repeat(c, n) for c in coords]
        coords.append(r.order[np.repeat(r.start[v], n) + within])
    return coords, row


def _add_boxes(boxes: dict[int, list[tuple[int, int]] | None], lab: np.ndarray, coords: list[np.ndarray]) -> None:
    """Grow ``boxes`` (class -> per-axis [lo, hi)) by the voxels at ``coords`` with labels ``lab``."""
    ids = np.unique(lab)
    pos = np.searchsorted(ids, lab)
    ext = []
    for x in coords:
        lo = np.full(ids.size, np.iinfo(np.int64).max)
        hi = np.full(ids.size, -1)
        np.minimum.at(lo, pos, x)
        np.maximum.at(hi, pos, x)
        ext.append((lo, hi))
    for i, c in enumerate(ids):
        boxes[int(c)] = _box_union(boxes.get(int(c)), [(int(lo[i]), int(hi[i]) + 1) for lo, hi in ext])


def _box_union(a: list[tuple[int, int]] | None, b: list[tuple[int, int]] | None) -> list[tuple[int, int]] | None:
    if a is None or b is None:
        return a if b is None else b
    return [(min(x[0], y[0]), max(x[1], y[1])) for x, y in zip(a, b, strict=True)]


def _uniform_boxes(cell_label: np.ndarray, keep: np.ndarray, i0s: list[np.ndarray]) -> dict[int, list[tuple[int, int]] | None]:
    """Per class, the source extent of the uniform cells of that class (``keep``: which cells count).

    One bitwise-or reduction per axis over the cells (a bit per class id below 64), then each
    axis's present cells mapped through the source indices that fall in them.
    """
    nd = cell_label.ndim
    ids = np.unique(cell_label[keep])
    if not ids.size:
        return {}
    if int(ids.max()) >= 64:
        bits = None
    else:
        bits = np.where(keep, np.left_shift(np.uint64(1), cell_label.astype(np.uint64)), np.uint64(0))
    boxes: dict[int, list[tuple[int, int]] | None] = {int(c): [] for c in ids}
    for j in range(nd):
        others = tuple(a for a in range(nd) if a != j)
        if bits is not None:
            per_src = np.bitwise_or.reduce(bits, axis=others)[i0s[j]]
        for c in ids:
            if bits is not None:
                idx = np.flatnonzero(per_src & np.uint64(1 << int(c)))
            else:
                idx = np.flatnonzero((keep & (cell_label == c)).any(axis=others)[i0s[j]])
            boxes[int(c)].append((int(idx[0]), int(idx[-1]) + 1))
    return boxes


def labels_on_source_grid(probs: Any, axes: list[AxisMap], src_shape: tuple[int, ...], lut: np.ndarray,
                          dtype: Any = np.uint8, slab_voxels: int = 2**21,
                          return_boxes: bool = False) -> Any:
    """Argmax labels on the source grid of channel-first model-space probabilities.

    Uniform cells (all corners share one strict argmax) are expanded to the source grid with one
    ``take`` per axis; only the source voxels of the other cells are interpolated.

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
        Boundary voxels interpolated at once (bounds the ``C x n`` blend).
    return_boxes
        Also return each class's bounding box on the source grid (as the labels give it).

    Returns
    -------
    numpy.ndarray or tuple
        Labels of shape ``src_shape``: ``lut[argmax_c resampled(probs)]``; with ``return_boxes``
        ``(labels, boxes)``, ``boxes`` mapping each class id present to a tuple of slices.
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
    # cell arrays in source-axis order, so that a take per axis gives the source grid
    perm = [a for a, *_ in axes]
    cell_label = lut[base].astype(dtype, copy=False).transpose(perm)
    uniform = uniform.transpose(perm)
    cells = [_cells(src_shape[j], axes[j]) for j in range(nd)]
    runs = [_Runs(cells[j][0], inner[perm[j]]) for j in range(nd)]
    out = cell_label
    for j in np.argsort([src_shape[j] / max(inner[perm[j]], 1) for j in range(nd)]):
        out = out.take(cells[j][0], axis=int(j))  # the smallest growth first
    out = np.ascontiguousarray(out)
    # only cells some source voxel falls in
    live = np.ones(uniform.shape, bool)
    for j, r in enumerate(runs):
        shape = [1] * nd
        shape[j] = -1
        live &= r.referenced.reshape(shape)
    todo_cells = np.argwhere(live & ~uniform)
    boxes: dict[int, list[tuple[int, int]] | None] = {}
    if return_boxes:
        boxes = _uniform_boxes(cell_label, live & uniform, [c[0] for c in cells])
    rows_of = probs.reshape(k, -1).T.contiguous()  # (model voxel, channel): a gather reads one row
    strides = np.array([int(np.prod(model_shape[a + 1:])) for a in range(nd)], np.int64)
    lut_t = torch.as_tensor(lut, dtype=torch.int64)
    sizes = np.prod([runs[j].length[todo_cells[:, j]] for j in range(nd)], axis=0) if len(todo_cells) else []
    bounds = np.cumsum(sizes)
    first = 0
    while first < len(todo_cells):
        last = max(first + 1, int(np.searchsorted(bounds, bounds[first] - sizes[first] + slab_voxels, "right")))
        coords, row = _expand(todo_cells[first:last], runs)
        cell = todo_cells[first:last][row]
        lin0 = sum(cell[:, j] * strides[perm[j]] for j in range(nd))
        w = [cells[j][1][coords[j]] for j in range(nd)]
        w1 = [1 - x for x in w]
        acc = None
        for corner in corners:  # model-axis order
            lin = lin0 + int(sum(corner[perm[j]] * strides[perm[j]] for j in range(nd)))
            wt = w[0] if corner[perm[0]] else w1[0]
            for j in range(1, nd):
                wt = wt * (w[j] if corner[perm[j]] else w1[j])
            term = rows_of.index_select(0, torch.from_numpy(lin)).mul_(torch.from_numpy(wt)[:, None])
            acc = term if acc is None else acc.add_(term)
        lab = lut_t[torch.argmax(acc, dim=1)].numpy().astype(dtype, copy=False)
        out[tuple(coords)] = lab
        if return_boxes:
            _add_boxes(boxes, lab, coords)
        first = last
    if not return_boxes:
        return out
    return out, {c: tuple(slice(a, b) for a, b in box) for c, box in boxes.items() if box is not None}
