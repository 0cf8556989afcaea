"""A small bar-chart widget for intensity histograms (plain Qt painting, no plotting library)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget


class HistogramView(QWidget):
    """Draws ``counts`` over bin ``edges`` as bars, with the range and peak written on it."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.counts = np.zeros(0)
        self.edges = np.zeros(1)
        self.colour = QColor("#4363d8")
        self.title = ""
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def set_histogram(self, counts: np.ndarray, edges: np.ndarray, colour: str, title: str) -> None:
        """Show a new histogram."""
        self.counts = np.asarray(counts, float)
        self.edges = np.asarray(edges, float)
        self.colour = QColor(colour)
        self.title = title
        self.update()

    def clear(self, message: str = "") -> None:
        """Show nothing but ``message``."""
        self.counts = np.zeros(0)
        self.title = message
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Paint the bars, the title and the axis values."""
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        text_colour = self.palette().color(self.foregroundRole())
        w, h = self.width(), self.height()
        fm = p.fontMetrics()
        line = fm.height()
        plot = QRectF(6, line + 4, w - 12, h - 2 * line - 10)
        p.setPen(QPen(text_colour))
        p.drawText(QRectF(6, 0, w - 12, line + 2), Qt.AlignmentFlag.AlignLeft, self.title)
        if self.counts.size and self.counts.max() > 0 and plot.height() > 4:
            top = float(self.counts.max())
            bw = plot.width() / self.counts.size
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(self.colour)
            for i, c in enumerate(self.counts):
                bh = plot.height() * c / top
                p.drawRect(QRectF(plot.left() + i * bw, plot.bottom() - bh, max(bw - 1, 1), bh))
            p.setPen(QPen(text_colour))
            p.drawLine(plot.bottomLeft(), plot.bottomRight())
            below = QRectF(6, plot.bottom() + 2, w - 12, line + 2)
            p.drawText(below, Qt.AlignmentFlag.AlignLeft, f"{self.edges[0]:.4g}")
            p.drawText(below, Qt.AlignmentFlag.AlignRight, f"{self.edges[-1]:.4g}")
            p.drawText(
                QRectF(6, 0, w - 12, line + 2), Qt.AlignmentFlag.AlignRight, f"peak {int(top)}"
            )
        p.end()
