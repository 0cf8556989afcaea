"""The card schema: every field of a model card parsed and checked, with errors that name both.

:func:`parse_card` turns parsed YAML into a :class:`~napari_cxseg.models.cards.ModelCard`
(``cards.card_from_dict`` is its public name).  Every refusal is a
:class:`~napari_cxseg.images.CxsegError` reading ``model card <file>: field '<field>' ...``.

Cards are data, so the weight fields are held to what the engine will do with them:

* ``weights.file`` of ``url``, ``package``, ``bundle`` and ``torchxrayvision`` sources is a
  plain file name that stays inside the weights cache or the package weights folder
  (:func:`~napari_cxseg.models.cache.check_plain_name`, the same check the cache applies when
  it builds the path).  ``file`` and ``torchscript`` paths are the user's own and only read.
* ``weights.bundle`` is a MONAI Model Zoo name; a bundle folder is used by opening it
  (``find_card(<folder>)``), which derives its card from the bundle's own ``metadata.json``.
  ``weights.bundle_version`` is a zoo version word (``0.5.9``).
* ``weights.url`` is ``https://``, and a ``url`` source carries the file's sha256.

This module imports neither torch nor MONAI.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..images import CxsegError, LabelClass, default_colour
from .cache import (
    IN_CACHE,
    IN_PACKAGE,
    URL_NAME,
    ZOO_NAME,
    ZOO_VERSION,
    check_plain_name,
    url_file_name,
)
from .cards import (
    InferenceSpec,
    InputSpec,
    ModelCard,
    NetworkSpec,
    OutputSpec,
    WeightsSpec,
)
from .downloads import url_problem

WEIGHT_SOURCES = ("package", "file", "url", "bundle", "torchscript", "torchxrayvision")
#: Sources whose ``weights.file`` is a name inside a folder of this package or its cache.
CONTAINED_SOURCES = ("package", "url", "bundle", "torchxrayvision")
INTENSITY_TYPES = ("window", "percentiles", "zscore", "minmax", "none")
ACTIVATIONS = ("softmax", "sigmoid")
OVERLAP_RULES = ("smallest", "priority", "last")
BLEND_MODES = ("gaussian", "constant")
_AXCODES = set("LRAPSI")
_HEX = set("0123456789abcdef")
_WEIGHT_FIELDS = ("source", "file", "url", "sha256", "bundle", "bundle_version")


# ---------------------------------------------------------------------------- parsing
class Fields:
    """Field checks that name the card (``origin``) and the field in every error."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def error(self, fld: str, msg: str) -> CxsegError:
        return CxsegError(f"model card {self.origin}: field '{fld}' {msg}")

    def plain(self, value: Any, fld: str, wanted: str, zoo: bool = False) -> str:
        """``value`` when it is a plain name (:mod:`.cache`), else an error naming ``fld``."""
        return check_plain_name(value, f"model card {self.origin}", fld, wanted, zoo)

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
            if not math.isfinite(x):  # YAML's .nan/.inf: never a spacing, size or window
                raise self.error(fld, f"must contain finite numbers (got {_show(x)})")
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
        if not math.isfinite(v):
            raise self.error(fld, f"must be a finite number (got {_show(v)})")
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


def _non_finite(value: Any, where: str) -> str | None:
    """The field (``network.args.x``) of the first NaN or infinite number in ``value``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{where}.{k}")
        if found:
            return found
    return None


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def parse_card(data: Any, origin: str = "<dict>", path: Path | None = None) -> ModelCard:
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
    f = Fields(origin)
    d = f.mapping(data, "<top level>")
    known = {"name", "task", "modality", "spatial_dims", "input", "network", "inference", "output",
             "classes", "weights", "license", "training_data", "metrics", "intended_use", "notes"}
    unknown = sorted(set(d) - known, key=str)  # YAML keys may be numbers, null, booleans
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
    weights = parse_weights(f, f.mapping(d.get("weights"), "weights"))

    net = None
    if d.get("network") is not None:
        nd = f.mapping(d["network"], "network")
        args = f.mapping(nd.get("args"), "network.args", required=False)
        if not all(isinstance(k, str) for k in args):
            raise f.error("network.args", "must have text keys")
        bad = _non_finite(args, "network.args")
        if bad:
            raise f.error(bad, "must be a finite number (got .nan or .inf)")
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


def _parse_input(f: Fields, d: dict, dims: int) -> InputSpec:
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


def _parse_intensity(f: Fields, d: dict) -> dict[str, Any]:
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
    extra = sorted(set(d) - set(out), key=str)
    if extra:
        raise f.error(f"{p}{extra[0]}", f"is not a parameter of intensity type {t}")
    return out


def _parse_inference(f: Fields, d: dict, dims: int) -> InferenceSpec:
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


def _parse_output(f: Fields, d: dict) -> OutputSpec:
    p = "output."
    label_map = None
    if d.get("label_map") is not None:
        lm = f.mapping(d["label_map"], p + "label_map")
        try:
            label_map = {int(k): int(v) for k, v in lm.items()}
        except (TypeError, ValueError, OverflowError) as e:
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


def _parse_classes(f: Fields, d: Any) -> dict[int, LabelClass]:
    d = f.mapping(d, "classes")
    if not d:
        raise f.error("classes", "must name at least one class")
    out: dict[int, LabelClass] = {}
    for k, v in d.items():
        try:
            cid = int(k)
        except (TypeError, ValueError, OverflowError):
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


def parse_weights(f: Fields, d: dict, bundle_folder: bool = False) -> WeightsSpec:
    """The ``weights`` mapping of a card, checked (see the module docstring).

    Parameters
    ----------
    f
        The field checker of the card (names the card in errors).
    d
        The ``weights`` mapping.
    bundle_folder
        The card is derived from a bundle folder the user opened: ``weights.bundle`` is that
        folder's path, not a zoo name.
    """
    p = "weights."
    src = f.choice(d, "source", WEIGHT_SOURCES, p)
    w = WeightsSpec(source=src, **{k: f.text(d, k, p, required=False) or None for k in _WEIGHT_FIELDS[1:]})
    extra = sorted(set(d) - set(_WEIGHT_FIELDS), key=str)
    if extra:
        raise f.error(f"{p}{extra[0]}", "is not a weights field")
    if src in ("package", "file", "torchscript") and not w.file:
        raise f.error(p + "file", f"is missing (needed for source {src})")
    if src == "url" and not w.url:
        raise f.error(p + "url", "is missing (needed for source url)")
    if src == "torchxrayvision" and not (w.url or w.file):
        raise f.error(p + "url", "is missing (needed for source torchxrayvision without weights.file)")
    if src == "bundle" and not w.bundle:
        raise f.error(p + "bundle", "is missing (a MONAI Model Zoo name)")
    if w.url is not None:
        problem = url_problem(w.url, loopback_http=False)
        if problem is not None:
            raise f.error(p + "url", f"must be an https:// URL, got {w.url!r} ({problem})")
    if w.sha256 is not None:
        w.sha256 = w.sha256.strip().lower()
        if len(w.sha256) != 64 or set(w.sha256) - _HEX:
            raise f.error(p + "sha256", f"must be 64 hex digits, got {_show(w.sha256)}")
    elif src == "url":
        raise f.error(p + "sha256", "is missing: a url source needs the sha256 (64 hex digits) of the "
                                   "file, so that a changed or damaged download is refused")
    if src in CONTAINED_SOURCES and w.file is not None:
        f.plain(w.file, p + "file", IN_PACKAGE if src == "package" else IN_CACHE)
    elif src in ("url", "torchxrayvision") and w.url is not None:
        f.plain(url_file_name(w.url), p + "url", URL_NAME)
    if src == "bundle" and not bundle_folder:
        f.plain(w.bundle, p + "bundle", ZOO_NAME, zoo=True)
    if w.bundle_version is not None:
        f.plain(w.bundle_version, p + "bundle_version", ZOO_VERSION, zoo=True)
    return w
