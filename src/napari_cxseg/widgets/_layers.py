"""Glue between napari layers and the engine, shared by the dock widgets."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from ..images import CxsegError, Image, LabelMap, finite_array
from ..layers import (
    META_KEY,
    grid_differences,
    labels_layer_data,
    layer_grid_shape,
    layer_state,
    layer_to_image,
    layer_to_label_map,
    layer_world_affine,
)

if TYPE_CHECKING:
    import napari
    from qtpy.QtWidgets import QComboBox


def image_from_layer(viewer: napari.Viewer, layer, finite: bool = True) -> Image:
    """The engine :class:`Image` behind an Image layer.

    Channels that a reader split into sibling layers (same source file, ``channel_names`` in
    the metadata) are stacked back, in their original order, into one multi-channel image.

    Parameters
    ----------
    viewer
        The viewer holding the layer (and its channel siblings).
    layer
        An Image layer, from this plugin's readers or any other source.
    finite
        Replace NaN/Inf (:func:`~napari_cxseg.images.finite_array`) and warn with a napari
        notification naming the layer and the count; ``False`` when only the geometry is used.
    """
    image = _image_from_layer(viewer, layer)
    if finite:
        image.array, n = finite_array(image.array)
        if n:
            warn_non_finite(layer, n, image.array.size, "replaced", once=False)
            image.meta["non_finite_replaced"] = n
    return image


def _image_from_layer(viewer: napari.Viewer, layer) -> Image:
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


#: layers already warned about, with what was said (live previews ask many times)
_WARNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def warn_non_finite(layer: Any, n: int, total: int, action: str, once: bool = True) -> str:
    """Tell the user (napari warning) that ``n`` of ``total`` values of ``layer`` are NaN/Inf.

    Parameters
    ----------
    action
        ``"replaced"`` (by the finite minimum / maximum) or ``"skipped"`` (left out of
        measurements).
    once
        Warn only once per layer and message (previews refresh many times a second).

    Returns
    -------
    str
        The message (widgets show it in their status line too).
    """
    if action == "replaced":
        how = (
            "replaced by zero (no finite value at all)"
            if n >= total
            else "replaced by the image's finite minimum (NaN, -Inf) or maximum (+Inf)"
        )
    else:
        how = "skipped in the measurements"
    message = f"'{layer.name}' has {n} non-finite value{'s' if n != 1 else ''} (NaN/Inf) of {total}: {how}."
    try:
        said = _WARNED.setdefault(layer, set())
    except TypeError:  # not weak-referenceable: warn every time
        said = set()
    if not once or message not in said:
        said.add(message)
        from napari.utils.notifications import show_warning

        show_warning(message)
    return message


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


def check_same_grid(layer, labels, what: str = "image") -> None:
    """Refuse two layers that do not lie on one world grid (the one check every tool uses).

    Shape, voxel size (scale), origin (translate) and orientation (rotate, shear, affine) must
    agree within 1 % of a voxel at every corner of the grid.

    Raises
    ------
    CxsegError
        Naming both layers and what differs.
    """
    differences = grid_differences(
        layer_grid_shape(layer),
        layer_world_affine(layer),
        layer_grid_shape(labels),
        layer_world_affine(labels),
    )
    if differences:
        raise CxsegError(
            f"{what} '{layer.name}' and labels '{labels.name}' are not on one world grid: "
            + "; ".join(differences)
            + ". Choose layers on the same grid (e.g. labels made for this image)."
        )


def image_on_grid(layer, labels, non_finite: str = "replace") -> np.ndarray:
    """An Image layer's data (RGB as grey), checked to lie on a Labels layer's world grid.

    Parameters
    ----------
    layer
        The Image layer whose intensities a tool reads.
    labels
        The Labels layer the tool works on.
    non_finite
        ``"replace"``: NaN/Inf are replaced (:func:`~napari_cxseg.images.finite_array`) and a
        warning names the layer and the count; ``"keep"``: left for the caller to skip (a
        warning says they are skipped).

    Raises
    ------
    CxsegError
        When the two layers are not on one grid (:func:`check_same_grid`).
    """
    check_same_grid(layer, labels)
    raw = layer.data
    cached = _FINITE.get(layer) if _weakrefable(layer) else None
    if cached is not None and cached[0] is raw:  # live previews ask many times a second
        data, cleaned, n = cached[1], cached[2], cached[3]
    else:
        data = np.asarray(raw)
        if layer.rgb:
            data = data[..., :3] @ np.array([0.299, 0.587, 0.114])
        cleaned, n = finite_array(data)
        if _weakrefable(layer):
            _FINITE[layer] = (raw, data, cleaned, n)
    if n:
        warn_non_finite(layer, n, data.size, "replaced" if non_finite == "replace" else "skipped")
    return cleaned if non_finite == "replace" else data


#: per Image layer: (its data object, the array, the array with NaN/Inf replaced, how many)
_FINITE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weakrefable(obj: Any) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


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
