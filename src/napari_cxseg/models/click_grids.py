"""Working grids of the click-guided networks: where they sit, what they sample, and back.

The working grid is isotropic: a square / cube of ``side`` mm sampled with ``patch`` voxels,
centred on the prompts. The same functions build the grids at training time (with rotation and
scaling, ``scripts/train_click_models.py``), so the network sees what it was trained on. Also
here: the click and box maps on a grid, and the way a grid's probability goes back to the
source image. No Qt or napari import.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def working_coordinates(patch: tuple[int, ...], device: Any = None):
    """``(*patch, ndim)`` float tensor of working-grid voxel indices."""
    import torch

    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in patch]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def roi_grid(
    centre_mm: np.ndarray,
    side_mm: float,
    patch: tuple[int, ...],
    spacing: np.ndarray,
    shape: tuple[int, ...],
    transform: np.ndarray | None = None,
    device: Any = None,
):
    """``grid_sample`` grid (``align_corners=True``) of a working grid in a source array.

    Working voxel ``w`` sits at ``centre + transform @ ((w - (patch - 1) / 2) * side / patch)`` mm,
    and source index ``i`` at ``i * spacing`` mm.

    Parameters
    ----------
    centre_mm
        Centre of the working grid in source mm (index x spacing).
    side_mm
        Side length in mm (isotropic voxels of ``side_mm / patch``).
    patch
        Working-grid size per axis.
    spacing
        Source voxel size per axis (held order).
    shape
        Source array shape.
    transform
        Optional ``(ndim, ndim)`` rotation/scaling (training augmentation).
    device
        Torch device.

    Returns
    -------
    torch.Tensor
        ``(1, *patch, ndim)`` normalised coordinates, last axis in ``grid_sample``'s reversed
        (x = last array axis first) order.
    """
    import torch

    nd = len(patch)
    p = torch.tensor(patch, dtype=torch.float32, device=device)
    vox = float(side_mm) / p
    w = working_coordinates(patch, device)
    off = (w - (p - 1) / 2) * vox  # mm from the centre
    if transform is not None:
        off = off @ torch.as_tensor(np.asarray(transform, np.float32), device=device).T
    pos = off + torch.as_tensor(np.asarray(centre_mm, np.float32), device=device)
    idx = pos / torch.as_tensor(np.asarray(spacing, np.float32), device=device)
    size = torch.tensor(shape, dtype=torch.float32, device=device)
    norm = 2.0 * idx / torch.clamp(size - 1, min=1) - 1.0
    return norm.flip(-1).reshape(1, *patch, nd)


def sample(volume, grid, mode: str = "bilinear"):
    """``grid_sample`` of a ``(C, *shape)`` tensor on a :func:`roi_grid` (zeros outside)."""
    import torch.nn.functional as F

    return F.grid_sample(volume[None], grid, mode=mode, padding_mode="zeros", align_corners=True)[0]


def to_working(points_mm: np.ndarray, centre_mm: np.ndarray, side_mm: float, patch: tuple[int, ...]) -> np.ndarray:
    """Source mm -> working-grid index coordinates (no rotation: inference)."""
    p = np.asarray(patch, float)
    return (np.asarray(points_mm, float) - np.asarray(centre_mm, float)) / (side_mm / p) + (p - 1) / 2


def click_maps(points, patch: tuple[int, ...], sigma: float, coords=None):
    """Gaussian click map ``max_k exp(-|w - p_k|^2 / 2 sigma^2)`` on the working grid.

    The Gaussian is separable, so each click's map is the outer product of one 1D Gaussian per
    axis (the same figures to float rounding, without a distance over the whole grid).

    Parameters
    ----------
    points
        ``(k, ndim)`` working-grid coordinates (tensor or array); empty -> zeros.
    patch
        Working-grid size.
    sigma
        Width in working voxels.
    coords
        Any tensor on the device to build the map on (callers pass their precomputed
        :func:`working_coordinates`); default: CPU.

    Returns
    -------
    torch.Tensor
        ``patch``-shaped float map in [0, 1].
    """
    import torch

    device = coords.device if coords is not None else None
    out = torch.zeros(patch, dtype=torch.float32, device=device)
    pts = torch.as_tensor(np.asarray(points, np.float32) if not torch.is_tensor(points) else points,
                          device=device, dtype=torch.float32).reshape(-1, len(patch))
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in patch]
    for p in pts:
        g = None
        for a, ax in enumerate(axes):
            ga = torch.exp(-((ax - p[a]) ** 2) / (2.0 * sigma**2))
            g = ga if g is None else g[..., None] * ga
        out = torch.maximum(out, g)
    return out


def box_map(lo, hi, patch: tuple[int, ...], coords=None):
    """1 inside the working-grid box ``lo..hi`` (inclusive, at least one voxel thick), else 0."""
    import torch

    if coords is None:
        coords = working_coordinates(patch)
    lo, hi = (
        (v.float() if torch.is_tensor(v) else torch.as_tensor(np.asarray(v, np.float32))).to(coords.device)
        for v in (lo, hi)
    )
    thin = (hi - lo) < 1.0
    mid = (lo + hi) / 2
    lo = torch.where(thin, torch.round(mid) - 0.5, lo - 0.5)
    hi = torch.where(thin, torch.round(mid) + 0.5, hi + 0.5)
    inside = ((coords >= lo) & (coords < hi)).all(-1)
    return inside.float()


def grid_bounds(centre_mm: np.ndarray, side_mm: float, spacing: np.ndarray, shape: tuple[int, ...],
                inner: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Source index range ``lo:hi`` per axis covered by a working grid, clipped to the image.

    ``inner=False`` gives every voxel the grid touches (what sampling from it reads),
    ``inner=True`` only those whose centre lies inside it.
    """
    c, h, sp = np.asarray(centre_mm, float), float(side_mm) / 2, np.asarray(spacing, float)
    if inner:
        lo, hi = np.ceil((c - h) / sp).astype(int), np.floor((c + h) / sp).astype(int) + 1
    else:
        lo, hi = np.floor((c - h) / sp).astype(int), np.ceil((c + h) / sp).astype(int) + 1
    return np.maximum(lo, 0), np.minimum(hi, np.array(shape))


def sample_mask(mask: np.ndarray, centre_mm: np.ndarray, side_mm: float, patch: tuple[int, ...],
                spacing: np.ndarray, device: Any = None):
    """A boolean source mask on a working grid (linear, > 0.5), reading only the grid's crop.

    Equal to :func:`sample` of the whole mask on :func:`roi_grid`, without converting the whole
    mask to float (what costs on a 512 x 512 x N volume).
    """
    import torch

    sp = np.asarray(spacing, float)
    lo, hi = grid_bounds(centre_mm, side_mm, sp, mask.shape)
    if np.any(hi <= lo):
        return torch.zeros(patch, device=device)
    # one voxel more each side: a crop at least 2 wide, where align_corners=True is regular
    lo, hi = np.maximum(lo - 1, 0), np.minimum(hi + 1, np.array(mask.shape))
    crop = mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    t = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None].to(device)
    grid = roi_grid(np.asarray(centre_mm, float) - lo * sp, side_mm, patch, sp, crop.shape, device=device)
    return (sample(t, grid)[0] > 0.5).float()


def to_source(prob, centre: np.ndarray, side: float, patch: tuple[int, ...], sp: np.ndarray,
              shape: tuple[int, ...]) -> np.ndarray:
    """Threshold a working-grid probability, resampled (linearly) onto the source grid."""
    import torch

    p_arr = np.asarray(patch)
    lo, hi = grid_bounds(centre, side, sp, shape)
    out = np.zeros(shape, bool)
    if np.any(hi <= lo):
        return out
    # the grid is axis-aligned: normalised working coordinates per axis, then one meshgrid
    # (building it from the full (N, ndim) index grid cost as much as the network on a film)
    vox = side / p_arr
    axes = []
    for a in range(len(shape)):
        i = torch.arange(int(lo[a]), int(hi[a]), dtype=torch.float32, device=prob.device)
        w = (i * float(sp[a]) - float(centre[a])) / float(vox[a]) + float((p_arr[a] - 1) / 2)
        axes.append(2.0 * w / float(p_arr[a] - 1) - 1.0)
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)[None]
    p = sample(prob[None].float(), grid)[0]
    out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = (p > 0.5).cpu().numpy()
    return out


def keep_inside(centre: np.ndarray, anchors: np.ndarray, side: float) -> np.ndarray:
    """Shift ``centre`` so the prompt anchors stay inside the working grid (when they fit)."""
    half = 0.45 * side
    lo = anchors.max(0) - half
    hi = anchors.min(0) + half
    return np.where(lo <= hi, np.clip(centre, lo, hi), centre)


def outside_keep(mask: np.ndarray, existing: np.ndarray, centre: np.ndarray, side: float, sp: np.ndarray) -> np.ndarray:
    """Keep the existing mask outside the last working grid (the network saw only inside)."""
    lo, hi = grid_bounds(centre, side, sp, mask.shape, inner=True)
    out = existing.copy()
    region = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    out[region] = mask[region]
    return out


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Inclusive ``(lo, hi)`` index corners of a mask's ``True`` voxels, or ``None`` when empty
    (one reduction per axis instead of the index list of every voxel)."""
    lo, hi = [], []
    for a in range(mask.ndim):
        on = np.flatnonzero(mask.any(axis=tuple(b for b in range(mask.ndim) if b != a)))
        if not len(on):
            return None
        lo.append(int(on[0]))
        hi.append(int(on[-1]))
    return np.array(lo), np.array(hi)


def keep_clicked_components(
    mask: np.ndarray, positive: np.ndarray, existing: np.ndarray | None = None
) -> np.ndarray:
    """Drop islands that hold no positive click and do not overlap the mask being refined
    (all of them stay when no click is inside any)."""
    from scipy import ndimage as ndi

    if not len(positive):
        return mask
    bb = bounding_box(mask)
    if bb is None:
        return mask
    # label only the mask's bounding box (the last working grid): the same components, less time
    lo, hi = bb[0], bb[1] + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    lab, n = ndi.label(mask[box])
    if n <= 1:
        return mask
    idx = np.clip(np.rint(positive).astype(int), 0, np.array(mask.shape) - 1)
    idx = idx[np.all((idx >= lo) & (idx < hi), axis=1)] - lo
    keep = {int(lab[tuple(p)]) for p in idx} - {0}
    if not keep:
        return mask
    if existing is not None and existing.any():
        keep |= set(np.unique(lab[existing[box] & mask[box]]).tolist()) - {0}
    out = np.zeros_like(mask)
    out[box] = np.isin(lab, sorted(keep))
    return out
