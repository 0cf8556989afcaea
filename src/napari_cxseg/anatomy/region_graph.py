"""Computed regions as a Chest ImaGenome scene graph and as napari layer-data tuples (no napari).

:func:`radiograph_regions` is the one pipeline behind ``napari-cxseg regions`` and the Regions
widget: segment the structures (:mod:`.structures`), compute the regions and the CTR
(:mod:`.regions`, :mod:`.ctr`), then :func:`regions_scene_graph` writes the boxes in the
radiograph's *stored* pixels (``original_x1..original_y2``; the file is taken as the original
image) and in the 224 space (letter-boxed square, :class:`~.scene_graph_space.Space224`).
The scene graph's extra top-level key ``cxseg`` records how it was made (models, the rule per
region, the regions left out and why, the CTR); readers of the dataset ignore unknown keys.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import Geometry
from ..images import Image, LabelMap
from .imagenome import SceneGraph, SceneObject
from .regions import Box, RegionSet, compute_regions
from .scene_graph_space import Space224

#: Colours of the CTR lines (heart, thorax).
CTR_COLOURS = ("#ff2d55", "#34c759")


@dataclass
class RegionResult:
    """What :func:`radiograph_regions` found on one radiograph."""

    regions: RegionSet
    scene_graph: SceneGraph
    label_maps: list[LabelMap] = field(default_factory=list)
    models: list[str] = field(default_factory=list)


def held_box_to_stored(box: Box, geometry: Geometry) -> tuple[float, float, float, float]:
    """A box in held pixel edges -> ``(x1, y1, x2, y2)`` in the stored image's pixel edges."""
    m = np.linalg.inv(geometry.disk_affine()) @ geometry.affine
    corners = np.array([[box.y1, box.x1], [box.y2 - 1, box.x2 - 1]], float)  # first and last pixel
    idx = (m @ np.column_stack([corners, np.ones(2)]).T).T[:, :2]
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    return (float(lo[1]), float(lo[0]), float(hi[1]), float(hi[0]))


def stored_shape(image: Image) -> tuple[int, int]:
    """``(rows, columns)`` of the radiograph as stored."""
    shp = image.geometry.disk_shape or image.spatial_shape
    return (int(shp[-2]), int(shp[-1]))


def regions_scene_graph(rs: RegionSet, image: Image, image_id: str | None = None,
                        models: Sequence[str] = ()) -> SceneGraph:
    """A scene graph holding the computed regions of ``image`` (in REGION_NAMES order).

    Parameters
    ----------
    rs
        The regions (held pixel edges of ``image``).
    image
        The radiograph they were computed on.
    image_id
        The graph's ``image_id`` (default: the file's stem, e.g. the MIMIC dicom_id).
    models
        The models that gave the structures (recorded under ``cxseg``).
    """
    src = image.meta.get("source_path")
    iid = image_id or (Path(str(src)).name.split(".")[0] if src else None) or str(image.meta.get("name") or "image")
    rows, cols = stored_shape(image)
    space = Space224.letterbox(rows, cols)
    objects = []
    for name, region in rs.regions.items():
        orig = held_box_to_stored(region.box, image.geometry)
        obj = SceneObject(bbox_name=name, object_id=f"{iid}_{name}")
        obj.set_boxes(orig, space.to_224(orig))
        objects.append(obj)
    view = image.meta.get("view_position") or None
    sg = SceneGraph(image_id=iid, viewpoint=view, objects=objects, image_size=(rows, cols))
    sg.extra["cxseg"] = {
        "generator": "napari-cxseg regions",
        "models": list(models),
        "rules": {n: {"rule": r.rule, "structures": list(r.structures)} for n, r in rs.regions.items()},
        "left_out": dict(rs.left_out),
        "cardiothoracic_ratio": None if rs.ctr is None else _ctr_dict(rs),
    }
    return sg


def pixel_spacing_mm(image: Image) -> float | None:
    """The column pixel size in mm when the file gives one (DICOM), else None (PNG/JPEG)."""
    fmt = (image.geometry.source or {}).get("format")
    return float(image.geometry.spacing[-1]) if fmt == "dicom" else None


def _ctr_dict(rs: RegionSet) -> dict[str, Any]:
    assert rs.ctr is not None
    d = rs.ctr.to_dict()
    d["lines_in"] = "held pixel edges (row, column)"
    return d


def ctr_layer_data(rs: RegionSet, geometry: Geometry, name: str = "CTR") -> tuple | None:
    """Shapes layer-data tuple with the heart and thorax lines in world coordinates (None: no CTR)."""
    if rs.ctr is None:
        return None
    lines = []
    for line in (rs.ctr.heart_line, rs.ctr.thorax_line):
        idx = np.asarray(line, float) - 0.5  # pixel edges -> napari index (pixel centres at integers)
        world = (geometry.affine @ np.column_stack([idx, np.ones(2)]).T).T[:, :2]
        lines.append(world)
    c = rs.ctr
    unit, k = ("mm", c.column_spacing_mm) if c.column_spacing_mm else ("px", 1.0)
    kw = {
        "name": name,
        "shape_type": "line",
        "edge_color": list(CTR_COLOURS),
        "edge_width": max(float(np.ptp(lines[1][:, 1])) * 0.004, 1e-3),
        "features": {"line": ["heart width", "thoracic width"],
                     "length_px": [c.heart_width_px, c.thorax_width_px],
                     "label": [f"heart {c.heart_width_px * k:.0f} {unit} (CTR {c.ratio:.2f})",
                               f"thorax {c.thorax_width_px * k:.0f} {unit}"]},
        "text": {"string": "{label}", "size": 10, "color": "white", "anchor": "upper_left"},
        "metadata": {"cxseg": {"kind": "ctr", "ratio": c.ratio, "ctr": c.to_dict()}},
        "axis_labels": ("row", "column"),
        "units": ("mm", "mm"),
    }
    return lines, kw, "shapes"


def regions_layer_data(sg: SceneGraph, image: Image, reference: str | None = None) -> tuple:
    """The other engineer's scene-graph Shapes layer for ``sg`` placed on ``image``."""
    from .scene_graph_layer import scene_graph_layer_data
    from .scene_graph_open import placement_on, reference_from_geometry

    ref = reference_from_geometry(reference or sg.image_id, image.geometry, image.spatial_shape,
                                  image.meta.get("source_path"))
    ref.is_original = True
    return scene_graph_layer_data(sg, placement_on(sg, ref), name=f"{reference or sg.image_id} regions")


def radiograph_regions(
    image: Image, models: Sequence[str] | None = None, device: str = "auto", trust: bool = False,
    cancel: Any = None, image_id: str | None = None,
) -> Generator[tuple[int, int, str], None, RegionResult]:
    """Segment a radiograph, compute its regions and CTR, make the scene graph (a generator).

    Yields ``(step, steps, what)``; returns a :class:`RegionResult`.

    Raises
    ------
    CxsegError
        When a model cannot run on the image or the lungs are not found (names the file).
    """
    from .structures import default_models, segment_structures

    names = list(models) if models else default_models()
    structures, maps = yield from segment_structures(image, names, device=device, trust=trust, cancel=cancel)
    yield len(names), len(names) + 1, "regions"
    rs = compute_regions(structures, image.spatial_shape)
    if rs.ctr is not None:
        rs.ctr.column_spacing_mm = pixel_spacing_mm(image)
    sg = regions_scene_graph(rs, image, image_id=image_id, models=names)
    return RegionResult(rs, sg, maps, names)
