"""Model cards: one YAML file per model says everything the engine needs to run it.

A card names the task, the accepted modalities and channels, the model space (orientation,
spacing or 2D size), the intensity normalisation, the network, the sliding-window settings,
the output activation, the classes with colours and where the weights come from, plus the
facts a user must know (license, training data, measured metrics, intended use).
Adding a model means adding a card file (see ``docs/ENGINE.md`` for the schema).

Cards come from the package (``napari_cxseg/cards``) and from the user's card folder
(``$CXSEG_CACHE_DIR/cards``, default ``~/.cache/napari-cxseg/cards``).  A MONAI bundle
(directory or zip) gets a card derived from its ``metadata.json``; such a card has no
``network`` and runs through the bundle's own configuration
(:class:`napari_cxseg.models.bundle.BundleModel`).

Schema additions beyond ``docs/ENGINE.md`` (all optional):

``input.fit``
    2D only: ``stretch`` (default) resizes the whole image to ``input.size``; ``pad`` first
    pads it to a square so the aspect ratio is kept.
``intensity: {type: minmax, b_min, b_max}``
    Output range of min-max scaling (default 0..1).
``output.overlap``
    Sigmoid outputs only, how overlapping structures are shown in one label map:
    ``smallest`` (each pixel gets the smallest structure that claims it), ``priority``
    (the first channel of ``output.priority`` that claims it wins) or ``last``.
``weights.bundle_version``
    Version passed to ``monai.bundle.download``.
``notes``
    Free text shown with the card (e.g. "to be trained").

This module imports neither torch nor MONAI.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..images import CxsegError, LabelClass, default_colour

#: Where the shipped cards live.
PACKAGE_CARDS_DIR = Path(__file__).resolve().parent.parent / "cards"

WEIGHT_SOURCES = ("package", "file", "url", "bundle", "torchscript", "torchxrayvision")
INTENSITY_TYPES = ("window", "percentiles", "zscore", "minmax", "none")
ACTIVATIONS = ("softmax", "sigmoid")
OVERLAP_RULES = ("smallest", "priority", "last")
BLEND_MODES = ("gaussian", "constant")
RADIOGRAPH_MODALITIES = ("CR", "DX", "XR")
_AXCODES = set("LRAPSI")


@dataclass
class InputSpec:
    """What the network expects as input.

    Parameters
    ----------
    channels
        Channel names in the order the network wants them.
    orientation
        3D: model-space axis codes for MONAI ``Orientationd`` (e.g. ``"RAS"``).
    spacing
        3D: model-space voxel size in mm, RAS (x, y, z) order, for ``Spacingd``.
    size
        2D: (rows, cols) the radiograph is resized to.
    intensity
        Normalisation: ``{"type": "window" | "percentiles" | "zscore" | "minmax" | "none", ...}``.
    fit
        2D: ``"stretch"`` or ``"pad"`` (pad to square first, keeping the aspect ratio).
    """

    channels: list[str]
    orientation: str | None = None
    spacing: tuple[float, ...] | None = None
    size: tuple[int, ...] | None = None
    intensity: dict[str, Any] = field(default_factory=lambda: {"type": "none"})
    fit: str = "stretch"


@dataclass
class NetworkSpec:
    """A network from ``monai.networks.nets`` by class name, with its keyword arguments."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferenceSpec:
    """Sliding-window settings (MONAI ``sliding_window_inference``)."""

    roi_size: tuple[int, ...]
    overlap: float = 0.25
    sw_batch_size: int = 4
    mode: str = "gaussian"


@dataclass
class OutputSpec:
    """How network outputs become a label map.

    Parameters
    ----------
    activation
        ``softmax`` (argmax over channels, channel ``c`` is class ``c``) or ``sigmoid``
        (one structure per channel, thresholded, possibly overlapping).
    threshold
        Sigmoid threshold.
    largest_component
        Keep only the largest connected component of each class.
    label_map
        ``{channel: class id}``; for softmax it renumbers argmax channels, for sigmoid it says
        which class each channel is (default: channel ``c`` -> class ``c + 1``).
    overlap
        Sigmoid only: ``smallest``, ``priority`` or ``last`` (see module docstring).
    priority
        Channels, highest priority first, for ``overlap: priority``.
    """

    activation: str = "softmax"
    threshold: float = 0.5
    largest_component: bool = False
    label_map: dict[int, int] | None = None
    overlap: str = "smallest"
    priority: list[int] | None = None


@dataclass
class WeightsSpec:
    """Where the weights come from (see :func:`napari_cxseg.models.weights.resolve_weights`)."""

    source: str
    file: str | None = None
    url: str | None = None
    sha256: str | None = None
    bundle: str | None = None
    bundle_version: str | None = None


@dataclass
class ModelCard:
    """A model described as data (see module docstring and ``docs/ENGINE.md``).

    ``path`` is the card file (``None`` for cards built in code); ``bundle_dir`` is set for
    cards derived from a MONAI bundle, which then run through the bundle's own config.
    """

    name: str
    task: str
    modality: list[str]
    spatial_dims: int
    input: InputSpec
    inference: InferenceSpec | None
    output: OutputSpec
    classes: dict[int, LabelClass]
    weights: WeightsSpec
    network: NetworkSpec | None = None
    license: str = ""
    training_data: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    intended_use: str = ""
    notes: str = ""
    path: Path | None = None
    bundle_dir: Path | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def is_bundle(self) -> bool:
        """True when the card runs through a MONAI bundle's own configuration."""
        return self.network is None and self.weights.source == "bundle"

    def accepts_modality(self, modality: str) -> bool:
        """Whether an image of this DICOM-style modality may be given to the model.

        An empty modality (e.g. PNG, NIfTI without header hints) is unknown and accepted.
        """
        m = (modality or "").upper()
        if not m:
            return True
        accepted = {a.upper() for a in self.modality}
        if "MR" in accepted:
            accepted |= {"MRI"}
        if accepted & set(RADIOGRAPH_MODALITIES):
            accepted |= set(RADIOGRAPH_MODALITIES) | {"OT"}
        return m in accepted

    def channel_label_map(self, n_channels: int) -> dict[int, int]:
        """``{channel: class id}`` for a network with ``n_channels`` outputs."""
        if self.output.label_map:
            return dict(self.output.label_map)
        if self.output.activation == "softmax":
            return {c: c for c in range(1, n_channels)}
        return {c: c + 1 for c in range(n_channels)}

    def with_weights(self, **kw: Any) -> ModelCard:
        """A copy of the card with some weight fields replaced."""
        return replace(self, weights=replace(self.weights, **kw))

    def describe(self) -> str:
        """One line: name, task and modality."""
        return f"{self.name}: {self.task} [{', '.join(self.modality)}, {self.spatial_dims}D]"


# ---------------------------------------------------------------------------- parsing
class _Fields:
    """Validation helpers that name the card file and the field in every error."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def error(self, fld: str, msg: str) -> CxsegError:
        return CxsegError(f"model card {self.origin}: field '{fld}' {msg}")

    def mapping(self, d: Any, fld: str, required: bool = True) -> dict:
        if d is None and not required:
            return {}
        if not isinstance(d, dict):
            raise self.error(fld, f"must be a mapping (got {_show(d)})")
        return d

    def text(self, d: dict, key: str, prefix: str = "", required: bool = True, default: str = "") -> str:
        fld = prefix + key
        if key not in d or d[key] is None:
            if required:
                raise self.error(fld, "is missing")
            return default
        v = d[key]
        if not isinstance(v, str | int | float) or isinstance(v, bool):
            raise self.error(fld, f"must be text (got {_show(v)})")
        return str(v)

    def choice(self, d: dict, key: str, choices: tuple[str, ...], prefix: str = "", default: str | None = None) -> str:
        fld = prefix + key
        v = d.get(key, default)
        if v is None:
            raise self.error(fld, f"is missing (one of {', '.join(choices)})")
        if str(v) not in choices:
            raise self.error(fld, f"must be one of {', '.join(choices)} (got {_show(v)})")
        return str(v)

    def numbers(self, v: Any, fld: str, n: int | None, kind: type = float, positive: bool = True) -> tuple:
        if not isinstance(v, list | tuple) or (n is not None and len(v) != n):
            want = f"{n} numbers" if n is not None else "a list of numbers"
            raise self.error(fld, f"must be {want} (got {_show(v)})")
        out = []
        for x in v:
            if isinstance(x, bool) or not isinstance(x, int | float):
                raise self.error(fld, f"must contain numbers only (got {_show(x)})")
            if kind is int and int(x) != x:
                raise self.error(fld, f"must contain integers only (got {_show(x)})")
            if positive and x <= 0:
                raise self.error(fld, f"must contain positive numbers (got {_show(x)})")
            out.append(kind(x))
        return tuple(out)

    def number(self, d: dict, key: str, prefix: str, default: Any, kind: type = float,
               lo: float | None = None, hi: float | None = None) -> Any:
        fld = prefix + key
        v = d.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.error(fld, f"must be a number (got {_show(v)})")
        if kind is int and int(v) != v:
            raise self.error(fld, f"must be an integer (got {_show(v)})")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.error(fld, f"must be within [{lo}, {hi}] (got {v})")
        return kind(v)

    def flag(self, d: dict, key: str, prefix: str, default: bool) -> bool:
        v = d.get(key, default)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.error(prefix + key, f"must be true or false (got {_show(v)})")
        return v


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def card_from_dict(data: Any, origin: str = "<dict>", path: Path | None = None) -> ModelCard:
    """Build and validate a :class:`ModelCard` from parsed YAML.

    Parameters
    ----------
    data
        The parsed card.
    origin
        How to name the card in error messages (usually its file path).
    path
        The card file, kept on the card so relative weight files resolve next to it.

    Returns
    -------
    ModelCard

    Raises
    ------
    CxsegError
        Naming the card and the bad field.
    """
    f = _Fields(origin)
    d = f.mapping(data, "<top level>")
    known = {"name", "task", "modality", "spatial_dims", "input", "network", "inference", "output",
             "classes", "weights", "license", "training_data", "metrics", "intended_use", "notes"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise f.error(unknown[0], f"is not a card field (known: {', '.join(sorted(known))})")

    name = f.text(d, "name")
    if not name.strip() or any(c in name for c in "/\\ "):
        raise f.error("name", f"must be a non-empty word without spaces or slashes (got {_show(name)})")
    task = f.text(d, "task")
    mod = d.get("modality")
    if isinstance(mod, str):
        mod = [mod]
    if not isinstance(mod, list) or not mod or not all(isinstance(m, str) for m in mod):
        raise f.error("modality", f"must be a list of DICOM modalities like [CT] or [CR, DX, XR] (got {_show(mod)})")
    dims = d.get("spatial_dims")
    if dims not in (2, 3):
        raise f.error("spatial_dims", f"must be 2 or 3 (got {_show(dims)})")

    inp = _parse_input(f, f.mapping(d.get("input"), "input"), dims)
    weights = _parse_weights(f, f.mapping(d.get("weights"), "weights"))

    net = None
    if d.get("network") is not None:
        nd = f.mapping(d["network"], "network")
        args = f.mapping(nd.get("args"), "network.args", required=False)
        if not all(isinstance(k, str) for k in args):
            raise f.error("network.args", "must have text keys")
        net = NetworkSpec(name=f.text(nd, "name", "network."), args=dict(args))
    elif weights.source not in ("bundle", "torchscript", "torchxrayvision"):
        raise f.error("network", f"is missing (needed for weights.source {weights.source})")

    inference = None
    if d.get("inference") is not None:
        inference = _parse_inference(f, f.mapping(d["inference"], "inference"), dims)
    elif net is not None or weights.source == "torchscript":
        raise f.error("inference", "is missing (roi_size, overlap, sw_batch_size, mode)")
    if inference is None and weights.source == "torchxrayvision":
        raise f.error("inference", "is missing (roi_size, overlap, sw_batch_size, mode)")

    out = _parse_output(f, f.mapping(d.get("output"), "output", required=False))
    classes = _parse_classes(f, d.get("classes"))
    if out.label_map:
        missing = sorted(set(out.label_map.values()) - set(classes) - {0})
        if missing:
            raise f.error("output.label_map", f"maps to class ids {missing} that are not in 'classes'")
    if out.priority is not None and out.label_map is not None:
        bad = [c for c in out.priority if c not in out.label_map]
        if bad:
            raise f.error("output.priority", f"names channels {bad} that are not in output.label_map")

    metrics = f.mapping(d.get("metrics"), "metrics", required=False)
    return ModelCard(
        name=name,
        task=task,
        modality=[m.upper() for m in mod],
        spatial_dims=int(dims),
        input=inp,
        network=net,
        inference=inference,
        output=out,
        classes=classes,
        weights=weights,
        license=f.text(d, "license", required=False),
        training_data=f.text(d, "training_data", required=False),
        metrics=dict(metrics),
        intended_use=f.text(d, "intended_use", required=False),
        notes=f.text(d, "notes", required=False),
        path=path,
    )


def _parse_input(f: _Fields, d: dict, dims: int) -> InputSpec:
    p = "input."
    ch = d.get("channels")
    if not isinstance(ch, list) or not ch or not all(isinstance(c, str | int) for c in ch):
        raise f.error(p + "channels", f"must be a non-empty list of channel names (got {_show(ch)})")
    orientation = d.get("orientation")
    spacing = d.get("spacing")
    size = d.get("size")
    if dims == 3:
        if not isinstance(orientation, str) or len(orientation) != 3 or set(orientation.upper()) - _AXCODES \
                or len({_axis_of(c) for c in orientation.upper()}) != 3:
            raise f.error(p + "orientation", f"must be three axis codes like RAS or LPS (got {_show(orientation)})")
        orientation = orientation.upper()
        spacing = f.numbers(spacing, p + "spacing", 3) if spacing is not None else None
        if size is not None:
            raise f.error(p + "size", "must be null for a 3D model (use input.spacing)")
    else:
        if orientation is not None:
            raise f.error(p + "orientation", "must be null for a 2D model")
        if spacing is not None:
            raise f.error(p + "spacing", "must be null for a 2D model (use input.size)")
        size = f.numbers(size, p + "size", 2, kind=int) if size is not None else None
    fit = f.choice(d, "fit", ("stretch", "pad"), p, default="stretch")
    intensity = _parse_intensity(f, f.mapping(d.get("intensity"), p + "intensity", required=False) or {"type": "none"})
    return InputSpec(
        channels=[str(c) for c in ch], orientation=orientation, spacing=spacing, size=size,
        intensity=intensity, fit=fit,
    )


def _axis_of(code: str) -> int:
    return {"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}[code]


def _parse_intensity(f: _Fields, d: dict) -> dict[str, Any]:
    p = "input.intensity."
    t = f.choice(d, "type", INTENSITY_TYPES, p)
    out: dict[str, Any] = {"type": t}
    if t == "window":
        for k in ("a_min", "a_max"):
            if k not in d:
                raise f.error(p + k, "is missing (window needs a_min, a_max)")
            out[k] = f.number(d, k, p, None)
        out["b_min"] = f.number(d, "b_min", p, 0.0)
        out["b_max"] = f.number(d, "b_max", p, 1.0)
        out["clip"] = f.flag(d, "clip", p, True)
        if out["a_max"] <= out["a_min"]:
            raise f.error(p + "a_max", f"must be above a_min (got {out['a_min']}..{out['a_max']})")
    elif t == "percentiles":
        out["lower"] = f.number(d, "lower", p, 0.5, lo=0, hi=100)
        out["upper"] = f.number(d, "upper", p, 99.5, lo=0, hi=100)
        out["b_min"] = f.number(d, "b_min", p, 0.0)
        out["b_max"] = f.number(d, "b_max", p, 1.0)
        out["clip"] = f.flag(d, "clip", p, True)
        if out["upper"] <= out["lower"]:
            raise f.error(p + "upper", "must be above lower")
    elif t == "zscore":
        out["nonzero"] = f.flag(d, "nonzero", p, False)
    elif t == "minmax":
        out["b_min"] = f.number(d, "b_min", p, 0.0)
        out["b_max"] = f.number(d, "b_max", p, 1.0)
    extra = sorted(set(d) - set(out))
    if extra:
        raise f.error(p + extra[0], f"is not a parameter of intensity type {t}")
    return out


def _parse_inference(f: _Fields, d: dict, dims: int) -> InferenceSpec:
    p = "inference."
    if "roi_size" not in d:
        raise f.error(p + "roi_size", "is missing")
    roi = f.numbers(d["roi_size"], p + "roi_size", dims, kind=int)
    return InferenceSpec(
        roi_size=roi,
        overlap=f.number(d, "overlap", p, 0.25, lo=0.0, hi=0.95),
        sw_batch_size=f.number(d, "sw_batch_size", p, 4, kind=int, lo=1),
        mode=f.choice(d, "mode", BLEND_MODES, p, default="gaussian"),
    )


def _parse_output(f: _Fields, d: dict) -> OutputSpec:
    p = "output."
    label_map = None
    if d.get("label_map") is not None:
        lm = f.mapping(d["label_map"], p + "label_map")
        try:
            label_map = {int(k): int(v) for k, v in lm.items()}
        except (TypeError, ValueError) as e:
            raise f.error(p + "label_map", f"must map channel numbers to class ids ({e})") from None
    priority = None
    if d.get("priority") is not None:
        pr = d["priority"]
        if not isinstance(pr, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in pr):
            raise f.error(p + "priority", f"must be a list of channel numbers (got {_show(pr)})")
        priority = list(pr)
    overlap = f.choice(d, "overlap", OVERLAP_RULES, p, default="smallest")
    if overlap == "priority" and priority is None:
        raise f.error(p + "priority", "is missing (needed for overlap: priority)")
    return OutputSpec(
        activation=f.choice(d, "activation", ACTIVATIONS, p, default="softmax"),
        threshold=f.number(d, "threshold", p, 0.5, lo=0.0, hi=1.0),
        largest_component=f.flag(d, "largest_component", p, False),
        label_map=label_map,
        overlap=overlap,
        priority=priority,
    )


def _parse_classes(f: _Fields, d: Any) -> dict[int, LabelClass]:
    d = f.mapping(d, "classes")
    if not d:
        raise f.error("classes", "must name at least one class")
    out: dict[int, LabelClass] = {}
    for k, v in d.items():
        try:
            cid = int(k)
        except (TypeError, ValueError):
            raise f.error(f"classes.{k}", "must be keyed by an integer class id") from None
        if cid <= 0 or cid > 65535:
            raise f.error(f"classes.{k}", "must be a class id in 1..65535 (0 is background)")
        if isinstance(v, str):
            out[cid] = LabelClass(v, default_colour(cid))
            continue
        v = f.mapping(v, f"classes.{k}")
        name = f.text(v, "name", f"classes.{k}.")
        colour = v.get("colour", v.get("color")) or default_colour(cid)
        if not isinstance(colour, str) or not _is_hex_colour(colour):
            raise f.error(f"classes.{k}.colour", f"must be a #rrggbb colour (got {_show(colour)})")
        out[cid] = LabelClass(name, colour)
    return dict(sorted(out.items()))


def _is_hex_colour(s: str) -> bool:
    return len(s) == 7 and s[0] == "#" and all(c in "0123456789abcdefABCDEF" for c in s[1:])


def _parse_weights(f: _Fields, d: dict) -> WeightsSpec:
    p = "weights."
    src = f.choice(d, "source", WEIGHT_SOURCES, p)
    w = WeightsSpec(
        source=src,
        file=f.text(d, "file", p, required=False) or None,
        url=f.text(d, "url", p, required=False) or None,
        sha256=(f.text(d, "sha256", p, required=False) or None),
        bundle=f.text(d, "bundle", p, required=False) or None,
        bundle_version=f.text(d, "bundle_version", p, required=False) or None,
    )
    extra = sorted(set(d) - {"source", "file", "url", "sha256", "bundle", "bundle_version"})
    if extra:
        raise f.error(p + extra[0], "is not a weights field")
    if src in ("package", "file", "torchscript") and not w.file:
        raise f.error(p + "file", f"is missing (needed for source {src})")
    if src == "url" and not w.url:
        raise f.error(p + "url", "is missing (needed for source url)")
    if src == "bundle" and not w.bundle:
        raise f.error(p + "bundle", "is missing (a MONAI Model Zoo name or a bundle folder)")
    if w.sha256 is not None:
        w.sha256 = w.sha256.lower()
        if len(w.sha256) != 64 or any(c not in "0123456789abcdef" for c in w.sha256):
            raise f.error(p + "sha256", "must be 64 hex digits")
    return w


# ---------------------------------------------------------------------------- loading
def load_card(path: str | os.PathLike) -> ModelCard:
    """Read and validate one card YAML file.

    Raises
    ------
    CxsegError
        When the file is missing, is not YAML, or a field is wrong (the message names both).
    """
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise CxsegError(f"model card {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise CxsegError(f"model card {path} is not valid YAML: {e}") from None
    return card_from_dict(data, origin=str(path), path=path.resolve())


def user_cards_dir() -> Path:
    """The user's card folder (``<cache>/cards``)."""
    from .weights import cache_dir

    return cache_dir() / "cards"


def list_cards(errors: list[tuple[Path, str]] | None = None) -> list[ModelCard]:
    """All available cards, shipped ones first, then the user's; sorted by name in each group.

    Parameters
    ----------
    errors
        When given, invalid user cards are skipped and ``(path, message)`` appended here;
        otherwise an invalid user card raises. Shipped cards must always be valid.

    Returns
    -------
    list of ModelCard
        A user card with the name of a shipped card replaces it.
    """
    cards: dict[str, ModelCard] = {}
    for c in sorted((load_card(p) for p in PACKAGE_CARDS_DIR.glob("*.yaml")), key=lambda c: c.name):
        cards[c.name] = c
    udir = user_cards_dir()
    if udir.is_dir():
        for p in sorted([*udir.glob("*.yaml"), *udir.glob("*.yml")], key=lambda p: p.name.lower()):
            try:
                c = load_card(p)
            except CxsegError as e:
                if errors is None:
                    raise
                errors.append((p, str(e)))
                continue
            cards[c.name] = c
    return list(cards.values())


def find_card(name_or_path: str | os.PathLike) -> ModelCard:
    """The card for a model given by name or path.

    Parameters
    ----------
    name_or_path
        A card name (see :func:`list_cards`), a card YAML file, a MONAI bundle directory or
        ``.zip`` (the card is derived from the bundle's ``configs/metadata.json``), or a
        ``.ts`` TorchScript / ``.pt`` state-dict file that has a card beside it
        (``<stem>.yaml``); the card's weights then point to that file.

    Returns
    -------
    ModelCard

    Raises
    ------
    CxsegError
        When nothing matches; the message lists the available names.
    """
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.exists():
        if p.is_dir():
            if (p / "configs" / "metadata.json").is_file():
                return card_from_bundle(p)
            raise CxsegError(f"{p} is a folder but not a MONAI bundle (no configs/metadata.json)")
        suffix = p.suffix.lower()
        if suffix in (".yaml", ".yml"):
            return load_card(p)
        if suffix == ".zip":
            from .bundle import unpack_bundle_zip

            return card_from_bundle(unpack_bundle_zip(p))
        if suffix in (".ts", ".pt", ".pth"):
            return _card_for_weights_file(p)
        raise CxsegError(
            f"{p}: not a model (give a card name, a card .yaml, a MONAI bundle folder or .zip, "
            "or a .ts/.pt file with a card <stem>.yaml beside it)"
        )
    if s.lower().endswith((".yaml", ".yml", ".zip", ".ts", ".pt", ".pth")) or os.sep in s:
        raise CxsegError(f"model file {p} does not exist")
    errors: list[tuple[Path, str]] = []
    cards = list_cards(errors)
    for c in cards:
        if c.name == s:
            return c
    for c in cards:
        if c.name.lower() == s.lower() or (c.path is not None and c.path.stem.lower() == s.lower()):
            return c
    for path, msg in errors:
        if path.stem.lower() == s.lower():
            raise CxsegError(msg)
    names = ", ".join(c.name for c in cards)
    raise CxsegError(f"no model card named '{s}' (available: {names}; user cards go in {user_cards_dir()})")


def _card_for_weights_file(p: Path) -> ModelCard:
    for cand in (p.with_suffix(".yaml"), p.with_suffix(".yml")):
        if cand.is_file():
            card = load_card(cand)
            source = "torchscript" if p.suffix.lower() == ".ts" else "file"
            return card.with_weights(source=source, file=str(p.resolve()), url=None, bundle=None)
    kind = "TorchScript" if p.suffix.lower() == ".ts" else "state-dict"
    raise CxsegError(
        f"{p} is a {kind} file without a model card: write {p.with_suffix('.yaml')} "
        "(task, modality, channels, spacing/size, intensity, classes ...; see docs/ENGINE.md) "
        f"with weights: {{source: {'torchscript' if kind == 'TorchScript' else 'file'}, file: {p.name}}}"
    )


# ---------------------------------------------------------------------------- bundles
def card_from_bundle(bundle_dir: str | os.PathLike) -> ModelCard:
    """Derive a card from a MONAI bundle's ``configs/metadata.json``.

    Channel names come from ``network_data_format.inputs.<first>.channel_def``, classes from
    ``network_data_format.outputs.<first>.channel_def`` (a ``"0": "background"`` entry means
    one-hot/softmax output, otherwise one structure per channel), the modality from the
    input's ``modality`` and the spatial dimensions from its ``spatial_shape``.
    The card has no ``network``: it runs through the bundle's own configuration.
    """
    bdir = Path(bundle_dir).resolve()
    meta_path = bdir / "configs" / "metadata.json"
    origin = str(meta_path)
    if not meta_path.is_file():
        raise CxsegError(f"{bdir} is not a MONAI bundle: {meta_path} is missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CxsegError(f"bundle metadata {meta_path} is not valid JSON: {e}") from None
    f = _Fields(origin)
    ndf = f.mapping(meta.get("network_data_format"), "network_data_format")
    inputs = f.mapping(ndf.get("inputs"), "network_data_format.inputs")
    outputs = f.mapping(ndf.get("outputs"), "network_data_format.outputs")
    if not inputs or not outputs:
        raise f.error("network_data_format", "must describe at least one input and one output")
    in_name, in_spec = next(iter(inputs.items()))
    out_name, out_spec = next(iter(outputs.items()))
    in_spec = f.mapping(in_spec, f"network_data_format.inputs.{in_name}")
    out_spec = f.mapping(out_spec, f"network_data_format.outputs.{out_name}")

    n_in = int(in_spec.get("num_channels", 1) or 1)
    ch_def = in_spec.get("channel_def") or {}
    channels = [str(ch_def.get(str(i), ch_def.get(i, f"channel {i}"))) for i in range(n_in)]
    shape = in_spec.get("spatial_shape") or []
    dims = 2 if len(shape) == 2 else 3

    out_def = out_spec.get("channel_def") or {}
    if not out_def:
        raise f.error(f"network_data_format.outputs.{out_name}.channel_def", "is missing (class names)")
    items = sorted(((int(k), str(v)) for k, v in out_def.items()), key=lambda kv: kv[0])
    has_bg = any(k == 0 and v.strip().lower() in ("background", "bg", "everything else") for k, v in items)
    if has_bg:
        classes = {k: LabelClass(v, default_colour(k)) for k, v in items if k != 0}
        activation, label_map = "softmax", None
    else:
        classes = {k + 1: LabelClass(v, default_colour(k + 1)) for k, v in items}
        activation, label_map = "sigmoid", {k: k + 1 for k, _ in items}

    modality = str(in_spec.get("modality") or "").upper()
    mods = [modality] if modality else ["CT", "MR"]
    eval_metrics = meta.get("eval_metrics") or {}
    return ModelCard(
        name=bdir.name,
        task=str(meta.get("task") or meta.get("description") or bdir.name),
        modality=mods,
        spatial_dims=dims,
        input=InputSpec(channels=channels, intensity={"type": "none"}),
        network=None,
        inference=None,
        output=OutputSpec(activation=activation, label_map=label_map),
        classes=classes,
        weights=WeightsSpec(source="bundle", bundle=str(bdir), bundle_version=meta.get("version")),
        license=str(meta.get("copyright") or ""),
        training_data=str(meta.get("data_source") or ""),
        metrics=dict(eval_metrics) if isinstance(eval_metrics, dict) else {},
        intended_use=str(meta.get("intended_use") or ""),
        notes=f"derived from MONAI bundle {bdir} (version {meta.get('version', '?')})",
        path=meta_path,
        bundle_dir=bdir,
    )


def is_bundle_zip(path: Path) -> bool:
    """True when ``path`` is a zip holding ``<name>/configs/metadata.json``."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("configs/metadata.json") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
