"""Scene-graph Shapes layers in a live viewer: find them, refresh their look, select regions."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..anatomy.imagenome import SceneGraph
from ..anatomy.scene_graph_layer import (
    EDGE_FRACTION,
    META_KEY,
    is_scene_graph_meta,
    region_colours,
    region_features,
    region_z_order,
)
from ..anatomy.scene_graph_open import placement_on, reference_from_layer_state
from ..anatomy.scene_graph_space import Placement
from ..layers import layer_state


def is_scene_graph_layer(layer: Any) -> bool:
    return getattr(layer, "_type_string", "") == "shapes" and is_scene_graph_meta(layer.metadata)


def scene_graph_layers(viewer: Any) -> list[Any]:
    """The viewer's Shapes layers that hold a scene graph."""
    return [layer for layer in viewer.layers if is_scene_graph_layer(layer)]


def radiograph_layers(viewer: Any) -> list[Any]:
    """2D greyscale image layers (boxes can be placed on them)."""
    return [
        layer
        for layer in viewer.layers
        if layer._type_string == "image" and layer.ndim == 2 and not layer.rgb
    ]


def scene_graph_of(layer: Any) -> SceneGraph:
    return layer.metadata[META_KEY]["scene_graph"]


def placement_of(layer: Any) -> Placement:
    return Placement.from_dict(layer.metadata[META_KEY].get("placement") or {})


def region_names(layer: Any) -> list[str]:
    """``bbox_name`` of each shape, in layer order."""
    if "bbox_name" not in layer.features:
        return [""] * len(layer.data)
    return [str(v) if v is not None else "" for v in layer.features["bbox_name"]]


def extra_comparisons(layer: Any) -> dict[str, list[str]] | None:
    """Comparisons set by the sequential-exams widget (gold file), else None."""
    return layer.metadata[META_KEY].get("comparisons")


def refresh_regions(layer: Any) -> None:
    """Recompute features (abnormal, comparison, label) and edge colours from the scene graph."""
    sg = scene_graph_of(layer)
    names = region_names(layer)
    if not names:
        return
    feats = region_features(sg, names, extra_comparisons(layer))
    selected = set(layer.selected_data)
    layer.features = feats
    layer.edge_color = region_colours(sg, names)
    layer.z_index = region_z_order(sg, names)
    layer.refresh_text()
    layer.selected_data = selected


def set_comparisons(layer: Any, comparisons: dict[str, list[str]] | None) -> None:
    """Show ``comparisons`` on the layer's boxes (None: the graph's own relationships)."""
    md = dict(layer.metadata)
    md[META_KEY] = {**md[META_KEY], "comparisons": comparisons}
    layer.metadata = md
    refresh_regions(layer)


def select_regions(layer: Any, names: set[str]) -> None:
    """Select the boxes named ``names`` (only those)."""
    idx = {i for i, n in enumerate(region_names(layer)) if n in names}
    if set(layer.selected_data) != idx:
        layer.selected_data = idx


def selected_region_names(layer: Any) -> set[str]:
    names = region_names(layer)
    return {names[i] for i in layer.selected_data if i < len(names) and names[i]}


def place_on(layer: Any, image_layer: Any) -> Placement:
    """Move a scene-graph layer's boxes (as drawn now) onto ``image_layer``'s radiograph."""
    old = placement_of(layer)
    sg = scene_graph_of(layer)
    boxes = [old.to_original(v) for v in layer.data]
    ref = reference_from_layer_state(image_layer.name, layer_state(image_layer),
                                     image_layer.data.shape)  # fmt: skip
    new = placement_on(sg, ref)
    feats = layer.features.copy()
    colours = np.asarray(layer.edge_color).copy()
    layer.data = [new.to_world(b) for b in boxes]
    layer.features = feats
    layer.edge_color = colours
    md = dict(layer.metadata)
    md[META_KEY] = {**md[META_KEY], "placement": new.to_dict()}
    layer.metadata = md
    if new.original_shape is not None:
        sg.image_size = (int(round(new.original_shape[0])), int(round(new.original_shape[1])))
        extent = np.ptp(new.to_world((0, 0, new.original_shape[1], new.original_shape[0])), axis=0)
        layer.edge_width = float(extent.max()) * EDGE_FRACTION
    layer.refresh_text()
    return new
