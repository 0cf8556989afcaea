"""Model cards for training: made from the data, from a card, or from a MONAI bundle's config.

:func:`card_for_training` is what ``napari-cxseg train`` and the Train widget use: without a
starting model it looks at the cases (2D or 3D, modality, channels, classes, median voxel
size) and picks the usual preprocessing (radiographs: percentile scaling, 256 px, aspect kept;
CT: a [-1000, 1000] HU window; MR: z-score of the non-zero voxels; volumes resampled to the
median spacing in RAS); with one (``--from``), it keeps that model's preprocessing, network
and classes so its weights can be fine-tuned. :data:`NETWORK_DEFAULTS` gives each network's
arguments for 2D and 3D.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..images import CxsegError, default_colour
from ..models.cards import ModelCard, card_from_dict
from .sources import STRUCTURES, Case

#: Network name -> arguments (without spatial_dims / in_channels / out_channels).
NETWORK_DEFAULTS: dict[str, dict[str, Any]] = {
    "UNet": {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2},
    "BasicUNet": {"features": [32, 32, 64, 128, 256, 32]},
    "AttentionUnet": {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2]},
    "SegResNet": {"init_filters": 16, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1]},
    "DynUNet": {"kernel_size": [3, 3, 3, 3, 3], "strides": [1, 2, 2, 2, 2], "upsample_kernel_size": [2, 2, 2, 2],
                "norm_name": "instance", "res_block": True},
    "SwinUNETR": {"feature_size": 24, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24]},
    "SAUNet": {"features": [16, 32, 64, 128], "block_size": 7, "keep_prob": 0.9},
}
#: Patch sides the networks need to divide.
DIVISOR = {"UNet": 16, "AttentionUnet": 16, "BasicUNet": 16, "SegResNet": 8, "DynUNet": 16, "SwinUNETR": 32,
           "SAUNet": 8}


def network_spec(name: str, spatial_dims: int, in_channels: int, out_channels: int) -> dict[str, Any]:
    """``{"name", "args"}`` of a network with this package's default arguments."""
    if name not in NETWORK_DEFAULTS:
        raise CxsegError(f"unknown network {name!r}; choose one of {', '.join(NETWORK_DEFAULTS)}")
    args = dict(NETWORK_DEFAULTS[name])
    if name == "DynUNet":
        k = [[3] * spatial_dims] * 5
        args["kernel_size"] = k
        args["strides"] = [[1] * spatial_dims] + [[2] * spatial_dims] * 4
        args["upsample_kernel_size"] = [[2] * spatial_dims] * 4
    args.update(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels)
    return {"name": name, "args": args}


def data_classes(cases: Sequence[Case], limit: int = 8) -> tuple[dict[int, str], bool]:
    """Class names the cases provide and whether they may overlap (several structure masks).

    Returns
    -------
    tuple
        ``({class id: name}, multi_label)``.
    """
    structs = sorted({s for c in cases for s in c.masks}, key=lambda s: list(STRUCTURES).index(s)
                     if s in STRUCTURES else 99)
    if structs == ["label"]:
        names: dict[int, str] = {}
        for c in cases:
            names.update({int(k): v for k, v in c.label_names.items() if int(k) != 0})
        if not names:
            from ..io import read

            ids: set[int] = set()
            for c in cases[:limit]:
                ids |= {int(v) for v in np.unique(np.asarray(read(c.masks["label"], as_labels=True)[0].array)) if v}
            names = {i: f"class {i}" for i in sorted(ids)}
        return names, False
    out: list[str] = []
    for s in structs:
        vals = STRUCTURES.get(s, {1: s})
        if s in ("lung", "lungs_combined"):
            vals = {1: "right lung", 2: "left lung"}
        out += [v for v in vals.values() if v not in out]
    return {i + 1: n for i, n in enumerate(out)}, len(structs) > 1


def card_for_training(cases: Sequence[Case], name: str, network: str = "UNet", patch: Sequence[int] | None = None,
                      start: Any = None) -> ModelCard:
    """The card a run trains.

    Parameters
    ----------
    cases
        The training cases.
    name
        Name of the new model.
    network
        Network when no ``start`` is given (see :data:`NETWORK_DEFAULTS`).
    patch
        3D patch (and sliding-window) size, or the 2D input size.
    start
        A card, card name / file or bundle folder to fine-tune: its preprocessing, network and
        classes are kept.
    """
    if start is not None:
        card = start if isinstance(start, ModelCard) else _start_card(start)
        d = _card_dict(card)
        d["name"] = name
        if patch and card.spatial_dims == 3:
            d["inference"]["roi_size"] = [int(p) for p in patch]
        return card_from_dict(d, origin=f"fine-tuning of {card.name}")
    if not cases:
        raise CxsegError("no training cases")
    from ..io import read

    first = read(cases[0].image, **cases[0].options)[0]
    dims = first.geometry.ndim
    modality = (first.modality or cases[0].options.get("modality") or "").upper()
    channels = list(first.channel_names or cases[0].options.get("channel_names") or ["image"])
    classes, multi = data_classes(cases)
    out = len(classes) if multi else len(classes) + 1
    net = network_spec(network, dims, len(channels), out)
    div = DIVISOR.get(network, 16)
    if dims == 2:
        size = [int(p) for p in (patch or (256, 256))]
        inp = {"channels": ["radiograph"] if len(channels) == 1 else channels, "orientation": None, "spacing": None,
               "size": size, "fit": "pad", "intensity": {"type": "percentiles", "lower": 0.5, "upper": 99.5,
                                                         "b_min": 0.0, "b_max": 1.0, "clip": True}}
        roi = size
        modalities = ["CR", "DX", "XR"] if modality in ("", "CR", "DX", "XR", "OT") else [modality]
    else:
        spacings = []
        for c in cases[:12]:
            img = first if c is cases[0] else read(c.image, **c.options)[0]
            spacings.append(np.sort(np.asarray(img.geometry.spacing, float)))
        med = np.median(np.stack(spacings), axis=0)
        # RAS x, y in-plane (the two finest), z the coarsest: the MSD / nnU-Net habit
        spacing = [float(round(max(med[0], 0.5), 2)), float(round(max(med[1], 0.5), 2)), float(round(med[2], 2))]
        intensity = ({"type": "window", "a_min": -1000.0, "a_max": 1000.0, "b_min": 0.0, "b_max": 1.0, "clip": True}
                     if modality == "CT" else {"type": "zscore", "nonzero": True})
        inp = {"channels": channels, "orientation": "RAS", "spacing": spacing, "size": None, "intensity": intensity}
        roi = [int(p) for p in (patch or (96, 96, 96))]
        modalities = [modality] if modality else ["CT", "MR"]
    if any(r % div for r in roi):
        raise CxsegError(f"patch {roi} must be divisible by {div} for {network}")
    d = {
        "name": name, "task": f"{', '.join(classes.values())} ({network}, trained with napari-cxseg)",
        "modality": modalities, "spatial_dims": dims, "input": inp, "network": net,
        "inference": {"roi_size": roi, "overlap": 0.0 if dims == 2 else 0.25, "sw_batch_size": 1 if dims == 2 else 4,
                      "mode": "constant" if dims == 2 else "gaussian"},
        "output": ({"activation": "sigmoid", "threshold": 0.5, "largest_component": False, "overlap": "smallest"}
                   if multi else {"activation": "softmax", "threshold": 0.5, "largest_component": False}),
        "classes": {k: {"name": v, "colour": default_colour(k)} for k, v in classes.items()},
        "weights": {"source": "file", "file": "model.pt"},
        "license": "As the training data's terms.", "training_data": "", "metrics": {},
        "intended_use": "Research use only. Not for clinical use.",
    }
    return card_from_dict(d, origin=f"training card for {name}")


def _card_dict(card: ModelCard) -> dict[str, Any]:
    from .bundle_export import card_to_dict

    return card_to_dict(card)


def _start_card(ref: Any) -> ModelCard:
    """A trainable card from a card name/file or a bundle folder (its network_def as a MONAI net)."""
    from ..models.cards import find_card

    card = find_card(ref)
    if card.network is not None:
        return card
    if card.bundle_dir is None:
        raise CxsegError(f"model {card.name} has no network this package can build (weights: {card.weights.source})")
    return card_from_bundle_config(card)


def card_from_bundle_config(card: ModelCard) -> ModelCard:
    """A trainable card for a bundle: its ``network_def``, orientation, spacing, intensity and window.

    Only literal values are used (nothing in the config is evaluated).

    Raises
    ------
    CxsegError
        When the network or a setting is an expression or reference this cannot read.
    """
    from ..models.bundle import find_config, read_config

    bdir = Path(card.bundle_dir)
    cfg = read_config(find_config(bdir))
    net = cfg.get("network_def")
    if not isinstance(net, dict) or not isinstance(net.get("_target_"), str):
        raise CxsegError(f"bundle {bdir}: network_def is not a plain '_target_' component; it cannot be fine-tuned here")
    target = net["_target_"].rsplit(".", 1)[-1]
    args = {k: v for k, v in net.items() if not k.startswith("_")}
    bad = [k for k, v in args.items() if isinstance(v, str) and v.startswith(("$", "@", "%"))]
    if bad:
        raise CxsegError(f"bundle {bdir}: network_def arguments {bad} are expressions; cannot fine-tune it here")
    pre = cfg.get("preprocessing", {})
    steps = pre.get("transforms", []) if isinstance(pre, dict) else []
    orient, spacing, intensity = "RAS", None, {"type": "none"}
    for t in steps:
        name = str(t.get("_target_", "")).rsplit(".", 1)[-1] if isinstance(t, dict) else ""
        if name == "Orientationd" and isinstance(t.get("axcodes"), str):
            orient = t["axcodes"]
        elif name == "Spacingd" and isinstance(t.get("pixdim"), list):
            spacing = [float(v) for v in t["pixdim"]]
        elif name == "ScaleIntensityRanged":
            intensity = {"type": "window", **{k: float(t[k]) for k in ("a_min", "a_max", "b_min", "b_max")},
                         "clip": bool(t.get("clip", False))}
        elif name == "NormalizeIntensityd":
            intensity = {"type": "zscore", "nonzero": bool(t.get("nonzero", False))}
    inf = cfg.get("inferer", {})
    roi = inf.get("roi_size") if isinstance(inf, dict) else None
    if not isinstance(roi, list):
        raise CxsegError(f"bundle {bdir}: the inferer has no literal roi_size")
    d = _card_dict(card)
    d.update(network={"name": target, "args": args},
             input={"channels": list(card.input.channels), "orientation": orient, "spacing": spacing, "size": None,
                    "intensity": intensity},
             inference={"roi_size": roi, "overlap": float(inf.get("overlap", 0.25)),
                        "sw_batch_size": int(inf.get("sw_batch_size", 4)), "mode": str(inf.get("mode", "gaussian"))},
             weights={"source": "file", "file": str(bdir / "models" / "model.pt")})
    return card_from_dict(d, origin=f"bundle {bdir}")
