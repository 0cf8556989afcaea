"""Click-guided network specs (``cards/clicks/*.yaml``), their networks and intensity scaling.

A spec says what a click-guided network expects: the working-grid size, the MONAI network,
the intensity windows, the width of the click maps and the working-grid sides. The network
itself is built by the package's one network builder and, on CPU, frozen into an optimised
TorchScript graph once (see :func:`load_click_network`). No Qt or napari import.
"""

from __future__ import annotations

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


def load_shipped_network(spec: ClickNetSpec):
    """The network of ``spec`` with its shipped weights (``torch.load(weights_only=True)``), in
    eval mode on CPU."""
    from .weights import load_state_dict

    network = build_network(spec)
    state = load_state_dict(spec.weights_path)
    network.load_state_dict({k: v.float() for k, v in state.items()})
    return network.eval()


def freeze_for_cpu(network: Any, in_shape: tuple[int, ...]) -> Any | None:
    """A frozen, inference-optimised TorchScript copy of a CPU ``network``, or ``None``.

    ``torch.jit.freeze`` + ``optimize_for_inference`` run the convolutions through oneDNN with
    pre-packed weights (eager PyTorch takes its slow 3D convolution for most of these layers):
    about 1.6-2x faster for the 3D click network on CPU. The copy is traced at the one input
    shape the segmenter uses and checked against the eager network on a random input; when
    tracing fails or the outputs differ (beyond 1e-3 of the output range), ``None``: the caller
    keeps the eager network.

    Parameters
    ----------
    network
        Eval-mode module on CPU, taking ``(1, *in_shape)``.
    in_shape
        ``(channels, *patch)``.
    """
    import warnings

    import torch

    x = torch.rand((1, *in_shape), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notes
            traced = torch.jit.trace(network, x, check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            ref, got = network(x), frozen(x)
    except Exception:  # noqa: BLE001 - any tracing failure: stay eager
        return None
    if got.shape != ref.shape or float((got - ref).abs().max()) > 1e-3 * max(1.0, float(ref.abs().max())):
        return None
    return frozen
