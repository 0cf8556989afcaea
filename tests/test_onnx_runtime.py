"""ONNX Runtime for the network on CPU: resolved choice, export cached and checked equal, fallbacks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import yaml

from napari_cxseg.images import CxsegError
from napari_cxseg.inference import Predictor
from napari_cxseg.models import onnx_runtime as ox
from napari_cxseg.models.cache import weights_dir
from napari_cxseg.models.cards import card_from_dict
from napari_cxseg.models.downloads import sha256_file
from test_precision import CARD, _volume

torch.set_num_threads(1)


@pytest.fixture
def tiny_card(tmp_path, monkeypatch):
    """The 3D test card with seeded weights in a cache of its own (a card-built network, as users have)."""
    from monai.networks.nets import UNet

    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))

    torch.manual_seed(1)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
    weights_dir().mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), weights_dir() / "onnx-tiny.pt")
    spec = dict(CARD, name="onnx-tiny", weights={"source": "file", "file": "onnx-tiny.pt"})
    return card_from_dict(spec, origin="onnx-tiny")


def test_resolve_runtime_choices(monkeypatch):
    cpu = torch.device("cpu")
    assert ox.resolve_runtime("torch", cpu, None, True) == "torch"
    assert ox.resolve_runtime("auto", cpu, None, True) == "onnx"  # onnx and onnxruntime are test dependencies
    assert ox.resolve_runtime("auto", cpu, None, True, spatial_dims=3) == "torch"  # 3D: no faster, more memory
    assert ox.resolve_runtime("onnx", cpu, None, True, spatial_dims=3) == "onnx"
    assert ox.resolve_runtime("AUTO", cpu, torch.bfloat16, True) == "torch"
    assert ox.resolve_runtime("auto", cpu, None, False) == "torch"
    assert ox.resolve_runtime("auto", torch.device("cuda"), None, True) == "torch"
    with pytest.raises(CxsegError, match="float32 only"):
        ox.resolve_runtime("onnx", cpu, torch.bfloat16, True)
    with pytest.raises(CxsegError, match="CPU only"):
        ox.resolve_runtime("onnx", torch.device("cuda"), None, True)
    with pytest.raises(CxsegError, match="stays in PyTorch"):
        ox.resolve_runtime("onnx", cpu, None, False)
    with pytest.raises(CxsegError, match="unknown runtime 'tensorrt'"):
        ox.resolve_runtime("tensorrt", cpu, None, True)
    monkeypatch.setattr(ox, "onnx_available", lambda: False)
    assert ox.resolve_runtime("auto", cpu, None, True) == "torch"
    with pytest.raises(CxsegError, match=r"pip install 'napari-cxseg\[onnx\]'"):
        ox.resolve_runtime("onnx", cpu, None, True)


def test_onnx_labels_equal_torch_and_export_is_cached(tiny_card, monkeypatch):
    img = _volume()
    assert Predictor(tiny_card, device="cpu").runtime == "torch"  # auto: 3D networks stay in PyTorch
    fast = Predictor(tiny_card, device="cpu", runtime="onnx")
    assert fast.runtime == "onnx"
    labels = fast.predict(img).array
    ref = Predictor(tiny_card, device="cpu", runtime="torch").predict(img).array
    assert labels.any() and (labels == ref).mean() > 0.9999
    files = sorted(p.suffix for p in ox.onnx_dir().iterdir())
    assert files == [".ok", ".onnx"]  # one window shape; no temporary files left
    ok = next(ox.onnx_dir().glob("*.ok")).read_text()
    assert '"argmax_equal"' in ok and '"max_abs_diff"' in ok

    # a second Predictor (another process, a Dask worker) loads the checked file: no export, no check
    monkeypatch.setattr(ox, "export", lambda *a: pytest.fail("exported again"))
    monkeypatch.setattr(ox, "compare", lambda *a: pytest.fail("checked again"))
    again = Predictor(tiny_card, device="cpu", runtime="onnx")
    np.testing.assert_array_equal(again.predict(img).array, labels)


def test_export_key_follows_the_weights_and_window(tiny_card):
    from napari_cxseg.models.networks import load_network

    net = load_network(tiny_card)
    k = ox.export_key(net, (1, 32, 32, 32))
    assert k == ox.export_key(load_network(tiny_card), (1, 32, 32, 32))
    assert k != ox.export_key(net, (1, 48, 32, 32))
    with torch.no_grad():
        next(net.parameters()).add_(1e-3)  # fine-tuned: a new export
    assert k != ox.export_key(net, (1, 32, 32, 32))


def test_a_runtime_that_disagrees_is_refused_or_left_for_torch(tiny_card, monkeypatch):
    img = _volume()
    real_call = ox.OnnxNetwork.__call__
    monkeypatch.setattr(ox.OnnxNetwork, "__call__", lambda self, x: real_call(self, x) + 0.5)
    with pytest.raises(CxsegError, match="differ from PyTorch's"):
        Predictor(tiny_card, device="cpu", runtime="onnx").predict(img)
    assert not list(ox.onnx_dir().glob("*.onnx")) and not list(ox.onnx_dir().glob("*.ok"))
    assert len(list(ox.onnx_dir().glob("*.refused"))) == 1  # later processes do not export again
    monkeypatch.setattr(ox, "export", lambda *a: pytest.fail("exported again"))
    with pytest.raises(CxsegError, match="refused for it before .*delete the file"):
        Predictor(tiny_card, device="cpu", runtime="onnx").predict(img)

    monkeypatch.setattr(ox, "AUTO_ONNX_DIMS", (2, 3))  # auto as it is for 2D networks
    auto = Predictor(tiny_card, device="cpu")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        labels = auto.predict(img).array
    assert auto.runtime == "torch" and any("running the network in PyTorch" in str(w.message) for w in seen)
    np.testing.assert_array_equal(labels, Predictor(tiny_card, device="cpu", runtime="torch").predict(img).array)


def test_failed_export_names_the_model(tiny_card, monkeypatch):
    def broken(*a):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(ox, "export", broken)
    with pytest.raises(CxsegError, match="model onnx-tiny: export to ONNX failed .*unsupported operator"):
        Predictor(tiny_card, device="cpu", runtime="onnx").predict(_volume())
    assert not list(ox.onnx_dir().iterdir())  # the temporary file is gone


def test_cli_and_batch_pass_the_runtime_on(tmp_path, tiny_card, monkeypatch):
    import napari_cxseg.batch as batch
    from napari_cxseg.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["predict", "-m", "x", "-i", "in", "-o", "out", "--runtime", "torch"]).runtime == "torch"
    assert parse(["predict", "-m", "x", "-i", "in", "-o", "out"]).runtime == "auto"
    card_file = tmp_path / "onnx-tiny.yaml"
    card_file.write_text(yaml.safe_dump(dict(CARD, name="onnx-tiny",
                                             weights={"source": "file", "file": "onnx-tiny.pt"})))
    monkeypatch.setattr(batch, "_PREDICTORS", {})
    a = batch._predictor(str(card_file), "cpu", False, "auto", "torch")
    b = batch._predictor(str(card_file), "cpu", False, "auto", "onnx")
    assert a is not b and a.runtime == "torch" and b.runtime == "onnx"


def test_a_replaced_export_is_checked_again(tiny_card):
    img = _volume()
    labels = Predictor(tiny_card, device="cpu", runtime="onnx").predict(img).array
    onnx_file = next(ox.onnx_dir().glob("*.onnx"))
    record = next(ox.onnx_dir().glob("*.ok"))
    record.write_text(record.read_text().replace('"sha256": "', '"sha256": "0'))  # no longer this file's hash
    before = record.read_text()
    np.testing.assert_array_equal(Predictor(tiny_card, device="cpu", runtime="onnx").predict(img).array, labels)
    assert record.read_text() != before and sha256_file(onnx_file) in record.read_text()


def test_list_outputs_and_unwritable_cache(tiny_card, monkeypatch):
    from monai.networks.nets import UNet

    class Deep(torch.nn.Module):  # a deep-supervision style forward: a list of outputs, logits first
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))

        def forward(self, x):
            y = self.net(x)
            return [y, y[:, :1]]

    net = Deep().eval()
    runner = ox.onnx_network(net, (1, 16, 16, 16), "deep")
    x = torch.rand(3, 1, 16, 16, 16)
    with torch.inference_mode():
        np.testing.assert_allclose(runner(x).numpy(), net(x)[0].numpy(), atol=1e-4)

    def no_space(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ox.tempfile, "mkstemp", no_space)
    with pytest.raises(CxsegError, match=r"model onnx-tiny: ONNX Runtime could not be used \(.*\.onnx: PermissionError"):
        Predictor(tiny_card, device="cpu", runtime="onnx").predict(_volume())
    monkeypatch.setattr(ox, "AUTO_ONNX_DIMS", (2, 3))
    auto = Predictor(tiny_card, device="cpu")
    with pytest.warns(UserWarning, match="running the network in PyTorch"):
        auto.predict(_volume())
    assert auto.runtime == "torch"


def test_background_export_keeps_this_run_in_torch_and_the_next_in_onnx(tiny_card):
    img = _volume()
    first = Predictor(tiny_card, device="cpu", runtime="onnx", background_export=True)
    labels = first.predict(img).array
    assert first.runtime == "torch"  # the export runs in another process, not under the caller's GIL
    procs = list(ox._BACKGROUND.values())
    assert procs and all(p.name.startswith("cxseg-onnx-export-") for p in procs)
    procs[-1].join(timeout=300)
    assert procs[-1].exitcode == 0
    net = first.network
    assert ox.export_state(net, (1, 32, 32, 32)) == "ready"
    second = Predictor(tiny_card, device="cpu", runtime="onnx", background_export=True)
    again = second.predict(img).array
    assert second.runtime == "onnx" and (again == labels).mean() > 0.9999
