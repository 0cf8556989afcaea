"""Training and evaluation of segmentation networks described by model cards (no Qt, no napari).

* :mod:`.sources`: which labelled cases a folder holds (MSD, CXLSeg, structure folders, pairs)
  and patient-level splits;
* :mod:`.targets`: a case's masks as a card's training target (classes by name, lungs split
  by anatomy);
* :mod:`.trainer`: :class:`~.trainer.Trainer`, the one training loop (MONAI), resumable;
* :mod:`.augment`: radiograph and volume augmentation;
* :mod:`.evaluation`: Dice, IoU, HD95, surface distance per class and case (``monai.metrics``);
* :mod:`.bundle_export`: the trained network as a MONAI bundle plus a model card;
* :mod:`.datasets`: CT volumes, resampling and radiographs rendered from CT (scripts).

Submodules are imported on first use so that importing this package stays light.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Trainer": "trainer", "TrainConfig": "trainer", "TrainResult": "trainer", "TrainingCancelled": "trainer",
    "Case": "sources", "find_cases": "sources", "split_cases": "sources",
    "case_metrics": "evaluation", "evaluate_pairs": "evaluation",
    "export_bundle": "bundle_export",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
