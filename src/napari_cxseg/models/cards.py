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

import os
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..images import CxsegError, LabelClass

#: Where the shipped cards live.
PACKAGE_CARDS_DIR = Path(__file__).resolve().parent.parent / "cards"

RADIOGRAPH_MODALITIES = ("CR", "DX", "XR")


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
def card_from_dict(data: Any, origin: str = "<dict>", path: Path | None = None) -> ModelCard:
    """Build and validate a :class:`ModelCard` from parsed YAML.

    The checks live in :mod:`napari_cxseg.models.card_schema`; weight fields that name files
    must stay inside the cache (see that module's docstring).

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
    from .card_schema import parse_card

    return parse_card(data, origin=origin, path=path)


# ---------------------------------------------------------------------------- loading
def load_card(path: str | os.PathLike) -> ModelCard:
    """Read and validate one card YAML file.

    Raises
    ------
    CxsegError
        When the file is missing, not a regular file, larger than ``io.limits.MAX_CARD_BYTES``,
        not UTF-8, not YAML (or nested too deeply), or a field is wrong (the message names both).
    """
    from ..io.documents import parse_yaml, read_text
    from ..io.limits import MAX_CARD_BYTES

    path = Path(path).expanduser()
    try:
        found = path.is_file()
    except OSError as e:  # a name too long, a loop of links
        raise CxsegError(f"cannot read model card {path}: {e.strerror or e}") from None
    if not found:
        raise CxsegError(f"model card {path} does not exist")
    # bounded: a link to /dev/zero, a huge, non-UTF-8 or deeply nested file is refused by name
    data = parse_yaml(read_text(path, MAX_CARD_BYTES, "a model card"), path, "model card")
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
            from .bundle_zip import unpack_bundle_zip

            bundle_dir = unpack_bundle_zip(p)
            try:
                return card_from_bundle(bundle_dir)
            except CxsegError as e:  # it names the unpacked copy: name the zip the user gave too
                raise CxsegError(f"bundle zip {p}: {e}") from e
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

    See :func:`napari_cxseg.models.bundle_card.derive_card` for how the fields are derived.

    Raises
    ------
    CxsegError
        Naming ``metadata.json`` and the field when the metadata cannot make a card.
    """
    from .bundle_card import derive_card

    return derive_card(bundle_dir)


def is_bundle_zip(path: Path) -> bool:
    """True when ``path`` is a zip holding ``<name>/configs/metadata.json``."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("configs/metadata.json") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
