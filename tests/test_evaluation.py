"""Evaluation metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_cxseg.training.evaluation import (
    EvaluationReport,
    case_metrics,
    dice_per_class,
    write_report,
)


def squares(shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((40, 40), np.uint8)
    ref[10:20, 10:20] = 1
    pred = np.zeros_like(ref)
    pred[10:20, 10 + shift:20 + shift] = 1
    return pred, ref


def test_dice_iou_of_shifted_squares():
    pred, ref = squares(shift=2)  # overlap 10 x 8 = 80 of 100 + 100
    m = case_metrics(pred, ref, {1: "box"})["box"]
    assert m["dice"] == pytest.approx(2 * 80 / 200)
    assert m["iou"] == pytest.approx(80 / 120)
    assert dice_per_class(pred, ref, {1: "box"})["box"] == pytest.approx(0.8)


def test_surface_distances_in_mm_follow_the_spacing():
    pred, ref = squares(shift=3)
    vox = case_metrics(pred, ref, {1: "box"})["box"]
    assert vox["hd95"] == pytest.approx(3.0)  # the far edges are 3 voxels apart, in x only
    mm = case_metrics(pred, ref, {1: "box"}, spacing=(1.0, 0.5))["box"]
    assert mm["hd95"] == pytest.approx(1.5)
    # mean surface distance: along the rows of the two vertical edges 3 apart, elsewhere 0
    assert 0 < mm["msd"] < mm["hd95"]


def test_identical_absent_and_missing_classes():
    pred, ref = squares()
    m = case_metrics(pred, ref, {1: "box", 2: "absent"})
    assert m["box"] == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "msd": 0.0}
    assert m["absent"]["dice"] == 1.0  # absent from both
    only_ref = case_metrics(np.zeros_like(ref), ref, {1: "box"})["box"]
    assert only_ref["dice"] == 0.0 and math.isinf(only_ref["hd95"])


def test_report_means_leave_out_infinite_distances(tmp_path):
    r = EvaluationReport(rows=[
        {"case": "a", "class": "box", "dice": 1.0, "iou": 1.0, "hd95": 2.0, "msd": 1.0},
        {"case": "b", "class": "box", "dice": 0.0, "iou": 0.0, "hd95": math.inf, "msd": math.inf},
    ])
    s = r.summary()["box"]
    assert s["dice"] == 0.5 and s["hd95"] == 2.0 and s["cases"] == 2
    paths = write_report(r, tmp_path / "ev")
    assert paths["csv"].read_text().count("\n") == 3
    assert "box" in paths["table"].read_text() and paths["plot"].stat().st_size > 1000
