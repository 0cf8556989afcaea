"""Glue between napari layers and the engine, shared by the dock widgets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..images import CxsegError, Image, LabelMap
from ..layers import META_KEY, labels_layer_data, layer_state, layer_to_image, layer_to_label_map

if TYPE_CHECKING:
    import napari
    from qtpy.QtWidgets import QComboBox


def image_from_layer(viewer: napari.Viewer, layer) -> Image:
    """The engine :class:`Image` behind an Image layer.

    Channels that a reader split into sibling layers (same source file, ``channel_names`` in
    the metadata) are stacked back, in their original order, into one multi-channel image.
    """
    md = layer.metadata.get(META_KEY) or {}
    names = md.get("channel_names")
    src = md.get("source_path")
    if names and src:
        siblings = {}
        for other in viewer.layers:
            omd = other.metadata.get(META_KEY) or {}
            if omd.get("source_path") == src and omd.get("channel_names") == names:
                idx = _channel_index(other.name, names)
                if idx is not None:
                    siblings[idx] = other
        if len(siblings) == len(names):
            base = layer_to_image(np.asarray(layer.data), layer_state(layer))
            base.array = np.stack([np.asarray(siblings[i].data) for i in range(len(names))])
            base.channel_names = list(names)
            return base
    return layer_to_image(np.asarray(layer.data), layer_state(layer))


def _channel_index(layer_name: str, names: list[str]) -> int | None:
    for i, n in enumerate(names):
        if layer_name.endswith(f"[{n}]"):
            return i
    return None


def fill_combo(combo: QComboBox, items: list[str], prefer: str | int | None = None) -> None:
    """Replace a combo's items without emitting signals, keeping its current choice when it
    is still there; otherwise choose ``prefer`` (an item's text, or an index into ``items``;
    ignored when absent or out of range), else Qt's default (the first item)."""
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(items)
    if current in items:
        combo.setCurrentText(current)
    elif isinstance(prefer, int):
        if 0 <= prefer < len(items):
            combo.setCurrentIndex(prefer)
    elif prefer in items:
        combo.setCurrentText(prefer)
    combo.blockSignals(False)


def image_on_grid(layer, labels) -> np.ndarray:
    """An Image layer's data (RGB as grey), checked to lie on a Labels layer's grid.

    Raises
    ------
    CxsegError
        When the image and the labels have different shapes.
    """
    data = np.asarray(layer.data)
    if layer.rgb:
        data = data[..., :3] @ np.array([0.299, 0.587, 0.114])
    if data.shape != labels.data.shape:
        raise CxsegError(
            f"image '{layer.name}' {data.shape} and labels '{labels.name}' "
            f"{labels.data.shape} are not on one grid"
        )
    return data


def label_map_from_layer(layer) -> LabelMap:
    """The engine :class:`LabelMap` behind a Labels layer (geometry and class names kept)."""
    return layer_to_label_map(np.asarray(layer.data), layer_state(layer))


def add_label_map(viewer: napari.Viewer, label_map: LabelMap, name: str):
    """Add a LabelMap as a new Labels layer, selected and ready for painting."""
    data, kwargs, _ = labels_layer_data(label_map, name=name)
    layer = viewer.add_labels(data, **kwargs)
    viewer.layers.selection.active = layer
    return layer


def apply_array(layer, new: np.ndarray) -> int:
    """Write ``new`` into a Labels layer as ONE undoable step (Ctrl+Z restores exactly).

    Returns
    -------
    int
        Number of voxels that changed.
    """
    new = np.asarray(new)
    if new.shape != layer.data.shape:
        raise ValueError(f"shape {new.shape} does not match layer {layer.name!r} {layer.data.shape}")
    changed = np.nonzero(np.asarray(layer.data) != new)
    if changed[0].size == 0:
        return 0
    with layer.block_history():
        layer.data_setitem(changed, new[changed].astype(layer.data.dtype))
    return int(changed[0].size)


def set_classes(layer, classes) -> None:
    """Give a Labels layer new class names/colours (features + direct colormap)."""
    from ..layers import label_colormap_dict, label_features

    lm = LabelMap(array=np.zeros((1,) * layer.ndim, np.uint8), geometry=None, classes=classes)  # type: ignore[arg-type]
    layer.colormap = label_colormap_dict(lm)
    layer.features = label_features(lm.classes)
    layer.metadata = {**layer.metadata, META_KEY: {**(layer.metadata.get(META_KEY) or {}), "classes": dict(lm.classes)}}


def notify_error(exc: BaseException, context: str) -> None:
    """Show an error as a napari notification naming what failed (the viewer lives on)."""
    from napari.utils.notifications import show_error

    show_error(f"{context}: {exc}")
