"""Regions widget with a real viewer: regions from a Labels layer and from a model, CTR lines,
box comparison against a reference scene graph (boxes as drawn), error paths."""

from __future__ import annotations

import numpy as np
import pytest

from regions_data import synthetic_structures

pytestmark = pytest.mark.gui


def _widget(viewer):
    from napari_cxseg.widgets.regions import RegionsWidget

    w = RegionsWidget(viewer)
    viewer.window.add_dock_widget(w)
    return w


def _structures_layer(viewer):
    s = synthetic_structures()
    arr = np.zeros((200, 200), np.uint8)
    for k, name in ((1, "right lung"), (2, "left lung"), (3, "heart")):
        arr[s[name]] = k
    img = viewer.add_image(np.where(arr > 0, 0.2, 0.8).astype(np.float32), name="film")
    lab = viewer.add_labels(arr, name="anatomy",
                            features={"index": [0, 1, 2, 3], "name": ["background", "right lung", "left lung", "heart"]})
    return img, lab


def _run(qtbot, w):
    with qtbot.waitSignal(w.finished_layers, timeout=120_000) as sig:
        w.run()
    return sig.args


def test_regions_from_a_labels_layer_with_ctr_and_comparison(make_napari_viewer, qtbot, tmp_path):
    from napari_cxseg.anatomy.imagenome import write_scene_graph

    viewer = make_napari_viewer()
    _structures_layer(viewer)
    w = _widget(viewer)
    w.source_combo.setCurrentText("anatomy")
    assert not w.model_combo.isEnabled()
    boxes, ctr = _run(qtbot, w)
    names = list(boxes.features["bbox_name"])
    assert "cardiac silhouette" in names and "right lung" in names and "svc" not in names
    lung = np.asarray(boxes.data[names.index("right lung")])
    assert np.allclose(lung.min(axis=0), [19.5, 19.5]) and np.allclose(lung.max(axis=0), [179.5, 89.5])
    assert ctr is not None and len(ctr.data) == 2
    assert np.allclose(ctr.data[0], [[129.5, 84.5], [129.5, 134.5]])  # heart line, columns 85-134
    assert "0.312" in w.ctr_label.text()
    assert w.regions_combo.currentText() == boxes.name
    # the boxes save through the scene-graph writer and come back within a pixel
    from napari_cxseg._writer import write_scene_graph_layer
    from napari_cxseg.anatomy.imagenome import read_scene_graph

    data, state, _ = boxes.as_layer_data_tuple()
    saved = tmp_path / "saved" / "film_SceneGraph.json"
    saved.parent.mkdir()
    write_scene_graph_layer(str(saved), data, state)
    back = read_scene_graph(saved)
    assert np.allclose(back.object("right lung").original_box, (20, 20, 90, 180), atol=1.0)
    assert np.allclose(back.object("cardiac silhouette").original_box, (85, 100, 135, 160), atol=1.0)
    # a reference with the right lung box half as wide
    ref = w.result.scene_graph
    import copy

    ref = copy.deepcopy(ref)
    ref.object("right lung").set_boxes((20, 20, 55, 180))
    path = tmp_path / "film_SceneGraph.json"
    write_scene_graph(ref, path)
    w.ref_edit.setText(str(path))
    with qtbot.waitSignal(w.compared, timeout=30_000) as sig:
        w.compare()
    rows = {r["bbox_name"]: r for r in sig.args[0].rows}
    assert rows["right lung"]["iou"] == pytest.approx(0.5)
    assert rows["left lung"]["iou"] == pytest.approx(1.0)
    assert w.table.rowCount() == len(sig.args[0].rows)
    # the comparison reads the boxes as drawn now
    data = [np.asarray(d) for d in boxes.data]
    i = names.index("left lung")
    data[i] = data[i] + [0.0, 35.0]
    boxes.data = data
    with qtbot.waitSignal(w.compared, timeout=30_000) as sig:
        w.compare()
    rows = {r["bbox_name"]: r for r in sig.args[0].rows}
    assert rows["left lung"]["iou"] == pytest.approx(35 / 105)
    qtbot.waitUntil(w.compare_btn.isEnabled, timeout=10_000)


def test_regions_with_the_lung_model_on_the_sample_radiograph(make_napari_viewer, qtbot):
    from napari_cxseg._sample_data import sample_cxr

    viewer = make_napari_viewer()
    for data, kw, kind in sample_cxr():
        getattr(viewer, f"add_{kind}")(data, **kw)
    w = _widget(viewer)
    assert w.image_combo.currentText() == "chest radiograph (DRR)"
    w.source_combo.setCurrentText("run the models")
    w.model_combo.setCurrentText("cxr-lungs")
    w.device_combo.setCurrentText("cpu")
    boxes, ctr = _run(qtbot, w)
    names = list(boxes.features["bbox_name"])
    assert {"right lung", "left lung", "right upper lung zone", "left lower lung zone"} <= set(names)
    assert ctr is None and "not computed" in w.ctr_label.text()
    right = np.asarray(boxes.data[names.index("right lung")])
    left = np.asarray(boxes.data[names.index("left lung")])
    assert right[:, 1].mean() < left[:, 1].mean()  # PA: the patient's right on the image's left
    assert "Left out" in w.status.text() and "cardiac silhouette" in w.status.text()
    seg = viewer.layers["chest radiograph (DRR) [cxr-lungs]"]  # the segmentation, to correct and recompute from
    assert seg.data.shape == viewer.layers["chest radiograph (DRR)"].data.shape
    assert "chest radiograph (DRR) [cxr-lungs]" in [w.source_combo.itemText(i) for i in range(w.source_combo.count())]


def test_error_paths_tell_the_user(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w = _widget(viewer)
    with qtbot.waitSignal(w.failed, timeout=5_000) as sig:
        w.run()
    assert "Choose a radiograph" in sig.args[0]
    with qtbot.waitSignal(w.failed, timeout=5_000) as sig:
        w.compare()
    assert "Compute or open region boxes first" in sig.args[0]
    _structures_layer(viewer)
    viewer.add_labels(np.zeros((200, 200), np.uint8), name="empty")
    w.source_combo.setCurrentText("empty")
    with qtbot.waitSignal(w.failed, timeout=30_000) as sig:
        w.run()
    assert "has no classes named right lung and left lung" in sig.args[0]
    assert not any(ly.name.endswith("regions") for ly in viewer.layers)
