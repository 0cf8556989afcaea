"""The live training plot: loss (left axis) and validation Dice (right axis) per epoch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget


class CurvePlot(QWidget):
    """A small matplotlib canvas (Qt backend) redrawn after each epoch (``draw_idle``: no freeze)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4.0, 2.4), dpi=90, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setMinimumHeight(170)
        self.ax = self.figure.add_subplot(1, 1, 1)
        self.ax2 = self.ax.twinx()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.set_history([])

    def set_history(self, history: Sequence[dict[str, Any]], title: str = "") -> None:
        """Draw the epochs so far (``epoch``, ``loss``, optional ``dice``)."""
        ax, ax2 = self.ax, self.ax2
        ax.clear()
        ax2.clear()
        ep = [r["epoch"] for r in history if r.get("loss") is not None]
        ax.plot(ep, [r["loss"] for r in history if r.get("loss") is not None], color="#1f77b4", marker=".",
                label="loss")
        val = [(r["epoch"], r["dice"]) for r in history if r.get("dice") is not None]
        if val:
            ax2.plot([v[0] for v in val], [v[1] for v in val], color="#d62728", marker="o", label="val Dice")
            ax2.set_ylim(max(0.0, min(v[1] for v in val) - 0.05), 1.0)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss", color="#1f77b4")
        ax2.set_ylabel("validation Dice", color="#d62728")
        ax2.yaxis.set_label_position("right")
        ax.set_title(title or ("training" if history else "no run yet"), fontsize=9)
        ax.grid(alpha=0.3)
        self.canvas.draw_idle()
