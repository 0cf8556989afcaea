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


def test_missing_weights_is_a_clear_error(make_napari_viewer, qtbot, cache):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((20, 20), np.float32), name="cxr")
    w = _widget(viewer)
    w.model_combo.setCurrentText("noweights")
    with qtbot.waitSignal(w.failed, timeout=60_000) as sig:
        w.run()
    assert "noweights.pt" in sig.args[0]
    assert [ly.name for ly in viewer.layers] == ["cxr"]
