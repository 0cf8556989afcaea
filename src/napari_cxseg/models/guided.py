"""Click-guided segmentation networks (DeepGrow/DeepEdit style) for click-to-segment.

A click-guided network takes, on a working grid around the user's prompts, these channels: the
normalised image (one channel per intensity window), a Gaussian map of the positive clicks, one
of the negative clicks, the box (a filled rectangle on the slice where it was drawn) and a mask
to refine (the existing mask, or zeros), and returns the probability of the clicked object. The
package ships two, trained by ``scripts/train_click_models.py`` on public data
(``cards/clicks/*.yaml`` say on what, and how well): ``cxr-clicks`` for 2D radiographs and
``ct-clicks`` for 3D CT.

The working grid is isotropic: a square / cube of ``side`` mm sampled with ``patch`` voxels,
centred on the prompts, enlarged or shrunk by an AutoZoom; a later click on the same object
starts from the grid the previous one ended on, and what does not depend on the click is cached.

Modules: :mod:`.click_spec` (spec, network, intensity scaling), :mod:`.click_grids` (working
grids, click and box maps, back to the source), :mod:`.click_segmenter` (the AutoZoom segmenter),
:mod:`.click_state` (what is cached between clicks); their public names are importable from
here too. This module holds the backend (:func:`network_backend`, registered as ``"network"`` in
:mod:`napari_cxseg.editing.interactive`), which receives held-array index coordinates and the
voxel spacing, like every click-to-segment backend, and returns a boolean mask of the image's
shape. No Qt or napari import.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..images import CxsegError
from .click_grids import box_map, click_maps, roi_grid, sample, to_working, working_coordinates
from .click_segmenter import GuidedSegmenter
from .click_spec import (
    CLICK_SPECS_DIR,
    DEFAULT_NETS,
    PROMPT_CHANNELS,
    ClickNetSpec,
    build_network,
    image_channels,
    load_spec,
    normalise,
    spec_from_dict,
)

__all__ = [
    "CLICK_SPECS_DIR",
    "DEFAULT_NETS",
    "PROMPT_CHANNELS",
    "ClickNetSpec",
    "GuidedSegmenter",
    "box_map",
    "build_network",
    "click_maps",
    "get_segmenter",
    "image_channels",
    "load_spec",
    "network_backend",
    "normalise",
    "release_images",
    "roi_grid",
    "sample",
    "spec_from_dict",
    "to_working",
    "working_coordinates",
]


# ---------------------------------------------------------------------- backend
_SEGMENTERS: dict[tuple[str, str], GuidedSegmenter] = {}
_CACHE_LOCK = threading.Lock()


def release_images() -> None:
    """Free what the cached segmenters hold of an image and its last call (e.g. when a session ends)."""
    with _CACHE_LOCK:
        for seg in _SEGMENTERS.values():
            seg.release()


def get_segmenter(name: str, device: Any = "auto") -> GuidedSegmenter:
    """A cached :class:`GuidedSegmenter` for a shipped spec (loads the weights once)."""
    with _CACHE_LOCK:
        key = (str(name), str(device))
        if key not in _SEGMENTERS:
            _SEGMENTERS[key] = GuidedSegmenter(name, device)
        return _SEGMENTERS[key]


def network_backend(
    image: np.ndarray,
    prompts: Any,
    spacing: np.ndarray,
    existing_mask: np.ndarray | None,
    roi_margin_mm: float = 30.0,
    net: str | None = None,
    device: str = "auto",
    modality: str | None = None,
    **_: Any,
) -> np.ndarray:
    """Click-to-segment backend ``"network"``: the shipped click network for the image's dims.

    Parameters
    ----------
    image, prompts, spacing, existing_mask, roi_margin_mm
        As for every backend (see :func:`napari_cxseg.editing.interactive.register_backend`);
        the working grid sizes itself, so ``roi_margin_mm`` is not used.
    net
        Spec name; default ``cxr-clicks`` for 2D images and ``ct-clicks`` for 3D.
    device
        Torch device (``"auto"``: CUDA > MPS > CPU).
    modality
        The image's modality when known (``"CT"``, ``"MR"``, ``"DX"`` ...); a network refuses
        modalities its spec does not list (e.g. ``ct-clicks`` windows HU and cannot read MR).

    Raises
    ------
    CxsegError
        For a modality the network was not trained on, or a dimensionality without a network.
    """
    name = net or DEFAULT_NETS.get(np.ndim(image))
    if name is None:
        raise CxsegError(f"no click network for {np.ndim(image)}D images")
    seg = get_segmenter(name, device)
    accepted = [str(m).upper() for m in seg.spec.info.get("modality") or []]
    if modality and accepted and str(modality).upper() not in accepted:
        raise CxsegError(
            f"the click network {name} was trained on {'/'.join(accepted)} images, not {modality}: "
            "choose the 'Intensity (no model)' method for this image"
        )
    return seg.segment(image, prompts.positive, prompts.negative, prompts.box, spacing, existing_mask)
