"""Cards derived from MONAI bundles: ``configs/metadata.json`` becomes a :class:`ModelCard`.

The derived card runs through the bundle's own configuration (it has no ``network``); its
bundle folder is the one the user opened and is only read.  Values from ``metadata.json``
pass the same checks as a card file's fields (:mod:`.card_schema`).

This module imports neither torch nor MONAI.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..images import CxsegError, LabelClass, default_colour
from .cache import ZOO_VERSION
from .card_schema import Fields, parse_weights
from .cards import InputSpec, ModelCard, OutputSpec


def derive_card(bundle_dir: str | os.PathLike) -> ModelCard:
    """Derive a card from a MONAI bundle's ``configs/metadata.json``.

    Channel names come from ``network_data_format.inputs.<first>.channel_def``, classes from
    ``network_data_format.outputs.<first>.channel_def`` (a ``"0": "background"`` entry means
    one-hot/softmax output, otherwise one structure per channel), the modality from the
    input's ``modality`` and the spatial dimensions from its ``spatial_shape``.
    The card has no ``network``: it runs through the bundle's own configuration.  The weight
    fields go through the same checks as a card file's (the bundle folder is the user's own
    and only read; ``version`` must be a version word such as ``0.5.9``).

    Raises
    ------
    CxsegError
        Naming ``metadata.json`` and the field when the metadata cannot make a card.
    """
    bdir = Path(bundle_dir).resolve()
    meta_path = bdir / "configs" / "metadata.json"
    origin = str(meta_path)
    if not meta_path.is_file():
        raise CxsegError(f"{bdir} is not a MONAI bundle: {meta_path} is missing")
    from ..io.documents import load_json
    from .bundle_config import MAX_CONFIG_BYTES

    meta = load_json(meta_path, MAX_CONFIG_BYTES, "a bundle's metadata.json")
    f = Fields(origin)
    meta = f.mapping(meta, "<top level>")
    ndf = f.mapping(meta.get("network_data_format"), "network_data_format")
    inputs = f.mapping(ndf.get("inputs"), "network_data_format.inputs")
    outputs = f.mapping(ndf.get("outputs"), "network_data_format.outputs")
    if not inputs or not outputs:
        raise f.error("network_data_format", "must describe at least one input and one output")
    in_name, in_spec = next(iter(inputs.items()))
    out_name, out_spec = next(iter(outputs.items()))
    in_fld, out_fld = f"network_data_format.inputs.{in_name}", f"network_data_format.outputs.{out_name}"
    in_spec, out_spec = f.mapping(in_spec, in_fld), f.mapping(out_spec, out_fld)

    ch_def = f.mapping(in_spec.get("channel_def"), in_fld + ".channel_def", required=False)
    out_def = f.mapping(out_spec.get("channel_def"), out_fld + ".channel_def", required=False)
    if not out_def:
        raise f.error(out_fld + ".channel_def", "is missing (class names)")
    try:
        n_in = int(in_spec.get("num_channels", 1) or 1)
        items = sorted(((int(k), str(v)) for k, v in out_def.items()), key=lambda kv: kv[0])
    except (TypeError, ValueError) as e:
        raise f.error(out_fld, f"needs integer channel numbers ({e})") from None
    if not 1 <= n_in <= 64 or any(not 0 <= k <= 65534 for k, _ in items):
        raise f.error(in_fld + ".num_channels", "and channel numbers must be small non-negative integers")
    channels = [str(ch_def.get(str(i), ch_def.get(i, f"channel {i}"))) for i in range(n_in)]
    shape = in_spec.get("spatial_shape") or []
    dims = 2 if isinstance(shape, list) and len(shape) == 2 else 3
    has_bg = any(k == 0 and v.strip().lower() in ("background", "bg", "everything else") for k, v in items)
    if has_bg:
        classes = {k: LabelClass(v, default_colour(k)) for k, v in items if k != 0}
        activation, label_map = "softmax", None
    else:
        classes = {k + 1: LabelClass(v, default_colour(k + 1)) for k, v in items}
        activation, label_map = "sigmoid", {k: k + 1 for k, _ in items}

    version = f.text(meta, "version", required=False) or None
    if version is not None:
        f.plain(version, "version", ZOO_VERSION, zoo=True)
    weights = parse_weights(f, {"source": "bundle", "bundle": str(bdir), "bundle_version": version},
                            bundle_folder=True)
    modality = f.text(in_spec, "modality", in_fld + ".", required=False).upper()
    eval_metrics = meta.get("eval_metrics") or {}
    return ModelCard(
        name=bdir.name,
        task=f.text(meta, "task", required=False) or f.text(meta, "description", required=False) or bdir.name,
        modality=[modality] if modality else ["CT", "MR"],
        spatial_dims=dims,
        input=InputSpec(channels=channels, intensity={"type": "none"}),
        network=None,
        inference=None,
        output=OutputSpec(activation=activation, label_map=label_map),
        classes=classes,
        weights=weights,
        license=f.text(meta, "copyright", required=False),
        training_data=f.text(meta, "data_source", required=False),
        metrics=dict(eval_metrics) if isinstance(eval_metrics, dict) else {},
        intended_use=f.text(meta, "intended_use", required=False),
        notes=f"derived from MONAI bundle {bdir} (version {version or '?'})",
        path=meta_path,
        bundle_dir=bdir,
    )
