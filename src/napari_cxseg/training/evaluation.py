"""Segmentation metrics per class and per case (MONAI ``monai.metrics``), with tables and plots.

:func:`case_metrics` gives Dice, IoU, the 95th-percentile Hausdorff distance and the mean
(symmetric) surface distance of one prediction against its reference, in millimetres of the
image's own grid. :func:`evaluate_pairs` runs it over matched prediction/reference files and
:func:`write_report` writes the table (text), a CSV and a box plot (PNG).

Conventions: a class absent from both prediction and reference scores Dice/IoU 1 and distance
0; absent from only one, Dice/IoU 0 and distance ``inf`` (reported as such, left out of means).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("dice", "iou", "hd95", "msd")


def dice_per_class(pred: np.ndarray, ref: np.ndarray, classes: Mapping[int, str]) -> dict[str, float]:
    """Dice of each class (1.0 when absent from both)."""
    out = {}
    for cid, name in classes.items():
        p, r = pred == cid, ref == cid
        s = int(p.sum()) + int(r.sum())
        out[name] = float(2.0 * np.logical_and(p, r).sum() / s) if s else 1.0
    return out


def case_metrics(pred: np.ndarray, ref: np.ndarray, classes: Mapping[int, str],
                 spacing: Sequence[float] | None = None) -> dict[str, dict[str, float]]:
    """Dice, IoU, HD95 and mean surface distance per class (``monai.metrics``).

    Parameters
    ----------
    pred, ref
        Integer label arrays on the same grid.
    classes
        ``{class id: name}``.
    spacing
        Voxel size in mm along the array axes (distances in mm); None: voxels.

    Returns
    -------
    dict
        ``{class name: {"dice", "iou", "hd95", "msd"}}``.
    """
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
    )

    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} are not on the same grid")
    sp = None if spacing is None else [float(s) for s in spacing]
    out: dict[str, dict[str, float]] = {}
    for cid, name in classes.items():
        p = torch.as_tensor(pred == cid)[None, None].float()
        r = torch.as_tensor(ref == cid)[None, None].float()
        has_p, has_r = bool(p.any()), bool(r.any())
        if not has_p and not has_r:
            out[name] = {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "msd": 0.0}
            continue
        if not (has_p and has_r):
            out[name] = {"dice": 0.0, "iou": 0.0, "hd95": math.inf, "msd": math.inf}
            continue
        dice = float(compute_dice(p, r, include_background=True)[0, 0])
        iou = float(compute_iou(p, r, include_background=True)[0, 0])
        hd95 = float(compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=sp)[0, 0])
        msd = float(compute_average_surface_distance(p, r, include_background=True, symmetric=True, spacing=sp)[0, 0])
        out[name] = {"dice": dice, "iou": iou, "hd95": hd95, "msd": msd}
    return out


@dataclass
class EvaluationReport:
    """Metrics of many cases.

    Attributes
    ----------
    rows
        One dict per (case, class): ``case``, ``class``, and each metric.
    missing
        Cases with a reference but no prediction (or the other way round).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{class: {metric: mean over cases}}`` (infinite distances left out of the mean)."""
        out: dict[str, dict[str, float]] = {}
        for name in dict.fromkeys(r["class"] for r in self.rows):
            rows = [r for r in self.rows if r["class"] == name]
            out[name] = {}
            for m in METRICS:
                vals = [r[m] for r in rows if math.isfinite(r[m])]
                out[name][m] = float(np.mean(vals)) if vals else math.nan
            out[name]["cases"] = len(rows)
        return out

    def table(self) -> str:
        """A plain-text table: per class means, then per case."""
        lines = [f"{'class':<22}{'cases':>6}{'Dice':>8}{'IoU':>8}{'HD95':>9}{'MSD':>9}"]
        for name, s in self.summary().items():
            lines.append(f"{name:<22}{int(s['cases']):>6}{s['dice']:>8.4f}{s['iou']:>8.4f}{s['hd95']:>9.2f}{s['msd']:>9.2f}")
        lines.append("")
        lines.append(f"{'case':<28}{'class':<22}{'Dice':>8}{'IoU':>8}{'HD95':>9}{'MSD':>9}")
        for r in self.rows:
            lines.append(f"{r['case'][:27]:<28}{r['class'][:21]:<22}{r['dice']:>8.4f}{r['iou']:>8.4f}"
                         f"{r['hd95']:>9.2f}{r['msd']:>9.2f}")
        if self.missing:
            lines.append("")
            lines.append("unmatched: " + ", ".join(self.missing))
        return "\n".join(lines)


def evaluate_pairs(pairs: Sequence[tuple[str, Path, Path]], classes: Mapping[int, str] | None = None) -> EvaluationReport:
    """Metrics of ``(case, prediction file, reference file)`` triples.

    Files are read with the package's readers (NIfTI, PNG, DICOM SEG ...); both must be on the
    same grid; distances use the reference's voxel size. Class names come from the reference's
    classes (sidecar, MSD labels, SEG descriptions) unless ``classes`` is given.
    """
    from ..io import read

    report = EvaluationReport()
    for case, pred_path, ref_path in pairs:
        pred = read(pred_path, as_labels=True)[0]
        ref = read(ref_path, as_labels=True)[0]
        names = dict(classes) if classes else {k: c.name for k, c in ref.classes.items()} or \
            {int(v): f"class {int(v)}" for v in np.unique(ref.array) if v}
        if not classes:
            for k in np.unique(pred.array):
                if int(k) and int(k) not in names:
                    names[int(k)] = pred.classes.get(int(k)).name if int(k) in pred.classes else f"class {int(k)}"
        pa, ra = np.asarray(pred.array), np.asarray(ref.array)
        if pa.shape != ra.shape:
            raise ValueError(f"{pred_path} {pa.shape} and {ref_path} {ra.shape} are not on the same grid")
        for name, m in case_metrics(pa, ra, names, ref.geometry.spacing).items():
            report.rows.append({"case": case, "class": name, **m})
    return report


def write_report(report: EvaluationReport, out_prefix: str | Path) -> dict[str, Path]:
    """Write ``<prefix>.txt`` (table), ``<prefix>.csv`` (one row per case and class) and ``<prefix>.png``."""
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    txt = prefix.with_suffix(".txt")
    txt.write_text(report.table() + "\n", encoding="utf-8")
    csv_path = prefix.with_suffix(".csv")
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["case", "class", *METRICS])
        w.writeheader()
        for r in report.rows:
            w.writerow({k: r[k] for k in ("case", "class", *METRICS)})
    png = prefix.with_suffix(".png")
    plot_report(report, png)
    return {"table": txt, "csv": csv_path, "plot": png}


def plot_report(report: EvaluationReport, path: str | Path) -> Path:
    """Box plots of Dice and HD95 per class."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(r["class"] for r in report.rows))
    fig = Figure(figsize=(max(6.0, 1.2 * len(names) + 2), 3.8), dpi=100)
    for i, (m, label) in enumerate((("dice", "Dice"), ("hd95", "HD95 (mm)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        data = [[r[m] for r in report.rows if r["class"] == n and math.isfinite(r[m])] or [math.nan] for n in names]
        ax.boxplot(data, tick_labels=names) if _has_tick_labels() else ax.boxplot(data, labels=names)
        ax.set_title(label)
        ax.tick_params(axis="x", rotation=30)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def _has_tick_labels() -> bool:
    import matplotlib

    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return (major, minor) >= (3, 9)
