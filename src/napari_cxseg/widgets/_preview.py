"""Layer helpers shared by the editing widgets: previews, view facts, classes, new layers.

Preview layers show a tool's result before it is applied. They are ordinary Labels layers
placed exactly over the target (same transform), flagged in their metadata so that the
widgets and the autosaver never treat them as the user's work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..images import LabelClass
from ..layers import META_KEY, classes_from_layer_meta, layer_state

if TYPE_CHECKING:
    import napari

#: metadata key marking a layer the widgets made for previews or prompts
SCRATCH_KEY = "cxseg_scratch"


def is_scratch(layer: Any) -> bool:
    """True for preview/prompt layers made by the widgets."""
    return bool(getattr(layer, "metadata", {}).get(SCRATCH_KEY))


def user_labels_layers(viewer: napari.Viewer) -> list:
    """The Labels layers that hold user work (previews left out)."""
    from napari.layers import Labels

    return [ly for ly in viewer.layers if isinstance(ly, Labels) and not is_scratch(ly)]


def image_layers(viewer: napari.Viewer) -> list:
    """The Image layers of the viewer (RGB photos included)."""
    from napari.layers import Image

    return [ly for ly in viewer.layers if isinstance(ly, Image)]


def transform_kwargs(layer: Any) -> dict[str, Any]:
    """Layer keyword arguments that put a new layer exactly over ``layer``."""
    return {
        "scale": np.asarray(layer.scale),
        "translate": np.asarray(layer.translate),
        "rotate": np.asarray(layer.rotate),
        "shear": np.asarray(layer.shear),
        "affine": np.asarray(layer.affine.affine_matrix),
        "axis_labels": tuple(layer.axis_labels),
        "units": tuple(layer.units),
    }


def show_preview(
    viewer: napari.Viewer, name: str, data: np.ndarray, like: Any, colormap: Any = None
):
    """Create or update the preview Labels layer ``name`` over layer ``like``.

    The active layer is kept, so the user's brush stays on the layer being edited.
    """
    from napari.layers import Labels

    existing = viewer.layers[name] if name in viewer.layers else None
    cmap = colormap if colormap is not None else getattr(like, "colormap", None)
    if isinstance(existing, Labels) and existing.data.shape == data.shape:
        existing.data = data
        if cmap is not None:
            existing.colormap = cmap
        existing.visible = True
        return existing
    if existing is not None:
        viewer.layers.remove(existing)
    active = viewer.layers.selection.active
    kw = transform_kwargs(like)
    if cmap is not None:
        kw["colormap"] = cmap
    layer = viewer.add_labels(
        data, name=name, opacity=0.6, metadata={SCRATCH_KEY: True}, blending="translucent", **kw
    )
    if active is not None and active in viewer.layers:
        viewer.layers.selection.active = active
    return layer


def remove_layer(viewer: napari.Viewer, name: str) -> None:
    """Remove layer ``name`` if it is there."""
    if name in viewer.layers:
        viewer.layers.remove(name)


def slicing_axis(viewer: napari.Viewer, layer: Any) -> int | None:
    """The data axis of ``layer`` that the 2D view slices through (``None`` in 3D or for 2D data)."""
    if viewer.dims.ndisplay != 2 or layer.ndim < 3:
        return None
    offset = viewer.dims.ndim - layer.ndim
    hidden = [ax - offset for ax in viewer.dims.not_displayed if ax - offset >= 0]
    return int(hidden[-1]) if hidden else None


def current_slice(viewer: napari.Viewer, layer: Any) -> tuple[int, int] | None:
    """``(axis, index)`` of the slice of ``layer`` shown in the 2D view, if any."""
    axis = slicing_axis(viewer, layer)
    if axis is None:
        return None
    offset = viewer.dims.ndim - layer.ndim
    point = np.asarray(viewer.dims.point)[offset:]
    index = int(np.round(np.asarray(layer.world_to_data(point))[axis]))
    return axis, int(np.clip(index, 0, layer.data.shape[axis] - 1))


def colour_hex(rgba: Any) -> str:
    """``#rrggbb`` from an RGBA float tuple."""
    v = np.asarray(rgba, float).ravel()
    return "#" + "".join(f"{int(round(c * 255)):02x}" for c in v[:3])


def layer_classes(layer: Any, ids: Any = ()) -> dict[int, LabelClass]:
    """Classes of a Labels layer, each with the colour it is shown in now.

    Ids in ``ids`` (e.g. the ids present in the array) without a name get ``"class <id>"``,
    so that writing the classes back keeps every shown colour.
    """
    classes = classes_from_layer_meta(layer_state(layer))
    for k in ids:
        k = int(k)
        if k != 0 and k not in classes:
            classes[k] = LabelClass(f"class {k}")
    for k, c in classes.items():
        if not c.colour:
            c.colour = colour_hex(layer.colormap.map(np.array([k]))[0])
    return dict(sorted(classes.items()))


def present_ids(arr: np.ndarray) -> list[int]:
    """The non-zero ids in a label array (a histogram for small integer types)."""
    a = np.asarray(arr)
    if a.dtype.kind in "ub" and a.dtype.itemsize <= 2:
        return [
            int(i) for i in np.flatnonzero(np.bincount(a.ravel().astype(np.intp, copy=False))) if i
        ]
    return [int(i) for i in np.unique(a) if i]


def layer_spacing(layer: Any) -> np.ndarray:
    """Voxel size in mm along each data axis of a layer (its cxseg geometry, else its scale)."""
    from ..layers import geometry_from_layer_meta

    return geometry_from_layer_meta(layer_state(layer), layer.ndim).spacing


def layer_meta(layer: Any) -> dict[str, Any]:
    """The cxseg metadata dict of a layer (empty when it has none)."""
    return dict(layer.metadata.get(META_KEY) or {})


def labels_layer_for_image(
    viewer: napari.Viewer, image_layer: Any, classes: dict[int, LabelClass], name: str
):
    """A new, empty Labels layer on an Image layer's grid, transform and cxseg geometry.

    Saving it writes the image's geometry; its metadata names the image it belongs to.
    """
    from ..images import LabelMap
    from ..layers import labels_layer_data
    from ._layers import image_from_layer

    img = image_from_layer(viewer, image_layer, finite=False)  # only its grid is used
    top = max(classes, default=1)
    lm = LabelMap(
        array=np.zeros(img.spatial_shape, np.uint8 if top <= 255 else np.uint16),
        geometry=img.geometry,
        classes=classes,
        meta={"source_path": None},
    )
    data, kw, _ = labels_layer_data(lm, name=name)
    kw.update(transform_kwargs(image_layer))
    kw["metadata"][META_KEY]["reference_image_path"] = img.meta.get("source_path")
    return viewer.add_labels(data, **kw)
