"""Sequential exams widget: two exams of one patient side by side, linked, registered."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage

from scene_graph_factory import pixel_boxes, scene_graph_dict, write_scene_graph_json

FILM = Path(__file__).parent / "data" / "kermany_cxr" / "normal_1427.png"  # CC BY 4.0, SOURCE.md
ANGLE, SHIFT = 4.0, (7.0, -5.0)  # the prior's known motion (degrees, x/y pixels)


@pytest.fixture
def exams(tmp_path):
    """Current exam ``c1`` (the real film) and prior ``p1`` (the film moved), with graphs."""
    film = np.asarray(PILImage.open(FILM))
    rows, cols = film.shape
    img = sitk.GetImageFromArray(film.astype(np.float32))
    t = sitk.Euler2DTransform([cols / 2, rows / 2], np.radians(ANGLE), SHIFT)
    prior = np.clip(sitk.GetArrayFromImage(sitk.Resample(img, img, t, sitk.sitkLinear, 0.0)), 0, 255)
    PILImage.fromarray(film).save(tmp_path / "c1.png")
    PILImage.fromarray(prior.astype(np.uint8)).save(tmp_path / "p1.png")
    boxes = pixel_boxes(rows, cols)
    prior_boxes = dict(boxes)
    x1, y1, x2, y2 = boxes["cardiac silhouette"]
    prior_boxes["cardiac silhouette"] = (x1 + 10, y1, x2 - 10, y2)  # a smaller heart before
    write_scene_graph_json(tmp_path, scene_graph_dict("c1", boxes, (rows, cols), prior_id="p1"))
    write_scene_graph_json(tmp_path, scene_graph_dict("p1", prior_boxes, (rows, cols), findings={}))
    return tmp_path, boxes, prior_boxes


def _open(viewer, folder: Path):
    from napari_cxseg.widgets.sequential import SequentialWidget

    # prior first: the widget must still tell which exam is the current one
    viewer.open(str(folder / "p1_SceneGraph.json"), plugin="napari-cxseg")
    viewer.open(str(folder / "c1_SceneGraph.json"), plugin="napari-cxseg")
    w = SequentialWidget(viewer)
    viewer.window.add_dock_widget(w, name="Sequential exams")
    return w


def _index(layer, name: str) -> int:
    return list(layer.features["bbox_name"]).index(name)


def test_linked_side_by_side_with_comparisons(make_napari_viewer, qtbot, exams):
    folder, boxes, prior_boxes = exams
    viewer = make_napari_viewer()
    w = _open(viewer, folder)
    cur, pri = viewer.layers["c1 regions"], viewer.layers["p1 regions"]
    assert w.combos["current"].currentText() == "c1 regions"
    assert w.combos["prior"].currentText() == "p1 regions"
    assert w.combos["current film"].currentText() == "c1"
    assert w.combos["prior film"].currentText() == "p1"
    # the report's comparisons are drawn on the current exam's boxes
    assert cur.features["comparison"][_index(cur, "right lower lung zone")] == "worsened"
    assert cur.features["label"][_index(cur, "right costophrenic angle")].endswith("[improved \u2193]")
    assert cur.features["comparison"][_index(cur, "left lung")] == ""
    assert set(pri.features["comparison"]) == {""}
    # selecting a region in one exam selects it in the other, both ways
    viewer.layers.selection.active = cur
    cur.selected_data = {_index(cur, "cardiac silhouette")}
    assert pri.selected_data == {_index(pri, "cardiac silhouette")}
    viewer.layers.selection.active = pri
    pri.selected_data = {_index(pri, "left lung")}
    assert cur.selected_data == {_index(cur, "left lung")}
    # side by side: prior (film + boxes) on the left, current on the right
    w.side_by_side.setChecked(True)
    assert viewer.grid.enabled and viewer.grid.stride == 2
    layers = list(viewer.layers)
    assert viewer.grid.position(layers.index(viewer.layers["p1"]), layers) == (0, 0)
    assert viewer.grid.position(layers.index(pri), layers) == (0, 0)
    assert viewer.grid.position(layers.index(viewer.layers["c1"]), layers) == (0, 1)
    assert viewer.grid.position(layers.index(cur), layers) == (0, 1)
    # the table: report and box areas per region (px^2: PNG films carry no spacing)
    row = next(r for r in w.rows if r.bbox_name == "cardiac silhouette")
    cx1, cy1, cx2, cy2 = boxes["cardiac silhouette"]
    px1, py1, px2, py2 = prior_boxes["cardiac silhouette"]
    assert row.comparison == "no change"
    assert row.area_current == pytest.approx((cx2 - cx1) * (cy2 - cy1))
    assert row.area_prior == pytest.approx((px2 - px1) * (py2 - py1))
    assert row.change_percent > 0
    assert w.table.horizontalHeaderItem(2).text() == "prior (px^2)"

    viewer.window._qt_window.resize(1600, 900)
    qtbot.wait(50)
    shot = folder / "sequential_side_by_side.png"
    viewer.screenshot(str(shot), canvas_only=False)
    if os.environ.get("CXSEG_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["CXSEG_SCREENSHOT_DIR"]) / shot.name)


def test_gold_comparisons_and_lung_areas(make_napari_viewer, exams, tmp_path):
    folder, _, _ = exams
    viewer = make_napari_viewer()
    w = _open(viewer, folder)
    gold = tmp_path / "gold_object_comparison_with_coordinates.txt"
    gold.write_text(
        "current_image_id\tbbox\tcomparison\trelationship_id\tattribute\tsentence\tsubject_id\tobject_id\n"
        "c1.dcm\tleft lung\tworsened;;no change\tr1\tlung opacity\tLeft opacity worse.\tc1_left lung\tp1_left lung\n"
        "c1.dcm\tspine\timproved\tr2\t\tother prior\tc1_spine\tp0_spine\n"
    )
    w.gold_path.setText(str(gold))
    w._load_gold()
    cur = viewer.layers["c1 regions"]
    assert cur.features["comparison"][_index(cur, "left lung")] == "worsened, no change"
    assert cur.features["comparison"][_index(cur, "spine")] == ""  # against another prior
    assert cur.features["comparison"][_index(cur, "right lower lung zone")] == "worsened"
    # lungs segmented on both films: area per side in the table
    shape = viewer.layers["c1"].data.shape
    lungs = np.zeros(shape, np.uint8)
    lungs[50:150, 40:140], lungs[50:150, 180:280] = 1, 2
    feats = {"index": [0, 1, 2], "name": ["background", "right lung", "left lung"]}
    viewer.add_labels(lungs, name="c1 lungs", features=feats)
    smaller = lungs.copy()
    smaller[140:150] = 0
    viewer.add_labels(smaller, name="p1 lungs", features=feats)
    w.combos["current lungs"].setCurrentText("c1 lungs")
    w.combos["prior lungs"].setCurrentText("p1 lungs")
    right = next(r for r in w.rows if r.bbox_name == "right lung (segmented)")
    assert (right.area_current, right.area_prior) == (100 * 100, 90 * 100)
    assert right.change_percent == pytest.approx(100 * (100 - 90) / 90)
    bad = tmp_path / "bad.txt"
    bad.write_text("a\tb\n1\t2\n")
    w.gold_path.setText(str(bad))
    w._load_gold()  # a notification naming the file; the comparisons stay
    assert cur.features["comparison"][_index(cur, "left lung")] == "worsened, no change"


def test_register_in_a_worker_and_overlay(make_napari_viewer, qtbot, exams):
    folder, _, _ = exams
    viewer = make_napari_viewer()
    w = _open(viewer, folder)
    w.register_button.click()
    qtbot.waitUntil(lambda: w.result is not None and w._worker is None, timeout=120_000)
    assert abs(abs(w.result.rotation_deg) - ANGLE) < 0.3
    registered = viewer.layers["p1 registered to c1"]
    assert registered.data.shape == viewer.layers["c1"].data.shape
    assert "p1 regions on c1" in viewer.layers
    assert "rotation" in w.status.text()
    w.overlay.setChecked(True)
    assert not viewer.grid.enabled
    assert registered.visible and viewer.layers["c1"].visible and not viewer.layers["p1"].visible
    w.overlay.setChecked(False)
    assert viewer.layers["p1"].visible


def test_segment_lungs_with_the_shipped_model(make_napari_viewer, qtbot, exams):
    folder, _, _ = exams
    viewer = make_napari_viewer()
    w = _open(viewer, folder)
    w.lungs_button.click()
    qtbot.waitUntil(lambda: w._worker is None and "c1 lungs" in viewer.layers, timeout=180_000)
    rows = {r.bbox_name: r for r in w.rows}
    for side in ("right lung (segmented)", "left lung (segmented)"):
        assert rows[side].area_current > 2000 and rows[side].area_prior > 2000  # px^2 of a child's lung
