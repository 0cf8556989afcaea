"""How unsure a model is about an image, and a ranking of unlabelled images by it (no Qt).

The Train widget's *Next case* opens the image the current model is least sure about, so the
user corrects where a correction teaches the model most (uncertainty sampling, as MONAI Label's
active-learning strategies do). Two scores, both from the product's
:class:`~napari_cxseg.inference.Predictor` (the card's own preprocessing and sliding window,
:meth:`~napari_cxseg.inference.Predictor.predict_probabilities`):

``entropy``
    Mean predictive entropy of the softmax (or, for sigmoid cards, the mean binary entropy of
    each structure), divided by its maximum, so 0 is certain and 1 is a coin toss. Radiographs
    are scored on their own grid, volumes in model space (the card's spacing; no padding).
``dropout``
    Epistemic uncertainty by Monte-Carlo dropout: the network's dropout layers stay active,
    ``samples`` passes are made and the voxel-wise variance of the probabilities is averaged
    (``monai.metrics.compute_variance``, the measure of MONAI Label's epistemic scoring). Only
    for networks that have dropout layers.

:class:`Ranking` keeps the scores on disk, keyed by the image file (path, size, modification
time) and the model identity (card name, weights file, its size and time), so a restart only
scores what is new and a fine-tuned version is scored afresh.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..images import CxsegError, Image

METHODS = ("entropy", "dropout")


@dataclass
class Item:
    """One unlabelled image: a file or DICOM folder, with the reader options it needs."""

    path: Path
    stem: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Path (resolved) plus options: unique per image."""
        opts = json.dumps(self.options, sort_keys=True) if self.options else ""
        return f"{Path(self.path).expanduser().resolve()}|{opts}"


def unlabelled_items(source: str | Path) -> list[Item]:
    """The images of a folder, a CSV (column ``image`` or the first), an MSD task (its test
    images) or a CXLSeg dataset (its radiographs).

    Raises
    ------
    CxsegError
        When ``source`` does not exist or holds no image.
    """
    src = Path(source).expanduser()
    if not src.exists():
        raise CxsegError(f"{src} does not exist")
    from ..cxlseg import is_cxlseg

    if src.is_dir() and is_cxlseg(src):
        from ..cxlseg import cxlseg_cases

        return [Item(c.image, c.case_id, {"as_labels": False}) for c in cxlseg_cases(src)]
    from ..inputs import collect_inputs

    items, _ = collect_inputs(src)
    return [Item(Path(it.path), it.stem, dict(it.options)) for it in items]


def read_item(item: Item) -> Image:
    """The image of an item (the same reading rules as `napari-cxseg predict`)."""
    from ..inputs import InputItem, read_image

    return read_image(InputItem(Path(item.path), item.stem, dict(item.options)))


def model_identity(card: Any) -> str:
    """Card name + weights file + its size and modification time (another version: another identity)."""
    from ..models.weights import resolve_weights

    try:
        w = Path(resolve_weights(card))
        st = w.stat()
        return f"{card.name}|{w.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    except Exception:  # bundles, downloads not made yet: the card alone
        return f"{card.name}|{card.weights.source}|{card.weights.file or card.weights.bundle or ''}"


# ---------------------------------------------------------------------- scores
def mean_entropy(probs: np.ndarray, activation: str = "softmax") -> float:
    """Mean predictive entropy over the voxels, divided by its maximum (0 certain, 1 uniform).

    Parameters
    ----------
    probs
        ``(channels, *spatial)`` probabilities.
    activation
        ``softmax`` (channels sum to 1) or ``sigmoid`` (one probability per structure).
    """
    p = np.clip(np.asarray(probs, np.float64), 1e-7, 1.0 - 1e-7)
    if activation == "softmax":
        if p.shape[0] < 2:
            raise CxsegError("softmax entropy needs at least 2 output channels")
        h = -(p * np.log(p)).sum(axis=0) / math.log(p.shape[0])
    else:
        h = (-(p * np.log(p) + (1 - p) * np.log(1 - p)) / math.log(2.0)).mean(axis=0)
    return float(np.clip(h.mean(), 0.0, 1.0))


def has_dropout(network: Any) -> bool:
    """Whether a network has dropout layers with a non-zero rate (MC dropout needs them)."""
    import torch

    return any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and float(m.p) > 0 for m in network.modules())


def _mc_dropout(network: Any) -> Any:
    """The network wrapped so that its dropout layers stay active in eval mode."""
    import torch

    class MCDropout(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            return self.net(x)

        def train(self, mode: bool = True) -> MCDropout:
            super().train(mode)
            for m in self.net.modules():
                if isinstance(m, torch.nn.modules.dropout._DropoutNd):
                    m.train(True)
            return self

    return MCDropout(network)


def make_predictor(card: Any, device: str = "auto", method: str = "entropy", trust: bool = False) -> Any:
    """The Predictor a score uses (MC dropout: the card's network with dropout kept on).

    Raises
    ------
    CxsegError
        For an unknown method, or ``dropout`` with a network that has no dropout layer.
    """
    from ..inference import Predictor

    if method not in METHODS:
        raise CxsegError(f"unknown uncertainty method {method!r}; choose {' or '.join(METHODS)}")
    if method == "entropy":
        return Predictor(card, device=device, trust=trust)
    from ..models.networks import load_network

    net = load_network(card, trust=trust)
    if not has_dropout(net):
        raise CxsegError(f"model {card.name}: its network has no dropout layers, so MC-dropout scoring cannot "
                         "work; use the entropy score")
    return Predictor(card, device=device, trust=trust, network=_mc_dropout(net))


def score_image(predictor: Any, image: Image, method: str = "entropy", samples: int = 8,
                cancel: Callable[[], bool] | None = None) -> float:
    """How unsure the predictor's model is about ``image`` (see the module docstring)."""
    card = predictor.card
    on_grid = image.geometry.ndim == 2
    if method == "entropy":
        probs = predictor.predict_probabilities(image, cancel=cancel, on_source_grid=on_grid)
        return mean_entropy(probs, card.output.activation)
    import torch
    from monai.metrics import compute_variance

    runs = [predictor.predict_probabilities(image, cancel=cancel, on_source_grid=False) for _ in range(max(2, samples))]
    return float(compute_variance(torch.as_tensor(np.stack(runs)), spatial_map=False, scalar_reduction="mean"))


# ---------------------------------------------------------------------- ranking on disk
class Ranking:
    """Scores of images by model, kept in a JSON file.

    Parameters
    ----------
    path
        The JSON file (created on the first :meth:`save`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.images: dict[str, dict[str, Any]] = {}
        self.opened: list[str] = []
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self.images = dict(data.get("images") or {})
                self.opened = list(data.get("opened") or [])
            except (OSError, ValueError, AttributeError):
                self.images, self.opened = {}, []  # a broken ranking is re-scored, never fatal

    @staticmethod
    def _stamp(item: Item) -> tuple[int, int]:
        st = Path(item.path).stat()
        return int(st.st_size), int(st.st_mtime_ns)

    def score(self, item: Item, identity: str) -> float | None:
        """The stored score of an item by a model (None when absent or the file changed)."""
        rec = self.images.get(item.key)
        try:
            if rec is None or tuple(rec.get("file", ())) != self._stamp(item):
                return None
        except OSError:
            return None
        v = (rec.get("scores") or {}).get(identity)
        return None if v is None else float(v)

    def set(self, item: Item, identity: str, score: float) -> None:
        """Store a score (a changed file drops the scores it had)."""
        stamp = list(self._stamp(item))
        rec = self.images.get(item.key)
        if rec is None or list(rec.get("file", ())) != stamp:
            rec = {"path": str(item.path), "stem": item.stem, "options": item.options, "file": stamp, "scores": {}}
        rec["scores"][identity] = float(score)
        self.images[item.key] = rec

    def mark_opened(self, item: Item) -> None:
        """Remember that an image was opened for correction (Next case moves past it)."""
        if item.key not in self.opened:
            self.opened.append(item.key)

    def ranked(self, items: Sequence[Item], identity: str, skip: Sequence[str] = ()) -> list[tuple[Item, float]]:
        """Scored items, most uncertain first; ``skip`` holds item keys to leave out."""
        out = [(it, s) for it in items if it.key not in set(skip) and (s := self.score(it, identity)) is not None]
        return sorted(out, key=lambda t: (-t[1], t[0].stem))

    def save(self) -> None:
        """Write the file atomically."""
        from ..io.atomic import atomic_write

        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"format": "napari-cxseg-ranking-1", "images": self.images, "opened": self.opened})
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def score_items(card: Any, items: Sequence[Item], ranking: Ranking, method: str = "entropy", device: str = "auto",
                samples: int = 8, trust: bool = False,
                cancel: Callable[[], bool] | None = None) -> Generator[tuple[int, int, Item, float | None, str], None, int]:
    """Score the items the ranking lacks, one by one (for a napari generator worker).

    Yields ``(done, total, item, score, error)`` after each image (``score`` None and
    ``error`` the reason when an image could not be scored) and saves the ranking at least
    every 2 seconds and at the end, so a stop loses at most that. Returns how many were scored.
    """
    from ..inference import Cancelled

    identity = model_identity(card)
    todo = [it for it in items if ranking.score(it, identity) is None]
    predictor = make_predictor(card, device, method, trust) if todo else None
    saved, n = time.time(), 0
    try:
        for i, it in enumerate(todo):
            if cancel is not None and cancel():
                break
            try:
                s = score_image(predictor, read_item(it), method, samples, cancel)
            except Cancelled:
                raise
            except Exception as e:  # one unreadable image must not end the ranking
                yield i + 1, len(todo), it, None, f"{it.path}: {e}" if isinstance(e, CxsegError) else \
                    f"{it.path}: {type(e).__name__}: {e}"
                continue
            ranking.set(it, identity, s)
            n += 1
            if time.time() - saved > 2.0:
                ranking.save()
                saved = time.time()
            yield i + 1, len(todo), it, s, ""
    finally:
        ranking.save()
    return n
