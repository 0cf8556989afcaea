"""Validation with the product's Predictor, on each case's own grid."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any

import numpy as np

from ..models.cards import ModelCard
from .sources import Case


def reference(card: ModelCard, case: Case) -> tuple[Any, np.ndarray]:
    """A case's image and its reference label array as the card's output shows it.

    Sigmoid cards are compared on the displayed label map: overlaps resolved by the card's rule,
    the reference resolved the same way.
    """
    from ..inference import combine_masks
    from ..io import read
    from .loading import channel_of_class
    from .targets import build_target

    names = {cid: c.name for cid, c in card.classes.items()}
    multi = card.output.activation == "sigmoid"
    image = read(case.image, **case.options)[0]
    target = build_target(names, case, image, multi, channel_of_class(card))
    if multi:
        lm = card.channel_label_map(target.shape[0])
        ref = combine_masks(target.astype(bool), lm, card.output.overlap, card.output.priority)
    else:
        ref = target[0]
    return image, ref.astype(np.int32)


def validate_cases(card: ModelCard, network: Any, cases: Sequence[Case], device: Any = "cpu",
                   cache: MutableMapping[str, tuple[Any, np.ndarray]] | None = None) -> dict[str, Any]:
    """Dice per class, per source and per case of ``network`` run by the product's Predictor.

    Parameters
    ----------
    card
        The card being trained (preprocessing, classes, output rule).
    network
        The network (put in eval mode by the Predictor).
    cases
        Validation cases.
    device
        Torch device.
    cache
        Keeps images and references between calls (``case.key`` -> ``(image, reference)``).

    Returns
    -------
    dict
        ``dice`` (mean over classes), ``per_class``, ``per_source``, ``per_case``.
    """
    from ..inference import Predictor
    from .evaluation import dice_per_class

    names = {cid: c.name for cid, c in card.classes.items()}
    pred = Predictor(card, device=device, network=network)
    cache = {} if cache is None else cache
    per_case: dict[str, dict[str, float]] = {}
    by_source: dict[str, list[dict[str, float]]] = {}
    for case in cases:
        if case.key not in cache:
            cache[case.key] = reference(card, case)
        image, ref = cache[case.key]
        d = dice_per_class(pred.predict(image).array, ref, names)
        per_case[case.key] = d
        by_source.setdefault(case.source, []).append(d)

    def mean(rows: list[dict[str, float]]) -> dict[str, float]:
        return {n: float(np.mean([r[n] for r in rows])) for n in names.values()} if rows else {}

    per_class = mean(list(per_case.values()))
    return {
        "dice": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
        "per_class": per_class,
        "per_source": {s: mean(rows) for s, rows in by_source.items()},
        "per_case": per_case,
    }
