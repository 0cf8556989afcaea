"""Segment widget with a real viewer: run, classes, re-run over edits, cancel, error path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytestmark = pytest.mark.gui
torch.set_num_threads(1)


def _card(cache: Path, name: str, dims: int, weights: bool = True, roi=None) -> None:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    args = {"spatial_dims": dims, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2]}
    (cache / "weights").mkdir(parents=True, exist_ok=True)
    (cache / "cards").mkdir(parents=True, exist_ok=True)
    if weights:
        torch.save(UNet(**args).state_dict(), cache / "weights" / f"{name}.pt")
    card = {
        "name": name, "task": f"tiny {dims}D test model", "spatial_dims": dims,
        "network": {"name": "UNet", "args": args}, "output": {"activation": "softmax"},
        "classes": {1: {"name": "right lung", "colour": "#ff0000"}, 2: {"name": "left lung", "colour": "#00ff00"}},
        "weights": {"source": "file", "file": f"{name}.pt"}, "intended_use": "tests",
    }
    if dims == 2:
        card.update(modality=["CR", "DX", "XR"], input={"channels": ["radiograph"], "size": [32, 32],
                                                         "intensity": {"type": "minmax"}},
                    inference={"roi_size": [32, 32], "overlap": 0.0, "sw_batch_size": 1})
    else:
        card.update(modality=["CT", ""], input={"channels": ["CT"], "orientation": "RAS", "spacing": [1.0, 1.0, 1.0],
                                                "intensity": {"type": "window", "a_min": -200, "a_max": 200}},
                    inference={"roi_size": roi or [8, 8, 8], "overlap": 0.5, "sw_batch_size": 1})
    (cache / "cards" / f"{name}.yaml").write_text(yaml.safe_dump(card))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    c = tmp_path / "cache"
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(c))
    _card(c, "tiny2d", 2)
    _card(c, "tiny3d", 3)
    _card(c, "noweights", 2, weights=False)
    return c


def _widget(viewer):
    from napari_cxseg.widgets.segment import SegmentWidget

    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    return w


def _run(qtbot, w, model: str):
    w.model_combo.setCurrentText(model)
    with qtbot.waitSignal(w.finished_layer, timeout=60_000) as sig:
        w.run()
    return sig.args[0]


def test_segment_2d_gives_named_aligned_layer(make_napari_viewer, qtbot, cache):
    viewer = make_napari_viewer()
    img = viewer.add_image(np.random.default_rng(0).random((40, 30)).astype(np.float32), name="cxr",
                           scale=(0.5, 0.25), translate=(3.0, -2.0))
    w = _widget(viewer)
    assert w.image_combo.currentText() == "cxr"
    layer = _run(qtbot, w, "tiny2d")
    assert layer.name == "cxr [tiny2d]" and layer.data.shape == (40, 30)
    np.testing.assert_allclose(layer.scale, img.scale)
    np.testing.assert_allclose(layer.translate, img.translate)
    assert list(layer.features["name"]) == ["background", "right lung", "left lung"]
    assert viewer.layers.selection.active is layer and layer.mode == "paint"
    qtbot.waitUntil(lambda: w._worker is None, timeout=30_000)
    assert w.progress.value() == w.progress.maximum()  # a finished run shows a full bar


def test_widget_warms_up_in_the_background_and_a_press_still_works(make_napari_viewer, qtbot, cache, monkeypatch):
    from napari_cxseg import warmup
    from napari_cxseg.widgets import _warmup

    monkeypatch.setattr(warmup, "_claimed", set())  # as in a fresh napari session
    monkeypatch.setattr(warmup, "_runs", [])
    monkeypatch.delenv("CXSEG_WARMUP", raising=False)
    monkeypatch.setattr(_warmup, "DELAY_S", 0.0)
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((40, 30)).astype(np.float32), name="cxr")
    w = _widget(viewer)
    assert w.warm_up is not None
    layer = _run(qtbot, w, "tiny2d")  # a press while (or after) it warms up
    assert layer.name == "cxr [tiny2d]"
    qtbot.waitUntil(w.warm_up.done.is_set, timeout=120_000)
    names = [s.name for s in w.warm_up.steps]
    assert "import napari_cxseg.inference" in names and "vispy dash patterns" in names
    assert all(s.thread == "cxseg-warm-up" and not s.error for s in w.warm_up.steps), w.warm_up.steps
    assert _widget(viewer).warm_up is None  # once per process


def test_rerun_never_overwrites_edits_silently(make_napari_viewer, qtbot, cache, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(1).random((40, 30)).astype(np.float32), name="cxr")
    w = _widget(viewer)
    layer = _run(qtbot, w, "tiny2d")
    original = layer.data.copy()
    # unedited: a re-run updates the same layer without asking
    asked = []
    monkeypatch.setattr(w, "_ask_replace", lambda name: asked.append(name) or "cancel")
    assert _run(qtbot, w, "tiny2d") is layer and not asked
    # the user edits the result
    layer.data_setitem((np.array([0, 1]), np.array([0, 0])), 2)
    edited = layer.data.copy()
    with qtbot.assertNotEmitted(w.finished_layer, wait=200):
        w.run()
        qtbot.waitUntil(lambda: w._worker is None, timeout=60_000)
    assert asked == ["cxr [tiny2d]"] and np.array_equal(layer.data, edited)
    # "new layer" keeps the edits and adds a second layer
    monkeypatch.setattr(w, "_ask_replace", lambda name: "new")
    second = _run(qtbot, w, "tiny2d")
    assert second is not layer and second.name == "cxr [tiny2d] (2)"
    assert np.array_equal(layer.data, edited)
    # "replace" is one undo step
    monkeypatch.setattr(w, "_ask_replace", lambda name: "replace")
    assert _run(qtbot, w, "tiny2d") is layer
    assert np.array_equal(layer.data, original)
    layer.undo()
    assert np.array_equal(layer.data, edited)


def test_segment_3d_on_image_geometry(make_napari_viewer, qtbot, cache):
    viewer = make_napari_viewer()
    vol = np.random.default_rng(2).normal(0, 100, (12, 16, 14)).astype(np.float32)
    img = viewer.add_image(vol, name="ct", scale=(2.5, 0.8, 0.8), translate=(10, -5, 7))
    w = _widget(viewer)
    layer = _run(qtbot, w, "tiny3d")
    assert layer.data.shape == vol.shape
    np.testing.assert_allclose(layer.data_to_world([3, 4, 5]), img.data_to_world([3, 4, 5]))


def test_cancel_leaves_layers_unchanged(make_napari_viewer, qtbot, cache, tmp_path):
    _card(cache, "slow3d", 3, roi=[4, 4, 4])
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((40, 40, 40), np.float32), name="ct")
    w = _widget(viewer)
    w.model_combo.setCurrentText("slow3d")
    w.run()
    qtbot.waitUntil(lambda: w.progress.maximum() > 1, timeout=30_000)  # windows are running
    with qtbot.waitSignal(w._worker.aborted, timeout=30_000):
        w.cancel()
    qtbot.waitUntil(lambda: w._worker is None, timeout=30_000)
    assert [ly.name for ly in viewer.layers] == ["ct"]
    assert "Cancelled" in w.status.text()
    assert w.progress.value() == 0


def test_missing_weights_is_a_clear_error(make_napari_viewer, qtbot, cache):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((20, 20), np.float32), name="cxr")
    w = _widget(viewer)
    w.model_combo.setCurrentText("noweights")
    with qtbot.waitSignal(w.failed, timeout=60_000) as sig:
        w.run()
    assert "noweights.pt" in sig.args[0]
    assert [ly.name for ly in viewer.layers] == ["cxr"]


def test_runtime_and_precision_reach_the_predictor(make_napari_viewer, qtbot, cache, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(2).random((40, 30)).astype(np.float32), name="cxr")
    w = _widget(viewer)
    assert [w.runtime_combo.itemText(i) for i in range(w.runtime_combo.count())] == ["auto", "torch", "onnx"]
    w.device_combo.setCurrentText("cpu")
    w.runtime_combo.setCurrentText("onnx")
    w.precision_combo.setCurrentText("bfloat16")  # ONNX Runtime computes float32 only: said, not ignored
    w.model_combo.setCurrentText("tiny2d")
    with qtbot.waitSignal(w.failed, timeout=60_000) as sig:
        w.run()
    assert "runtime 'onnx' cannot be used" in sig.args[0] and "float32 only" in sig.args[0]
    qtbot.waitUntil(lambda: w._worker is None, timeout=30_000)
    w.precision_combo.setCurrentText("auto")
    layer = _run(qtbot, w, "tiny2d")  # PyTorch this time; exported and checked in another process
    assert layer.data.shape == (40, 30)
    qtbot.waitUntil(lambda: bool(list((cache / "onnx").glob("*.ok"))), timeout=300_000)
    assert list((cache / "onnx").glob("*.onnx"))
    before = np.array(layer.data)
    _asks(monkeypatch, w, "replace")
    assert _run(qtbot, w, "tiny2d") is layer  # now in ONNX Runtime: the same labels
    assert (np.asarray(layer.data) == before).mean() > 0.999


# ---------------------------------------------------------------------- no lost work


@pytest.fixture
def notes(monkeypatch):
    """Messages of napari notifications shown during the test."""
    import napari.utils.notifications as nn

    seen = {"error": [], "warning": []}
    monkeypatch.setattr(nn, "show_error", lambda msg: seen["error"].append(str(msg)))
    monkeypatch.setattr(nn, "show_warning", lambda msg: seen["warning"].append(str(msg)))
    return seen


def _asks(monkeypatch, w, answer: str) -> list:
    asked = []
    monkeypatch.setattr(w, "_ask_replace", lambda name: asked.append(name) or answer)
    return asked


@pytest.mark.parametrize("other", ["shape", "scale", "translate", "image layer"])
def test_a_result_never_lands_in_a_layer_of_another_grid(
    make_napari_viewer, qtbot, cache, monkeypatch, other
):
    viewer = make_napari_viewer()
    img = viewer.add_image(np.random.default_rng(3).random((40, 30)).astype(np.float32), name="cxr")
    mine = np.zeros((40, 30) if other != "shape" else (20, 15), np.uint8)
    mine[2:5, 2:5] = 1  # the user's work, in a layer that happens to have the result's name
    kwargs = {"scale": (2.0, 2.0)} if other == "scale" else {}
    kwargs = {"translate": (0.0, 7.5)} if other == "translate" else kwargs
    if other == "image layer":
        existing = viewer.add_image(mine.astype(np.float32), name="cxr [tiny2d]")
    else:
        existing = viewer.add_labels(mine, name="cxr [tiny2d]", **kwargs)
    metadata = dict(existing.metadata)
    w = _widget(viewer)
    w.image_combo.setCurrentText("cxr")
    asked = _asks(monkeypatch, w, "replace")
    layer = _run(qtbot, w, "tiny2d")
    assert layer is not existing and layer.name == "cxr [tiny2d] (2)" and not asked
    assert layer.data.shape == (40, 30)
    np.testing.assert_allclose(layer.scale, img.scale)
    np.testing.assert_allclose(layer.translate, img.translate)
    assert np.array_equal(existing.data, mine) and existing.metadata == metadata
    assert "added as a new layer" in w.status.text()
    if other != "image layer":  # still the user's edits: a later result must ask
        w.image_combo.setCurrentText("cxr")
        second = _run(qtbot, w, "tiny2d")
        assert second is not existing and np.array_equal(existing.data, mine)


def test_edits_stay_edited_after_cancel_error_replace_and_undo(
    make_napari_viewer, qtbot, cache, monkeypatch
):
    import time

    from napari_cxseg.widgets import segment

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(4).random((40, 30)).astype(np.float32), name="cxr")
    w = _widget(viewer)
    layer = _run(qtbot, w, "tiny2d")
    layer.data_setitem((np.array([0, 1]), np.array([0, 0])), 2)  # the user edits the result
    edited = np.array(layer.data)
    real_job = segment._segment_job

    def still_asks() -> None:
        asked = _asks(monkeypatch, w, "cancel")  # "Discard result"
        with qtbot.assertNotEmitted(w.finished_layer, wait=100):
            w.run()
            qtbot.waitUntil(lambda: w._worker is None, timeout=60_000)
        assert asked == ["cxr [tiny2d]"] and np.array_equal(layer.data, edited)

    still_asks()  # discarding a result changes nothing
    still_asks()

    def endless(*args):
        while True:
            time.sleep(0.01)
            yield (0, 1)

    monkeypatch.setattr(segment, "_segment_job", endless)  # a run that is cancelled
    w.run()
    qtbot.waitUntil(lambda: w._worker is not None, timeout=5000)
    with qtbot.waitSignal(w._worker.aborted, timeout=30_000):
        w.cancel()
    qtbot.waitUntil(lambda: w._worker is None, timeout=30_000)
    assert np.array_equal(layer.data, edited)

    def broken(*args):
        raise ValueError("model exploded")  # (superqt hides RuntimeErrors of generators)
        yield  # pragma: no cover

    monkeypatch.setattr(segment, "_segment_job", broken)  # a run that fails
    with qtbot.waitSignal(w.failed, timeout=30_000):
        w.run()
    qtbot.waitUntil(lambda: w._worker is None, timeout=30_000)
    monkeypatch.setattr(segment, "_segment_job", real_job)
    still_asks()

    _asks(monkeypatch, w, "replace")  # the user replaces, then undoes the replacement
    assert _run(qtbot, w, "tiny2d") is layer and not np.array_equal(layer.data, edited)
    layer.undo()
    assert np.array_equal(layer.data, edited)
    still_asks()  # the edits are edits again


def test_a_failure_while_writing_the_result_still_gives_a_layer(
    make_napari_viewer, qtbot, cache, monkeypatch
):
    from napari_cxseg.widgets import segment

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(5).random((40, 30)).astype(np.float32), name="cxr")
    w = _widget(viewer)
    first = _run(qtbot, w, "tiny2d")
    before = np.array(first.data)

    def refuse(layer, new):
        raise RuntimeError("layer is locked")

    monkeypatch.setattr(segment, "apply_array", refuse)
    second = _run(qtbot, w, "tiny2d")  # unedited: it would have replaced the first silently
    assert second is not first and second.name == "cxr [tiny2d] (2)"
    assert np.array_equal(first.data, before) and "layer is locked" in w.status.text()


def test_nan_in_the_image_is_replaced_with_a_warning(make_napari_viewer, qtbot, cache, notes):
    rng = np.random.default_rng(6)
    clean = rng.random((40, 30)).astype(np.float32)
    dirty = clean.copy()
    dirty[:, :4] = np.nan  # e.g. an image from another plugin, padded with NaN
    dirty[0, 10] = np.inf
    viewer = make_napari_viewer()
    viewer.add_image(dirty, name="dirty")
    fixed = clean.copy()
    fixed[:, :4] = clean[np.isfinite(dirty)].min()
    fixed[0, 10] = clean[np.isfinite(dirty)].max()
    viewer.add_image(fixed, name="fixed")
    w = _widget(viewer)
    w.image_combo.setCurrentText("fixed")
    expected = np.array(_run(qtbot, w, "tiny2d").data)
    assert not any("non-finite" in n for n in notes["warning"])
    w.image_combo.setCurrentText("dirty")
    layer = _run(qtbot, w, "tiny2d")
    assert any("'dirty'" in n and "161 non-finite" in n for n in notes["warning"])
    np.testing.assert_array_equal(layer.data, expected)
    assert np.isnan(viewer.layers["dirty"].data).sum() == 160  # the layer itself is untouched


# ---------------------------------------------------------------------- orientation


def test_unknown_radiograph_orientation_is_shown(make_napari_viewer, qtbot, cache, notes, tmp_path):
    viewer = make_napari_viewer()
    img = np.random.default_rng(7).random((40, 30)).astype(np.float32)
    viewer.add_image(img, name="other plugin")  # no orientation recorded at all
    viewer.add_image(img, name="png", metadata={"orientation": {
        "known": False, "source": "none", "stored": "", "applied": "", "note": ""}})
    viewer.add_image(img, name="dicom", metadata={"orientation": {
        "known": True, "source": "DICOM PatientOrientation", "stored": "R\\F", "applied": "L\\F",
        "note": "stored mirrored; flipped left-right for display"}})
    viewer.add_image(np.zeros((4, 8, 8), np.float32), name="ct")
    w = _widget(viewer)
    for name in ("other plugin", "png"):
        w.image_combo.setCurrentText(name)
        assert w.orientation_info.isVisibleTo(w)
        assert "Orientation not recorded in the file" in w.orientation_info.text()
        assert "patient's right on the image's left" in w.orientation_info.text()
    w.image_combo.setCurrentText("dicom")
    assert "not recorded" not in w.orientation_info.text()
    assert "DICOM PatientOrientation" in w.orientation_info.text()
    w.image_combo.setCurrentText("ct")
    assert not w.orientation_info.isVisibleTo(w)

    w.image_combo.setCurrentText("png")
    w.resize(420, 360)
    shot = tmp_path / "segment_orientation_warning.png"  # what the user sees (for review)
    assert w.grab().save(str(shot)) and shot.stat().st_size > 1000
    layer = _run(qtbot, w, "tiny2d")  # the model names right and left lungs
    assert "Orientation not recorded in the file" in w.status.text()
    assert any(layer.name in n and "Orientation not recorded" in n for n in notes["warning"])
