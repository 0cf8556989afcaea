"""Every Correct-widget tool on the bundled sample CT and CXR: it changes the labels and one
Ctrl+Z (layer.undo) restores them exactly."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def _open(viewer, key):
    from napari_cxseg.widgets.correct import CorrectWidget

    layers = viewer.open_sample("napari-cxseg", key)
    labels = next(ly for ly in layers if ly._type_string == "labels")
    image = next(ly for ly in layers if ly._type_string == "image")
    w = CorrectWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.labels_combo.setCurrentText(labels.name)
    w.image_combo.setCurrentText(image.name)
    return w, labels, image


def _class_id(labels, name):
    feats = labels.features
    return int(feats["index"][list(feats["name"]).index(name)])


def _apply(qtbot, w, start, tool):
    outcome: list = []

    def ok(*args):
        outcome.append(None)

    def failed(message):
        outcome.append(message)

    w.applied.connect(ok)
    w.failed.connect(failed)
    try:
        assert start() is not False, f"{tool}: {w.status.text()}"
        qtbot.waitUntil(lambda: bool(outcome), timeout=120_000)
        qtbot.waitUntil(lambda: not w.runner.busy, timeout=30_000)
    finally:
        w.applied.disconnect(ok)
        w.failed.disconnect(failed)
    assert outcome[0] is None, f"{tool} failed: {outcome[0]}"


def _apply_and_undo(qtbot, w, labels, start, tool):
    before = np.array(labels.data)
    _apply(qtbot, w, start, tool)
    assert not np.array_equal(labels.data, before), f"{tool} changed nothing"
    labels.undo()
    assert np.array_equal(labels.data, before), f"undo after {tool} did not restore the labels"


def _run_common_tools(qtbot, w, labels, target, other, margin_mm):
    from napari_cxseg.widgets._correct_tools import ISLAND_OPS, LOGICAL_OPS, SMOOTHING_METHODS

    labels.selected_label = target
    islands = w.islands_panel
    islands.min_size.setValue(1e6)  # everything of the class is smaller than that
    for op in ISLAND_OPS:
        islands.op_combo.setCurrentText(op)
        if op == "Keep largest island":
            # give the class a stray island so that keeping the largest has work to do
            far = tuple(np.array(labels.data.shape) - 2)
            labels.data_setitem(tuple(np.array([c]) for c in far), target)
        if op == "Split islands into classes":
            far = tuple(np.array(labels.data.shape) - 2)
            labels.data_setitem(tuple(np.array([c]) for c in far), target)
        _apply_and_undo(qtbot, w, labels, islands.apply, op)
    for method in SMOOTHING_METHODS:
        w.smoothing_panel.method_combo.setCurrentText(method)
        w.smoothing_panel.kernel.setValue(5.0)
        _apply_and_undo(qtbot, w, labels, w.smoothing_panel.apply, f"smoothing {method}")
    w.margin_panel.margin_mm.setValue(margin_mm)
    _apply_and_undo(qtbot, w, labels, w.margin_panel.apply, "margin grow")
    w.margin_panel.margin_mm.setValue(-margin_mm)
    _apply_and_undo(qtbot, w, labels, w.margin_panel.apply, "margin shrink")
    w.margin_panel.thickness.setValue(margin_mm)
    _apply_and_undo(qtbot, w, labels, w.margin_panel.apply_hollow, "hollow")
    # logical operators against another Labels layer on the same grid: a shifted copy
    shifted = np.roll(np.asarray(labels.data), 6, axis=-1)
    labels.editable = True
    other_layer = labels.__class__(shifted, name="other", scale=labels.scale, translate=labels.translate)
    w.viewer.add_layer(other_layer)
    w.viewer.layers.selection.active = labels
    logical = w.logical_panel
    logical._refresh_sources()
    logical.source_combo.setCurrentText("other")
    logical.other_class.setValue(target)
    logical.overwrite.setChecked(True)
    for op in LOGICAL_OPS:
        logical.op_combo.setCurrentText(op)
        _apply_and_undo(qtbot, w, labels, logical.apply, f"logical {op} with another layer")
    w.viewer.layers.remove(other_layer)
    # and between two classes of one layer
    logical._refresh_sources()
    logical.source_combo.setCurrentIndex(0)
    logical.other_class.setValue(other)
    logical.op_combo.setCurrentText("union")
    _apply_and_undo(qtbot, w, labels, logical.apply, "logical union of two classes")
    thr = w.threshold_panel
    thr.region.setCurrentText("whole image")
    lo, hi = thr.bounds()
    thr.set_range(lo + 0.4 * (hi - lo), lo + 0.6 * (hi - lo))
    _apply_and_undo(qtbot, w, labels, thr.apply, "threshold fill")
    _apply_and_undo(qtbot, w, labels, thr.apply_clip, "threshold clip")


def test_every_tool_on_sample_ct(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w, labels, _ = _open(viewer, "chest_ct")
    spleen, liver = _class_id(labels, "spleen"), _class_id(labels, "liver")
    _run_common_tools(qtbot, w, labels, spleen, liver, margin_mm=4.0)
    # grow from seeds: two eroded classes as seeds over the CT
    from scipy import ndimage

    seeds = np.zeros(labels.data.shape, labels.data.dtype)
    seeds[ndimage.binary_erosion(np.asarray(labels.data) == spleen, iterations=2)] = spleen
    seeds[ndimage.binary_erosion(np.asarray(labels.data) == liver, iterations=3)] = liver
    assert set(np.unique(seeds)) == {0, spleen, liver}, (np.unique(labels.data), spleen, liver)
    # fill between slices: keep every 3rd slice of the spleen, then interpolate
    labels.selected_label = spleen
    zs = np.nonzero((labels.data == spleen).any(axis=(1, 2)))[0]
    drop = np.zeros(labels.data.shape, bool)
    for z in zs:
        if (z - zs[0]) % 3:
            drop[z] = labels.data[z] == spleen
    labels.data_setitem(np.nonzero(drop), 0)
    _apply_and_undo(qtbot, w, labels, w.fill_panel.apply, "fill between slices")
    seeded = viewer.add_labels(seeds, name="seeds", **{k: getattr(labels, k) for k in ("scale", "translate")})
    w.labels_combo.setCurrentText("seeds")
    _apply_and_undo(qtbot, w, seeded, w.grow_panel.apply, "grow from seeds")


def test_every_tool_on_sample_cxr(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w, labels, _ = _open(viewer, "chest_xray")
    right, left = _class_id(labels, "right lung"), _class_id(labels, "left lung")
    _run_common_tools(qtbot, w, labels, right, left, margin_mm=6.0)
    from scipy import ndimage

    seeds = np.zeros(labels.data.shape, labels.data.dtype)
    for k in (right, left):
        seeds[ndimage.binary_erosion(np.asarray(labels.data) == k, iterations=8)] = k
    seeded = viewer.add_labels(seeds, name="seeds", **{k: getattr(labels, k) for k in ("scale", "translate")})
    w.labels_combo.setCurrentText("seeds")
    _apply_and_undo(qtbot, w, seeded, w.grow_panel.apply, "grow from seeds")
