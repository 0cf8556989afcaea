"""Axis-aligned boxes in pixel edges (``x`` columns, ``y`` rows) and their IoU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel edges of the held grid: ``x`` columns, ``y`` rows."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def union(self, other: Box) -> Box:
        """The smallest box holding both."""
        return Box(min(self.x1, other.x1), min(self.y1, other.y1), max(self.x2, other.x2), max(self.y2, other.y2))

    def clip(self, rows: int, cols: int) -> Box:
        """The box inside an image of ``rows`` x ``cols`` pixels."""
        return Box(min(max(self.x1, 0), cols), min(max(self.y1, 0), rows), min(max(self.x2, 0), cols),
                   min(max(self.y2, 0), rows))

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)


def box_iou(a: Box | tuple, b: Box | tuple) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (0 when both are empty)."""
    a = a if isinstance(a, Box) else Box(*map(float, a))
    b = b if isinstance(b, Box) else Box(*map(float, b))
    iw = min(a.x2, b.x2) - max(a.x1, b.x1)
    ih = min(a.y2, b.y2) - max(a.y1, b.y1)
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = a.area + b.area - inter
    return float(inter / union) if union > 0 else 0.0


def mask_box(mask: np.ndarray | None) -> Box | None:
    """The box of a mask's pixels (None when empty)."""
    if mask is None:
        return None
    rows = np.flatnonzero(np.any(mask, axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(np.any(mask, axis=0))
    return Box(float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
