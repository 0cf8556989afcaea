"""Findings panel and scene-graph layers in a real viewer."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from napari_cxseg.anatomy import REGION_NAMES, read_scene_graph
from napari_cxseg.images import CxsegError
from scene_graph_factory import (
    boxes_on_lungs,
    pixel_boxes,
    scene_graph_dict,
    write_scene_graph_json,
)

SAMPLE = Path(__file__).parents[1] / "src" / "napari_cxseg" / "sample_data"
SCALE = 4  # the scene graph's original image is 4x the sample film


def _lung_boxes() -> tuple[tuple[int, ...], tuple[int, ...]]:
    mask = np.asarray(PILImage.open(SAMPLE / "chest_xray_lungs.png"))
    out = []
    for value in (1, 2):  # right lung, left lung (sample_data labels sidecar)
        r, c = np.nonzero(mask == value)
        out.append((c.min() * SCALE, r.min() * SCALE, (c.max() + 1) * SCALE, (r.max() + 1) * SCALE))
    return out[0], out[1]


@pytest.fixture
def exam(tmp_path):
    """The sample film as ``cxr1.png`` beside a scene graph of its 4x original."""
    film = PILImage.open(SAMPLE / "chest_xray.png")
    rows, cols = film.height * SCALE, film.width * SCALE
    boxes = boxes_on_lungs(*_lung_boxes(), (rows, cols))
    shutil.copy(SAMPLE / "chest_xray.png", tmp_path / "cxr1.png")
    path = write_scene_graph_json(tmp_path, scene_graph_dict("cxr1", boxes, (rows, cols), prior_id="cxr0"))
    return path, boxes


def _widget(viewer):
    from napari_cxseg.widgets.findings import FindingsWidget

    w = FindingsWidget(viewer)
    viewer.window.add_dock_widget(w, name="Findings")
    return w


def test_scene_graph_over_its_film_with_findings_panel(make_napari_viewer, qtbot, exam, tmp_path):
    path, boxes = exam
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-cxseg")
    image, shapes = viewer.layers
    assert image.name == "cxr1" and shapes.name == "cxr1 regions"
    assert len(shapes.data) == 29 and list(shapes.features["bbox_name"]) == list(REGION_NAMES)
    # the right lung box is on the screen's left, around the right lung of the sample mask
    i = list(shapes.features["bbox_name"]).index("right lung")
    (r0, c0), (r1, c1) = shapes.data[i].min(axis=0), shapes.data[i].max(axis=0)
    x1, y1, x2, y2 = (v / SCALE for v in boxes["right lung"])
    np.testing.assert_allclose([r0, c0, r1, c1], [y1 - 0.5, x1 - 0.5, y2 - 0.5, x2 - 0.5], atol=0.6)
    colours = {n: tuple(np.round(c[:3], 2)) for n, c in zip(shapes.features["bbox_name"], shapes.edge_color, strict=True)}
    assert colours["cardiac silhouette"] != colours["left lung"] != colours["spine"]

    w = _widget(viewer)
    assert w.layer is shapes and w.tree.topLevelItemCount() == 29
    # filter by category and finding
    w.category_filter.setCurrentText("anatomicalfinding")
    w.finding_filter.setCurrentText("pleural effusion")
    assert w.visible_regions() == ["right costophrenic angle"]
    w.category_filter.setCurrentText("(all)")
    w.finding_filter.setCurrentText("(all)")
    w.abnormal_only.setChecked(True)
    assert set(w.visible_regions()) == {"right lower lung zone", "right costophrenic angle", "cardiac silhouette"}
    w.abnormal_only.setChecked(False)
    # row -> box and box -> row
    w.select_rows({"cardiac silhouette"})
    assert shapes.selected_data == {list(shapes.features["bbox_name"]).index("cardiac silhouette")}
    shapes.selected_data = {i}
    assert w.selected_rows() == {"right lung"}

    # a screenshot to look at (kept when CXSEG_SCREENSHOT_DIR names a folder)
    viewer.window._qt_window.resize(1800, 1050)
    w.setMaximumWidth(640)
    w.select_rows({"right lower lung zone"})
    viewer.reset_view()
    qtbot.wait(50)
    shot = tmp_path / "scene_graph_findings.png"
    viewer.screenshot(str(shot), canvas_only=False)
    assert shot.stat().st_size > 10_000
    if os.environ.get("CXSEG_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["CXSEG_SCREENSHOT_DIR"]) / shot.name)


def test_attribute_edits_are_saved_with_the_graph(make_napari_viewer, exam, tmp_path):
    path, _ = exam
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-cxseg")
    shapes = viewer.layers[-1]
    w = _widget(viewer)
    # the left lung was normal: add a present pneumothorax, turn off the right base opacity
    w.add_attribute("left lung", "anatomicalfinding", "pneumothorax", True, phrase=0)
    names = list(shapes.features["bbox_name"])
    assert bool(shapes.features["abnormal"][names.index("left lung")])
    root = next(w.tree.topLevelItem(k) for k in range(29) if w.tree.topLevelItem(k).text(0) == "right lower lung zone")
    leaf = root.child(0).child(0)
    assert (leaf.text(1), leaf.text(3)) == ("anatomicalfinding", "lung opacity")
    from qtpy.QtCore import Qt

    leaf.setCheckState(2, Qt.CheckState.Unchecked)  # edits in place (no rebuild under Qt's signal)
    assert leaf.text(2) == "no" and root.text(1) == "abnormal"  # pneumonia is still there
    # a new box named in the panel
    shapes.add_rectangles(np.array([[10.0, 10.0], [50.0, 60.0]]))
    shapes.selected_data = {29}
    w.name_combo.setCurrentText("abdomen")
    w._name_box()  # two boxes named abdomen now: the writer refuses
    out = tmp_path / "out" / "cxr1_SceneGraph.json"
    out.parent.mkdir()
    with pytest.raises(CxsegError, match="more than one box named abdomen"):
        _save(shapes, out)
    shapes.selected_data = {29}
    shapes.remove_selected()
    viewer.layers.selection.active = shapes
    # napari's own save path picks the scene-graph writer for a Shapes layer and .json
    assert viewer.layers.save(str(out), selected=True, plugin="napari-cxseg") == [str(out)]
    sg = read_scene_graph(out)
    left = sg.findings("left lung").attributes[0]
    assert "anatomicalfinding|yes|pneumothorax" in [str(a) for a in left]
    assert str(sg.findings("right lower lung zone").attributes[0][0]) == "anatomicalfinding|no|lung opacity"
    assert len(sg.objects) == 29
    src = json.loads(path.read_text())
    back = json.loads(out.read_text())
    assert back["objects"] == src["objects"] and back["relationships"] == src["relationships"]
    assert back["custom_field"] == src["custom_field"]


def _save(layer, out: Path) -> list[str]:
    from napari_cxseg._writer import write_scene_graph_layer

    data, state, _ = layer.as_layer_data_tuple()
    return write_scene_graph_layer(str(out), data, state)


def test_graph_opened_alone_then_placed_on_its_film(make_napari_viewer, tmp_path):
    rows, cols = 3056, 2544
    boxes = pixel_boxes(rows, cols)
    folder = tmp_path / "graphs"
    folder.mkdir()
    path = write_scene_graph_json(folder, scene_graph_dict("solo", boxes, (rows, cols)))
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-cxseg")
    shapes = viewer.layers[-1]
    i = list(shapes.features["bbox_name"]).index("spine")
    assert shapes.data[i].min(axis=0) == pytest.approx([boxes["spine"][1] - 0.5, boxes["spine"][0] - 0.5])
    # the film (a quarter of the original) opened afterwards: the panel places the boxes on it
    film = np.random.default_rng(1).integers(0, 255, (rows // 4, cols // 4)).astype(np.uint8)
    viewer.add_image(film, name="film", scale=(0.5, 0.5))
    w = _widget(viewer)
    w.image_combo.setCurrentText("film")
    w._place()
    x1, y1, _, _ = boxes["spine"]
    assert shapes.data[i].min(axis=0) == pytest.approx([(y1 / 4 - 0.5) * 0.5, (x1 / 4 - 0.5) * 0.5], abs=0.5)
    # and a graph opened while its film is already open (same name) lands on it directly
    viewer.layers.remove(shapes)
    viewer.layers["film"].name = "solo"
    viewer.open(str(path), plugin="napari-cxseg")
    again = viewer.layers[-1]
    assert again.data[i].min(axis=0) == pytest.approx(shapes.data[i].min(axis=0), abs=0.5)
