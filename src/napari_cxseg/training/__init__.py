"""Training of segmentation networks described by model cards (no Qt, no napari).

* :mod:`.trainer`: :func:`~.trainer.train_segmentation`, the MONAI training loop (DiceCE,
  Adam, ``DiceMetric``, best state dict saved for ``weights_only`` loading).
* :mod:`.datasets`: in-memory ``(image, label)`` data: DRR pools with 2D augmentation for
  radiograph models, resampled CT volumes with MONAI augmentation for 3D models.

Submodules are imported on first use so that importing this package stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainResult", "build_network", "evaluate", "train_segmentation"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
