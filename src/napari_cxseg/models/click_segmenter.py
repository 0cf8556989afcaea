"""The click-guided segmenter: prompts -> AutoZoom passes of the network -> a source mask.

Like nnInteractive's "AutoZoom", when the predicted object reaches an inner face of the working
grid the grid is enlarged and the network runs again; when the object is small compared with
the grid, the grid shrinks around it once for a finer boundary. A later click on the same
object starts from the grid the previous call ended on, and what does not depend on the click
(the normalised image, its block averages, the image sampled on a grid) is cached; see
:mod:`.click_state` for what is kept and when it is forgotten. No Qt or napari import.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..images import CxsegError
from .click_grids import (
    bounding_box,
    box_map,
    click_maps,
    keep_clicked_components,
    keep_inside,
    outside_keep,
    roi_grid,
    sample,
    sample_mask,
    to_source,
    to_working,
    working_coordinates,
)
from .click_spec import (
    PROMPT_CHANNELS,
    ClickNetSpec,
    freeze_for_cpu,
    image_channels,
    load_shipped_network,
    load_spec,
    normalise,
)
from .click_state import GridCache, LastCall, mask_digest, weak


class GuidedSegmenter:
    """Runs one click-guided network on prompts (with AutoZoom), on CPU, CUDA or MPS.

    Parameters
    ----------
    spec
        A :class:`ClickNetSpec` or a shipped spec name.
    device
        ``"auto"`` (CUDA > MPS > CPU), ``"cpu"``, ``"cuda"``...
    network
        An already built network (tests, training), run as given; default: the spec's network
        with its shipped weights, on CPU frozen into an optimised TorchScript copy
        (:func:`~.click_spec.freeze_for_cpu`; the eager network where that fails).
    reuse
        Start a call that adds clicks to the previous one from the working grid the previous
        one ended on, and reuse sampled image channels (see :mod:`.click_state`); ``False``:
        every call runs the whole AutoZoom from the first grid (the normalised image is cached
        either way).
    """

    max_passes = 5
    grow = 1.7
    #: the source may be at most this many times finer than the working grid before it is
    #: block-averaged (anti-aliasing): about what the network saw in training
    source_ratio = {2: 1.0, 3: 2.0}
    #: working grids whose sampled image channels are kept
    grid_cache_size = 4
    #: previous calls a later one may continue (several, so a click after an undo continues
    #: the call from before the undone click)
    calls_kept = 8

    def __init__(self, spec: ClickNetSpec | str, device: Any = "auto", network: Any = None, reuse: bool = True):
        import torch

        from ..device import pick_device

        self.spec = load_spec(spec) if isinstance(spec, str) else spec
        self.device = pick_device(device)
        if self.device.type == "mps" and self.spec.spatial_dims == 3:
            self.device = torch.device("cpu")  # 3D grid_sample is missing on MPS in older torch
        frozen = None
        if network is None:
            network = load_shipped_network(self.spec)
            if self.device.type == "cpu":
                n_in = image_channels(self.spec.intensity) + len(PROMPT_CHANNELS)
                frozen = freeze_for_cpu(network, (n_in, *self.spec.patch))
        self.network = network.to(self.device).eval()
        self._run = frozen if frozen is not None else self.network
        self.reuse = bool(reuse)
        self.coords = working_coordinates(self.spec.patch, self.device)
        self._norm_src: Any = None  # weak reference to the image the cache was made from
        self._levels: dict[tuple[int, ...], Any] = {}
        self._grids = GridCache(self.grid_cache_size)
        self._calls: list[LastCall] = []  # most recent last
        self._lock = threading.Lock()
        self.passes: list[float] = []  # working-grid sides of the last call (diagnostics)

    @property
    def frozen(self) -> bool:
        """Whether the network runs as a frozen TorchScript copy."""
        return self._run is not self.network

    def sides(self, shape: tuple[int, ...], spacing: np.ndarray) -> tuple[float, float, float]:
        """(first, smallest, largest) working-grid sides in mm for an image."""
        s = self.spec
        unit = float((np.asarray(shape) * spacing).max()) if s.relative_roi else 1.0
        return s.min_side_mm * unit, s.small_side_mm * unit, s.max_side_mm * unit

    # -- caches
    def release(self) -> None:
        """Forget the cached image (normalised, block averages, sampled grids) and the previous
        call, unless a call is running."""
        if self._lock.acquire(blocking=False):
            try:
                self._clear()
            finally:
                self._lock.release()

    def _clear(self) -> None:
        self._norm_src = None
        self._levels = {}
        self._grids.clear()
        self._calls = []

    def forget_calls(self) -> None:
        """Forget the previous calls (the next one starts its AutoZoom afresh); the image
        caches stay."""
        with self._lock:
            self._calls = []

    def _source(self, image: np.ndarray, spacing: np.ndarray, vox: float):
        """The normalised image, block-averaged so it is not much finer than ``vox`` mm.

        Returns ``(tensor (C, *shape), spacing, offset_mm)``: block ``i`` of factor ``f`` is
        centred on source index ``i * f + (f - 1) / 2``, i.e. ``offset_mm`` from ``i * f``.
        A different image (another array object) clears every cache first.
        """
        import torch
        import torch.nn.functional as F

        src = self._norm_src() if self._norm_src is not None else None
        if src is not image or () not in self._levels:
            self._clear()
            arr = normalise(image, self.spec.intensity)
            self._levels[()] = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)
            self._norm_src = weak(image)  # not weak-referenceable: no cache kept
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

    def image_channels_on(self, image: np.ndarray, centre_mm: np.ndarray, side_mm: float, spacing: np.ndarray):
        """``(C, *patch)`` normalised image on a working grid (cached per grid when reusing)."""
        spec = self.spec
        src, src_sp, offset = self._source(image, spacing, float(side_mm) / max(spec.patch))
        key = (tuple(map(float, centre_mm)), float(side_mm), tuple(map(float, spacing)), tuple(src.shape))
        chans = self._grids.get(key) if self.reuse and self._norm_src is not None else None
        if chans is None:
            grid = roi_grid(np.asarray(centre_mm) - offset, side_mm, spec.patch, src_sp, tuple(src.shape[1:]),
                            device=self.device)
            chans = sample(src, grid)
            if self.reuse and self._norm_src is not None:
                self._grids.put(key, chans)
        return chans

    # -- one pass
    def _forward(self, x):
        import torch

        with torch.inference_mode():
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    y = self._run(x)
            else:
                y = self._run(x)
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
        existing: np.ndarray | None,
    ):
        """Probability on one working grid (prompts in source index coordinates, ``existing`` a
        boolean mask of the image's shape or ``None``)."""
        import torch

        spec, nd = self.spec, image.ndim
        chans = list(self.image_channels_on(image, centre_mm, side_mm, spacing))
        for pts in (positive, negative):
            w = to_working(np.asarray(pts, float).reshape(-1, nd) * spacing, centre_mm, side_mm, spec.patch)
            chans.append(click_maps(w, spec.patch, spec.guidance_sigma, self.coords))
        if box is not None:
            corners = to_working(np.asarray(box, float) * spacing, centre_mm, side_mm, spec.patch)
            chans.append(box_map(corners.min(0), corners.max(0), spec.patch, self.coords))
        else:
            chans.append(torch.zeros(spec.patch, device=self.device))
        if existing is not None:
            chans.append(sample_mask(existing, centre_mm, side_mm, spec.patch, spacing, self.device))
        else:
            chans.append(torch.zeros(spec.patch, device=self.device))
        return self._forward(torch.stack(chans)[None])

    # -- a call
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
        img = np.asarray(image)
        nd = img.ndim
        if nd != self.spec.spatial_dims:
            raise CxsegError(
                f"click network {self.spec.name} is {self.spec.spatial_dims}D; the image is {nd}D"
            )
        sp = np.ones(nd) if spacing is None else np.broadcast_to(np.asarray(spacing, float), (nd,)).copy()
        pos = np.asarray(positive, float).reshape(-1, nd)
        neg = np.zeros((0, nd)) if negative is None else np.asarray(negative, float).reshape(-1, nd)
        box = None if box is None else np.asarray(box, float)
        if box is not None and not len(pos):  # a box alone: its centre is the object
            pos = box.mean(0, keepdims=True)
        existing = None if existing_mask is None else np.asarray(existing_mask, bool)
        refine = existing if existing is not None and existing.any() else None
        anchor_pts = [pos * sp]
        if box is not None:
            anchor_pts.append(box * sp)
        if refine is not None:
            lo, hi = bounding_box(refine)
            anchor_pts.append(np.stack([lo, hi]) * sp)
        anchors = np.concatenate(anchor_pts)
        if not len(anchors):
            raise CxsegError("give at least one positive click, a box or an existing mask")
        with self._lock:
            digest = mask_digest(refine) if self.reuse else None
            start = None
            for call in reversed(self._calls if self.reuse else []):
                start = call.start_for(img, sp, pos, neg, box, digest, anchors)
                if start is not None:
                    break
            if start is None:
                first, small, largest = self.sides(img.shape, sp)
                lo_a, hi_a = anchors.min(0), anchors.max(0)
                side = float(np.clip(max(first, 1.3 * float((hi_a - lo_a).max())), small, largest))
                start = ((lo_a + hi_a) / 2, side, False)
            prob, centre, side, zoomed_in = self._autozoom(img, sp, pos, neg, box, refine, anchors, *start)
            if self.reuse:
                ref = weak(img)
                self._calls = [c for c in self._calls if c.image is not None and c.image() is img]
                self._calls = [*self._calls, LastCall(ref, tuple(float(s) for s in sp), pos.copy(), neg.copy(),
                                                      None if box is None else box.copy(), digest, centre.copy(),
                                                      side, zoomed_in)][-self.calls_kept:]
            mask = to_source(prob, centre, side, self.spec.patch, sp, img.shape)
        mask = keep_clicked_components(mask, pos, existing)
        if existing is not None:
            mask = outside_keep(mask, existing, centre, side, sp)
        return mask

    def _autozoom(
        self,
        img: np.ndarray,
        sp: np.ndarray,
        pos: np.ndarray,
        neg: np.ndarray,
        box: np.ndarray | None,
        existing: np.ndarray | None,
        anchors: np.ndarray,
        centre: np.ndarray,
        side: float,
        zoomed_in: bool,
    ):
        """The AutoZoom passes from a start grid: ``(probability, centre, side, zoomed_in)`` of
        the last pass (its sides in :attr:`passes`)."""
        patch = np.asarray(self.spec.patch)
        extent_mm = np.array(img.shape) * sp
        _, small, largest = self.sides(img.shape, sp)
        spread = float((anchors.max(0) - anchors.min(0)).max())
        self.passes = []
        for _ in range(self.max_passes):
            prob = self.predict_patch(img, centre, side, sp, pos, neg, box, existing)
            self.passes.append(side)
            m = (prob > 0.5).cpu().numpy()
            bb = bounding_box(m)
            if bb is None:
                break
            vox = side / patch.astype(float)
            w_lo, w_hi = bb
            obj_lo = centre + (w_lo - (patch - 1) / 2) * vox
            obj_hi = centre + (w_hi - (patch - 1) / 2) * vox
            # faces touched by the object that lie inside the image (not the image's border)
            roi_lo, roi_hi = centre - side / 2, centre + side / 2
            touch = ((w_lo <= 1) & (roi_lo > 0)) | ((w_hi >= patch - 2) & (roi_hi < extent_mm - sp))
            obj_ext = float((obj_hi - obj_lo).max())
            if touch.any() and side < min(largest, 1.05 * float(extent_mm.max())):
                side = min(side * self.grow, largest)
                centre = keep_inside((obj_lo + obj_hi) / 2, anchors, side)
                continue
            if not zoomed_in and not touch.any() and obj_ext * 2.2 < side and side > small * 1.2:
                zoomed_in = True
                # never so small that a prompt falls out of the grid
                side = max(small, obj_ext * 1.8, spread / 0.9)
                centre = keep_inside((obj_lo + obj_hi) / 2, anchors, side)
                continue
            break
        return prob, np.asarray(centre, float), float(side), zoomed_in
