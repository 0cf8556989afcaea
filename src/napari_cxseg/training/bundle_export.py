"""A trained network as a MONAI bundle, plus the model card that makes the viewer offer it.

The bundle (``configs/metadata.json``, ``configs/inference.json``, ``models/model.pt``,
``docs/README.md``) describes the card's preprocessing with the same MONAI transforms the
:class:`~napari_cxseg.inference.Predictor` applies (:mod:`napari_cxseg.model_space`): the
network, preprocessing, inferer and postprocessing sections are plain data, so the product runs
the bundle without trust; the ``run``/``evaluator`` sections use MONAI's usual expressions so that
``python -m monai.bundle run --config_file configs/inference.json --meta_file
configs/metadata.json --bundle_root . --dataset_dir DIR --output_dir OUT`` segments a folder.

:func:`register_card` writes a card next to the user's other cards (``<cache>/cards``) whose
weights are the bundle's ``models/model.pt`` (only read), so the Segment widget lists it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..images import CxsegError
from ..models.cards import ModelCard

SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
#: Our own architectures, named by their full path in a bundle (MONAI resolves short names in monai only).
_OWN_NETWORKS = {"SAUNet": "napari_cxseg.models.architectures.SAUNet"}


def card_to_dict(card: ModelCard) -> dict[str, Any]:
    """A card as the plain data of a card YAML file (inverse of ``card_from_dict``)."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    d: dict[str, Any] = {
        "name": card.name, "task": card.task, "modality": list(card.modality), "spatial_dims": card.spatial_dims,
        "input": plain(asdict(card.input)),
        "network": plain(asdict(card.network)) if card.network else None,
        "inference": plain(asdict(card.inference)) if card.inference else None,
        "output": plain(asdict(card.output)),
        "classes": {int(k): {"name": c.name, "colour": c.colour} for k, c in card.classes.items()},
        "weights": plain(asdict(card.weights)),
        "license": card.license, "training_data": card.training_data, "metrics": plain(card.metrics),
        "intended_use": card.intended_use, "notes": card.notes,
    }
    if d["network"] is None:
        del d["network"]
    return d


def _intensity(spec: dict[str, Any]) -> list[dict[str, Any]]:
    t = spec.get("type", "none")
    if t == "window":
        return [{"_target_": "ScaleIntensityRanged", "keys": "@image_key", "a_min": spec["a_min"], "a_max": spec["a_max"],
                 "b_min": spec["b_min"], "b_max": spec["b_max"], "clip": spec["clip"]}]
    if t == "percentiles":
        return [{"_target_": "ScaleIntensityRangePercentilesd", "keys": "@image_key", "lower": spec["lower"],
                 "upper": spec["upper"], "b_min": spec["b_min"], "b_max": spec["b_max"], "clip": spec["clip"],
                 "channel_wise": True}]
    if t == "zscore":
        return [{"_target_": "NormalizeIntensityd", "keys": "@image_key", "nonzero": spec["nonzero"], "channel_wise": True}]
    if t == "minmax":
        return [{"_target_": "ScaleIntensityd", "keys": "@image_key", "minv": spec["b_min"], "maxv": spec["b_max"],
                 "channel_wise": True}]
    return []


def preprocessing_config(card: ModelCard) -> dict[str, Any]:
    """The card's preprocessing as a MONAI ``Compose`` config (plain data)."""
    from ..model_space import pad_value

    t: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "@image_key"},
        {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
    ]
    if card.spatial_dims == 3:
        t.append({"_target_": "Orientationd", "keys": "@image_key", "axcodes": card.input.orientation,
                  "labels": [["L", "R"], ["P", "A"], ["I", "S"]]})
        if card.input.spacing is not None:
            t.append({"_target_": "Spacingd", "keys": "@image_key", "pixdim": list(card.input.spacing), "mode": "bilinear"})
        t += _intensity(card.input.intensity)
    else:
        # MONAI's 2D readers give (x, y); the network was trained on (row, col)
        t.append({"_target_": "Transposed", "keys": "@image_key", "indices": [0, 2, 1]})
        t += _intensity(card.input.intensity)
        if card.input.size is not None:
            size = [int(s) for s in card.input.size]
            if card.input.fit == "pad":
                if card.input.intensity.get("type") not in ("window", "percentiles", "minmax"):
                    raise CxsegError(f"model {card.name}: a bundle needs a fixed pad value; 'fit: pad' works with "
                                     "window, percentiles or minmax intensity")
                t.append({"_target_": "Resized", "keys": "@image_key", "spatial_size": max(size), "size_mode": "longest",
                          "mode": "bilinear", "anti_aliasing": True})
                t.append({"_target_": "SpatialPadd", "keys": "@image_key", "spatial_size": size, "method": "symmetric",
                          "mode": "constant", "value": pad_value(card.input.intensity)})
            else:
                t.append({"_target_": "Resized", "keys": "@image_key", "spatial_size": size, "mode": "bilinear",
                          "anti_aliasing": True})
    t.append({"_target_": "EnsureTyped", "keys": "@image_key"})
    return {"_target_": "Compose", "transforms": t}


def inference_config(card: ModelCard) -> dict[str, Any]:
    """The whole ``configs/inference.json`` of a card's bundle."""
    net = card.network
    if net is None or card.inference is None:
        raise CxsegError(f"model {card.name}: only cards with a network and inference settings export as bundles")
    sigmoid = card.output.activation == "sigmoid"
    post: list[dict[str, Any]] = [
        {"_target_": "Activationsd", "keys": "pred", "sigmoid": True} if sigmoid
        else {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "@image_key",
         "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "threshold": card.output.threshold} if sigmoid
        else {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
    ]
    if card.output.largest_component and not sigmoid:
        post.append({"_target_": "KeepLargestConnectedComponentd", "keys": "pred",
                     "applied_labels": sorted(int(k) for k in card.classes), "independent": True})
    ext = ".nii.gz" if card.spatial_dims == 3 else ".png"
    post.append({"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
                 "output_ext": ext, "output_dtype": "uint8", "resample": False, "separate_folder": False,
                 "squeeze_end_dims": True})
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "file_pattern": "*.nii.gz" if card.spatial_dims == 3 else "*.png",
        "datalist": "$list(sorted(glob.glob(os.path.join(@dataset_dir, @file_pattern))))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "image_key": "image",
        "network_def": {"_target_": _OWN_NETWORKS.get(net.name, net.name), **dict(net.args)},
        "network": "$@network_def.to(@device)",
        "preprocessing": preprocessing_config(card),
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False, "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": list(card.inference.roi_size),
                    "sw_batch_size": card.inference.sw_batch_size, "overlap": card.inference.overlap,
                    "mode": card.inference.mode},
        "postprocessing": {"_target_": "Compose", "transforms": post},
        "handlers": [
            {"_target_": "CheckpointLoader", "load_path": "$os.path.join(@bundle_root, 'models', 'model.pt')",
             "load_dict": {"model": "@network"}},
            {"_target_": "StatsHandler", "iteration_log": False},
        ],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": False},
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    }


def metadata(card: ModelCard, version: str = "0.1.0", metrics: dict[str, Any] | None = None,
             data_source: str = "", description: str = "") -> dict[str, Any]:
    """``configs/metadata.json``: versions, task, classes and the network's data format."""
    import monai
    import numpy
    import torch

    from .. import __version__

    n_out = int(card.network.args.get("out_channels", len(card.classes) + 1)) if card.network else len(card.classes) + 1
    sigmoid = card.output.activation == "sigmoid"
    lm = card.channel_label_map(n_out)
    if sigmoid:
        out_def = {str(ch): card.classes[cid].name for ch, cid in sorted(lm.items()) if cid in card.classes}
    else:
        out_def = {"0": "background", **{str(ch): card.classes[cid].name for ch, cid in sorted(lm.items())
                                          if cid in card.classes}}
    roi = list(card.inference.roi_size) if card.inference else []
    own = card.network is not None and card.network.name in _OWN_NETWORKS
    return {
        "schema": SCHEMA,
        "version": version,
        "changelog": {version: f"trained with napari-cxseg {__version__}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"napari-cxseg": __version__} if own else {},
        "name": card.name,
        "task": card.task,
        "description": description or card.task,
        "authors": "napari-cxseg Trainer",
        "copyright": card.license,
        "data_source": data_source or card.training_data,
        "data_type": "nibabel" if card.spatial_dims == 3 else "png",
        "image_classes": f"{len(card.input.channels)} channel(s): {', '.join(card.input.channels)}",
        "label_classes": ", ".join(f"{k}: {c.name}" for k, c in sorted(card.classes.items())),
        "pred_classes": ", ".join(f"{k}: {v}" for k, v in out_def.items()),
        "eval_metrics": dict(metrics or card.metrics or {}),
        "intended_use": card.intended_use or "Research only. Not for clinical use.",
        "references": ["napari-cxseg model card " + card.name],
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "magnitude", "modality": (card.modality or [""])[0],
                "num_channels": len(card.input.channels), "spatial_shape": roi, "dtype": "float32",
                "value_range": [0, 1], "is_patch_data": card.spatial_dims == 3,
                "channel_def": {str(i): c for i, c in enumerate(card.input.channels)},
            }},
            "outputs": {"pred": {
                "type": "image", "format": "multi-label" if sigmoid else "segmentation", "num_channels": n_out,
                "spatial_shape": roi, "dtype": "float32", "value_range": [0, 1], "is_patch_data": card.spatial_dims == 3,
                "channel_def": out_def,
            }},
        },
    }


def export_bundle(card: ModelCard, weights: str | os.PathLike | dict[str, Any], out_dir: str | os.PathLike,
                  metrics: dict[str, Any] | None = None, readme: str = "", version: str = "0.1.0",
                  data_source: str = "") -> Path:
    """Write a MONAI bundle for a trained card into ``out_dir`` (created; existing bundle files replaced).

    Parameters
    ----------
    card
        The card that was trained (its network, preprocessing, classes).
    weights
        A state dict or a weights file (copied to ``models/model.pt``).
    out_dir
        The bundle folder; only ``configs/``, ``models/model.pt`` and ``docs/`` in it are written.
    metrics, readme, version, data_source
        What ``metadata.json`` and ``docs/README.md`` report.

    Returns
    -------
    Path
        The bundle folder.
    """
    import torch

    out = Path(out_dir)
    for sub in ("configs", "models", "docs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    _write_json(out / "configs" / "inference.json", inference_config(card))
    _write_json(out / "configs" / "metadata.json", metadata(card, version, metrics, data_source))
    target = out / "models" / "model.pt"
    fd, tmp = tempfile.mkstemp(prefix="model.", suffix=".partial", dir=target.parent)
    os.close(fd)
    try:
        if isinstance(weights, dict):
            torch.save({k: v.detach().cpu() for k, v in weights.items()}, tmp)
        else:
            shutil.copyfile(weights, tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    _write_text(out / "docs" / "README.md", readme or f"# {card.name}\n\n{card.task}\n\nNot for clinical use.\n")
    import yaml

    card_d = card_to_dict(card)
    card_d["weights"] = {"source": "file", "file": "../models/model.pt"}
    _write_text(out / "docs" / "napari_cxseg_card.yaml", yaml.safe_dump(card_d, sort_keys=False, allow_unicode=True))
    return out


def register_card(card: ModelCard, bundle_dir: str | os.PathLike, name: str | None = None) -> Path:
    """Write a card into the user's card folder whose weights are the bundle's ``models/model.pt``.

    Returns
    -------
    Path
        The card file (``<cache>/cards/<name>.yaml``), found by ``find_card(name)`` and listed
        in the Segment widget.
    """
    import yaml

    from ..models.cards import user_cards_dir

    bdir = Path(bundle_dir).resolve()
    d = card_to_dict(card)
    d["name"] = name or card.name
    d["weights"] = {"source": "file", "file": str(bdir / "models" / "model.pt")}
    d["notes"] = (f"{card.notes} " if card.notes else "") + f"MONAI bundle: {bdir}"
    path = user_cards_dir() / f"{d['name']}.yaml"
    _write_text(path, yaml.safe_dump(d, sort_keys=False, allow_unicode=True))
    return path


def _write_json(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(obj, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def bundle_readme(card: ModelCard, train: Sequence[Any], val: Sequence[Any], result: Any, config: Any) -> str:
    """``docs/README.md``: the data, the split, the settings and the validation figures."""
    lines = [f"# {card.name}", "", card.task, "",
             "Trained with the napari-cxseg Trainer. Research use only; not for clinical use.", "",
             "## Data", ""]
    by_src: dict[str, list[int]] = {}
    for c in train:
        by_src.setdefault(c.source, [0, 0])[0] += 1
    for c in val:
        by_src.setdefault(c.source, [0, 0])[1] += 1
    lines += ["| source | training cases | validation cases |", "|---|---|---|"]
    lines += [f"| {s} | {n[0]} | {n[1]} |" for s, n in sorted(by_src.items())]
    lines += ["", "Split by patient (no patient on both sides). Validation cases: "
              + ", ".join(c.key for c in val[:200]) + (" ..." if len(val) > 200 else ""), "",
              "## Settings", "", "```", json.dumps(config.to_dict(), indent=1), "```", "",
              "## Validation (product Predictor, on each image's own grid)", ""]
    if result is not None and result.per_class:
        lines.append(f"Best mean Dice {result.best_dice:.4f} at epoch {result.best_epoch} ({result.stopped}).")
        lines += ["", "| source | " + " | ".join(result.per_class) + " |", "|---" * (len(result.per_class) + 1) + "|"]
        for s, d in sorted(result.per_source.items()):
            lines.append(f"| {s} | " + " | ".join(f"{d.get(k, float('nan')):.4f}" for k in result.per_class) + " |")
        lines.append("| all | " + " | ".join(f"{v:.4f}" for v in result.per_class.values()) + " |")
    lines += ["", f"License / terms: {card.license}", "", f"Intended use: {card.intended_use}", ""]
    return "\n".join(lines)
