"""A scene graph <-> a napari Shapes layer-data tuple (plain tuples; no napari import).

The layer holds one rectangle per region in world coordinates (the radiograph's (row, column)
mm, or the original pixel space when no radiograph is known), a features table (``bbox_name``,
``abnormal``, ``described``, ``comparison``, ``label``) and, in ``metadata["cxseg"]``, the
:class:`~napari_cxseg.anatomy.imagenome.SceneGraph` itself and the :class:`Placement` that maps
its original pixels into the world. The writer reads both back.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from ..images import CxsegError
from .imagenome import SCENE_GRAPH_SUFFIX, SceneGraph, SceneObject
from .scene_graph_space import Placement, space_224_for

META_KEY = "cxseg"
LAYER_KIND = "scene_graph"

#: Edge colours: a region with abnormal findings, described as normal, not described.
COLOURS = {"abnormal": "#ff453a", "normal": "#30d158", "undescribed": "#64d2ff"}
#: Box edge width as a fraction of the image's larger side.
EDGE_FRACTION = 0.004
#: How a comparison is shown after a region's name on the current exam.
COMPARISON_MARKS = {"worsened": "worsened \u2191", "improved": "improved \u2193",
                    "no change": "no change ="}  # fmt: skip


def region_state(sg: SceneGraph, bbox_name: str) -> str:
    """``abnormal``, ``normal`` (described, nothing abnormal) or ``undescribed``."""
    f = sg.findings(bbox_name)
    if f is None:
        return "undescribed"
    return "abnormal" if f.abnormal else "normal"


def region_label(bbox_name: str, comparison: str) -> str:
    """The text drawn at a box: its name, and the comparison with the prior exam if any."""
    mark = COMPARISON_MARKS.get(comparison, comparison)
    return f"{bbox_name} [{mark}]" if comparison else bbox_name


def region_features(
    sg: SceneGraph, names: list[str], comparisons: dict[str, list[str]] | None = None
) -> dict[str, list]:
    """Features table for boxes named ``names`` (in layer order).

    ``comparisons`` (``{bbox_name: values}``, e.g. from the gold comparison file) replaces the
    graph's own relationships when given.
    """
    if comparisons is None:
        comparisons = {n: sg.comparisons(n) for n in names}
    shown = [", ".join(dict.fromkeys(comparisons.get(n, []))) for n in names]
    states = [region_state(sg, n) for n in names]
    return {
        "bbox_name": list(names),
        "abnormal": [s == "abnormal" for s in states],
        "described": [s != "undescribed" for s in states],
        "comparison": shown,
        "label": [region_label(n, c) for n, c in zip(names, shown, strict=True)],
        "colour": [COLOURS[s] for s in states],
    }


def region_colours(sg: SceneGraph, names: list[str]) -> list[str]:
    return [COLOURS[region_state(sg, n)] for n in names]


def region_z_order(sg: SceneGraph, names: list[str]) -> list[int]:
    """Draw order: abnormal regions on top, then normal ones (nested boxes share edges)."""
    rank = {"abnormal": 2, "normal": 1, "undescribed": 0}
    return [rank[region_state(sg, n)] for n in names]


def scene_graph_layer_data(
    sg: SceneGraph, placement: Placement, name: str | None = None
) -> tuple[list[np.ndarray], dict[str, Any], str]:
    """Shapes layer-data tuple: one named rectangle per object of ``sg``.

    Parameters
    ----------
    sg
        The scene graph (kept by reference in the layer metadata).
    placement
        Where its original pixels are in the world (:func:`scene_graph_space.place`).
    name
        Layer name (default ``"<image_id> regions"``).
    """
    boxes = [placement.to_world(o.original_box) for o in sg.objects]
    names = [o.bbox_name for o in sg.objects]
    extent = _extent(boxes, placement)
    kw: dict[str, Any] = {
        "name": name or f"{sg.image_id} regions",
        "shape_type": "rectangle",
        "face_color": "transparent",
        "edge_color": region_colours(sg, names) if names else "yellow",
        "edge_width": max(extent * EDGE_FRACTION, 1e-3),
        "z_index": region_z_order(sg, names),
        "features": region_features(sg, names),
        "feature_defaults": {"bbox_name": "", "abnormal": False, "described": False,
                             "comparison": "", "label": "", "colour": COLOURS["undescribed"]},
        "text": {"string": "{label}", "size": 8, "color": {"feature": "colour"},
                 "anchor": "upper_left"},  # fmt: skip
        "metadata": {
            META_KEY: {
                "kind": LAYER_KIND,
                "scene_graph": sg,
                "placement": placement.to_dict(),
                "source_path": sg.source,
            }
        },
        "axis_labels": ("row", "column"),
    }
    if placement.reference != "original pixels":
        kw["units"] = ("mm", "mm")
    return boxes, kw, "shapes"


def _extent(boxes: list[np.ndarray], placement: Placement) -> float:
    if placement.original_shape is not None:
        corner = placement.to_world((0, 0, placement.original_shape[1], placement.original_shape[0]))
        return float(np.ptp(corner, axis=0).max())
    if boxes:
        return float(np.ptp(np.concatenate(boxes), axis=0).max())
    return 100.0


def is_scene_graph_meta(metadata: Any) -> bool:
    """True for the metadata of a layer made by :func:`scene_graph_layer_data`."""
    md = metadata.get(META_KEY) if isinstance(metadata, dict) else None
    return isinstance(md, dict) and md.get("kind") == LAYER_KIND


def scene_graph_from_layer(data: Any, meta: dict[str, Any], path: str | None = None) -> SceneGraph:
    """The scene graph a Shapes layer shows now (boxes as drawn), for writing.

    Parameters
    ----------
    data
        The layer's shapes (lists of world vertices).
    meta
        The layer state napari gives writers (``metadata``, ``features`` ...).
    path
        The target file (names errors; gives the image id of a layer without a scene graph).

    Raises
    ------
    CxsegError
        A shape without a ``bbox_name``, two shapes with the same name, or no image id.
    """
    md = (meta.get("metadata") or {}).get(META_KEY) or {}
    sg = md.get("scene_graph")
    label = path or "the scene graph"
    if isinstance(sg, SceneGraph):
        sg = copy.deepcopy(sg)
    else:
        image_id = _image_id_from_path(path)
        if not image_id:
            raise CxsegError(
                f"cannot write {label}: the layer has no scene graph; name the file "
                f"<dicom_id>{SCENE_GRAPH_SUFFIX} to create one"
            )
        sg = SceneGraph(image_id=image_id)
    placement = Placement.from_dict(md.get("placement") or {})
    names = _names(meta.get("features"), len(data), label)
    if sg.image_size is None and placement.original_shape is not None:
        sg.image_size = (int(round(placement.original_shape[0])), int(round(placement.original_shape[1])))
    space = space_224_for(sg)
    to_world = _layer_to_world(meta)
    objects: list[SceneObject] = []
    for name, vertices in zip(names, data, strict=True):
        box = placement.to_original(to_world(vertices))
        obj = sg.object(name) or SceneObject(bbox_name=name, object_id=f"{sg.image_id}_{name}")
        if not np.allclose(box, obj.original_box, atol=1e-4) or not obj.source_values:
            obj.set_boxes(box, None if space is None else space.to_224(box))
        objects.append(obj)
    sg.objects = objects
    return sg


def _layer_to_world(meta: dict[str, Any]):
    """The layer's own data -> world transform (identity for layers this package made)."""
    from ..geometry import Geometry

    affine = meta.get("affine")
    if affine is not None and hasattr(affine, "affine_matrix"):
        affine = affine.affine_matrix
    m = Geometry.from_layer_transform(2, meta.get("scale"), meta.get("translate"),
                                      meta.get("rotate"), affine, frame="image").affine  # fmt: skip
    if np.allclose(m, np.eye(3)):
        return lambda v: np.asarray(v, float)[:, -2:]
    return lambda v: (m @ np.column_stack([np.asarray(v, float)[:, -2:], np.ones(len(v))]).T).T[:, :2]


def _names(features: Any, n: int, label: str) -> list[str]:
    if features is None or "bbox_name" not in features:
        raise CxsegError(f"cannot write {label}: the shapes have no 'bbox_name' feature")
    names = [str(v) if v is not None else "" for v in list(features["bbox_name"])[:n]]
    if len(names) != n:
        raise CxsegError(f"cannot write {label}: {n} shapes but {len(names)} bbox_name values")
    for i, name in enumerate(names):
        if not name.strip() or name == "nan":
            raise CxsegError(
                f"cannot write {label}: shape {i} has no bbox_name (name it in the findings panel)"
            )
    dupes = sorted({x for x in names if names.count(x) > 1})
    if dupes:
        raise CxsegError(f"cannot write {label}: more than one box named {', '.join(dupes)}")
    return names


def _image_id_from_path(path: str | None) -> str | None:
    if not path:
        return None
    name = Path(path).name
    return name[: -len(SCENE_GRAPH_SUFFIX)] if name.endswith(SCENE_GRAPH_SUFFIX) else None
