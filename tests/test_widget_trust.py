"""The Segment widget asks before running a model whose files are code (TorchScript here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytestmark = pytest.mark.gui
torch.set_num_threads(1)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A 2D TorchScript card and the same network as a state-dict card."""
    from monai.networks.nets import UNet

    c = tmp_path / "cache"
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(c))
    (c / "cards").mkdir(parents=True)
    (c / "weights").mkdir()
    torch.manual_seed(0)
    args = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]}
    net = UNet(**args).eval()
    torch.jit.script(net).save(str(c / "weights" / "tiny.ts"))
    torch.save(net.state_dict(), c / "weights" / "tiny.pt")
    for name, weights in (("tiny-ts", {"source": "torchscript", "file": str(c / "weights" / "tiny.ts")}),
                          ("tiny-pt", {"source": "file", "file": "tiny.pt"})):
        card = {
            "name": name, "task": "tiny 2D test model", "spatial_dims": 2, "modality": ["CR", "DX", "XR"],
            "input": {"channels": ["radiograph"], "size": [32, 32], "intensity": {"type": "minmax"}},
            "inference": {"roi_size": [32, 32], "overlap": 0.0, "sw_batch_size": 1},
            "output": {"activation": "softmax"}, "classes": {1: {"name": "lung", "colour": "#ff0000"}},
            "weights": weights, "intended_use": "tests",
        }
        if name == "tiny-pt":
            card["network"] = {"name": "UNet", "args": args}
        (c / "cards" / f"{name}.yaml").write_text(yaml.safe_dump(card))
    return c


def test_torchscript_model_runs_only_after_confirmation(make_napari_viewer, qtbot, cache, monkeypatch):
    from napari_cxseg.widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((40, 40)).astype(np.float32), name="cxr")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    asked = []

    def answer(value):
        monkeypatch.setattr(w, "_confirm_trust", lambda card: asked.append(card.name) or value)

    answer(False)
    w.model_combo.setCurrentText("tiny-ts")
    w.run()
    assert asked == ["tiny-ts"] and "not trusted" in w.status.text().lower()
    assert [ly.name for ly in viewer.layers] == ["cxr"]

    answer(True)
    with qtbot.waitSignal(w.finished_layer, timeout=60_000):
        w.run()
    assert asked == ["tiny-ts", "tiny-ts"] and len(viewer.layers) == 2

    w.model_combo.setCurrentText("tiny-pt")  # a state dict is data: no question
    with qtbot.waitSignal(w.finished_layer, timeout=60_000):
        w.run()
    assert asked == ["tiny-ts", "tiny-ts"]
