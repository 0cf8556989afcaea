"""Sequential exams: comparison relations and what changed in the product's own measurements.

The report's comparison of a region with the previous exam lives in the current exam's scene
graph (``relationships``: ``subject_id`` = ``<current>_<bbox_name>``, ``object_id`` =
``<prior>_<bbox_name>``) and, for the gold standard, in
``gold_object_comparison_with_coordinates.txt`` (tab-separated; several comparisons of one row
joined by ``;;``). Measurements: the region box area and, where the lungs are segmented, the
lung area per side, both in mm^2 when the films carry a pixel spacing (else pixels^2).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..images import CxsegError
from .imagenome import COMPARISON_PREDICATES, Relationship, SceneGraph

#: Columns of the gold comparison file used here.
GOLD_COMPARISON_COLUMNS = ("current_image_id", "bbox", "comparison", "subject_id", "object_id")


def read_gold_comparisons(path: str | Path) -> list[Relationship]:
    """Relationships from ``gold_object_comparison_with_coordinates.txt``.

    Raises
    ------
    CxsegError
        Unreadable file or missing columns (names the file and the columns).
    """
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t")
            missing = [c for c in GOLD_COMPARISON_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise CxsegError(f"{p} is not a gold comparison file: no column {', '.join(missing)}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError) as e:
        raise CxsegError(f"cannot read {p}: {e}") from e
    out = []
    for row in rows:
        values = [v.strip().lower() for v in (row.get("comparison") or "").split(";;") if v.strip()]
        current = str(row.get("current_image_id") or "").removesuffix(".dcm")
        bbox = str(row.get("bbox") or "")
        subject = row.get("subject_id") or f"{current}_{bbox}"
        out.append(
            Relationship(
                bbox_name=bbox,
                subject_id=str(subject),
                object_id=str(row.get("object_id") or ""),
                relationship_names=[f"comparison|yes|{v}" for v in values],
                predicate=str([COMPARISON_PREDICATES.get(v, v) for v in values]),
                phrase=str(row.get("sentence") or ""),
                extra={"relationship_id": row.get("relationship_id", ""), "source": str(p)},
            )
        )
    return out


def comparisons_for(
    current: SceneGraph, prior_id: str | None = None, extra: list[Relationship] = ()
) -> dict[str, list[str]]:
    """``{bbox_name: [improved | worsened | no change, ...]}`` of the current exam.

    Relations from the current graph and from ``extra`` (e.g. the gold file) whose subject is the
    current image; restricted to those against ``prior_id`` when given.
    """
    out: dict[str, list[str]] = {}
    for r in [*current.relationships, *extra]:
        if r.current_image_id and r.current_image_id != current.image_id:
            continue
        if prior_id and r.previous_image_id and r.previous_image_id != prior_id:
            continue
        for value in r.comparisons:
            values = out.setdefault(r.bbox_name, [])
            if value not in values:
                values.append(value)
    return out


def box_area(vertices: np.ndarray) -> float:
    """Area of a rectangle given by its world vertices (mm^2 on a radiograph with spacing)."""
    v = np.asarray(vertices, float)[:, -2:]
    extent = v.max(axis=0) - v.min(axis=0)
    return float(extent[0] * extent[1])


def lung_areas(labels: np.ndarray, classes: dict[int, str], pixel_area: float) -> dict[str, float]:
    """``{"right lung": area, "left lung": area}`` from a label array by class name.

    ``classes`` maps label values to names; names containing "right"/"left" and "lung" count.
    """
    arr = np.asarray(labels)
    out: dict[str, float] = {}
    for value, name in classes.items():
        low = str(name).lower()
        if "lung" not in low:
            continue
        side = "right lung" if "right" in low else "left lung" if "left" in low else None
        if side is None:
            continue
        out[side] = out.get(side, 0.0) + float(np.count_nonzero(arr == int(value))) * pixel_area
    return out


@dataclass
class RegionChange:
    """One row of the sequential-exam table."""

    bbox_name: str
    comparison: str  # from the report ("" when the report says nothing)
    area_current: float | None
    area_prior: float | None
    unit: str  # "mm^2" or "px^2"

    @property
    def change_percent(self) -> float | None:
        if not self.area_current or not self.area_prior:
            return None
        return 100.0 * (self.area_current - self.area_prior) / self.area_prior


def region_changes(
    names_current: list[str],
    boxes_current: list[np.ndarray],
    names_prior: list[str],
    boxes_prior: list[np.ndarray],
    comparisons: dict[str, list[str]],
    unit: str = "mm^2",
) -> list[RegionChange]:
    """Per region (current exam's order, then regions only the prior has): box areas, report."""
    cur = {n: box_area(b) for n, b in zip(names_current, boxes_current, strict=True)}
    pri = {n: box_area(b) for n, b in zip(names_prior, boxes_prior, strict=True)}
    names = list(dict.fromkeys([*names_current, *names_prior]))
    return [
        RegionChange(n, ", ".join(comparisons.get(n, [])), cur.get(n), pri.get(n), unit)
        for n in names
    ]
