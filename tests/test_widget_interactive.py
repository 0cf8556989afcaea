"""The click-to-segment dock widget on a real viewer, on synthetic blobs in 2D and 3D."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

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


def _classical(widget):
    """The widget on the intensity method (no model), whatever the default method is."""
    widget.set_method("classical")
    return widget


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
    w = _classical(InteractiveWidget(viewer))
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
    w = _classical(InteractiveWidget(viewer))
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
    w = _classical(InteractiveWidget(viewer))
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


# ---------------------------------------------------------------------- methods


def _fake_backends(monkeypatch, calls: list):
    """Stand-ins for the "network" and "vista3d" backends: a disk or ball around the clicks.

    They record the options they were called with; the VISTA3D one wants a ``configs`` folder
    in its bundle, as a real bundle has.
    """
    from napari_cxseg.editing import interactive as engine
    from napari_cxseg.images import CxsegError

    def ball(image, prompts, spacing, existing, roi_margin_mm, **options):
        out = np.zeros(image.shape, bool)
        for p in prompts.positive:
            out |= _ball(image.shape, p, 5, spacing)
        for p in prompts.negative:
            out &= ~_ball(image.shape, p, 3, spacing)
        return out

    def network(image, prompts, spacing, existing, roi_margin_mm, **options):
        calls.append(("network", dict(options)))
        return ball(image, prompts, spacing, existing, roi_margin_mm)

    def vista3d(image, prompts, spacing, existing, roi_margin_mm, bundle_dir=None, trust=False):
        calls.append(("vista3d", {"bundle_dir": bundle_dir, "trust": trust}))
        if not (Path(bundle_dir) / "configs").is_dir():
            raise CxsegError(f"{bundle_dir} is not a VISTA3D bundle: no configs/ folder")
        return ball(image, prompts, spacing, existing, roi_margin_mm)

    monkeypatch.setitem(engine._BACKENDS, "network", network)
    monkeypatch.setitem(engine._BACKENDS, "vista3d", vista3d)


def test_method_chooser_runs_the_chosen_backend_and_reruns_prompts(
    qtbot, viewer, monkeypatch, tmp_path
):
    from napari_cxseg.editing import interactive as engine
    from napari_cxseg.editing.interactive import segment_from_prompts
    from napari_cxseg.widgets.interactive import FALLBACK_LABELS, PREVIEW, InteractiveWidget

    calls: list = []
    _fake_backends(monkeypatch, calls)
    truth = _ball((64, 64), (32, 32), 12, (1, 1))
    image = _blob_image(truth, 3)
    viewer.add_image(image, name="img")
    w = InteractiveWidget(viewer)
    names = [w.method_combo.itemData(i) for i in range(w.method_combo.count())]
    assert names[:3] == ["network", "classical", "vista3d"]
    assert w.method() == "network"  # the default when the engine has networks
    labels = [w.method_combo.itemText(i) for i in range(w.method_combo.count())]
    assert all(label and label != name for label, name in zip(labels, names, strict=True))
    expected = {**FALLBACK_LABELS, **getattr(engine, "BACKEND_LABELS", {})}
    assert labels[:3] == [expected[n] for n in names[:3]]
    assert w.bundle_box.isHidden() and not w.trust_check.isChecked()

    _interact(qtbot, w, lambda: w.add_point((32, 32)))
    assert w.session.backend == "network" and calls[-1] == ("network", {"modality": "XR"})  # the 2D layer is an X-ray
    assert w.method_label("network") in w.status.text() and " s (1 interaction" in w.status.text()
    assert np.array_equal(w.mask, _ball((64, 64), (32, 32), 5, (1, 1)))

    # VISTA3D without its folder: the prompt stays, nothing runs until the folder is set
    n_calls = len(calls)
    w.set_method("vista3d")
    assert not w.bundle_box.isHidden()
    assert w.session is None and w.mask is None and PREVIEW not in viewer.layers
    assert "bundle" in w.status.text() and len(viewer.layers["cxseg prompts"].data) == 1
    assert len(calls) == n_calls

    # a folder that is not a bundle: a notification names the cause, the widget lives on
    w.bundle_edit.setText(str(tmp_path))
    with qtbot.waitSignal(w.failed, timeout=30000) as failure:
        w.bundle_edit.editingFinished.emit()
    _wait(qtbot, w)
    assert "no configs/ folder" in failure.args[0] and "VISTA3D" in failure.args[0]
    assert w.mask is None and len(viewer.layers["cxseg prompts"].data) == 1

    (tmp_path / "configs").mkdir()
    _interact(qtbot, w, lambda: w.add_point((36, 32)))  # the next click re-runs both prompts
    assert calls[-1] == ("vista3d", {"bundle_dir": str(tmp_path), "trust": False})
    assert w.session.backend == "vista3d" and w.session.n_interactions == 2
    assert "re-ran 2 prompts" in w.status.text() and "per interaction" in w.status.text()
    _interact(qtbot, w, lambda: w.trust_check.setChecked(True))
    assert calls[-1] == ("vista3d", {"bundle_dir": str(tmp_path), "trust": True})

    _interact(qtbot, w, lambda: w.set_method("classical"))
    assert w.bundle_box.isHidden() and w.session.backend == "classical"
    assert np.array_equal(w.mask, segment_from_prompts(image, [(32, 32), (36, 32)]))
    assert w.method_label("classical") in w.status.text()
    with pytest.raises(ValueError, match="unknown click-to-segment method"):
        w.set_method("no such method")


def test_changing_the_method_while_segmenting_reruns_with_the_new_one(qtbot, viewer, monkeypatch):
    import time

    from napari_cxseg.editing import interactive as engine
    from napari_cxseg.editing.interactive import segment_from_prompts
    from napari_cxseg.widgets.interactive import InteractiveWidget

    calls: list = []
    _fake_backends(monkeypatch, calls)
    fast = engine._BACKENDS["network"]

    def slow(*args, **kwargs):
        time.sleep(0.5)
        return fast(*args, **kwargs)

    monkeypatch.setitem(engine._BACKENDS, "network", slow)
    image = _blob_image(_ball((48, 48), (24, 24), 10, (1, 1)), 5)
    viewer.add_image(image, name="img")
    w = InteractiveWidget(viewer)
    w.add_point((24, 24))
    assert w.busy
    w.set_method("classical")  # while the network still runs
    qtbot.waitUntil(lambda: not w.busy and w.mask is not None, timeout=30000)
    _wait(qtbot, w)
    assert w.session.backend == "classical" and w.session.n_interactions == 1
    assert np.array_equal(w.mask, segment_from_prompts(image, [(24, 24)]))


def test_vista3d_click_without_bundle_is_a_notification(qtbot, viewer, monkeypatch):
    from napari_cxseg.widgets.interactive import InteractiveWidget

    _fake_backends(monkeypatch, [])
    viewer.add_image(_blob_image(_ball((32, 32), (16, 16), 6, (1, 1))), name="img")
    w = InteractiveWidget(viewer)
    w.set_method("vista3d")
    shown = []
    monkeypatch.setattr(
        "napari_cxseg.widgets.interactive.notify_error",
        lambda exc, ctx: shown.append(f"{ctx}: {exc}"),
    )
    w.add_point((16, 16))
    assert len(shown) == 1 and "VISTA3D needs its bundle" in shown[0]
    assert len(viewer.layers["cxseg prompts"].data) == 0 and w.session is None


# ---------------------------------------------------------------------- prompts edited by hand


def test_deleting_a_prompt_by_hand_resegments_without_it(qtbot, viewer):
    from napari_cxseg.editing.interactive import PromptSession
    from napari_cxseg.widgets.interactive import PREVIEW, InteractiveWidget

    truth = _ball((64, 64), (30, 30), 12, (1, 1))
    truth |= _ball((64, 64), (30, 48), 6, (1, 1))  # a lobe on the right
    image = _blob_image(truth)
    viewer.add_image(image, name="img")
    w = _classical(InteractiveWidget(viewer))
    p1, neg, p2 = (30, 26), (30, 46), (30, 34)

    def fresh(*points):
        session = PromptSession(image, spacing=(1.0, 1.0))
        for p, positive in points:
            session.add_point(p, positive=positive)
        return np.asarray(session.mask)

    _interact(qtbot, w, lambda: w.add_point(p1, positive=True))
    _interact(qtbot, w, lambda: w.add_point(neg, positive=False))
    _interact(qtbot, w, lambda: w.add_point(p2, positive=True))
    both = fresh((p1, True), (p2, True))
    assert not np.array_equal(w.mask, both)  # the negative click mattered
    pts = viewer.layers["cxseg prompts"]

    # select the negative point and press Delete (what napari's key binding does)
    with qtbot.waitSignal(w.updated, timeout=30000) as blocker:
        pts.selected_data = {1}
        pts.remove_selected()
    _wait(qtbot, w)
    assert blocker.args[0] == "replay"
    assert np.array_equal(w.mask, both)
    assert np.array_equal(viewer.layers[PREVIEW].data > 0, both)
    assert list(pts.features["positive"]) == [True, True]
    assert w.session.n_interactions == 2 and np.allclose(w.session.positive_points, [p1, p2])

    # undo still removes the latest prompt
    _interact(qtbot, w, w.undo_last)
    assert np.array_equal(w.mask, fresh((p1, True))) and len(pts.data) == 1

    # deleting by rewriting the layer's data (a middle row) keeps the others' signs
    _interact(qtbot, w, lambda: w.add_point(neg, positive=False))
    _interact(qtbot, w, lambda: w.add_point(p2, positive=True))
    with qtbot.waitSignal(w.updated, timeout=30000):
        pts.data = np.array(pts.data)[[0, 2]]
    _wait(qtbot, w)
    assert list(pts.features["positive"]) == [True, True]
    assert np.allclose(pts.face_color[1], [0.1, 0.9, 0.2, 1.0])
    assert np.array_equal(w.mask, both)

    # deleting the box re-segments from the clicks alone
    _interact(qtbot, w, lambda: w.add_box([(20, 14), (40, 40)]))
    assert not np.array_equal(w.mask, both)
    boxes = viewer.layers["cxseg box prompt"]
    with qtbot.waitSignal(w.updated, timeout=30000):
        boxes.selected_data = {0}
        boxes.remove_selected()
    _wait(qtbot, w)
    assert w.session.box is None and np.array_equal(w.mask, both)

    # deleting the only positive left with a negative: no mask, the lone negative goes too
    _interact(qtbot, w, w.reset)
    _interact(qtbot, w, lambda: w.add_point(p1, positive=True))
    _interact(qtbot, w, lambda: w.add_point(neg, positive=False))
    pts.selected_data = {0}
    pts.remove_selected()
    _wait(qtbot, w)
    assert w.mask is None and PREVIEW not in viewer.layers and len(pts.data) == 0

    # emptying the layer's data drops every prompt
    _interact(qtbot, w, lambda: w.add_point(p1, positive=True))
    pts.data = np.zeros((0, 2))
    _wait(qtbot, w)
    assert w.mask is None and PREVIEW not in viewer.layers and w.session.n_interactions == 0


# ---------------------------------------------------------------------- clicks in 3D


def test_pick_along_ray_finds_the_rendered_voxel():
    from napari_cxseg.widgets._prompt_layers import pick_along_ray

    vol = np.zeros((20, 8, 8))
    vol[12:15, 3:5, 3:5] = 100.0  # a bright block deep along z
    vol[4, 4, 4] = 40.0  # a dimmer voxel nearer to the camera
    start, end = (0.0, 4.0, 4.0), (19.0, 4.0, 4.0)
    assert np.array_equal(pick_along_ray(vol, start, end), [13, 4, 4])  # MIP: the block
    assert np.array_equal(pick_along_ray(vol, start, end, "first", 30.0), [4, 4, 4])
    assert np.array_equal(pick_along_ray(vol, start, end, "first", 200.0), [13, 4, 4])
    assert pick_along_ray(vol, start, end, "minip")[1:].tolist() == [4, 4]
    # looking from the other side along a slanted ray
    picked = pick_along_ray(vol, (19.0, 5.2, 3.4), (0.0, 1.4, 5.3))
    assert vol[tuple(picked.astype(int))] == 100.0
    assert pick_along_ray(vol, (0.0, 30.0, 4.0), (19.0, 30.0, 4.0)) is None  # misses
    with pytest.raises(ValueError, match="ray of 2 coordinates"):
        pick_along_ray(vol, (0.0, 1.0), (1.0, 2.0))


def test_3d_canvas_click_places_the_prompt_in_the_blob(qtbot, viewer):
    from napari.utils._test_utils import read_only_mouse_event
    from napari.utils.interactions import (
        mouse_move_callbacks,
        mouse_press_callbacks,
        mouse_release_callbacks,
    )

    from napari_cxseg.widgets.interactive import InteractiveWidget

    spacing = (2.0, 1.0, 1.0)
    truth = _ball((24, 40, 40), (15, 20, 22), 8, spacing)  # off-centre in depth
    image = _blob_image(truth, 4)
    viewer.add_image(image, scale=spacing, translate=(5.0, -3.0, 0.0), name="ct")
    w = _classical(InteractiveWidget(viewer))
    viewer.dims.ndisplay = 3
    w.activate_points()
    pts = viewer.layers["cxseg prompts"]
    assert viewer.layers.selection.active is pts and "3D" in w.status.text()

    # a click whose ray runs along z through the blob's centre (world coordinates)
    world = np.array([5.0, 20.0 - 3.0, 22.0])
    kw = {"position": tuple(world), "view_direction": [1.0, 0.0, 0.0], "dims_displayed": [0, 1, 2]}
    with qtbot.waitSignal(w.updated, timeout=30000):
        mouse_press_callbacks(pts, read_only_mouse_event(type="mouse_press", **kw))
        mouse_release_callbacks(pts, read_only_mouse_event(type="mouse_release", **kw))
    _wait(qtbot, w)
    assert len(pts.data) == 1
    point = pts.data[0]
    assert np.allclose(point[1:], [20, 22]) and truth[tuple(np.round(point).astype(int))]
    assert abs(point[0] - 15) <= 4  # well inside the blob's depth (radius 4 slices)
    assert w.session.n_interactions == 1 and w.mask[15, 20, 22]

    # a drag rotates the camera: no prompt
    mouse_press_callbacks(pts, read_only_mouse_event(type="mouse_press", **kw))
    mouse_move_callbacks(pts, read_only_mouse_event(type="mouse_move", is_dragging=True, **kw))
    mouse_release_callbacks(pts, read_only_mouse_event(type="mouse_release", **kw))
    assert len(pts.data) == 1

    # a ray that misses the image adds nothing
    miss = {**kw, "position": (5.0, 500.0, 500.0)}
    mouse_press_callbacks(pts, read_only_mouse_event(type="mouse_press", **miss))
    mouse_release_callbacks(pts, read_only_mouse_event(type="mouse_release", **miss))
    assert len(pts.data) == 1
    _require_quality(_dice(w.mask, truth), "a 3D ball, one click in the 3D canvas")
