"""The Correct dock widget on a real viewer: every effect is one undoable step."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

SPACING = (2.0, 1.0, 1.0)


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def _widget(viewer):
    from napari_cxseg.widgets.correct import CorrectWidget

    return CorrectWidget(viewer)


def _apply(qtbot, widget, start) -> None:
    """Start an effect and wait until it was written to the layer and the runner is free."""
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=20000)
    with qtbot.waitSignal(widget.applied, timeout=20000):
        assert start() is not False
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=20000)


def _check_undo(layer, before: np.ndarray) -> None:
    layer.undo()
    assert np.array_equal(np.asarray(layer.data), before)


def _ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=True))
    return d2 <= radius**2


def test_fill_between_slices_follows_the_view_and_undoes(qtbot, viewer):
    from napari_cxseg.editing.interpolate import interpolate_slices

    data = np.zeros((10, 24, 24), np.uint8)
    data[2][_ball((24, 24), (12, 12), 6, (1, 1))] = 1
    data[7][_ball((24, 24), (12, 12), 3, (1, 1))] = 1
    layer = viewer.add_labels(data, scale=SPACING, name="drawn")
    layer.selected_label = 1
    w = _widget(viewer)
    assert w.labels_combo.currentText() == "drawn"
    assert w.fill_panel.axis() == 0  # the 2D view slices through axis 0
    before = np.array(layer.data)
    _apply(qtbot, w, w.fill_panel.apply)
    expected = interpolate_slices(before, 1, axis=0, spacing=np.array(SPACING))
    assert np.array_equal(layer.data, expected)
    assert all((layer.data[k] == 1).any() for k in range(2, 8))
    _check_undo(layer, before)


def test_grow_from_seeds_live_preview_then_apply(qtbot, viewer):
    from napari_cxseg.widgets._correct_image_tools import GROW_PREVIEW

    image = np.zeros((6, 32, 32), np.float32)
    image[:, 8:24, 8:24] = 100.0
    image += np.random.default_rng(0).normal(0, 2, image.shape).astype(np.float32)
    viewer.add_image(image, scale=SPACING, name="ct")
    seeds = np.zeros(image.shape, np.uint8)
    seeds[3, 15:17, 15:17] = 1
    seeds[3, 1:3, 1:3] = 2
    layer = viewer.add_labels(seeds, scale=SPACING, name="seeds")
    layer.selected_label = 1
    w = _widget(viewer)
    assert w.image_combo.currentText() == "ct"
    panel = w.grow_panel
    panel.roi.setCurrentIndex(1)  # whole image
    panel.live.setChecked(True)
    qtbot.waitUntil(lambda: GROW_PREVIEW in viewer.layers, timeout=15000)
    preview = np.asarray(viewer.layers[GROW_PREVIEW].data)
    assert (preview[:, 10:22, 10:22] == 1).all() and (preview[:, :6] == 2).all()
    assert np.array_equal(layer.data, seeds)  # a preview never touches the layer
    before = np.array(layer.data)
    _apply(qtbot, w, panel.apply)
    assert (layer.data[:, 10:22, 10:22] == 1).all() and (layer.data[:, :6] == 2).all()
    assert np.array_equal(layer.data, preview)
    qtbot.waitUntil(lambda: GROW_PREVIEW not in viewer.layers)
    _check_undo(layer, before)


def test_grow_without_image_reports_and_changes_nothing(qtbot, viewer):
    seeds = np.zeros((4, 8, 8), np.uint8)
    seeds[0, 0, 0], seeds[3, 7, 7] = 1, 2
    layer = viewer.add_labels(seeds, name="seeds only")
    layer.selected_label = 1
    w = _widget(viewer)
    with qtbot.waitSignal(w.failed) as blocker:
        assert w.grow_panel.apply() is False
    assert "seeds only" in blocker.args[0] and "Image" in blocker.args[0]
    assert np.array_equal(layer.data, seeds)


def test_islands_keep_remove_split(qtbot, viewer):
    data = np.zeros((6, 20, 20), np.uint8)
    data[1:5, 2:10, 2:10] = 1  # 4*8*8 = 256 voxels = 512 mm³
    data[2, 15:17, 15:17] = 1  # 4 voxels = 8 mm³
    data[4, 15:18, 2:5] = 1  # 9 voxels = 18 mm³
    data[0, 18:20, 18:20] = 2
    layer = viewer.add_labels(data, scale=SPACING, name="islands")
    layer.selected_label = 1
    w = _widget(viewer)
    panel = w.islands_panel
    assert panel.min_size.suffix() == " mm³"

    before = np.array(layer.data)
    _apply(qtbot, w, panel.apply)  # keep largest
    expected = before.copy()
    expected[2, 15:17, 15:17] = 0
    expected[4, 15:18, 2:5] = 0
    assert np.array_equal(layer.data, expected)
    _check_undo(layer, before)

    panel.op_combo.setCurrentIndex(1)
    panel.min_size.setValue(10.0)  # mm³: removes the 8 mm³ island, keeps the 18 mm³ one
    _apply(qtbot, w, panel.apply)
    expected = before.copy()
    expected[2, 15:17, 15:17] = 0
    assert np.array_equal(layer.data, expected)
    _check_undo(layer, before)

    panel.op_combo.setCurrentIndex(2)
    _apply(qtbot, w, panel.apply)
    assert set(np.unique(layer.data)) == {0, 1, 2, 3, 4}
    assert (layer.data[4, 15:18, 2:5] == 3).all() and (layer.data[2, 15:17, 15:17] == 4).all()
    names = dict(zip(layer.features["index"], layer.features["name"], strict=True))
    assert names[3].endswith("(2)") and names[4].endswith("(3)")
    _check_undo(layer, before)


def test_smoothing_margin_hollow_match_the_engine(qtbot, viewer):
    from napari_cxseg.editing.margin import hollow, margin
    from napari_cxseg.editing.smoothing import smooth

    data = np.zeros((12, 24, 24), np.uint8)
    data[_ball(data.shape, (6, 12, 12), 8, SPACING)] = 1
    data[6, 12, 2:6] = 1  # a spur
    data[0:2, 0:4, 0:4] = 2
    layer = viewer.add_labels(data, scale=SPACING, name="organ")
    layer.selected_label = 1
    w = _widget(viewer)
    sp = np.array(SPACING)
    before = np.array(layer.data)

    w.smoothing_panel.method_combo.setCurrentText("opening")
    w.smoothing_panel.kernel.setValue(3.0)
    _apply(qtbot, w, w.smoothing_panel.apply)
    assert np.array_equal(layer.data, smooth(before, 1, "opening", 3.0, sp))
    assert layer.data[6, 12, 2] == 0
    _check_undo(layer, before)

    w.margin_panel.margin_mm.setValue(-2.0)
    _apply(qtbot, w, w.margin_panel.apply)
    assert np.array_equal(layer.data, margin(before, 1, -2.0, sp))
    _check_undo(layer, before)

    w.margin_panel.thickness.setValue(2.0)
    _apply(qtbot, w, w.margin_panel.apply_hollow)
    expected = hollow(before, 1, 2.0, sp, inside=True)
    assert np.array_equal(layer.data, expected)
    assert layer.data[6, 12, 12] == 0 and (layer.data == 1).sum() < (before == 1).sum()
    _check_undo(layer, before)


def test_logical_with_another_layer(qtbot, viewer):
    data = np.zeros((4, 10, 10), np.uint8)
    data[:, 2:8, 2:8] = 1
    other = np.zeros_like(data)
    other[:, 5:10, 5:10] = 3
    viewer.add_labels(other, name="vessels")
    layer = viewer.add_labels(data, name="liver")
    layer.selected_label = 1
    w = _widget(viewer)
    assert w.labels_combo.currentText() == "liver"
    panel = w.logical_panel
    panel.op_combo.setCurrentText("subtract")
    panel.source_combo.setCurrentText("vessels")
    panel.other_class.setValue(3)
    before = np.array(layer.data)
    _apply(qtbot, w, panel.apply)
    expected = before.copy()
    expected[:, 5:8, 5:8] = 0
    assert np.array_equal(layer.data, expected)
    _check_undo(layer, before)


def test_threshold_fill_and_clip_in_current_slice(qtbot, viewer):
    from napari_cxseg.widgets._correct_image_tools import THRESHOLD_PREVIEW

    image = np.tile(np.arange(16, dtype=np.float32), (5, 16, 1))  # intensity = column
    viewer.add_image(image, name="ramp")
    data = np.zeros((5, 16, 16), np.uint8)
    data[:, :, 0:4] = 2
    layer = viewer.add_labels(data, name="lab")
    layer.selected_label = 1
    viewer.dims.set_current_step(0, 2)
    w = _widget(viewer)
    panel = w.threshold_panel
    assert panel.range_slider.minimum() == 0.0 and panel.range_slider.maximum() == 15.0
    panel.set_range(2.0, 9.0)
    qtbot.waitUntil(lambda: THRESHOLD_PREVIEW in viewer.layers, timeout=10000)
    prev = np.asarray(viewer.layers[THRESHOLD_PREVIEW].data)
    assert (prev[2, :, 2:10] == 1).all() and prev.sum() == 16 * 8
    before = np.array(layer.data)
    _apply(qtbot, w, panel.apply)
    expected = before.copy()
    expected[2, :, 4:10] = 1  # columns 2-3 belong to class 2 and are kept
    assert np.array_equal(layer.data, expected)

    panel.set_range(6.0, 15.0)
    _apply(qtbot, w, panel.apply_clip)
    expected[2, :, 4:6] = 0
    assert np.array_equal(layer.data, expected)
    layer.undo()
    _check_undo(layer, before)


def test_classes_table_rename_recolour_merge_delete(qtbot, viewer):
    data = np.zeros((4, 10, 10), np.uint8)
    data[:2, :5, :5] = 1  # 50 voxels of 2 mm³ = 0.1 mL
    data[2:, 5:, 5:] = 2
    layer = viewer.add_labels(data, scale=SPACING, name="lungs")
    layer.selected_label = 1
    w = _widget(viewer)
    panel = w.classes_panel
    with qtbot.waitSignal(panel.refreshed, timeout=10000):
        panel.refresh()
    assert panel.table.rowCount() == 2
    assert panel.table.item(0, 3).text() == "50" and panel.table.item(0, 4).text() == "0.100 mL"

    colour_before = layer.colormap.map(np.array([2]))[0].copy()
    panel.table.item(0, 1).setText("right lung")  # an inline edit renames
    names = dict(zip(layer.features["index"], layer.features["name"], strict=True))
    assert names[1] == "right lung"
    assert "name: right lung" in layer.get_status((0, 0, 0))["coordinates"]
    assert np.allclose(layer.colormap.map(np.array([2]))[0], colour_before)  # others keep colour
    assert w.class_combo.currentText() == "1: right lung"

    panel.recolour(1, "#00ff00")
    assert np.allclose(layer.colormap.map(np.array([1]))[0], [0, 1, 0, 1])
    cid = panel.add_class("nodule")
    assert cid == 3 and layer.selected_label == 3
    assert "nodule" in list(layer.features["name"])

    before = np.array(layer.data)
    layer.selected_label = 1
    _apply(qtbot, w, lambda: panel.merge([2], 1))
    assert set(np.unique(layer.data)) == {0, 1}
    assert 2 not in list(layer.features["index"])
    _check_undo(layer, before)
    with qtbot.waitSignal(panel.refreshed, timeout=10000):
        panel.refresh()  # the undo brought class 2's voxels back: its name comes back too
    assert 2 in list(layer.features["index"])

    _apply(qtbot, w, lambda: panel.delete([1]))
    assert set(np.unique(layer.data)) == {0, 2}
    _check_undo(layer, before)
    with qtbot.waitSignal(panel.refreshed, timeout=10000):
        panel.refresh()
    names = dict(zip(layer.features["index"], layer.features["name"], strict=True))
    assert names[1] == "right lung" and names[3] == "nodule"
    assert panel.table.rowCount() == 3  # the empty "nodule" class is listed with 0 voxels
    assert panel.table.item(2, 3).text() == "0"


def test_2d_remove_small_in_mm2_and_margin(qtbot, viewer):
    from napari_cxseg.editing.margin import margin

    data = np.zeros((30, 30), np.uint8)
    data[5:15, 5:15] = 1  # 100 px of 0.25 mm² = 25 mm²
    data[25:27, 25:27] = 1  # 4 px = 1 mm²
    layer = viewer.add_labels(data, scale=(0.5, 0.5), name="cxr")
    layer.selected_label = 1
    w = _widget(viewer)
    assert w.islands_panel.min_size.suffix() == " mm²"
    w.islands_panel.op_combo.setCurrentIndex(1)
    w.islands_panel.min_size.setValue(2.0)
    before = np.array(layer.data)
    _apply(qtbot, w, w.islands_panel.apply)
    assert layer.data[25:27, 25:27].sum() == 0 and layer.data[5:15, 5:15].all()
    _check_undo(layer, before)
    with pytest.raises(Exception, match="3D"):
        w.fill_panel.axis()
    w.margin_panel.margin_mm.setValue(1.0)
    _apply(qtbot, w, w.margin_panel.apply)
    assert np.array_equal(layer.data, margin(before, 1, 1.0, (0.5, 0.5)))
    _check_undo(layer, before)
