"""Cardiothoracic ratio (CTR) of a frontal radiograph from heart and lung masks.

* Heart width: the widest transverse extent of the cardiac silhouette, from its rightmost to its
  leftmost pixel (``MRD + MLD`` of the textbook definition: the greatest distances of the right and
  left heart borders from the midline, which may lie at different heights). Its line is drawn at
  the mean height of those two extreme pixels.
* Thoracic width: the widest inner thoracic width, the greatest distance in one row between the
  lateral borders of the right and the left lung field (the lung fields reach the inner margins of
  the ribs); its line is drawn in that row.
* CTR = heart width / thoracic width. Widths are in pixels and, when the file gives the pixel
  size (DICOM), in mm.

Lines are ``((row, column), (row, column))`` in pixel edges of the held grid, like the region
boxes: a line over columns ``c0..c1`` runs from ``c0`` to ``c1 + 1`` at the row's centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Line = tuple[tuple[float, float], tuple[float, float]]


@dataclass
class CardiothoracicRatio:
    """The CTR and the two lines that measure it."""

    ratio: float
    heart_width_px: float
    thorax_width_px: float
    heart_line: Line
    thorax_line: Line
    column_spacing_mm: float | None = None  # None: the file gives no pixel size

    @property
    def heart_width_mm(self) -> float | None:
        return None if self.column_spacing_mm is None else self.heart_width_px * self.column_spacing_mm

    @property
    def thorax_width_mm(self) -> float | None:
        return None if self.column_spacing_mm is None else self.thorax_width_px * self.column_spacing_mm

    def describe(self) -> str:
        """One line: the ratio and the two widths (mm when the pixel size is known)."""
        if self.column_spacing_mm is None:
            return f"CTR {self.ratio:.3f} (heart {self.heart_width_px:.0f} px / thorax {self.thorax_width_px:.0f} px)"
        return (f"CTR {self.ratio:.3f} (heart {self.heart_width_mm:.1f} mm / thorax "
                f"{self.thorax_width_mm:.1f} mm)")

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {"ratio": self.ratio, "heart_width_px": self.heart_width_px, "thorax_width_px": self.thorax_width_px,
                "heart_width_mm": self.heart_width_mm, "thorax_width_mm": self.thorax_width_mm,
                "heart_line": [list(p) for p in self.heart_line], "thorax_line": [list(p) for p in self.thorax_line]}


def heart_width(heart: np.ndarray) -> tuple[float, Line] | None:
    """Widest transverse extent of the heart and its line (None when the mask is empty)."""
    r, c = np.nonzero(np.asarray(heart, bool))
    if r.size == 0:
        return None
    c0, c1 = int(c.min()), int(c.max())
    row = (float(np.mean(r[c == c0])) + float(np.mean(r[c == c1]))) / 2.0 + 0.5
    return float(c1 + 1 - c0), ((row, float(c0)), (row, float(c1 + 1)))


def thorax_width(right_lung: np.ndarray, left_lung: np.ndarray) -> tuple[float, Line] | None:
    """Widest distance in one row between the lungs' lateral borders, and its line."""
    a, b = np.asarray(right_lung, bool), np.asarray(left_lung, bool)
    rows = np.flatnonzero(np.any(a, axis=1) & np.any(b, axis=1))
    if rows.size == 0:
        return None
    w = a.shape[1]
    a_first, a_last = np.argmax(a[rows], axis=1), w - 1 - np.argmax(a[rows, ::-1], axis=1)
    b_first, b_last = np.argmax(b[rows], axis=1), w - 1 - np.argmax(b[rows, ::-1], axis=1)
    lo = np.minimum(a_first, b_first)
    hi = np.maximum(a_last, b_last)
    i = int(np.argmax(hi - lo))
    row = float(rows[i]) + 0.5
    return float(hi[i] + 1 - lo[i]), ((row, float(lo[i])), (row, float(hi[i] + 1)))


def cardiothoracic_ratio(
    heart: np.ndarray, right_lung: np.ndarray, left_lung: np.ndarray, spacing: Sequence[float] = (1.0, 1.0)
) -> CardiothoracicRatio | None:
    """The CTR of one radiograph (None when a mask is empty).

    Parameters
    ----------
    heart, right_lung, left_lung
        Boolean masks on the radiograph's held grid.
    spacing
        ``(row, column)`` pixel spacing in mm when known (for the widths in mm; the ratio
        needs none).
    """
    h = heart_width(heart)
    t = thorax_width(right_lung, left_lung)
    if h is None or t is None or t[0] <= 0:
        return None
    return CardiothoracicRatio(h[0] / t[0], h[0], t[0], h[1], t[1], None if spacing is None else float(spacing[1]))
