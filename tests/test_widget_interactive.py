"""The click-to-segment dock widget on a real viewer, on synthetic blobs in 2D and 3D."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _ball(shape, centre, radius, spacing) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=True))
    return d2 <= radius**2


def _blob_image(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (truth * 100.0 + rng.normal(0.0, 5.0, truth.shape)).astype(np.float32)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _require_quality(dice: float, what: str) -> None:
    """The engine's accuracy bar (Dice >= 0.9), checked last so the widget checks run first."""
    assert dice >= 0.9, (
        f"editing.interactive.segment_from_prompts reaches Dice {dice:.2f} on {what}"
    )


def _wait(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=30000)


def _interact(qtbot, widget, action) -> None:
    with qtbot.waitSignal(widget.updated, timeout=30000):
        action()
    _wait(qtbot, widget)


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def test_2d_click_negative_undo_accept(qtbot, viewer):
    from napari_cxseg.editing.interactive import segment_from_prompts
    from napari_cxseg.widgets.interactive import PREVIEW, InteractiveWidget

    truth = _ball((64, 64), (30, 30), 12, (1, 1))
    truth |= _ball((64, 64), (30, 48), 6, (1, 1))  # a lobe on the right
    image = _blob_image(truth)
    viewer.add_image(image, scale=(0.5, 0.5), name="cxr")
    w = InteractiveWidget(viewer)
    assert w.image_combo.currentText() == "cxr" and w.labels_combo.currentText() == "(new layer)"

    _interact(qtbot, w, lambda: w.add_point((30, 30), positive=True))
    first = w.mask.copy()
    assert np.array_equal(first, segment_from_prompts(image, [(30, 30)], spacing=(0.5, 0.5)))
    assert PREVIEW in viewer.layers and np.array_equal(viewer.layers[PREVIEW].data > 0, first)
    assert "s (1 interaction" in w.status.text()  # time per interaction is reported
    pts = viewer.layers["cxseg prompts"]
    assert np.allclose(pts.face_color[0], [0.1, 0.9, 0.2, 1.0])  # positive = green

    _interact(qtbot, w, lambda: w.add_point((30, 40), positive=False))
    assert not w.mask[30, 40] and w.mask.sum() < first.sum()  # the negative click carves
    assert np.allclose(pts.face_color[1], [1.0, 0.15, 0.15, 1.0])  # negative = red

    _interact(qtbot, w, w.undo_last)
    assert np.array_equal(w.mask, first) and len(pts.data) == 1

    labels = w.accept()
    assert labels is not None and labels.name == "cxr labels"
    assert np.allclose(labels.scale, (0.5, 0.5))
    assert np.array_equal(labels.data == 1, first)
    assert PREVIEW not in viewer.layers and len(pts.data) == 0
    labels.undo()  # Accept is ONE undo step
    assert not np.asarray(labels.data).any()
    _require_quality(_dice(first, truth), "a 2D disk, one click")


def test_3d_one_click_gives_the_blob_and_accept_is_one_step(qtbot, viewer):
    from napari_cxseg.editing.interactive import segment_from_prompts
    from napari_cxseg.widgets.interactive import InteractiveWidget

    spacing = (2.0, 1.0, 1.0)
    truth = _ball((24, 48, 48), (12, 24, 24), 14, spacing)
    image = _blob_image(truth, 1)
    viewer.add_image(image, scale=spacing, name="ct")
    existing = np.zeros(truth.shape, np.uint8)
    existing[:3, :5, :5] = 2
    labels = viewer.add_labels(existing, scale=spacing, name="seg")
    w = InteractiveWidget(viewer)
    w.labels_combo.setCurrentText("seg")
    w.class_spin.setValue(1)

    _interact(qtbot, w, lambda: w.add_point((12, 24, 24), positive=True))  # one click, one slice
    dice = _dice(w.mask, truth)
    assert np.array_equal(w.mask, segment_from_prompts(image, [(12, 24, 24)], spacing=spacing))
    assert w.mask[8].any() and w.mask[16].any()  # the 3D structure, beyond the clicked slice

    before = np.array(labels.data)
    mask = w.mask.copy()
    assert w.accept() is labels
    assert np.array_equal(np.asarray(labels.data) == 1, mask & (before == 0))
    assert (labels.data[:3, :5, :5] == 2).all()
    labels.undo()
    assert np.array_equal(labels.data, before)
    _require_quality(dice, "a 3D ball on a 2 x 1 x 1 mm grid, one click on one slice")


def test_start_from_existing_mask_and_shift_click(qtbot, viewer):
    from napari.utils._test_utils import read_only_mouse_event
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    from napari_cxseg.widgets.interactive import InteractiveWidget

    truth = _ball((64, 64), (32, 32), 14, (1, 1))
    viewer.add_image(_blob_image(truth, 2), name="img")
    start = np.zeros((64, 64), np.uint8)
    start[truth] = 3
    labels = viewer.add_labels(start, name="model output")
    labels.selected_label = 3
    w = InteractiveWidget(viewer)
    w.labels_combo.setCurrentText("model output")
    assert w.class_spin.value() == 3

    _interact(qtbot, w, w.start_from_existing)
    assert np.array_equal(w.mask, truth)

    w.activate_points()
    pts = viewer.layers["cxseg prompts"]
    assert viewer.layers.selection.active is pts
    for kind in ("mouse_press", "mouse_release"):  # Shift+click: a negative prompt
        event = read_only_mouse_event(type=kind, position=(32, 44), modifiers=["Shift"])
        with (
            qtbot.waitSignal(w.updated, timeout=30000) if kind == "mouse_release" else nullcontext()
        ):
            (mouse_press_callbacks if kind == "mouse_press" else mouse_release_callbacks)(
                pts, event
            )
    _wait(qtbot, w)
    assert list(pts.features["positive"]) == [False]
    assert not w.mask[32, 44] and w.mask[32, 24]

    before = np.array(labels.data)
    w.accept()
    assert labels.data[32, 44] == 0 and labels.data[32, 24] == 3  # refined: carved voxels left
    labels.undo()
    assert np.array_equal(labels.data, before)
