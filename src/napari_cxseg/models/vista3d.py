"""VISTA3D point prompts as a click-to-segment backend.

:func:`vista3d_backend` runs a user's MONAI `VISTA3D bundle
<https://github.com/Project-MONAI/model-zoo/tree/dev/models/vista3d>`_ (fetched with
``python -m monai.bundle download vista3d --bundle_dir <dir>``) on the clicks of
:mod:`napari_cxseg.editing.interactive`, the way the bundle's ``configs/inference.json`` does
with ``use_point_window``:

1. Cut from the held ``(S, P, L)`` array the box that holds the inference window around every
   click (:func:`window_box`; a click then costs the same on any scan size).
2. Turn it into MONAI's RAS ``(x, y, z)`` order (flip P and L, reverse the axes), resample it
   to ``resample_spacing`` (1.5 mm) with MONAI ``Spacing`` (bilinear) and scale the HU with
   ``ScaleIntensityRange(-963.82, 1053.68 -> 0, 1, clip)``; the clicks go to that grid
   exactly (:func:`held_points_to_ras`).
3. Run ``monai.apps.vista3d.inferer.point_based_window_inferer`` (one ``patch_size`` window,
   128³, centred on each click) with labels 1 (positive) / 0 (negative); with a
   ``label_prompt`` the class also goes in as ``class_vector``/``prompt_class`` like the
   bundle's ``Vista3dInferer``, and special classes get labels 3/2 as its
   ``VistaPreTransformd`` gives them.
4. Keep the components that hold a positive click (the bundle's ``VistaPostTransformd``),
   bring the probability back to the held grid (MONAI ``SpatialResample``, bilinear) and
   threshold it at 0.5 (logit 0).

Refining: a non-empty ``existing_mask`` goes in as ``prev_mask`` (logits +-4); the network then
changes only the components connected to the clicks, and outside what it changed the existing
mask is returned voxel for voxel (not resampled twice).

Box: VISTA3D has no box input. Without positive clicks the box's centre becomes one, and the
network's new output is confined to the box's footprint (along the axes the box spans); the
existing mask is left as it is outside the box.

Security: code in a bundle config (see :mod:`napari_cxseg.models.trust`, the one decision shared
with the bundle runner) runs only with ``trust=True``. Otherwise the network is built from
``network_def`` when what MONAI evaluates for it holds no code (:func:`is_plain_network_def`),
else as ``vista3d132(encoder_embed_dim=48, in_channels=<input_channels>)``, which is what the
real bundle's ``network_def`` expression builds. Settings (``patch_size``, ``resample_spacing``, ``ScaleIntensityRanged``
numbers, ``subclass`` keys) are read from the config only when they are plain values. Weights
load with ``torch.load(..., weights_only=True)`` (:func:`~napari_cxseg.models.weights.load_state_dict`).

The intensity scaling assumes CT in Hounsfield units; VISTA3D is a CT model.

Cost: one forward pass of the 218M-parameter network per click (MONAI's inferer runs a window
for every point), plus resampling the window box (on the GPU when the network is on CUDA). With
random ``vista3d132`` weights on a 200 x 512 x 512 CT, a call with two clicks took 0.7 s on an
H100 (2.4 GiB peak, network loaded once in 1.5 s) and 13 s on 16 CPU cores.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..images import CxsegError

#: The bundle's ``resample_spacing`` (RAS x, y, z, mm).
DEFAULT_RESAMPLE_SPACING = (1.5, 1.5, 1.5)
#: The bundle's ``patch_size`` (RAS x, y, z voxels).
DEFAULT_PATCH_SIZE = (128, 128, 128)
#: The bundle's ``ScaleIntensityRanged`` (a_min, a_max, b_min, b_max).
DEFAULT_INTENSITY = (-963.8247715525971, 1053.678477684517, 0.0, 1.0)
#: Label prompts the bundle divides into sub-classes (kidney, lung, bone): not with points.
DEFAULT_SUBCLASS_KEYS = (2, 20, 21)
#: Logit magnitude given to an existing mask passed as ``prev_mask``.
PREV_MASK_LOGIT = 4.0
#: Resampled voxels added around each inference window when cropping the held array.
WINDOW_MARGIN_VOXELS = 2
#: Loaded networks kept in memory (per bundle, device and trust).
CACHE_SIZE = 2

DOWNLOAD_HINT = (
    "choose the folder of a downloaded VISTA3D bundle (the one holding configs/ and "
    "models/model.pt); fetch it with `python -m monai.bundle download vista3d --bundle_dir <dir>` "
    "(it lands in <dir>/vista3d)"
)

_CACHE: OrderedDict[tuple, tuple[Any, Vista3DSettings]] = OrderedDict()
_CACHE_LOCK = threading.RLock()


@dataclass(frozen=True)
class Vista3DSettings:
    """What the bundle's config says about inference (plain values only).

    Attributes
    ----------
    patch_size
        Inference window in resampled voxels, RAS ``(x, y, z)``.
    resample_spacing
        Target voxel size in mm, RAS ``(x, y, z)``; a value <= 0 keeps the image's spacing.
    a_min, a_max, b_min, b_max, clip
        ``ScaleIntensityRange`` parameters.
    subclass_keys
        Label prompts the bundle splits into sub-classes (refused together with points).
    labels
        Class index by lower-case name (``metadata.json`` channel_def), for ``label_prompt``.
    """

    patch_size: tuple[int, int, int] = DEFAULT_PATCH_SIZE
    resample_spacing: tuple[float, float, float] = DEFAULT_RESAMPLE_SPACING
    a_min: float = DEFAULT_INTENSITY[0]
    a_max: float = DEFAULT_INTENSITY[1]
    b_min: float = DEFAULT_INTENSITY[2]
    b_max: float = DEFAULT_INTENSITY[3]
    clip: bool = True
    subclass_keys: tuple[int, ...] = DEFAULT_SUBCLASS_KEYS
    labels: tuple[tuple[str, int], ...] = ()


# ---------------------------------------------------------------------- geometry (pure)


def held_to_ras_array(array: np.ndarray) -> np.ndarray:
    """Held ``(S, P, L)`` array -> MONAI RAS ``(x, y, z)`` order (a view).

    Same as :func:`napari_cxseg.training.datasets.ras_arrays`: flip P and L, reverse the axes.
    """
    return np.asarray(array)[:, ::-1, ::-1].transpose(2, 1, 0)


def ras_to_held_array(array: np.ndarray) -> np.ndarray:
    """Inverse of :func:`held_to_ras_array` (a view)."""
    return np.asarray(array).transpose(2, 1, 0)[:, ::-1, ::-1]


def effective_spacing(
    spacing: Sequence[float], target_spacing: Sequence[float]
) -> np.ndarray:
    """RAS target spacing with MONAI's ``pixdim <= 0`` rule (keep the image's spacing).

    Parameters
    ----------
    spacing
        Held voxel size ``(S, P, L)`` in mm.
    target_spacing
        RAS ``(x, y, z)`` target in mm.
    """
    ras_sp = np.asarray(spacing, float)[::-1]
    tgt = np.asarray(target_spacing, float)
    return np.where(tgt > 0, tgt, ras_sp)


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]
) -> tuple[int, int, int]:
    """Shape of the RAS grid that MONAI ``Spacing`` makes from a held array.

    ``Spacing`` (``scale_extent=False``) keeps voxel 0 in place and spans the input's voxel
    centres: ``round((n - 1) * s / t + 1)`` per axis.
    """
    ras_shape = np.asarray(shape, float)[::-1]
    ras_sp = np.asarray(spacing, float)[::-1]
    tgt = effective_spacing(spacing, target_spacing)
    return tuple(int(v) for v in np.round((ras_shape - 1) * ras_sp / tgt + 1.0))


def held_points_to_ras(
    points: np.ndarray,
    shape: Sequence[int],
    spacing: Sequence[float],
    target_spacing: Sequence[float] = DEFAULT_RESAMPLE_SPACING,
) -> np.ndarray:
    """Held index coordinates -> index coordinates of the resampled RAS grid.

    Parameters
    ----------
    points
        ``(k, 3)`` held ``(z, y, x)`` indices (S, P, L increasing; floats allowed).
    shape
        Held array shape.
    spacing
        Held voxel size in mm.
    target_spacing
        RAS ``(x, y, z)`` voxel size of the resampled grid (``Spacing``'s ``pixdim``).

    Returns
    -------
    numpy.ndarray
        ``(k, 3)`` RAS ``(x, y, z)`` indices: ``x`` grows toward the patient's Right,
        ``y`` toward Anterior, ``z`` toward Superior.
    """
    p = np.asarray(points, float).reshape(-1, 3)
    n = np.asarray(shape, float)
    ras = np.stack([n[2] - 1 - p[:, 2], n[1] - 1 - p[:, 1], p[:, 0]], axis=1)
    scale = np.asarray(spacing, float)[::-1] / effective_spacing(spacing, target_spacing)
    return ras * scale


def ras_points_to_held(
    points: np.ndarray,
    shape: Sequence[int],
    spacing: Sequence[float],
    target_spacing: Sequence[float] = DEFAULT_RESAMPLE_SPACING,
) -> np.ndarray:
    """Inverse of :func:`held_points_to_ras` (``shape``/``spacing`` of the held array)."""
    r = np.asarray(points, float).reshape(-1, 3)
    scale = np.asarray(spacing, float)[::-1] / effective_spacing(spacing, target_spacing)
    r = r / scale
    n = np.asarray(shape, float)
    return np.stack([r[:, 2], n[1] - 1 - r[:, 1], n[2] - 1 - r[:, 0]], axis=1)


def window_box(
    points: np.ndarray,
    shape: Sequence[int],
    spacing: Sequence[float],
    patch_size: Sequence[int] = DEFAULT_PATCH_SIZE,
    target_spacing: Sequence[float] = DEFAULT_RESAMPLE_SPACING,
    margin_voxels: int = WINDOW_MARGIN_VOXELS,
) -> tuple[slice, slice, slice]:
    """Held-array box that holds the inference window of every point.

    ``point_based_window_inferer`` crops a ``patch_size`` window centred on each point and
    shifted inside the volume at its borders; this box holds each such window of the whole
    volume plus ``margin_voxels`` resampled voxels, so that cropping first changes nothing
    but the sub-voxel phase of the resampled grid.

    Parameters
    ----------
    points
        ``(k, 3)`` held indices.
    shape, spacing
        Held array shape and voxel size (mm).
    patch_size, target_spacing
        RAS ``(x, y, z)`` window size (voxels) and resampled voxel size (mm).
    margin_voxels
        Extra resampled voxels on each side.

    Returns
    -------
    tuple of slice
        Held ``(z, y, x)`` slices.
    """
    pts = np.asarray(points, float).reshape(-1, 3)
    sp = np.asarray(spacing, float)
    tgt = effective_spacing(spacing, target_spacing)[::-1]  # held order
    roi = np.asarray(patch_size, float)[::-1]
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for p in pts:
        for ax in range(3):
            extent = (shape[ax] - 1) * sp[ax]
            width = roi[ax] * tgt[ax]
            centre = p[ax] * sp[ax]
            if width >= extent:
                a, b = 0.0, extent
            else:
                a, b = centre - width / 2, centre + width / 2
                if a < 0:
                    a, b = 0.0, width
                elif b > extent:
                    a, b = extent - width, extent
            lo[ax] = min(lo[ax], a - margin_voxels * tgt[ax])
            hi[ax] = max(hi[ax], b + margin_voxels * tgt[ax])
    return tuple(
        slice(max(0, math.floor(lo[ax] / sp[ax])), min(shape[ax], math.ceil(hi[ax] / sp[ax]) + 1))
        for ax in range(3)
    )


def box_footprint(shape: Sequence[int], box: np.ndarray) -> np.ndarray:
    """Held voxels inside ``box`` (lower/upper corners, inclusive) along the axes it spans.

    A box drawn on one slice is flat along the slice axis and does not restrict that axis
    (as in the classical backend).
    """
    box = np.asarray(box, float)
    inside = np.ones(tuple(shape), bool)
    for ax in np.flatnonzero((box[1] - box[0]) >= 1.0):
        idx = np.arange(shape[ax])
        keep = (idx >= math.floor(box[0, ax] + 0.5)) & (idx <= math.floor(box[1, ax] + 0.5))
        sh = [1, 1, 1]
        sh[ax] = -1
        inside &= keep.reshape(sh)
    return inside


# ---------------------------------------------------------------------- bundle


def is_plain_network_def(value: Any) -> bool:
    """Whether a ``network_def`` can be built without running code of the bundle.

    Plain: a component that :func:`napari_cxseg.models.trust.check` finds no code in, and that
    references nothing outside itself.
    """
    from .trust import check, closure

    if not isinstance(value, dict) or "_target_" not in value:
        return False
    config = {"network_def": value}
    return closure(config, ["network_def"]) == ["network_def"] and not check(config, ["network_def"])


def _plain_numbers(value: Any, n: int, kind: type) -> tuple | None:
    if isinstance(value, list | tuple) and len(value) == n:
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            return tuple(kind(v) for v in value)
    return None


def _settings_from(raw: dict[str, Any], meta: dict[str, Any] | None) -> Vista3DSettings:
    kw: dict[str, Any] = {}
    patch = _plain_numbers(raw.get("patch_size"), 3, int)
    if patch is not None and all(v > 0 for v in patch):
        kw["patch_size"] = patch
    spacing = _plain_numbers(raw.get("resample_spacing"), 3, float)
    if spacing is not None:
        kw["resample_spacing"] = spacing
    transforms = raw.get("preprocessing_transforms")
    for t in transforms if isinstance(transforms, list) else []:
        target = t.get("_target_", "") if isinstance(t, dict) else ""
        if isinstance(target, str) and target.split(".")[-1] in (
            "ScaleIntensityRanged",
            "ScaleIntensityRange",
        ):
            for key in ("a_min", "a_max", "b_min", "b_max"):
                v = t.get(key)
                if isinstance(v, int | float) and not isinstance(v, bool):
                    kw[key] = float(v)
            if isinstance(t.get("clip"), bool):
                kw["clip"] = t["clip"]
            break
    subclass = raw.get("subclass")
    if isinstance(subclass, dict):
        keys = [int(k) for k in subclass if str(k).isdigit()]
        kw["subclass_keys"] = tuple(keys)
    try:
        channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]  # type: ignore[index]
        kw["labels"] = tuple(
            (str(v).lower(), int(k)) for k, v in channel_def.items() if str(k).isdigit()
        )
    except (KeyError, TypeError, AttributeError, ValueError):
        pass
    return Vista3DSettings(**kw)


def _read_bundle(bdir: Path, trust: bool) -> Any:
    """The bundle's merged config (:func:`~napari_cxseg.models.bundle.load_bundle_config`), or
    None when it has no config."""
    from .bundle import find_config, load_bundle_config

    try:
        find_config(bdir)
    except CxsegError:
        return None
    return load_bundle_config(bdir, trust=trust)


def _build(bc: Any, trust: bool, device: str = "meta") -> tuple[Any, str]:
    """The network (on the meta device by default) and a description for error messages.

    Built by MONAI from the config's ``network_def`` when it holds no code, or when trusted;
    otherwise ``vista3d132(encoder_embed_dim=48, in_channels=<input_channels>)``, which is what
    the real bundle's ``network_def`` expression builds.
    """
    import torch

    raw = bc.content if bc is not None else {}
    net_id = "network_def" if "network_def" in raw else "network"
    if bc is not None and net_id in raw:
        from monai.bundle import ConfigParser

        from .bundle import config_findings
        from .bundle_config import evaluable_config, on_sys_path

        if trust or not config_findings(bc, [net_id]):
            overrides = {"bundle_root": str(bc.bundle_dir), "device": torch.device("cpu")}
            parser = ConfigParser(evaluable_config(raw, [net_id], overrides, trust=trust))
            try:
                with torch.device(device), on_sys_path(bc.bundle_dir, enabled=trust):
                    net = parser.get_parsed_content(net_id, instantiate=True)
            except Exception as e:  # anything a config may raise
                raise CxsegError(f"bundle {bc.bundle_dir}: cannot build {net_id} from "
                                 f"{bc.config_path.name}: {type(e).__name__}: {e}") from None
            return net, f"{net_id} of the config"
    from monai.networks.nets import vista3d132

    ch = raw.get("input_channels", 1)
    ch = ch if isinstance(ch, int) and not isinstance(ch, bool) and ch > 0 else 1
    with torch.device(device):
        return vista3d132(encoder_embed_dim=48, in_channels=ch), "VISTA3D network (vista3d132)"


def load_vista3d(
    bundle_dir: str | Path | None, device: Any = None, trust: bool = False
) -> tuple[Any, Vista3DSettings]:
    """Load (once per bundle, device and trust) a VISTA3D bundle's network and settings.

    Parameters
    ----------
    bundle_dir
        The bundle folder (``configs/``, ``models/model.pt``).
    device
        ``None``/``"auto"`` (CUDA > MPS > CPU), a device name or a ``torch.device``.
    trust
        Allow the config's code (``$`` expressions) to build the network.

    Returns
    -------
    tuple
        The network (eval mode, on the device) and its :class:`Vista3DSettings`.

    Raises
    ------
    CxsegError
        No ``bundle_dir``, missing folder or weights, weights that do not fit the network, or a
        config that cannot be read.
    """
    import torch

    from ..device import pick_device
    from .weights import load_into, load_state_dict

    if bundle_dir is None:
        raise CxsegError(f"the VISTA3D backend needs bundle_dir: {DOWNLOAD_HINT}")
    bdir = Path(bundle_dir).expanduser().resolve()
    if not bdir.is_dir():
        raise CxsegError(f"VISTA3D bundle folder {bdir} does not exist; {DOWNLOAD_HINT}")
    pt = bdir / "models" / "model.pt"
    if not pt.is_file():
        raise CxsegError(f"VISTA3D bundle {bdir} has no weights file {pt}; {DOWNLOAD_HINT}")
    dev = pick_device(device if device is not None else "auto")
    bc = _read_bundle(bdir, trust)
    raw = bc.content if bc is not None else {}
    meta = raw.get("_meta_") if isinstance(raw.get("_meta_"), dict) else None
    stamp = pt.stat()
    meta_path = bdir / "configs" / "metadata.json"
    cfg_stamp = (bc.config_path.stat().st_mtime_ns if bc is not None else 0,
                 meta_path.stat().st_mtime_ns if meta_path.is_file() else 0)
    key = (str(bdir), str(dev), bool(trust), stamp.st_mtime_ns, stamp.st_size, cfg_stamp)
    with _CACHE_LOCK:  # two viewers / workers must not load the network twice
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]

        settings = _settings_from(raw, meta)
        state = load_state_dict(pt)
        if trust:
            net, what = _build(bc, trust, device="cpu")
            if not isinstance(net, torch.nn.Module):
                raise CxsegError(f"bundle {bdir}: network_def did not give a torch module")
            load_into(net, state, what=f"{what} of bundle {bdir.name}")
        else:
            net, what = _build(bc, trust)
            if not isinstance(net, torch.nn.Module):
                raise CxsegError(f"bundle {bdir}: network_def did not give a torch module")
            # check names and shapes on the meta device first (no memory, no random init) ...
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "copying ... to a meta parameter"
                load_into(net, state, what=f"{what} of bundle {bdir.name}")
            if set(dict(net.named_buffers())) - set(net.state_dict()):
                # non-persistent buffers are not in the weights: build for real
                net, _ = _build(bc, trust, device="cpu")
            else:
                net = net.to_empty(device="cpu")
            # ... then fill the real tensors
            load_into(net, state, what=f"{what} of bundle {bdir.name}")
        del state
        net = net.to(dev).eval()
        _CACHE[key] = (net, settings)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return net, settings


def clear_cache() -> None:
    """Forget the loaded networks."""
    _CACHE.clear()


# ---------------------------------------------------------------------- running


def _label_index(label_prompt: int | str | None, settings: Vista3DSettings) -> int | None:
    if label_prompt is None:
        return None
    if isinstance(label_prompt, str) and not label_prompt.strip().isdigit():
        names = dict(settings.labels)
        if label_prompt.strip().lower() not in names:
            some = ", ".join(n for n, _ in settings.labels[1:6])
            raise CxsegError(
                f"VISTA3D has no class named {label_prompt!r}"
                + (f" (e.g. {some}; see configs/metadata.json)" if some else "")
            )
        idx = names[label_prompt.strip().lower()]
    else:
        idx = int(label_prompt)
    if not 0 < idx < 255:
        raise CxsegError(f"VISTA3D label prompts are 1..254, got {idx}")
    if idx in settings.subclass_keys:
        raise CxsegError(
            f"VISTA3D label prompt {idx} is split into sub-classes (kidney, lung, bone) and cannot "
            "go with clicks; use a sub-class (e.g. 14 left kidney, 5 right kidney)"
        )
    return idx


def _resample_to_ras(
    sub: np.ndarray, spacing: np.ndarray, target: np.ndarray, device: Any = "cpu"
) -> Any:
    """Held float array -> resampled RAS MetaTensor ``(1, x, y, z)`` (MONAI ``Spacing``)."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    ras = np.ascontiguousarray(held_to_ras_array(sub), dtype=np.float32)
    affine = np.diag([*np.asarray(spacing, float)[::-1], 1.0])
    x = MetaTensor(torch.from_numpy(ras)[None].to(device), affine=torch.as_tensor(affine))
    return Spacing(pixdim=tuple(float(t) for t in target), mode="bilinear")(x)


def _resample_to_held(ras: Any, held_shape: Sequence[int], spacing: np.ndarray) -> np.ndarray:
    """Resampled RAS ``(1, x, y, z)`` MetaTensor -> held array of ``held_shape`` (bilinear)."""
    import torch
    from monai.transforms import SpatialResample

    affine = torch.as_tensor(np.diag([*np.asarray(spacing, float)[::-1], 1.0]))
    out = SpatialResample(mode="bilinear", padding_mode="border")(
        ras, dst_affine=affine, spatial_size=tuple(int(n) for n in held_shape[::-1])
    )
    return np.ascontiguousarray(ras_to_held_array(np.asarray(out[0].detach().cpu().numpy())))


def vista3d_backend(
    image: np.ndarray,
    prompts: Any,
    spacing: np.ndarray,
    existing_mask: np.ndarray | None,
    roi_margin_mm: float,
    *,
    bundle_dir: str | Path | None = None,
    device: Any = None,
    trust: bool = False,
    label_prompt: int | str | None = None,
    amp: bool | None = None,
    **_ignored: Any,
) -> np.ndarray:
    """Segment one object of a CT volume from clicks with a VISTA3D bundle.

    Parameters
    ----------
    image
        3D held ``(z, y, x)`` = ``(S, P, L)`` array in Hounsfield units.
    prompts
        :class:`~napari_cxseg.editing.interactive.Prompts`: positive/negative ``(k, 3)`` held
        indices and an optional box (its centre is the positive click when there is none; the
        network's output is confined to the box's footprint).
    spacing
        Held voxel size in mm.
    existing_mask
        Mask to refine (``prev_mask`` of the inferer), or ``None``.
    roi_margin_mm
        Not used: the region is VISTA3D's ``patch_size`` window around each click.
    bundle_dir
        Folder of the downloaded VISTA3D bundle.
    device
        ``None``/``"auto"`` (CUDA > MPS > CPU), ``"cpu"``, ``"cuda[:N]"``, ``"mps"`` or a
        ``torch.device``.
    trust
        Let the bundle config's ``$`` expressions build the network.
    label_prompt
        Optional VISTA3D class (index 1..254 or a name from ``metadata.json``, e.g.
        ``"spleen"``) the clicks belong to; > 132 is zero-shot.
    amp
        Mixed precision; ``None`` = on CUDA only (as the bundle's ``amp: true``).
    **_ignored
        Options of other backends.

    Returns
    -------
    numpy.ndarray
        Boolean mask of ``image``'s shape.

    Raises
    ------
    CxsegError
        Missing bundle or weights, weights that do not fit, a 2D image, a bad label prompt.
    """
    import torch
    from monai.apps.vista3d.inferer import point_based_window_inferer

    img = np.asarray(image)
    if img.ndim != 3:
        raise CxsegError(f"VISTA3D segments 3D CT volumes, got a {img.ndim}D image")
    sp = np.asarray(spacing, float).reshape(-1)
    if sp.size == 1:
        sp = np.repeat(sp, 3)
    net, settings = load_vista3d(bundle_dir, device=device, trust=trust)
    dev = next(net.parameters()).device
    label = _label_index(label_prompt, settings)

    existing = None if existing_mask is None else np.asarray(existing_mask, bool)
    refine = existing is not None and bool(existing.any())
    out = existing.copy() if existing is not None else np.zeros(img.shape, bool)
    pos = np.asarray(prompts.positive, float).reshape(-1, 3)
    neg = np.asarray(prompts.negative, float).reshape(-1, 3)
    box = getattr(prompts, "box", None)
    if not len(pos) and box is not None:
        pos = np.asarray(box, float).mean(axis=0, keepdims=True)
    if not len(pos) and not len(neg):
        return out  # only an existing mask: nothing to do

    held_pts = np.concatenate([pos, neg])
    labels = [1] * len(pos) + [0] * len(neg)
    target = effective_spacing(sp, settings.resample_spacing)
    crop = window_box(held_pts, img.shape, sp, settings.patch_size, target)
    start = np.array([c.start for c in crop], float)
    sub = img[crop]
    ras_shape = resampled_shape(sub.shape, sp, target)
    ras_pts = held_points_to_ras(held_pts - start, sub.shape, sp, target)
    # inside the grid; MONAI's patch test is strict (> window start), so not exactly on 0
    ras_pts = np.clip(ras_pts, 1e-3, np.asarray(ras_shape, float) - 1)

    if label is not None:
        from monai.apps.vista3d.transforms import VistaPreTransformd

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            labels = VistaPreTransformd(keys="image", allow_missing_keys=True)(
                {"label_prompt": [label], "point_labels": labels}
            )["point_labels"]

    # resampling dominates a click on the CPU (~1 s per 10^7 voxels): on CUDA it runs there
    rdev = dev if dev.type == "cuda" else torch.device("cpu")
    x = _resample_to_ras(sub.astype(np.float32, copy=False), sp, target, rdev)
    from monai.transforms import ScaleIntensityRange

    x = ScaleIntensityRange(
        a_min=settings.a_min,
        a_max=settings.a_max,
        b_min=settings.b_min,
        b_max=settings.b_max,
        clip=settings.clip,
    )(x)
    prev = None
    if refine:
        m = _resample_to_ras(existing[crop].astype(np.float32), sp, target, rdev)
        prev = ((m.as_tensor().cpu() - 0.5) * (2 * PREV_MASK_LOGIT)).float()[None]  # (1,1,x,y,z)

    point_coords = torch.as_tensor(ras_pts[None], dtype=torch.float32, device=dev)
    point_labels = torch.as_tensor([labels], dtype=torch.long, device=dev)
    class_vector = prompt_class = None
    if label is not None:
        prompt_class = torch.as_tensor([[label]], device=dev)
        last = getattr(getattr(net, "point_head", None), "last_supported", 132)
        class_vector = None if label > last else prompt_class
    use_amp = dev.type == "cuda" if amp is None else bool(amp and dev.type == "cuda")
    inputs = x.as_tensor()[None].to(dev)  # (1, 1, x, y, z)
    with (
        torch.no_grad(),
        torch.autocast("cuda") if use_amp else contextlib.nullcontext(),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", message="Setting affine, but the applied meta")
        logits = point_based_window_inferer(
            inputs,
            roi_size=settings.patch_size,
            predictor=net,
            point_coords=point_coords,
            point_labels=point_labels,
            class_vector=class_vector,
            prompt_class=prompt_class,
            prev_mask=prev,
            transpose=True,
        )
    from monai.data import MetaTensor

    if isinstance(logits, MetaTensor):
        logits = logits.as_tensor()
    logits = logits.detach().float().cpu()
    if prev is not None:
        changed = logits[0, 0] != prev[0, 0]
    elif label is None and len(pos):
        from monai.transforms.utils import keep_components_with_positive_points

        logits = keep_components_with_positive_points(
            logits, point_coords=point_coords.cpu(), point_labels=point_labels.cpu()
        )
    prob = torch.nan_to_num(torch.sigmoid(logits[0]), nan=0.0)  # (1, x, y, z)
    prob = MetaTensor(prob.to(rdev), affine=torch.as_tensor(np.diag([*target, 1.0])))
    new = _resample_to_held(prob, sub.shape, sp) > 0.5
    if box is not None:
        inside = box_footprint(img.shape, box)[crop]
    else:
        inside = np.ones(sub.shape, bool)
    if prev is not None:
        ch = MetaTensor(
            changed[None].float().to(rdev), affine=torch.as_tensor(np.diag([*target, 1.0]))
        )
        edit = (_resample_to_held(ch, sub.shape, sp) > 0) & inside
        region = out[crop]
        region[edit] = new[edit]
        out[crop] = region
    else:
        out[crop] = (new & inside) | out[crop]
    return out
