"""The Points and Shapes layers that carry click-to-segment prompts.

Positive clicks are green, negative ones red (a ``positive`` features column). A plain click on
the points layer (pan/zoom mode, so dragging still pans) adds a positive point; Shift+click or
the widget's "negative" toggle adds a negative one. Boxes are rectangles on the shapes layer.

In the 3D canvas napari's Points layer cannot place points by itself: the click's ray is cast
through the image (:func:`pick_along_ray`, the way napari picks a value in MIP rendering) and
the point goes to the voxel that the rendering shows there.
"""

from __future__ import annotations

from collections.abc import Callable
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


def pick_along_ray(
    volume: Any,
    start: Any,
    end: Any,
    mode: str = "mip",
    threshold: float | None = None,
) -> np.ndarray | None:
    """The voxel that a click ray points at in a 3D volume ("MIP picking").

    Parameters
    ----------
    volume
        ``(z, y, x)`` intensity array.
    start, end
        Data (index) coordinates where the ray enters and leaves the volume, the entry the
        nearest to the camera (``Layer.get_ray_intersections``).
    mode
        ``"mip"``: the voxel of maximum intensity along the ray (what maximum-intensity
        rendering shows there); ``"minip"``: the minimum; ``"first"``: the first voxel, from
        the camera, at or above ``threshold`` (isosurface and translucent rendering), else the
        maximum.
    threshold
        Level for ``"first"``.

    Returns
    -------
    numpy.ndarray or None
        Integer index coordinates (as floats) of the picked voxel, ``None`` when the ray misses
        the volume. For the maximum (minimum) the intensities are averaged over 3 neighbouring
        voxels along the ray first, so that a noisy voxel at an object's edge does not win over
        its interior; ties go to the voxel nearest to the camera.
    """
    start = np.asarray(start, float)
    end = np.asarray(end, float)
    vol = volume if isinstance(volume, np.ndarray) else np.asarray(volume)
    if vol.ndim != start.size or start.shape != end.shape:
        raise ValueError(
            f"ray of {start.size} coordinates for a {vol.ndim}D volume: give start/end per axis"
        )
    n = max(2, int(np.ceil(2.0 * float(np.linalg.norm(end - start)))) + 1)  # half-voxel steps
    idx = np.floor(np.linspace(start, end, n) + 0.5).astype(int)
    idx = idx[np.all((idx >= 0) & (idx < np.array(vol.shape)), axis=1)]
    if not len(idx):
        return None
    keep = np.ones(len(idx), bool)
    keep[1:] = np.any(idx[1:] != idx[:-1], axis=1)  # each voxel once
    idx = idx[keep]
    values = np.asarray(vol[tuple(idx.T)], float)
    if mode == "first" and threshold is not None and np.any(values >= threshold):
        return idx[int(np.flatnonzero(values >= threshold)[0])].astype(float)
    if len(values) >= 3:  # the extremum of a 3-sample average: an object's interior
        padded = np.pad(values, 1, mode="edge")
        values = (padded[:-2] + padded[1:-1] + padded[2:]) / 3.0
    k = int(np.argmin(values)) if mode == "minip" else int(np.argmax(values))
    return idx[k].astype(float)


def ray_pick_mode(image_layer: Any) -> dict[str, Any]:
    """:func:`pick_along_ray` arguments that follow an Image layer's 3D rendering."""
    rendering = str(getattr(image_layer, "rendering", "mip"))
    if rendering == "minip":
        return {"mode": "minip"}
    if rendering in ("iso", "iso_categorical"):
        return {"mode": "first", "threshold": float(image_layer.iso_threshold)}
    if rendering == "translucent":
        lo, hi = (float(v) for v in image_layer.contrast_limits)
        return {"mode": "first", "threshold": 0.5 * (lo + hi)}
    return {"mode": "mip"}


def pick_in_image(image_layer: Any, event: Any) -> np.ndarray | None:
    """World coordinates of the voxel of a 3D Image layer that a 3D-canvas click points at.

    The click's ray (``event.position`` and ``event.view_direction``, world coordinates) is
    cast through the layer; the depth is picked with :func:`pick_along_ray` as the layer's
    rendering suggests. ``None`` when the ray misses the image, or the image is not 3D.
    """
    if image_layer.ndim != 3 or getattr(image_layer, "rgb", False):
        return None
    if getattr(event, "view_direction", None) is None:
        return None
    # the layer's axes are the last ones of the world (napari aligns them at the end)
    offset = len(event.position) - image_layer.ndim
    dims = [int(d) - offset for d in event.dims_displayed if int(d) - offset >= 0]
    if len(dims) != 3:
        return None
    start, end = image_layer.get_ray_intersections(
        event.position, event.view_direction, dims, world=True
    )
    if start is None or end is None:
        return None
    data = image_layer.data[0] if getattr(image_layer, "multiscale", False) else image_layer.data
    voxel = pick_along_ray(
        data, np.asarray(start)[dims], np.asarray(end)[dims], **ray_pick_mode(image_layer)
    )
    if voxel is None:
        return None
    full = np.asarray(start, float).copy()
    full[dims] = voxel
    return np.asarray(image_layer.data_to_world(full), float)


def click_adds_point(
    points: Any,
    negative_default: Callable[[], bool],
    pick_3d: Callable[[Any], np.ndarray | None] | None = None,
) -> Any:
    """Mouse callback for ``points``: a click (not a drag) adds a prompt at the cursor.

    ``negative_default()`` tells whether a plain click is negative (the widget's toggle);
    Shift inverts it. In the 3D canvas ``pick_3d(event)`` gives the world coordinates of the
    point (e.g. :func:`pick_in_image` on the segmented image); without it 3D clicks are
    ignored. Returns the callback (appended to ``points.mouse_drag_callbacks``).
    """

    def on_click(layer: Any, event: Any):
        ndisplay = len(event.dims_displayed)
        if layer.mode != "pan_zoom" or not (ndisplay == 2 or (ndisplay == 3 and pick_3d)):
            return
        dragged = False
        yield
        while event.type == "mouse_move":
            dragged = True
            yield
        if dragged:
            return
        if ndisplay == 3:
            world = pick_3d(event)
            if world is None:
                return
        else:
            world = event.position
        negative = bool(negative_default()) != ("Shift" in event.modifiers)
        layer.feature_defaults = {"positive": not negative}
        layer.add(layer.world_to_data(world))

    points.mouse_drag_callbacks.append(on_click)
    return on_click
