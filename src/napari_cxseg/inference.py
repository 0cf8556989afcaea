"""The one inference engine behind the widget, the CLI, batch runs, benchmarks and tests.

:class:`Predictor` turns an :class:`~napari_cxseg.images.Image` into a
:class:`~napari_cxseg.images.LabelMap` on exactly the image's held grid:

1. check modality, dimensionality and channels against the card;
2. move the image into model space with MONAI dictionary transforms - volumes: a channel-first
   MetaTensor in (x, y, z) with its index->RAS affine, then ``Orientationd`` + ``Spacingd`` +
   intensity; radiographs: intensity, ``Resized`` to the card size (aspect kept by padding with
   ``input.fit: pad``), all in :mod:`napari_cxseg.model_space`, which the Trainer shares;
3. sliding-window inference (MONAI's window slicing and Gaussian importance map), one window
   batch at a time so progress is reported and a cancel request is honoured between batches;
4. activation (softmax or sigmoid) and ``Invertd`` of the *probabilities* back to the source
   grid, then argmax / threshold (with the card's overlap rule for multi-label outputs);
5. optional largest connected component per class (MONAI ``KeepLargestConnectedComponent``).

Bundles (cards derived from a MONAI bundle, or MSD cards whose network only the bundle can
build) go through :class:`~napari_cxseg.models.bundle.BundleModel`: the bundle's own
preprocessing, window settings and postprocessing (including its ``Invertd``).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Generator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .images import CxsegError, Image, LabelMap
from .model_space import contiguous_tensor, input_array, preprocess, select_channels, to_metatensor
from .models.cards import ModelCard, find_card
from .models.onnx_runtime import first_output

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]

#: Stitched outputs above this many values (channels x voxels) are kept on the CPU.
CPU_STITCH_THRESHOLD = 2**27


class Cancelled(Exception):
    """Raised when a prediction is cancelled between two sliding-window batches."""


@dataclass
class Prepared:
    """An image checked and moved into model space (:meth:`Predictor.prepare`)."""

    image: Image
    data: dict[str, Any] | None = None  # the preprocessed dict (MetaTensor "image")
    compose: Any = None  # the invertible spatial Compose that Invertd undoes


class Predictor:
    """Run a model card on images.

    Parameters
    ----------
    card
        A :class:`ModelCard` or anything :func:`~napari_cxseg.models.cards.find_card` accepts
        (name, card YAML, bundle folder/zip, ``.ts``/``.pt`` with a card beside it).
    device
        ``"auto"`` (CUDA > MPS > CPU), ``"cpu"``, ``"cuda"``, ``"mps"`` or a ``torch.device``.
    trust
        Allow running code from the model's files: bundle configs that hold code and
        TorchScript weights (see :mod:`napari_cxseg.models.trust`).
    network
        A ready ``torch.nn.Module`` to use instead of building the card's network and loading
        its weights (tests, training loops that evaluate the model they are training).
    largest_component
        Override the card's ``output.largest_component`` (None: use the card's); also settable
        as the attribute of the same name.
    precision
        The network's arithmetic (:func:`~napari_cxseg.device.autocast_dtype`): ``"auto"``
        (float16 autocast on CUDA, float32 elsewhere), ``"float32"``, ``"bfloat16"``, ``"float16"``.
    runtime
        What computes the windows (:func:`~napari_cxseg.models.onnx_runtime.resolve_runtime`):
        ``"auto"`` (2D networks in ONNX Runtime on CPU in float32 when installed, 0.75x of PyTorch's time,
        exported once and checked against PyTorch's logits; a near-tie voxel may take the other
        label; else PyTorch), ``"torch"`` or ``"onnx"``. The attribute ``runtime`` holds what runs.
    background_export
        With the ONNX runtime, export a network that has no checked export yet in a separate
        process and run this prediction in PyTorch (the Segment widget: an export in the viewer's
        process would hold its event loop for seconds); later Predictors find it ready.

    Raises
    ------
    CxsegError
        For an untrusted bundle with code in its config, an unavailable device, or a card
        whose weights cannot be found (raised on first use).
    """

    def __init__(self, card: ModelCard | str | Path, device: Any = "auto", trust: bool = False,
                 network: Any = None, largest_component: bool | None = None, precision: str = "auto",
                 runtime: str = "auto", background_export: bool = False) -> None:
        from .device import autocast_dtype, pick_device
        from .models.onnx_runtime import resolve_runtime

        self.card = card if isinstance(card, ModelCard) else find_card(card)
        self.device = pick_device(device)
        self.precision = precision
        self._amp = autocast_dtype(self.device, precision)
        self.trust = bool(trust)
        self._network = network
        self._own_network = network is None  # a caller's network (training) keeps its layout
        self.runtime = resolve_runtime(runtime, self.device, self._amp, self._own_network, self.card.spatial_dims)
        self._runtime_asked = runtime
        self.background_export = bool(background_export)
        self._onnx: dict[tuple[int, ...], Any] = {}  # window shape -> OnnxNetwork
        self._bundle = None
        self.largest_component = largest_component
        if self.card.is_bundle and network is None:
            self._bundle = self._make_bundle()
        elif self.card.inference is None:
            raise CxsegError(f"model {self.card.name}: the card has no 'inference' settings (roi_size ...)")

    # ------------------------------------------------------------------ loading
    def _make_bundle(self) -> Any:
        from .models.bundle import BundleModel
        from .models.weights import resolve_bundle

        bdir = resolve_bundle(self.card)
        return BundleModel(bdir, device=self.device, trust=self.trust)

    @property
    def network(self) -> Any:
        """The network (built and its weights loaded on first access), on the device, eval mode."""
        if self._bundle is not None:
            return self._bundle.load().network
        if self._network is None:
            from .models.networks import load_network

            self._network = load_network(self.card, trust=self.trust)
        self._network = self._network.to(self.device).eval()
        return self._network

    def load(self) -> Predictor:
        """Load the network and weights now (otherwise done by the first prediction)."""
        _ = self.network
        return self

    # ------------------------------------------------------------------ public API
    def predict(self, image: Image | None, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                prepared: Prepared | None = None) -> LabelMap:
        """Segment one image.

        Parameters
        ----------
        image
            The image (held array + geometry).
        progress
            Called as ``progress(done, total)`` between sliding-window batches.
        cancel
            Polled between batches; when it returns True, :class:`Cancelled` is raised.
        prepared
            :meth:`prepare`'s result for the image, when it was prepared ahead (batch runs).

        Returns
        -------
        LabelMap
            On exactly the image's grid, with a copy of its geometry and the card's classes.
        """
        gen = self.iter_predict(image, cancel=cancel, prepared=prepared)
        while True:
            try:
                done, total = next(gen)
            except StopIteration as stop:
                return stop.value
            if progress is not None:
                progress(done, total)

    def prepare(self, image: Image) -> Prepared:
        """Check an image and move it into model space: the steps before the network.

        Needs no network, so a batch run can prepare the next cases in worker processes
        (:mod:`napari_cxseg.prefetch`) while this one runs; bundles are prepared in
        :meth:`iter_predict` (their transforms live with their network).

        Raises
        ------
        CxsegError
            As :meth:`validate`.
        """
        import torch

        self.validate(image)
        image = _finite_image(image)
        if self._bundle is not None:
            return Prepared(image)
        with torch.inference_mode():
            data, compose = preprocess(self.card, image, self._channels(image))
        return Prepared(image, data, compose)

    def iter_predict(self, image: Image | None, cancel: CancelFn | None = None,
                     prepared: Prepared | None = None) -> Generator[tuple[int, int], None, LabelMap]:
        """Segment one image step by step (for napari generator workers).

        Yields ``(done, total)`` window batches; closing the generator stops the work at the
        next batch.  The :class:`LabelMap` is the generator's return value
        (``StopIteration.value``; ``yield from`` gives it directly). ``prepared``: the result
        of :meth:`prepare` for the image (then ``image`` may be None).
        """
        import torch

        card = self.card
        ready = prepared if prepared is not None else self.prepare(image)
        image = ready.image
        # inference mode is entered per step, never across a yield: the caller's code between
        # two steps must not run under it
        boxes = None
        if self._bundle is not None:
            probs_or_labels = yield from self._run_bundle(image, self._channels(image), cancel)
            with torch.inference_mode():
                labels = self._to_labels(probs_or_labels, discrete_ok=True)
        else:
            data, compose = ready.data, ready.compose
            win = card.inference
            logits = yield from self._sliding_window(
                data["image"][None], win.roi_size, win.overlap, win.sw_batch_size, win.mode, cancel=cancel
            )
            with torch.inference_mode():
                probs = self._activate(logits[0])
                labels, boxes = self._fast_labels(probs, data["image"])
                if labels is None:
                    labels = self._to_labels(self._invert(probs, data, compose))
        if image.geometry.ndim == 3:
            labels = contiguous_tensor(labels.transpose(2, 1, 0)).numpy()  # (x, y, z) -> held (z, y, x)
            boxes = None if boxes is None else {c: b[::-1] for c, b in boxes.items()}
        labels = np.ascontiguousarray(labels)
        keep_largest = card.output.largest_component if self.largest_component is None else self.largest_component
        if keep_largest:
            labels = largest_components(labels, sorted(card.classes), boxes)
        return self._label_map(image, labels)

    def predict_probabilities(self, image: Image, cancel: CancelFn | None = None,
                              on_source_grid: bool = True) -> np.ndarray:
        """The network's class probabilities for one image (uncertainty scores, active learning).

        The same steps as :meth:`predict` up to the activation: preprocessing, sliding window,
        softmax or sigmoid, and (``on_source_grid``) ``Invertd`` back to the image's grid.

        Parameters
        ----------
        image
            The image (held array + geometry).
        cancel
            Polled between window batches; True raises :class:`Cancelled`.
        on_source_grid
            True: on the image's held grid (like :meth:`predict`'s labels); False: in model
            space (the card's orientation/spacing or 2D size: far smaller for volumes).

        Returns
        -------
        numpy.ndarray
            float32, channel first, in the network's output channel order
            (``card.channel_label_map``): softmax over classes (channel 0 background) or one
            sigmoid per structure. Spatial axes: the held order (z, y, x) / (row, col) on the
            source grid; MONAI's (x, y, z) / (row, col) in model space.

        Raises
        ------
        CxsegError
            For a card run through a MONAI bundle's own postprocessing (it may give labels only).
        """
        import torch

        if self._bundle is not None:
            raise CxsegError(f"model {self.card.name} runs through its MONAI bundle's own postprocessing; "
                             "its class probabilities are not available")
        self.validate(image)
        image = _finite_image(image)
        with torch.inference_mode():
            data, compose = preprocess(self.card, image, self._channels(image))
        win = self.card.inference
        gen = self._sliding_window(data["image"][None], win.roi_size, win.overlap, win.sw_batch_size, win.mode,
                                   cancel=cancel)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                logits = stop.value
                break
        with torch.inference_mode():
            probs = self._activate(logits[0])
            if on_source_grid:
                probs = self._invert(probs, data, compose)
            t = probs.as_tensor() if hasattr(probs, "as_tensor") else torch.as_tensor(probs)
            out = t.detach().cpu().float().numpy()
        if on_source_grid and image.geometry.ndim == 3:
            out = out.transpose(0, 3, 2, 1)  # (x, y, z) -> held (z, y, x)
        return np.ascontiguousarray(out, dtype=np.float32)

    # ------------------------------------------------------------------ validation
    def validate(self, image: Image) -> None:
        """Check that the card can run on this image.

        Raises
        ------
        CxsegError
            Saying what the model expects and what the image has.
        """
        card = self.card
        src = image.meta.get("source_path") or image.meta.get("name") or "the image"
        nd = image.geometry.ndim
        if nd != card.spatial_dims:
            raise CxsegError(
                f"model {card.name} is a {card.spatial_dims}D model ({card.task}); {src} is {nd}D"
            )
        if not card.accepts_modality(image.modality):
            raise CxsegError(
                f"model {card.name} expects {'/'.join(card.modality)} images; {src} has modality {image.modality}"
            )
        self._channels(image)

    def _channels(self, image: Image) -> list[int] | str | None:
        """Which image channels feed the network, in the card's order (``"rgb"``: average)."""
        return select_channels(self.card, image)

    # ------------------------------------------------------------------ sliding window
    def _sliding_window(
        self, x: Any, roi_size: tuple[int, ...], overlap: float, sw_batch_size: int, mode: str,
        sigma_scale: float | tuple[float, ...] = 0.125, padding_mode: str = "constant", cval: float = 0.0,
        cancel: CancelFn | None = None,
    ) -> Generator[tuple[int, int], None, Any]:
        """MONAI-equivalent sliding-window inference that yields after every window batch.

        Uses MONAI's ``dense_patch_slices`` and ``compute_importance_map`` and the same padding,
        scan interval and blending as ``monai.inferers.sliding_window_inference``.
        """
        import torch
        import torch.nn.functional as F
        from monai.data.utils import compute_importance_map, dense_patch_slices
        from monai.utils import fall_back_tuple

        dev = self.device
        if hasattr(x, "as_tensor"):  # a MetaTensor: plain tensors spare every layer MONAI's metadata hook
            x = x.as_tensor()
        x = torch.as_tensor(x).float()
        nd = x.ndim - 2
        size0 = tuple(int(s) for s in x.shape[2:])
        roi = tuple(int(r) for r in fall_back_tuple(roi_size, size0))
        size = tuple(max(size0[i], roi[i]) for i in range(nd))
        pad: list[int] = []
        for k in range(nd - 1, -1, -1):
            diff = max(roi[k] - size0[k], 0)
            pad += [diff // 2, diff - diff // 2]
        if any(pad):
            x = F.pad(x, pad=pad, mode=padding_mode, value=cval) if padding_mode == "constant" \
                else F.pad(x, pad=pad, mode=padding_mode)
        interval = tuple(
            roi[i] if roi[i] == size[i] else max(int(roi[i] * (1 - overlap)), 1) for i in range(nd)
        )
        slices = dense_patch_slices(size, roi, interval, return_slice=True)
        n_batches = math.ceil(len(slices) / sw_batch_size)
        cuda = dev.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True
        imp = compute_importance_map(roi, mode=mode, sigma_scale=sigma_scale, device=dev, dtype=torch.float32)
        imp = imp[None, None]
        out = count = None
        out_dev = dev
        yield 0, n_batches
        if cancel is not None and cancel():
            raise Cancelled(f"prediction with {self.card.name} cancelled")
        net, layout = self._window_network((int(x.shape[1]), *roi))  # an ONNX export takes seconds
        for b in range(n_batches):
            if cancel is not None and cancel():
                raise Cancelled(f"prediction with {self.card.name} cancelled")
            group = slices[b * sw_batch_size:(b + 1) * sw_batch_size]
            with torch.inference_mode():
                win = torch.cat([x[(slice(None), slice(None), *s)] for s in group]).to(dev)
                if layout is not None:
                    win = win.contiguous(memory_format=layout)
                ctx = torch.autocast(dev.type, dtype=self._amp) if self._amp is not None else nullcontext()
                with ctx:
                    pred = net(win)
                pred = torch.as_tensor(first_output(pred)).float()
                if tuple(pred.shape[2:]) != roi:
                    raise CxsegError(
                        f"model {self.card.name}: the network returned windows of {tuple(pred.shape[2:])} for "
                        f"input windows of {roi}; it must keep the spatial size"
                    )
                if out is None:
                    k = int(pred.shape[1])
                    out_dev = torch.device("cpu") if (cuda and k * math.prod(size) > CPU_STITCH_THRESHOLD) else dev
                    out = torch.zeros((1, k, *size), dtype=torch.float32, device=out_dev)
                    count = torch.zeros((1, 1, *size), dtype=torch.float32, device=out_dev)
                weighted = (pred * imp).to(out_dev)
                w_out = imp.to(out_dev)
                for i, s in enumerate(group):
                    out[(slice(None), slice(None), *s)] += weighted[i:i + 1]
                    count[(slice(None), slice(None), *s)] += w_out
                del win, pred, weighted
            yield b + 1, n_batches
        with torch.inference_mode():
            out /= count
            if any(pad):
                crop = [slice(None), slice(None)]
                for i in range(nd):
                    lo = pad[2 * (nd - 1 - i)]
                    crop.append(slice(lo, lo + size0[i]))
                out = out[tuple(crop)]
            return out.cpu()

    def _window_network(self, window: tuple[int, ...]) -> tuple[Any, Any]:
        """What computes a batch of windows of ``window`` (C x roi), and the input's memory layout."""
        if self.runtime == "onnx" and window not in self._onnx:
            from .models.onnx_runtime import export_state, onnx_network, start_background_export

            if self.background_export and export_state(self.network, window) == "missing":
                start_background_export(self.network, window, self.card.name)
                self.runtime = "torch"  # this time; the next Predictor finds the export ready
            else:
                try:
                    self._onnx[window] = onnx_network(self.network, window, self.card.name)
                except CxsegError as e:
                    if self._runtime_asked != "auto":
                        raise
                    warnings.warn(f"{e}; running the network in PyTorch", stacklevel=3)
                    self.runtime = "torch"
        if self.runtime == "onnx":
            return self._onnx[window], None
        net = self.network
        return net, (_channels_last(net, len(window) - 1) if self._own_network else None)

    # ------------------------------------------------------------------ postprocessing
    def _activate(self, logits: Any) -> Any:
        import torch

        if self.card.output.activation == "softmax":
            return torch.softmax(logits, dim=0)
        return torch.sigmoid(logits)

    def _invert(self, probs: Any, data: dict[str, Any], compose: Any) -> Any:
        """Bring channel-first probabilities from model space back to the source grid."""
        from monai.data import MetaTensor
        from monai.transforms import Invertd

        img = data["image"]
        meta = {k: v for k, v in img.meta.items() if k != "affine"}
        pred = MetaTensor(probs, affine=img.affine, meta=meta)
        d = Invertd(keys="pred", transform=compose, orig_keys="image", nearest_interp=False)(
            {"image": img, "pred": pred}
        )
        return d["pred"]

    def _fast_labels(self, probs: Any, image: Any) -> tuple[np.ndarray | None, dict[int, Any] | None]:
        """Softmax labels on the source grid without resampling every channel, and class boxes.

        ``(None, None)`` when not applicable.

        For a volume whose model space is an axis-aligned orientation/spacing of its grid, or a
        radiograph resized and padded to the card's size,
        :func:`~napari_cxseg.source_grid.labels_on_source_grid` gives the argmax of the
        linearly inverted probabilities (``Invertd``'s labels).
        """
        from .source_grid import labels_on_source_grid, source_mapping

        card = self.card
        mapping = source_mapping(image) if card.output.activation == "softmax" else None
        if mapping is None:
            return None, None
        lut = _channel_lut(card, int(probs.shape[0]))
        return labels_on_source_grid(probs, mapping[0], mapping[1], lut, _label_dtype(card), return_boxes=True)

    def _to_labels(self, out: Any, discrete_ok: bool = False) -> np.ndarray:
        """Channel-first probabilities (or a bundle's discrete output) -> integer labels."""
        import torch

        card = self.card
        t = torch.as_tensor(out).float()
        if t.ndim == card.spatial_dims:
            t = t[None]
        k = int(t.shape[0])
        if k == 1 and discrete_ok:
            ids = t[0].round().to(torch.int64).numpy()
            lm = card.output.label_map
            if lm:
                lut = np.zeros(max(max(lm), int(ids.max(initial=0))) + 1, dtype=np.int64)
                lut[: int(ids.max(initial=0)) + 1] = np.arange(int(ids.max(initial=0)) + 1)
                for c, cid in lm.items():
                    lut[c] = cid
                ids = lut[ids]
            return ids.astype(_label_dtype(card))
        binary = discrete_ok and bool(torch.all((t == 0) | (t == 1)))
        if card.output.activation == "softmax" and not (binary and card.output.label_map):
            idx = argmax_channels(t).numpy()
            return _channel_lut(card, k)[idx].astype(_label_dtype(card))
        masks = t >= 0.5 if binary else t > card.output.threshold
        return combine_masks(masks.numpy(), card.channel_label_map(k), card.output.overlap,
                             card.output.priority).astype(_label_dtype(card))

    # ------------------------------------------------------------------ bundles
    def _run_bundle(self, image: Image, chans: list[int] | str | None,
                    cancel: CancelFn | None) -> Generator[tuple[int, int], None, Any]:
        import torch

        bundle = self._bundle.load()
        with torch.inference_mode():
            data = bundle.preprocess(to_metatensor(input_array(image, chans), image, transpose_2d=True))
        xm = data[bundle.image_key]
        ws = bundle.window_settings()
        if ws is None:
            self.runtime = "torch"  # the bundle's own inferer calls its network
            yield 0, 1
            if cancel is not None and cancel():
                raise Cancelled(f"prediction with {self.card.name} cancelled")
            with torch.inference_mode():
                pred = bundle.infer(xm[None].to(self.device))[0].cpu()
            yield 1, 1
        else:
            pred = (yield from self._sliding_window(
                xm[None], ws["roi_size"], ws["overlap"], ws["sw_batch_size"], ws["mode"],
                sigma_scale=ws["sigma_scale"], padding_mode=ws["padding_mode"], cval=ws["cval"], cancel=cancel,
            ))[0]
        with torch.inference_mode():
            out = bundle.postprocess(data, pred)
            out = np.asarray(out.detach().cpu() if hasattr(out, "detach") else out)
        if image.geometry.ndim == 2:
            out = out.swapaxes(-1, -2)  # back from MONAI's (x, y) to (row, col)
        return out

    # ------------------------------------------------------------------ result
    def _label_map(self, image: Image, labels: np.ndarray) -> LabelMap:
        if labels.shape != image.spatial_shape:
            raise CxsegError(
                f"model {self.card.name}: prediction came back as {labels.shape}, not the image grid "
                f"{image.spatial_shape} (bundle postprocessing without Invertd?)"
            )
        classes = {k: copy.copy(v) for k, v in self.card.classes.items()}
        return LabelMap(
            array=labels,
            geometry=copy.deepcopy(image.geometry),
            classes=classes,
            meta={
                "model": self.card.name,
                "algorithm": self.card.name,
                "reference_image_path": image.meta.get("source_path"),
                "name": f"{image.meta.get('name') or 'image'} [{self.card.name}]",
            },
        )


def combine_masks(masks: np.ndarray, label_map: dict[int, int], overlap: str = "smallest",
                  priority: list[int] | None = None) -> np.ndarray:
    """One label array from per-structure masks that may overlap.

    Parameters
    ----------
    masks
        ``(channels, *spatial)`` booleans.
    label_map
        ``{channel: class id}``; channels not listed are ignored.
    overlap
        ``smallest``: a pixel claimed by several structures gets the smallest of them (by its
        total size in this image); ``priority``: the first channel of ``priority`` wins;
        ``last``: the highest channel wins.
    priority
        Channel order for ``priority``.

    Returns
    -------
    numpy.ndarray
        Integer labels, 0 where no structure claims the pixel.
    """
    chans = [c for c in sorted(label_map) if c < masks.shape[0]]
    if overlap == "smallest":
        sizes = {c: int(masks[c].sum()) for c in chans}
        order = sorted(chans, key=lambda c: (-sizes[c], c))  # largest painted first, smallest last
    elif overlap == "priority":
        pri = [c for c in (priority or []) if c in chans]
        order = [c for c in chans if c not in pri] + pri[::-1]
    else:
        order = chans
    out = np.zeros(masks.shape[1:], dtype=np.int64)
    for c in order:
        out[masks[c]] = label_map[c]
    return out


def largest_components(labels: np.ndarray, class_ids: list[int],
                       boxes: dict[int, tuple[slice, ...]] | None = None) -> np.ndarray:
    """Keep only the largest connected component of each class (MONAI ``KeepLargestConnectedComponent``).

    The same result as MONAI's transform with ``independent=True`` and full connectivity (its
    labelling and its choice among equal sizes), computed inside each class's bounding box.

    Parameters
    ----------
    labels
        Integer label image.
    class_ids
        The classes to clean.
    boxes
        Each present class's bounding box if already known (absent class: no box); default:
        ``scipy.ndimage.find_objects``.
    """
    from scipy import ndimage as ndi

    arr = np.asarray(labels)
    ids = sorted({int(c) for c in class_ids if int(c) > 0})
    if not ids or arr.size == 0:
        return labels
    if arr.dtype.kind not in "iu" or int(arr.min()) < 0 or int(arr.max()) > 2**24:
        return _largest_components_monai(arr, ids)
    if boxes is None:
        boxes = {i + 1: b for i, b in enumerate(ndi.find_objects(arr)) if b is not None}
    structure = ndi.generate_binary_structure(arr.ndim, arr.ndim)
    out = arr
    for c in ids:
        box = boxes.get(c)
        if box is None:
            continue
        mask = arr[box] == c
        comp, n = ndi.label(mask, structure)
        if n <= 1:
            continue
        counts = np.bincount(comp.ravel())
        counts[0] = 0
        keep = np.argsort(counts)[::-1][0]  # MONAI's choice, ties included
        if out is arr:
            out = arr.copy()
        out[box][mask & (comp != keep)] = 0
    return out


def _largest_components_monai(labels: np.ndarray, class_ids: list[int]) -> np.ndarray:
    import torch
    from monai.transforms import KeepLargestConnectedComponent

    present = [int(c) for c in class_ids if np.any(labels == c)]
    if not present:
        return labels
    t = torch.as_tensor(labels.astype(np.int64))[None]
    kept = KeepLargestConnectedComponent(applied_labels=present, is_onehot=False, independent=True)(t)
    return np.asarray(kept[0]).astype(labels.dtype)


def argmax_channels(t: Any) -> Any:
    """``torch.argmax(t, dim=0)``, for up to 4 channels by compare-and-select (same result).

    torch reduces a short leading axis slowly (3 channels of a 2048 x 2500 radiograph); a pass
    per channel is faster. First maximum wins, as in torch; with a NaN, torch.argmax itself.
    """
    import torch

    k = int(t.shape[0])
    if k > 4 or bool(torch.isnan(t).any()):
        return torch.argmax(t, dim=0)
    best = t[0]
    idx = torch.zeros(t.shape[1:], dtype=torch.int64)
    for c in range(1, k):
        take = t[c] > best  # strict: the first maximum wins, as in torch.argmax
        best = torch.where(take, t[c], best)
        idx = torch.where(take, c, idx)
    return idx


def _channels_last(net: Any, nd: int) -> Any:
    """Put a 3D convolutional network in channels-last layout; the layout for its inputs, or None.

    3D convolutions run about 1.5x faster so on CPU (oneDNN) and on CUDA (cuDNN), with the
    same outputs up to float rounding; 2D networks (instance norm) gain nothing and stay as they are.
    """
    import torch

    if nd != 3 or not isinstance(net, torch.nn.Module) or isinstance(net, torch.jit.ScriptModule):
        return None
    if not getattr(net, "_cxseg_channels_last", False):
        if not any(isinstance(m, torch.nn.Conv3d) for m in net.modules()):
            return None
        net.to(memory_format=torch.channels_last_3d)
        net._cxseg_channels_last = True
    return torch.channels_last_3d


def _channel_lut(card: ModelCard, k: int) -> np.ndarray:
    """Class id of each of ``k`` softmax channels (the card's channel label map; 0 elsewhere)."""
    lut = np.zeros(k, dtype=np.int64)
    for c, cid in card.channel_label_map(k).items():
        if c < k:
            lut[c] = cid
    return lut


def _finite_image(image: Image) -> Image:
    """The image with NaN/Inf replaced (finite min/max) and a warning naming it, or the image itself."""
    from .images import finite_array

    arr, n = finite_array(image.array)
    if n == 0:
        return image
    src = image.meta.get("source_path") or image.meta.get("name") or "the image"
    warnings.warn(f"{src}: {n} non-finite values (NaN/Inf) replaced by the finite minimum/maximum before "
                  "segmenting", UserWarning, stacklevel=3)
    return copy.copy(image).__class__(array=arr, geometry=image.geometry, modality=image.modality,
                                      channel_names=image.channel_names, meta=dict(image.meta))


def _label_dtype(card: ModelCard) -> type:
    top = max([0, *card.classes, *(card.output.label_map or {}).values()])
    return np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32
