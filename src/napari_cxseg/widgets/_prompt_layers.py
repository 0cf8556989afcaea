"""The Points and Shapes layers that carry click-to-segment prompts.

Positive clicks are green, negative ones red (a ``positive`` features column). A plain click on
the points layer (pan/zoom mode, so dragging still pans) adds a positive point; Shift+click or
the widget's "negative" toggle adds a negative one. Boxes are rectangles on the shapes layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._preview import SCRATCH_KEY, transform_kwargs

if TYPE_CHECKING:
    import napari

POINTS_NAME = "cxseg prompts"
BOX_NAME = "cxseg box prompt"
GREEN = np.array([0.1, 0.9, 0.2, 1.0])
RED = np.array([1.0, 0.15, 0.15, 1.0])


def make_points_layer(viewer: napari.Viewer, image_layer: Any):
    """Create (or reuse) the prompt Points layer over ``image_layer``."""
    from napari.layers import Points

    existing = viewer.layers[POINTS_NAME] if POINTS_NAME in viewer.layers else None
    if isinstance(existing, Points) and existing.ndim == image_layer.ndim:
        return existing
    if existing is not None:
        viewer.layers.remove(existing)
    kw = transform_kwargs(image_layer)
    size = max(5.0, max(image_layer.data.shape[-2:]) / 60.0)  # data pixels
    return viewer.add_points(
        np.zeros((0, image_layer.ndim)),
        name=POINTS_NAME,
        ndim=image_layer.ndim,
        size=size,
        border_color="white",
        border_width=0.1,
        features={"positive": np.zeros(0, bool)},
        feature_defaults={"positive": True},
        metadata={SCRATCH_KEY: True},
        **kw,
    )


def make_box_layer(viewer: napari.Viewer, image_layer: Any):
    """Create (or reuse) the box-prompt Shapes layer over ``image_layer``."""
    from napari.layers import Shapes

    existing = viewer.layers[BOX_NAME] if BOX_NAME in viewer.layers else None
    if isinstance(existing, Shapes) and existing.ndim == image_layer.ndim:
        return existing
    if existing is not None:
        viewer.layers.remove(existing)
    return viewer.add_shapes(
        None,
        ndim=image_layer.ndim,
        name=BOX_NAME,
        shape_type="rectangle",
        edge_color="yellow",
        face_color="transparent",
        edge_width=max(1.0, max(image_layer.data.shape[-2:]) / 250.0),
        metadata={SCRATCH_KEY: True},
        **transform_kwargs(image_layer),
    )


def colour_points(points: Any) -> None:
    """Paint positive points green and negative ones red."""
    n = len(points.data)
    if n == 0:
        return
    pos = np.asarray(points.features["positive"], bool)
    points.face_color = np.where(pos[:, None], GREEN, RED)


def click_adds_point(points: Any, negative_default: Any) -> Any:
    """Mouse callback for ``points``: a click (not a drag) adds a prompt at the cursor.

    ``negative_default()`` tells whether a plain click is negative (the widget's toggle);
    Shift inverts it. Returns the callback (appended to ``points.mouse_drag_callbacks``).
    """

    def on_click(layer: Any, event: Any):
        if layer.mode != "pan_zoom" or len(event.dims_displayed) != 2:
            return
        dragged = False
        yield
        while event.type == "mouse_move":
            dragged = True
            yield
        if dragged:
            return
        negative = bool(negative_default()) != ("Shift" in event.modifiers)
        layer.feature_defaults = {"positive": not negative}
        layer.add(layer.world_to_data(event.position))

    points.mouse_drag_callbacks.append(on_click)
    return on_click
