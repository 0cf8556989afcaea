"""Tools that read an image for a Labels layer: one world-grid check, and NaN/Inf handling.

Every tool (threshold painting, grow from seeds, logical operators, statistics, click-to-segment)
refuses layers that are not on one world grid (same shape is not enough) with a notification
naming both layers and what differs; NaN/Inf in an image from any source give a warning naming
the layer and the count, and a sensible result.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

SHAPE = (4, 24, 24)


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def notes(monkeypatch):
    """Messages of napari notifications (errors and warnings) shown during the test."""
    import napari.utils.notifications as nn

    seen = {"error": [], "warning": []}
    monkeypatch.setattr(nn, "show_error", lambda msg: seen["error"].append(str(msg)))
    monkeypatch.setattr(nn, "show_warning", lambda msg: seen["warning"].append(str(msg)))
    return seen


def _square_image() -> np.ndarray:
    image = np.zeros(SHAPE, np.float32)
    image[:, 6:18, 6:18] = 100.0
    image += np.random.default_rng(0).normal(0, 2, SHAPE).astype(np.float32)
    return image


def _apply(qtbot, widget, start) -> None:
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=20000)
    with qtbot.waitSignal(widget.applied, timeout=20000):
        assert start() is not False
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=20000)


OFF_GRID = {
    "scale": ({"scale": (2.0, 1.0, 1.0)}, "voxel size"),
    "translate": ({"translate": (0.0, 5.0, 0.0)}, "origin"),
    "rotate": ({"rotate": 20.0}, "orientation"),
    "affine": ({"affine": np.array([[1, 0, 0, 0], [0, 1, 0.3, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])},
               "orientation"),
}


@pytest.mark.parametrize("what", list(OFF_GRID))
def test_threshold_and_grow_refuse_an_image_on_another_grid(qtbot, viewer, notes, what):
    from napari_cxseg.widgets.correct import CorrectWidget

    kwargs, word = OFF_GRID[what]
    viewer.add_image(_square_image(), name="ct", **kwargs)  # same shape, another grid
    seeds = np.zeros(SHAPE, np.uint8)
    seeds[2, 11:13, 11:13] = 1
    seeds[2, 1:3, 1:3] = 2
    layer = viewer.add_labels(seeds, name="seg")
    layer.selected_label = 1
    w = CorrectWidget(viewer)
    w.threshold_panel.preview.setChecked(False)
    before = np.array(layer.data)
    w.image_combo.setCurrentText("ct")
    for panel in (w.threshold_panel, w.grow_panel):
        with qtbot.waitSignal(w.failed, timeout=5000) as blocker:
            assert panel.apply() is False
        message = blocker.args[0]
        assert "'ct'" in message and "'seg'" in message and word in message
        assert "not on one world grid" in message
        assert any("'ct'" in n and word in n for n in notes["error"])
    assert np.array_equal(layer.data, before)


def test_a_grid_within_tolerance_is_one_grid(qtbot, viewer, notes):
    from napari_cxseg.widgets.correct import CorrectWidget

    viewer.add_image(_square_image(), name="ct", scale=(2.5, 0.7, 0.7), translate=(1e-7, 0, 0))
    layer = viewer.add_labels(np.zeros(SHAPE, np.uint8), name="seg", scale=(2.5, 0.7, 0.7))
    layer.selected_label = 1
    w = CorrectWidget(viewer)
    w.threshold_panel.preview.setChecked(False)
    w.threshold_panel.region.setCurrentIndex(1)  # whole image
    w.threshold_panel.set_range(50.0, 200.0)
    _apply(qtbot, w, w.threshold_panel.apply)
    assert layer.data[:, 6:18, 6:18].all() and not notes["error"]


def test_logical_operators_refuse_labels_on_another_grid(qtbot, viewer, notes):
    from napari_cxseg.widgets.correct import CorrectWidget

    viewer.add_labels(np.ones(SHAPE, np.uint8), name="other", translate=(0, 0, 3.0))
    layer = viewer.add_labels(np.zeros(SHAPE, np.uint8), name="seg")
    layer.selected_label = 1
    w = CorrectWidget(viewer)
    w.labels_combo.setCurrentText("seg")
    panel = w.logical_panel
    panel.source_combo.setCurrentText("other")
    with qtbot.waitSignal(w.failed, timeout=5000) as blocker:
        assert panel.apply() is False
    assert "'other'" in blocker.args[0] and "'seg'" in blocker.args[0]
    assert "origin" in blocker.args[0]


def test_statistics_refuse_an_image_on_another_grid(qtbot, viewer, notes):
    from napari_cxseg.widgets.statistics import StatisticsWidget

    viewer.add_image(_square_image(), name="ct", scale=(1.0, 0.5, 0.5))
    data = np.zeros(SHAPE, np.uint8)
    data[:, 6:18, 6:18] = 1
    viewer.add_labels(data, name="seg")
    w = StatisticsWidget(viewer)
    w.image_combo.setCurrentText("ct")
    w.refresh()
    assert "not on one world grid" in w.status.text() and "voxel size" in w.status.text()
    assert any("'ct'" in n and "'seg'" in n for n in notes["error"])


def test_nan_in_an_image_from_another_plugin_threshold_and_grow(qtbot, viewer, notes):
    from napari_cxseg.editing.grow import grow_from_seeds
    from napari_cxseg.widgets.correct import CorrectWidget

    image = _square_image()
    clean = image.copy()
    image[:, :, :3] = np.nan  # outside the field of view
    image[0, 0, 10] = np.inf
    viewer.add_image(image, name="ct")  # any napari image, no cxseg metadata
    seeds = np.zeros(SHAPE, np.uint8)
    seeds[:, 11:13, 11:13] = 1
    seeds[:, 20:22, 20:22] = 2
    layer = viewer.add_labels(seeds, name="seg")
    layer.selected_label = 1
    w = CorrectWidget(viewer)
    w.threshold_panel.preview.setChecked(False)
    panel = w.grow_panel
    panel.method_combo.setCurrentText("watershed")
    panel.roi.setCurrentIndex(1)  # whole image
    _apply(qtbot, w, panel.apply)
    n_bad = 3 * SHAPE[0] * SHAPE[1] + 1
    assert any("'ct'" in n and str(n_bad) in n for n in notes["warning"])
    grown = np.asarray(layer.data)
    assert (grown == 1).sum() > 100  # the square was found, not an empty or all-NaN result
    cleaned = clean.copy()
    cleaned[:, :, :3] = np.nanmin(np.where(np.isfinite(image), image, np.nan))
    cleaned[0, 0, 10] = np.nanmax(np.where(np.isfinite(image), image, np.nan))
    expected = grow_from_seeds(cleaned, seeds, method="watershed", smoothing_mm=1.0)
    assert np.array_equal(grown, np.where(expected > 0, expected, seeds))


def test_statistics_skip_nan_and_say_so(qtbot, viewer, notes):
    from napari_cxseg.widgets.statistics import StatisticsWidget

    image = np.full(SHAPE, 10.0, np.float32)
    image[0, 6:8, 6:18] = np.nan  # 24 voxels inside the class
    image[1, 0, 0] = -np.inf  # outside it
    viewer.add_image(image, name="ct")
    data = np.zeros(SHAPE, np.uint8)
    data[:, 6:18, 6:18] = 1
    viewer.add_labels(data, name="seg")
    w = StatisticsWidget(viewer)
    w.image_combo.setCurrentText("ct")
    with qtbot.waitSignal(w.refreshed, timeout=10000):
        w.refresh()
    row = w.rows[0]
    assert row["voxels"] == 4 * 144 and row["non_finite"] == 24
    assert row["mean"] == pytest.approx(10.0) and row["max"] == 10.0
    assert "24 NaN/Inf voxels" in w.status.text()
    assert any("'ct'" in n and "25 non-finite" in n and "skipped" in n for n in notes["warning"])
    qtbot.waitUntil(lambda: w.histogram.counts.sum() == 4 * 144 - 24, timeout=10000)


def test_click_to_segment_on_an_image_with_nan(qtbot, viewer, notes):
    from napari_cxseg.widgets.interactive import InteractiveWidget

    image = np.zeros((64, 64), np.float32)
    yy, xx = np.ogrid[:64, :64]
    blob = (yy - 30) ** 2 + (xx - 30) ** 2 <= 12**2
    image[blob] = 100.0
    image += np.random.default_rng(1).normal(0, 5, image.shape).astype(np.float32)
    image[:, 56:] = np.nan  # a strip without data
    viewer.add_image(image, name="cxr")
    w = InteractiveWidget(viewer)
    w.set_method("classical")
    with qtbot.waitSignal(w.updated, timeout=30000):
        w.add_point((30, 30), positive=True)
    qtbot.waitUntil(lambda: not w.busy, timeout=30000)
    assert w.mask is not None and w.mask.sum() > 0.8 * blob.sum()
    assert 2.0 * (w.mask & blob).sum() / (w.mask.sum() + blob.sum()) > 0.9
    assert any("'cxr'" in n and str(64 * 8) in n for n in notes["warning"])


def test_accepting_a_click_into_labels_on_another_grid_is_refused(qtbot, viewer, notes):
    from napari_cxseg.widgets.interactive import InteractiveWidget

    image = np.zeros((48, 48), np.float32)
    image[10:30, 10:30] = 100.0
    viewer.add_image(image, name="cxr", scale=(0.5, 0.5))
    target = viewer.add_labels(np.zeros((48, 48), np.uint8), name="lungs")  # 1 mm pixels
    w = InteractiveWidget(viewer)
    w.set_method("classical")
    w.labels_combo.setCurrentText("lungs")
    with qtbot.waitSignal(w.updated, timeout=30000):
        w.add_point((20, 20), positive=True)
    qtbot.waitUntil(lambda: not w.busy, timeout=30000)
    with qtbot.waitSignal(w.failed, timeout=5000) as blocker:
        assert w.accept() is None
    assert "'cxr'" in blocker.args[0] and "'lungs'" in blocker.args[0]
    assert "voxel size" in blocker.args[0] and not target.data.any()
