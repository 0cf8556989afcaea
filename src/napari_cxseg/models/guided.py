"""Click-guided segmentation networks (DeepGrow/DeepEdit style) for click-to-segment.

A click-guided network takes, on a working grid around the user's prompts, these channels: the
normalised image (one channel per intensity window), a Gaussian map of the positive clicks, one of the negative clicks, the box
(a filled rectangle on the slice where it was drawn) and a mask to refine (the existing mask, or
zeros), and returns the probability of the clicked object. The package ships two, trained by
``scripts/train_click_models.py`` on public data (``cards/clicks/*.yaml`` say on what, and how
well): ``cxr-clicks`` for 2D radiographs and ``ct-clicks`` for 3D CT.

The working grid is isotropic: a square / cube of ``side`` mm sampled with ``patch`` voxels,
centred on the prompts. Like nnInteractive's "AutoZoom", when the predicted object reaches an
inner face of the working grid the grid is enlarged and the network runs again; when the object
is small compared with the grid, the grid shrinks around it once for a finer boundary. The same
functions build the grids at training time (with rotation and scaling), so the network sees
what it was trained on.

The backend (:func:`network_backend`, registered as ``"network"`` in
:mod:`napari_cxseg.editing.interactive`) receives held-array index coordinates and the voxel
spacing, like every click-to-segment backend, and returns a boolean mask of the image's shape.
No Qt or napari import.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..images import CxsegError

#: Where the click-network specs live (not listed as automatic-segmentation cards).
CLICK_SPECS_DIR = Path(__file__).resolve().parent.parent / "cards" / "clicks"
#: Input channels after the image channel(s), in order.
PROMPT_CHANNELS = ("positive clicks", "negative clicks", "box", "mask to refine")
#: The shipped network for each spatial dimensionality.
DEFAULT_NETS = {2: "cxr-clicks", 3: "ct-clicks"}


@dataclass
class ClickNetSpec:
    """What a click-guided network expects (parsed from ``cards/clicks/<name>.yaml``).

    Parameters
    ----------
    name
        Spec name (``cxr-clicks``, ``ct-clicks``).
    spatial_dims
        2 or 3.
    patch
        Working-grid size in voxels per axis.
    network
        ``{"name": MONAI network class, "args": {...}}``.
    intensity
        ``{"type": "window", "windows": [[a_min, a_max], ...]}`` (fixed, e.g. HU; one image
        channel per window) or ``{"type": "percentiles", "lower", "upper"}`` (over the whole
        image; one channel).
    guidance_sigma
        Width of the click maps in working voxels.
    min_side_mm, small_side_mm, max_side_mm
        First working-grid side (at least), the smallest side when zooming in on a small object,
        and the largest side; in mm, or with ``relative_roi`` as fractions of the image's
        longest side (radiographs: the field of view is about the same chest, while the pixel
        size is often unknown, e.g. in PNG files).
    relative_roi
        See above.
    weights
        Weights file name in ``napari_cxseg/weights``.
    info
        The rest of the YAML (task, modality, training data, metrics, license, notes).
    """

    name: str
    spatial_dims: int
    patch: tuple[int, ...]
    network: dict[str, Any]
    intensity: dict[str, Any]
    guidance_sigma: float
    min_side_mm: float
    small_side_mm: float
    max_side_mm: float
    weights: str
    relative_roi: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def weights_path(self) -> Path:
        """The weights file in the package."""
        from .weights import PACKAGE_WEIGHTS_DIR

        return PACKAGE_WEIGHTS_DIR / self.weights


def spec_from_dict(d: dict[str, Any], origin: str = "<dict>") -> ClickNetSpec:
    """Validate a click-network spec dictionary.

    Raises
    ------
    CxsegError
        Naming the missing or wrong field and ``origin``.
    """
    def need(key: str) -> Any:
        if key not in d:
            raise CxsegError(f"click-network spec {origin}: '{key}' is missing")
        return d[key]

    dims = int(need("spatial_dims"))
    patch = tuple(int(v) for v in need("patch"))
    if dims not in (2, 3) or len(patch) != dims or min(patch) < 16:
        raise CxsegError(f"click-network spec {origin}: patch {patch} does not fit spatial_dims {dims}")
    net = need("network")
    if not isinstance(net, dict) or "name" not in net:
        raise CxsegError(f"click-network spec {origin}: 'network' needs a MONAI network 'name' and 'args'")
    inten = dict(need("intensity"))
    if inten.get("type") not in ("window", "percentiles"):
        raise CxsegError(f"click-network spec {origin}: intensity.type must be 'window' or 'percentiles'")
    if inten["type"] == "window" and not inten.get("windows"):
        raise CxsegError(f"click-network spec {origin}: intensity.windows needs [[a_min, a_max], ...]")
    roi = dict(need("roi"))
    known = {"name", "spatial_dims", "patch", "network", "intensity", "guidance_sigma", "roi", "weights"}
    relative = bool(roi.get("relative", False))
    unit = "" if relative else "_mm"
    return ClickNetSpec(
        name=str(need("name")),
        spatial_dims=dims,
        patch=patch,
        network={"name": str(net["name"]), "args": dict(net.get("args") or {})},
        intensity=inten,
        guidance_sigma=float(need("guidance_sigma")),
        min_side_mm=float(roi.get(f"min_side{unit}", 0.3 if relative else 160.0)),
        small_side_mm=float(roi.get(f"small_side{unit}", 0.1 if relative else 48.0)),
        max_side_mm=float(roi.get(f"max_side{unit}", 1.5 if relative else 600.0)),
        weights=str(need("weights")),
        relative_roi=relative,
        info={k: v for k, v in d.items() if k not in known},
    )


def load_spec(name_or_path: str | Path) -> ClickNetSpec:
    """A shipped spec by name (``cxr-clicks``) or a spec YAML path."""
    import yaml

    p = Path(name_or_path)
    if not p.suffix:
        p = CLICK_SPECS_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        known = sorted(q.stem for q in CLICK_SPECS_DIR.glob("*.yaml"))
        raise CxsegError(f"no click-network spec {name_or_path!r} ({p}); shipped: {', '.join(known)}")
    return spec_from_dict(yaml.safe_load(p.read_text()) or {}, str(p))


def build_network(spec: ClickNetSpec):
    """The network of ``spec`` (random weights), by the package's one network builder."""
    from .networks import make_network

    return make_network(spec.network["name"], spec.network["args"], f"click-network {spec.name}")


# ---------------------------------------------------------------------- working grids (torch)
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

    Parameters
    ----------
    points
        ``(k, ndim)`` working-grid coordinates (tensor or array); empty -> zeros.
    patch
        Working-grid size.
    sigma
        Width in working voxels.
    coords
        Precomputed :func:`working_coordinates` (optional).

    Returns
    -------
    torch.Tensor
        ``patch``-shaped float map in [0, 1].
    """
    import torch

    if coords is None:
        coords = working_coordinates(patch)
    out = torch.zeros(patch, dtype=torch.float32, device=coords.device)
    pts = torch.as_tensor(np.asarray(points, np.float32) if not torch.is_tensor(points) else points,
                          device=coords.device, dtype=torch.float32).reshape(-1, len(patch))
    for p in pts:
        d2 = ((coords - p) ** 2).sum(-1)
        out = torch.maximum(out, torch.exp(-d2 / (2.0 * sigma**2)))
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


def image_channels(intensity: dict[str, Any]) -> int:
    """Number of image channels an intensity spec makes."""
    return len(intensity["windows"]) if intensity["type"] == "window" else 1


def normalise(image: np.ndarray, intensity: dict[str, Any]) -> np.ndarray:
    """``(C, *shape)`` intensities in [0, 1]: one channel per window, or whole-image percentiles."""
    img = np.asarray(image, np.float32)
    if intensity["type"] == "window":
        ranges = [(float(a), float(b)) for a, b in intensity["windows"]]
    else:
        flat = img.ravel()
        if flat.size > 2_000_000:  # percentiles of a regular subsample: same figures, less time
            flat = flat[:: flat.size // 1_000_000]
        lo, hi = np.percentile(flat, [float(intensity.get("lower", 0.5)), float(intensity.get("upper", 99.5))])
        ranges = [(float(lo), float(hi))]
    out = np.zeros((len(ranges), *img.shape), np.float32)
    for c, (lo, hi) in enumerate(ranges):
        if hi > lo:
            out[c] = np.clip((img - lo) / (hi - lo), 0.0, 1.0)
    return out


# ---------------------------------------------------------------------- the segmenter
class GuidedSegmenter:
    """Runs one click-guided network on prompts (with AutoZoom), on CPU, CUDA or MPS.

    Parameters
    ----------
    spec
        A :class:`ClickNetSpec` or a shipped spec name.
    device
        ``"auto"`` (CUDA > MPS > CPU), ``"cpu"``, ``"cuda"``...
    network
        An already built network (tests, training); default: the spec's network with its
        shipped weights (``torch.load(weights_only=True)``).
    """

    max_passes = 5
    grow = 1.7
    #: the source may be at most this many times finer than the working grid before it is
    #: block-averaged (anti-aliasing): about what the network saw in training
    source_ratio = {2: 1.0, 3: 2.0}

    def sides(self, shape: tuple[int, ...], spacing: np.ndarray) -> tuple[float, float, float]:
        """(first, smallest, largest) working-grid sides in mm for an image."""
        s = self.spec
        unit = float((np.asarray(shape) * spacing).max()) if s.relative_roi else 1.0
        return s.min_side_mm * unit, s.small_side_mm * unit, s.max_side_mm * unit

    def __init__(self, spec: ClickNetSpec | str, device: Any = "auto", network: Any = None):
        from ..device import pick_device

        self.spec = load_spec(spec) if isinstance(spec, str) else spec
        self.device = pick_device(device)
        if self.device.type == "mps" and self.spec.spatial_dims == 3:
            import torch

            self.device = torch.device("cpu")  # 3D grid_sample is missing on MPS in older torch
        if network is None:
            from .weights import load_state_dict

            network = build_network(self.spec)
            state = load_state_dict(self.spec.weights_path)
            network.load_state_dict({k: v.float() for k, v in state.items()})
        self.network = network.to(self.device).eval()
        self.coords = working_coordinates(self.spec.patch, self.device)
        self._norm_src: Any = None  # weak reference to the image the cache was made from
        self._levels: dict[tuple[int, ...], Any] = {}
        self._lock = threading.Lock()
        self.passes: list[float] = []  # working-grid sides of the last call (diagnostics)

    # -- helpers
    def release(self) -> None:
        """Forget the cached normalised image (and its block averages) unless a call is running."""
        if self._lock.acquire(blocking=False):
            try:
                self._clear()
            finally:
                self._lock.release()

    def _clear(self) -> None:
        self._norm_src = None
        self._levels = {}

    def _source(self, image: np.ndarray, spacing: np.ndarray, vox: float):
        """The normalised image, block-averaged so it is not much finer than ``vox`` mm.

        Returns ``(tensor (C, *shape), spacing, offset_mm)``: block ``i`` of factor ``f`` is
        centred on source index ``i * f + (f - 1) / 2``, i.e. ``offset_mm`` from ``i * f``.
        """
        import torch
        import torch.nn.functional as F

        src = self._norm_src() if self._norm_src is not None else None
        if src is not image or () not in self._levels:
            self._clear()
            arr = normalise(image, self.spec.intensity)
            self._levels[()] = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)
            try:
                self._norm_src = weakref.ref(image)
            except TypeError:  # not weak-referenceable: keep no cache
                self._norm_src = None
        limit = vox / self.source_ratio[self.spec.spatial_dims]
        f = tuple(int(2 ** max(0, np.floor(np.log2(max(limit / s, 1.0))))) for s in spacing)
        base = self._levels[()]
        if max(f) == 1:
            return base, spacing, np.zeros(len(f))
        if f not in self._levels:
            pool = F.avg_pool3d if len(f) == 3 else F.avg_pool2d
            self._levels[f] = pool(base[None], kernel_size=f, stride=f, ceil_mode=True)[0]
        fa = np.asarray(f, float)
        return self._levels[f], spacing * fa, (fa - 1) / 2 * spacing

    def _forward(self, x):
        import torch

        with torch.no_grad():
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    y = self.network(x)
            else:
                y = self.network(x)
            return torch.sigmoid(y.float())[0, 0]

    def predict_patch(
        self,
        image: np.ndarray,
        centre_mm: np.ndarray,
        side_mm: float,
        spacing: np.ndarray,
        positive: np.ndarray,
        negative: np.ndarray,
        box: np.ndarray | None,
        existing,
    ):
        """Probability on one working grid (prompts in source index coordinates)."""
        import torch

        spec = self.spec
        vox = float(side_mm) / max(spec.patch)
        src, src_sp, offset = self._source(image, spacing, vox)
        grid = roi_grid(np.asarray(centre_mm) - offset, side_mm, spec.patch, src_sp, tuple(src.shape[1:]),
                        device=self.device)
        chans = list(sample(src, grid))
        for pts in (positive, negative):
            w = to_working(np.asarray(pts, float).reshape(-1, image.ndim) * spacing, centre_mm, side_mm, spec.patch)
            chans.append(click_maps(w, spec.patch, spec.guidance_sigma, self.coords))
        if box is not None:
            corners = to_working(np.asarray(box, float) * spacing, centre_mm, side_mm, spec.patch)
            chans.append(box_map(corners.min(0), corners.max(0), spec.patch, self.coords))
        else:
            chans.append(torch.zeros(spec.patch, device=self.device))
        if existing is not None:
            grid = roi_grid(centre_mm, side_mm, spec.patch, spacing, image.shape, device=self.device)
            chans.append((sample(existing, grid)[0] > 0.5).float())
        else:
            chans.append(torch.zeros(spec.patch, device=self.device))
        return self._forward(torch.stack(chans)[None])

    def segment(
        self,
        image: np.ndarray,
        positive: np.ndarray,
        negative: np.ndarray | None = None,
        box: np.ndarray | None = None,
        spacing: Any = None,
        existing_mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """Boolean mask of the object the prompts point at (image's shape).

        Parameters
        ----------
        image
            2D or 3D array matching ``spec.spatial_dims``.
        positive, negative
            ``(k, ndim)`` index coordinates.
        box
            ``(2, ndim)`` lower/upper corners or ``None``.
        spacing
            Voxel size in mm per axis (``None``: 1 mm).
        existing_mask
            Mask to refine (its channel), or ``None``.
        """
        import torch

        img = np.asarray(image)
        nd = img.ndim
        if nd != self.spec.spatial_dims:
            raise CxsegError(
                f"click network {self.spec.name} is {self.spec.spatial_dims}D; the image is {nd}D"
            )
        sp = np.ones(nd) if spacing is None else np.broadcast_to(np.asarray(spacing, float), (nd,)).copy()
        pos = np.asarray(positive, float).reshape(-1, nd)
        neg = np.zeros((0, nd)) if negative is None else np.asarray(negative, float).reshape(-1, nd)
        if box is not None and not len(pos):  # a box alone: its centre is the object
            pos = np.asarray(box, float).mean(0, keepdims=True)
        existing_t = None
        anchor_pts = [pos * sp]
        if box is not None:
            anchor_pts.append(np.asarray(box, float) * sp)
        if existing_mask is not None and np.any(existing_mask):
            existing_t = torch.from_numpy(np.ascontiguousarray(existing_mask, dtype=np.float32))[None].to(self.device)
            idx = np.argwhere(existing_mask)
            anchor_pts.append(np.stack([idx.min(0), idx.max(0)]) * sp)
        anchors = np.concatenate(anchor_pts)
        if not len(anchors):
            raise CxsegError("give at least one positive click, a box or an existing mask")
        extent_mm = np.array(img.shape) * sp
        first, small, largest = self.sides(img.shape, sp)
        lo_a, hi_a = anchors.min(0), anchors.max(0)
        centre = (lo_a + hi_a) / 2
        side = float(np.clip(max(first, 1.3 * float((hi_a - lo_a).max())), small, largest))
        zoomed_in = False
        with self._lock:
            self.passes = []
            for _ in range(self.max_passes):
                prob = self.predict_patch(img, centre, side, sp, pos, neg, box, existing_t)
                self.passes.append(side)
                m = (prob > 0.5).cpu().numpy()
                if not m.any():
                    break
                vox = side / np.asarray(self.spec.patch, float)
                idx = np.argwhere(m)
                w_lo, w_hi = idx.min(0), idx.max(0)
                obj_lo = centre + (w_lo - (np.asarray(self.spec.patch) - 1) / 2) * vox
                obj_hi = centre + (w_hi - (np.asarray(self.spec.patch) - 1) / 2) * vox
                # faces touched by the object that lie inside the image (not the image's border)
                roi_lo, roi_hi = centre - side / 2, centre + side / 2
                touch = ((w_lo <= 1) & (roi_lo > 0)) | (
                    (w_hi >= np.asarray(self.spec.patch) - 2) & (roi_hi < extent_mm - sp)
                )
                obj_ext = float((obj_hi - obj_lo).max())
                if touch.any() and side < min(largest, 1.05 * float(extent_mm.max())):
                    side = min(side * self.grow, largest)
                    centre = self._keep_inside((obj_lo + obj_hi) / 2, anchors, side)
                    continue
                if not zoomed_in and not touch.any() and obj_ext * 2.2 < side and side > small * 1.2:
                    zoomed_in = True
                    # never so small that a prompt falls out of the grid
                    side = max(small, obj_ext * 1.8, float((hi_a - lo_a).max()) / 0.9)
                    centre = self._keep_inside((obj_lo + obj_hi) / 2, anchors, side)
                    continue
                break
            mask = self._to_source(prob, centre, side, sp, img.shape)
        existing = None if existing_mask is None else np.asarray(existing_mask, bool)
        mask = _keep_clicked_components(mask, pos, existing)
        if existing is not None:
            mask = self._outside_keep(mask, existing, centre, side, sp)
        return mask

    @staticmethod
    def _keep_inside(centre: np.ndarray, anchors: np.ndarray, side: float) -> np.ndarray:
        """Shift ``centre`` so the prompt anchors stay inside the working grid (when they fit)."""
        half = 0.45 * side
        lo = anchors.max(0) - half
        hi = anchors.min(0) + half
        return np.where(lo <= hi, np.clip(centre, lo, hi), centre)

    def _to_source(self, prob, centre: np.ndarray, side: float, sp: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Threshold the working-grid probability, resampled (linearly) onto the source grid."""
        import torch

        patch = np.asarray(self.spec.patch)
        lo = np.maximum(np.floor((centre - side / 2) / sp).astype(int), 0)
        hi = np.minimum(np.ceil((centre + side / 2) / sp).astype(int) + 1, np.array(shape))
        out = np.zeros(shape, bool)
        if np.any(hi <= lo):
            return out
        # the grid is axis-aligned: normalised working coordinates per axis, then one meshgrid
        # (building it from the full (N, ndim) index grid cost as much as the network on a film)
        vox = side / patch
        axes = []
        for a in range(len(shape)):
            i = torch.arange(int(lo[a]), int(hi[a]), dtype=torch.float32, device=self.device)
            w = (i * float(sp[a]) - float(centre[a])) / float(vox[a]) + float((patch[a] - 1) / 2)
            axes.append(2.0 * w / float(patch[a] - 1) - 1.0)
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)[None]
        p = sample(prob[None].float(), grid)[0]
        out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = (p > 0.5).cpu().numpy()
        return out

    @staticmethod
    def _outside_keep(mask: np.ndarray, existing: np.ndarray, centre: np.ndarray, side: float, sp: np.ndarray) -> np.ndarray:
        """Keep the existing mask outside the last working grid (the network saw only inside)."""
        lo = np.maximum(np.ceil((centre - side / 2) / sp).astype(int), 0)
        hi = np.minimum(np.floor((centre + side / 2) / sp).astype(int) + 1, np.array(mask.shape))
        out = existing.copy()
        region = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        out[region] = mask[region]
        return out


def _keep_clicked_components(
    mask: np.ndarray, positive: np.ndarray, existing: np.ndarray | None = None
) -> np.ndarray:
    """Drop islands that hold no positive click and do not overlap the mask being refined
    (all of them stay when no click is inside any)."""
    from scipy import ndimage as ndi

    if not mask.any() or not len(positive):
        return mask
    # label only the mask's bounding box (the last working grid): the same components, less time
    lo, hi = [], []
    for a in range(mask.ndim):
        on = np.flatnonzero(mask.any(axis=tuple(b for b in range(mask.ndim) if b != a)))
        lo.append(int(on[0]))
        hi.append(int(on[-1]) + 1)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    lab, n = ndi.label(mask[box])
    if n <= 1:
        return mask
    idx = np.clip(np.rint(positive).astype(int), 0, np.array(mask.shape) - 1)
    idx = idx[np.all((idx >= lo) & (idx < np.array(hi)), axis=1)] - np.array(lo)
    keep = {int(lab[tuple(p)]) for p in idx} - {0}
    if not keep:
        return mask
    if existing is not None and existing.any():
        keep |= set(np.unique(lab[existing[box] & mask[box]]).tolist()) - {0}
    out = np.zeros_like(mask)
    out[box] = np.isin(lab, sorted(keep))
    return out


# ---------------------------------------------------------------------- backend
_SEGMENTERS: dict[tuple[str, str], GuidedSegmenter] = {}
_CACHE_LOCK = threading.Lock()


def release_images() -> None:
    """Free the normalised images the cached segmenters hold (e.g. when a session ends)."""
    with _CACHE_LOCK:
        for seg in _SEGMENTERS.values():
            seg.release()


def get_segmenter(name: str, device: Any = "auto") -> GuidedSegmenter:
    """A cached :class:`GuidedSegmenter` for a shipped spec (loads the weights once)."""
    with _CACHE_LOCK:
        key = (str(name), str(device))
        if key not in _SEGMENTERS:
            _SEGMENTERS[key] = GuidedSegmenter(name, device)
        return _SEGMENTERS[key]


def network_backend(
    image: np.ndarray,
    prompts: Any,
    spacing: np.ndarray,
    existing_mask: np.ndarray | None,
    roi_margin_mm: float = 30.0,
    net: str | None = None,
    device: str = "auto",
    modality: str | None = None,
    **_: Any,
) -> np.ndarray:
    """Click-to-segment backend ``"network"``: the shipped click network for the image's dims.

    Parameters
    ----------
    image, prompts, spacing, existing_mask, roi_margin_mm
        As for every backend (see :func:`napari_cxseg.editing.interactive.register_backend`);
        the working grid sizes itself, so ``roi_margin_mm`` is not used.
    net
        Spec name; default ``cxr-clicks`` for 2D images and ``ct-clicks`` for 3D.
    device
        Torch device (``"auto"``: CUDA > MPS > CPU).
    modality
        The image's modality when known (``"CT"``, ``"MR"``, ``"DX"`` ...); a network refuses
        modalities its spec does not list (e.g. ``ct-clicks`` windows HU and cannot read MR).

    Raises
    ------
    CxsegError
        For a modality the network was not trained on, or a dimensionality without a network.
    """
    name = net or DEFAULT_NETS.get(np.ndim(image))
    if name is None:
        raise CxsegError(f"no click network for {np.ndim(image)}D images")
    seg = get_segmenter(name, device)
    accepted = [str(m).upper() for m in seg.spec.info.get("modality") or []]
    if modality and accepted and str(modality).upper() not in accepted:
        raise CxsegError(
            f"the click network {name} was trained on {'/'.join(accepted)} images, not {modality}: "
            "choose the 'Intensity (no model)' method for this image"
        )
    return seg.segment(image, prompts.positive, prompts.negative, prompts.box, spacing, existing_mask)
