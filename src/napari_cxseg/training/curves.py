"""Training curves as PNG (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_history(history: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss (left axis) and validation Dice (right axis) per epoch, written to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ep = [r["epoch"] for r in history]
    ax.plot(ep, [r["loss"] for r in history], color="#1f77b4", marker=".", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (Dice + CE)", color="#1f77b4")
    val = [(r["epoch"], r["dice"]) for r in history if r.get("dice") is not None]
    if val:
        ax2 = ax.twinx()
        ax2.plot([v[0] for v in val], [v[1] for v in val], color="#d62728", marker="o", label="validation Dice")
        ax2.set_ylabel("validation Dice", color="#d62728")
        ax2.set_ylim(max(0.0, min(v[1] for v in val) - 0.05), 1.0)
    ax.set_title(title or "training")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.png")
    fig.savefig(tmp)
    tmp.replace(path)
    return path
