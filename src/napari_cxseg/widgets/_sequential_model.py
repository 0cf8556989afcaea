"""Sequential-exam glue: which exam is current, which film belongs to a graph, the work to run.

The generator functions run in napari thread workers (progress at each yield, cancel between
yields); the others are quick lookups on the main thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..anatomy.scene_graph_compare import RegionChange, lung_areas, region_changes
from ..layers import META_KEY, classes_from_layer_meta, layer_state, layer_world_affine
from ._findings_layers import placement_of, region_names, scene_graph_of


def order_exams(a: Any, b: Any) -> tuple[Any, Any]:
    """``(current, prior)`` of two scene-graph layers.

    The current exam is the one whose relationships point at the other; otherwise the later
    ``StudyDateTime`` (then ``StudyOrder``); otherwise the order given.
    """
    ga, gb = scene_graph_of(a), scene_graph_of(b)
    if any(r.previous_image_id == gb.image_id for r in ga.relationships):
        return a, b
    if any(r.previous_image_id == ga.image_id for r in gb.relationships):
        return b, a
    for key, conv in (("StudyDateTime", str), ("StudyOrder", _num)):
        va, vb = ga.extra.get(key), gb.extra.get(key)
        if va is not None and vb is not None and conv(va) != conv(vb):
            return (a, b) if conv(va) > conv(vb) else (b, a)
    return a, b


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def film_of(viewer: Any, regions: Any) -> Any | None:
    """The image layer a regions layer was placed on (its source file, else the dicom_id)."""
    ref = placement_of(regions).reference
    image_id = scene_graph_of(regions).image_id
    for layer in viewer.layers:
        if layer._type_string != "image" or layer.ndim != 2:
            continue
        src = (layer.metadata.get(META_KEY) or {}).get("source_path")
        if (src and src == ref) or layer.name in (ref, image_id):
            return layer
    return None


def area_unit(film: Any | None) -> str:
    """``mm^2`` when the film carries a real pixel spacing, else ``px^2``."""
    if film is None:
        return "px^2"
    md = film.metadata or {}
    geom = (md.get(META_KEY) or {}).get("geometry")
    fmt = (getattr(geom, "source", None) or {}).get("format")
    if fmt == "dicom" and md.get("spacing_source") not in (None, "default"):
        return "mm^2"
    return "px^2"


def region_rows(current: Any, prior: Any, comparisons: dict[str, list[str]]) -> list[RegionChange]:
    """Box-area rows for the two regions layers (world units of each exam)."""
    return region_changes(
        region_names(current), [np.asarray(v) for v in current.data],
        region_names(prior), [np.asarray(v) for v in prior.data], comparisons,
    )  # fmt: skip


def lung_rows(current_labels: Any | None, prior_labels: Any | None) -> list[RegionChange]:
    """Lung area per side from two Labels layers (world units: mm^2 on films with spacing)."""
    areas = []
    for layer in (current_labels, prior_labels):
        if layer is None:
            areas.append({})
            continue
        classes = {k: c.name for k, c in classes_from_layer_meta(layer_state(layer)).items()}
        pixel = float(abs(np.linalg.det(layer_world_affine(layer)[:2, :2])))
        areas.append(lung_areas(np.asarray(layer.data), classes, pixel))
    return [
        RegionChange(f"{side} (segmented)", "", areas[0].get(side), areas[1].get(side), "")
        for side in ("right lung", "left lung")
        if side in areas[0] or side in areas[1]
    ]


def film_arrays(film: Any) -> tuple[np.ndarray, np.ndarray]:
    """A copy of a film's pixels and its index -> world affine (taken on the main thread)."""
    return np.array(film.data, dtype=np.float32), layer_world_affine(film)


def register_job(current: tuple, prior: tuple):
    """Worker: register the prior film to the current one (yields per pyramid level)."""
    from ..anatomy.registration import iter_register_affine

    result = yield from iter_register_affine(current[0], current[1], prior[0], prior[1])
    return result


def lungs_job(images: list):
    """Worker: segment the lungs of each image with the shipped ``cxr-lungs`` model."""
    from ..inference import Predictor

    predictor = Predictor("cxr-lungs")
    out = []
    for image in images:
        label_map = yield from predictor.iter_predict(image)
        out.append(label_map)
    return out


def short(path: str) -> str:
    return Path(path).name if "/" in path else path
