"""Cases into model space: the deterministic first step of training (cached once per case)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.transforms import Transform

from ..models.cards import ModelCard


def channel_of_class(card: ModelCard) -> dict[int, int]:
    """``{class id: output channel}`` of a card's network (sigmoid cards: one channel per class)."""
    n = int((card.network.args if card.network else {}).get("out_channels", len(card.classes) + 1))
    return {cid: ch for ch, cid in card.channel_label_map(n).items()}


class LoadCased(Transform):
    """``{"case": Case}`` -> ``{"image", "label"}`` MetaTensors in the card's model space.

    Reads the image with the package's reader, builds the target from the case's masks
    (:func:`~napari_cxseg.training.targets.build_target`) and applies the card's preprocessing
    (:func:`napari_cxseg.model_space.preprocess`), the same the Predictor applies.

    Parameters
    ----------
    card
        The model card.
    class_names
        ``{class id: name}`` of the card.
    multi_label
        Binary channels per structure (sigmoid cards) instead of class ids.
    """

    def __init__(self, card: ModelCard, class_names: Mapping[int, str], multi_label: bool) -> None:
        self.card = card
        self.class_names = dict(class_names)
        self.multi_label = multi_label

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from ..io import read
        from ..model_space import preprocess, select_channels
        from .targets import build_target

        case = data["case"]
        image = read(case.image, **case.options)[0]
        chans = select_channels(self.card, image)
        target = build_target(self.class_names, case, image, self.multi_label, channel_of_class(self.card))
        out, _ = preprocess(self.card, image, chans, target)
        lab = out["label"]
        lab = lab.round() if not self.multi_label else (lab > 0.5).float()
        return {"image": out["image"].as_tensor(), "label": lab.as_tensor(), "case": case.key}
