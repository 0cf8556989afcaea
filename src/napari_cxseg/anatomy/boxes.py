"""Box evaluation: IoU per region between computed and reference Chest ImaGenome boxes.

Boxes are read from scene graphs (a ``<dicom_id>_SceneGraph.json``, a folder or zip of them) or
from a CSV in the gold-standard layout (``gold_bbox_coordinate_annotations_1000images.csv``:
``image_id`` with its ``.dcm`` suffix, ``bbox_name``, ``x1, y1, x2, y2, width, height``,
``original_x1 .. original_height``). Both sides are compared in the same coordinates:
``original_*`` (the original image's pixels; the default) or the 224 space (``x1..y2``).
Images are matched by dicom_id (``.dcm``/``.jpg`` suffixes dropped); when each side holds
exactly one image they are compared whatever their ids.

Per region the report gives the number of images with both boxes, mean / median / minimum
IoU, the share with IoU >= 0.5, and how many images lack the box on one side.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..images import CxsegError
from .regions import box_iou

BoxTable = dict[str, dict[str, tuple[float, float, float, float]]]
_SUFFIXES = (".dcm", ".jpg", ".jpeg", ".png")


def normalise_id(image_id: str) -> str:
    """A dicom_id without folders and image suffixes."""
    name = str(image_id).replace("\\", "/").rsplit("/", 1)[-1].strip()
    for s in _SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def read_boxes(path: str | Path, space: str = "original") -> BoxTable:
    """``{image_id: {bbox_name: (x1, y1, x2, y2)}}`` from scene graphs or a gold-layout CSV.

    Raises
    ------
    CxsegError
        When the path holds no boxes, a file cannot be read or a CSV lacks columns (names it).
    """
    if space not in ("original", "224"):
        raise CxsegError(f"box space must be 'original' or '224', not {space!r}")
    p = str(path)
    if p.lower().endswith((".csv", ".txt")) and Path(p).is_file():
        return _read_csv(Path(p), space)
    from .imagenome import SceneGraphError, read_scene_graph
    from .scene_graph_files import list_scene_graphs

    files = list_scene_graphs(p)
    if not files:
        raise CxsegError(f"{p}: no <dicom_id>_SceneGraph.json and not a gold-standard box CSV")
    out: BoxTable = {}
    for f in files:
        try:
            sg = read_scene_graph(f)
        except SceneGraphError as e:
            raise CxsegError(str(e)) from e
        boxes = out.setdefault(normalise_id(sg.image_id), {})
        for o in sg.objects:
            boxes[o.bbox_name] = o.original_box if space == "original" else o.box_224
    return out


def _read_csv(path: Path, space: str) -> BoxTable:
    cols = ("original_x1", "original_y1", "original_x2", "original_y2") if space == "original" else \
        ("x1", "y1", "x2", "y2")
    out: BoxTable = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            sep = "\t" if path.suffix.lower() == ".txt" else ","
            reader = csv.DictReader(f, delimiter=sep)
            need = ("image_id", "bbox_name", *cols)
            missing = [c for c in need if c not in (reader.fieldnames or [])]
            if missing:
                raise CxsegError(f"{path} lacks the column(s) {', '.join(missing)} of the gold-standard box layout")
            for i, row in enumerate(reader, start=2):
                try:
                    box = tuple(float(row[c]) for c in cols)
                except (TypeError, ValueError):
                    raise CxsegError(f"{path} line {i}: box coordinates {[row[c] for c in cols]} are not numbers") from None
                out.setdefault(normalise_id(row["image_id"]), {})[str(row["bbox_name"]).strip()] = box  # type: ignore[assignment]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CxsegError(f"cannot read {path}: {e}") from None
    if not out:
        raise CxsegError(f"{path} holds no boxes")
    return out


@dataclass
class BoxReport:
    """Per image and region: the IoU (None when one side lacks the box)."""

    rows: list[dict] = field(default_factory=list)

    def regions(self) -> list[str]:
        from .imagenome import REGION_NAMES

        seen = list(dict.fromkeys(r["bbox_name"] for r in self.rows))
        return [n for n in REGION_NAMES if n in seen] + sorted(n for n in seen if n not in REGION_NAMES)

    def summary(self) -> list[dict]:
        """One row per region: n, mean, median, min IoU, share >= 0.5, missing counts."""
        out = []
        for name in self.regions():
            rows = [r for r in self.rows if r["bbox_name"] == name]
            ious = sorted(r["iou"] for r in rows if r["iou"] is not None)
            n = len(ious)
            out.append({
                "bbox_name": name, "n": n,
                "mean_iou": sum(ious) / n if n else math.nan,
                "median_iou": (ious[(n - 1) // 2] + ious[n // 2]) / 2 if n else math.nan,
                "min_iou": ious[0] if n else math.nan,
                "iou_ge_0.5": sum(v >= 0.5 for v in ious) / n if n else math.nan,
                "missing_pred": sum(r["status"] == "missing in prediction" for r in rows),
                "missing_ref": sum(r["status"] == "missing in reference" for r in rows),
            })
        return out

    def table(self) -> str:
        """The summary as a fixed-width text table."""
        head = f"{'region':<28} {'n':>4} {'mean':>6} {'median':>6} {'min':>6} {'>=0.5':>6} {'no pred':>7} {'no ref':>6}"
        lines = [head, "-" * len(head)]
        for s in self.summary():
            def f(v: float) -> str:
                return "   -  " if math.isnan(v) else f"{v:6.3f}"

            lines.append(f"{s['bbox_name']:<28} {s['n']:>4} {f(s['mean_iou'])} {f(s['median_iou'])} "
                         f"{f(s['min_iou'])} {f(s['iou_ge_0.5'])} {s['missing_pred']:>7} {s['missing_ref']:>6}")
        return "\n".join(lines)


def evaluate_boxes(pred: BoxTable, ref: BoxTable, regions: Sequence[str] | None = None) -> BoxReport:
    """IoU per image and region of ``pred`` against ``ref``.

    Parameters
    ----------
    pred, ref
        Box tables (:func:`read_boxes`).
    regions
        Regions to compare (default: every name on either side).

    Raises
    ------
    CxsegError
        When no image is on both sides.
    """
    pairs = _match(pred, ref)
    report = BoxReport()
    for pid, rid in pairs:
        p, r = pred[pid], ref[rid]
        names = list(regions) if regions else list(dict.fromkeys([*r, *p]))
        for name in names:
            pb, rb = p.get(name), r.get(name)
            if pb is None and rb is None:
                continue
            status = "both" if pb is not None and rb is not None else \
                "missing in prediction" if pb is None else "missing in reference"
            report.rows.append({"image_id": rid, "bbox_name": name, "iou": box_iou(pb, rb) if status == "both" else None,
                                "status": status, "pred_box": pb, "ref_box": rb})
    return report


def _match(pred: Mapping[str, object], ref: Mapping[str, object]) -> list[tuple[str, str]]:
    common = [k for k in pred if k in ref]
    if common:
        return [(k, k) for k in common]
    if len(pred) == 1 and len(ref) == 1:
        return [(next(iter(pred)), next(iter(ref)))]
    raise CxsegError(f"no image is on both sides: prediction ids e.g. {', '.join(list(pred)[:3])}; "
                     f"reference ids e.g. {', '.join(list(ref)[:3])}")


def write_box_report(report: BoxReport, out_prefix: str | Path) -> dict[str, Path]:
    """Write ``<prefix>.txt`` (summary table), ``<prefix>.csv`` (per image and region) and
    ``<prefix>_summary.csv``; returns the paths."""
    from ..io.atomic import atomic_write

    prefix = Path(out_prefix)
    if prefix.parent and not prefix.parent.exists():
        raise CxsegError(f"cannot write the box report: folder {prefix.parent} does not exist")
    paths = {"table": prefix.with_name(prefix.name + ".txt"), "csv": prefix.with_name(prefix.name + ".csv"),
             "summary": prefix.with_name(prefix.name + "_summary.csv")}

    def text(tmp: str) -> None:
        Path(tmp).write_text(report.table() + "\n", encoding="utf-8")

    def per_row(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["image_id", "bbox_name", "iou", "status", "pred_x1", "pred_y1", "pred_x2", "pred_y2",
                        "ref_x1", "ref_y1", "ref_x2", "ref_y2"])
            for r in report.rows:
                pb = list(r["pred_box"] or ["", "", "", ""])
                rb = list(r["ref_box"] or ["", "", "", ""])
                w.writerow([r["image_id"], r["bbox_name"], "" if r["iou"] is None else f"{r['iou']:.4f}",
                            r["status"], *pb, *rb])

    def summary(tmp: str) -> None:
        rows = report.summary()
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["bbox_name"])
            w.writeheader()
            w.writerows(rows)

    atomic_write(str(paths["table"]), text)
    atomic_write(str(paths["csv"]), per_row)
    atomic_write(str(paths["summary"]), summary)
    return paths
