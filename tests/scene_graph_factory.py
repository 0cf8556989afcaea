"""Chest ImaGenome scene graphs written by the tests (the real dataset is credentialed).

The JSON follows the silver schema (../shared/reference/formats.md 1.3): 224-space ``x1..y2``
from a letter-boxed square, ``original_*`` in the original image's pixels, plus fields the
product does not interpret (``synsets``, ``name``, ``gender``, ``StudyDateTime``, an unknown
``custom_field``) so round trips can check they survive.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_cxseg.anatomy.imagenome import REGION_NAMES

# (x1, y1, x2, y2) as fractions of the image's (columns, rows), PA display (patient's right on
# the image's left); left-sided regions mirror the right ones.
_RIGHT = {
    "lung": (0.12, 0.14, 0.47, 0.80),
    "upper lung zone": (0.12, 0.14, 0.47, 0.36),
    "mid lung zone": (0.12, 0.36, 0.47, 0.58),
    "lower lung zone": (0.12, 0.58, 0.47, 0.80),
    "hilar structures": (0.32, 0.36, 0.45, 0.52),
    "apical zone": (0.15, 0.12, 0.40, 0.22),
    "costophrenic angle": (0.10, 0.70, 0.22, 0.82),
    "hemidiaphragm": (0.12, 0.66, 0.46, 0.80),
    "clavicle": (0.14, 0.10, 0.47, 0.20),
}
_CENTRAL = {
    "trachea": (0.45, 0.04, 0.55, 0.36),
    "spine": (0.44, 0.04, 0.56, 0.96),
    "aortic arch": (0.50, 0.27, 0.60, 0.36),
    "mediastinum": (0.38, 0.18, 0.64, 0.80),
    "upper mediastinum": (0.40, 0.14, 0.60, 0.38),
    "svc": (0.38, 0.28, 0.47, 0.45),
    "cardiac silhouette": (0.36, 0.45, 0.74, 0.80),
    "cavoatrial junction": (0.39, 0.45, 0.47, 0.52),
    "right atrium": (0.36, 0.52, 0.48, 0.75),
    "carina": (0.46, 0.32, 0.54, 0.40),
    "abdomen": (0.10, 0.80, 0.90, 1.00),
}


def fraction_boxes() -> dict[str, tuple[float, float, float, float]]:
    """All 29 regions as fractions (x1, y1, x2, y2) of a PA film in the standard display."""
    out: dict[str, tuple[float, float, float, float]] = {}
    for part, (x1, y1, x2, y2) in _RIGHT.items():
        out[f"right {part}"] = (x1, y1, x2, y2)
        out[f"left {part}"] = (1 - x2, y1, 1 - x1, y2)
    out.update(_CENTRAL)
    assert set(out) == set(REGION_NAMES)
    return {n: out[n] for n in REGION_NAMES}


def pixel_boxes(rows: int, cols: int, mirrored: bool = False) -> dict[str, tuple[int, ...]]:
    """The 29 boxes in whole pixels of a ``rows x cols`` image (stored mirrored if asked)."""
    boxes = {}
    for name, (x1, y1, x2, y2) in fraction_boxes().items():
        if mirrored:
            x1, x2 = 1 - x2, 1 - x1
        boxes[name] = (round(x1 * cols), round(y1 * rows), round(x2 * cols), round(y2 * rows))
    return boxes


FINDINGS = {
    "right lower lung zone": (
        ["Patchy opacity at the right base is worse, likely mild pneumonia."],
        [["anatomicalfinding|yes|lung opacity", "disease|yes|pneumonia", "nlp|yes|abnormal"]],
        [["severity|yes|mild"]], [[]], [["comparison|yes|worsened"]],
    ),
    "right costophrenic angle": (
        ["Small right pleural effusion has improved."],
        [["anatomicalfinding|yes|pleural effusion", "anatomicalfinding|yes|costophrenic angle blunting",
          "nlp|yes|abnormal"]],
        [["severity|yes|mild"]], [[]], [["comparison|yes|improved"]],
    ),
    "cardiac silhouette": (
        ["The heart is moderately enlarged, unchanged."],
        [["anatomicalfinding|yes|enlarged cardiac silhouette", "nlp|yes|abnormal"]],
        [["severity|yes|moderate"]], [["temporal|yes|chronic"]], [["comparison|yes|no change"]],
    ),
    "left lung": (
        ["The left lung is clear without pneumothorax."],
        [["anatomicalfinding|no|lung opacity", "anatomicalfinding|no|pneumothorax", "nlp|yes|normal"]],
        [[]], [[]], [[]],
    ),
}  # fmt: skip

RELATIONS = {
    "right lower lung zone": "worsened",
    "right costophrenic angle": "improved",
    "cardiac silhouette": "no change",
}


def scene_graph_dict(
    image_id: str,
    boxes: dict[str, tuple[float, ...]],
    original_shape: tuple[int, int],
    prior_id: str | None = None,
    findings: dict[str, tuple] | None = None,
) -> dict[str, Any]:
    """A silver-style scene graph for ``boxes`` (original pixels) of a ``rows x cols`` image."""
    rows, cols = original_shape
    s = 224.0 / max(rows, cols)
    px, py = (224 - cols * s) / 2, (224 - rows * s) / 2
    objects = []
    for name, (x1, y1, x2, y2) in boxes.items():
        a1, b1, a2, b2 = (round(s * x1 + px), round(s * y1 + py), round(s * x2 + px), round(s * y2 + py))
        objects.append({
            "object_id": f"{image_id}_{name}", "x1": a1, "y1": b1, "x2": a2, "y2": b2,
            "width": a2 - a1, "height": b2 - b1, "bbox_name": name, "synsets": ["C0024109"],
            "name": name.title(), "original_x1": x1, "original_y1": y1, "original_x2": x2,
            "original_y2": y2, "original_width": x2 - x1, "original_height": y2 - y1,
        })  # fmt: skip
    attributes = []
    for name, (phrases, attrs, sev, temp, comp) in (findings if findings is not None else FINDINGS).items():
        attributes.append({
            name: True, "bbox_name": name, "synsets": ["C0024109"], "name": name.title(),
            "attributes": attrs, "attributes_ids": [[f"CL{i}{j}" for j, _ in enumerate(p)] for i, p in enumerate(attrs)],
            "phrases": phrases, "phrase_IDs": [f"{image_id}|{i}" for i in range(len(phrases))],
            "sections": ["finalreport"] * len(phrases), "comparison_cues": comp,
            "temporal_cues": temp, "severity_cues": sev, "texture_cues": [[]] * len(phrases),
            "object_id": f"{image_id}_{name}",
        })  # fmt: skip
    relationships = []
    if prior_id:
        for i, (name, value) in enumerate(RELATIONS.items()):
            relationships.append({
                "relationship_id": f"{image_id}_{prior_id}_{i}",
                "predicate": "['" + {"worsened": "Worsened", "improved": "Improved", "no change": "No status change"}[value] + "']",
                "synsets": ["C0205170"], "relationship_names": [f"comparison|yes|{value}"],
                "relationship_contexts": [1.0], "phrase": FINDINGS[name][0][0],
                "attributes": FINDINGS[name][1][0], "bbox_name": name,
                "subject_id": f"{image_id}_{name}", "object_id": f"{prior_id}_{name}",
            })  # fmt: skip
    return {
        "image_id": image_id, "viewpoint": "PA", "patient_id": 10000032, "study_id": 50414267,
        "gender": "F", "age_decile": "50-60", "reason_for_exam": "___ with cough, eval pneumonia",
        "StudyOrder": 2 if prior_id else 1, "StudyDateTime": "2180-05-06 22:20:12",
        "objects": objects, "attributes": attributes, "relationships": relationships,
        "custom_field": {"kept": [1, 2, 3]},
    }  # fmt: skip


def write_scene_graph_json(folder: Path, data: dict[str, Any]) -> Path:
    path = Path(folder) / f"{data['image_id']}_SceneGraph.json"
    path.write_text(json.dumps(data))
    return path


def lung_image(rows: int, cols: int, mirrored: bool = False) -> np.ndarray:
    """A uint16 film with a bright right lung box region (for left/right checks).

    The region ``right lung`` of :func:`pixel_boxes` is bright (3000), the rest dark (500).
    """
    img = np.full((rows, cols), 500, np.uint16)
    x1, y1, x2, y2 = pixel_boxes(rows, cols, mirrored)["right lung"]
    img[y1:y2, x1:x2] = 3000
    return img


def boxes_on_lungs(
    right: tuple[float, ...], left: tuple[float, ...], shape: tuple[int, int]
) -> dict[str, tuple[int, ...]]:
    """Plausible boxes for the 29 regions around two real lung boxes ``(x1, y1, x2, y2)``.

    The lungs keep their boxes, the lung zones are their thirds by height, and every other
    region is the fractional layout of :func:`fraction_boxes` mapped onto the lungs' union
    (clipped to the ``(rows, cols)`` image).
    """
    ux1, uy1 = min(right[0], left[0]), min(right[1], left[1])
    ux2, uy2 = max(right[2], left[2]), max(right[3], left[3])
    fx1, fy1, fx2, fy2 = 0.12, 0.14, 0.88, 0.80  # the lungs' union in the fractional layout
    sx, sy = (ux2 - ux1) / (fx2 - fx1), (uy2 - uy1) / (fy2 - fy1)
    out = {}
    for name, (x1, y1, x2, y2) in fraction_boxes().items():
        out[name] = (round(ux1 + (x1 - fx1) * sx), round(uy1 + (y1 - fy1) * sy),
                     round(ux1 + (x2 - fx1) * sx), round(uy1 + (y2 - fy1) * sy))  # fmt: skip
    for side, (x1, y1, x2, y2) in (("right", right), ("left", left)):
        out[f"{side} lung"] = (round(x1), round(y1), round(x2), round(y2))
        h = (y2 - y1) / 3
        for k, zone in enumerate(("upper", "mid", "lower")):
            out[f"{side} {zone} lung zone"] = (round(x1), round(y1 + k * h), round(x2), round(y1 + (k + 1) * h))
    rows, cols = shape
    return {n: (max(out[n][0], 0), max(out[n][1], 0), min(out[n][2], cols), min(out[n][3], rows))
            for n in REGION_NAMES}  # fmt: skip
