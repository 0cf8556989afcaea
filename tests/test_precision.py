"""The network's arithmetic: ``precision`` of the Predictor, the CLI and the batch workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_cxseg.device import PRECISION_CHOICES, autocast_dtype, cpu_has_fast_bf16
from napari_cxseg.geometry import held_geometry
from napari_cxseg.images import CxsegError, Image
from napari_cxseg.inference import Predictor
from napari_cxseg.models.cards import card_from_dict

torch.set_num_threads(1)

CARD = {
    "name": "precision-3d", "task": "precision test", "modality": ["CT"], "spatial_dims": 3,
    "input": {"channels": ["CT"], "orientation": "RAS", "spacing": [1.5, 1.5, 1.5], "intensity": {"type": "none"}},
    "network": {"name": "UNet", "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                                         "channels": [4, 8], "strides": [2]}},
    "inference": {"roi_size": [32, 32, 32], "overlap": 0.25, "sw_batch_size": 2, "mode": "gaussian"},
    "output": {"activation": "softmax"},
    "classes": {1: {"name": "bright", "colour": "#ff0000"}},
    "weights": {"source": "file", "file": "unused.pt"},
}


def _volume() -> Image:
    """A 44 x 40 x 14 volume with a smooth bright ellipsoid, 1.1 x 0.9 x 3 mm voxels."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:14, 0:40, 0:44].astype(np.float32)
    arr = 100.0 * (1 - ((x - 22) / 14) ** 2 - ((y - 20) / 15) ** 2 - ((z - 7) / 5) ** 2)
    arr += rng.normal(0, 5, arr.shape).astype(np.float32)
    geom = held_geometry(arr.shape, np.diag([3.0, 0.9, 1.1, 1.0]))
    return Image(array=np.ascontiguousarray(arr, np.float32), geometry=geom, modality="CT", meta={})


def _card():
    return card_from_dict(dict(CARD), origin="precision-3d")


def test_autocast_dtype_choices():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype(cpu, "auto") is None  # CPU default: float32, labels equal to MONAI's
    assert autocast_dtype(cuda, "auto") is torch.float16
    assert autocast_dtype(cuda, "float32") is None
    assert autocast_dtype(cpu, "bfloat16") is torch.bfloat16
    assert autocast_dtype(cpu, "float16") is torch.float16
    assert set(PRECISION_CHOICES) == {"auto", "float32", "bfloat16", "float16"}
    with pytest.raises(CxsegError, match="unknown precision 'int8'"):
        autocast_dtype(cpu, "int8")
    assert isinstance(cpu_has_fast_bf16(), bool)


class Recorder(nn.Module):
    """A small UNet that records whether each forward ran under CPU autocast, and in which dtype."""

    def __init__(self) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        torch.manual_seed(0)
        self.net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
        self.seen: list[tuple[bool, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on = torch.is_autocast_enabled("cpu")
        y = self.net(x)
        self.seen.append((on, y.dtype))
        return y


@pytest.mark.parametrize("precision,autocast,dtype", [("auto", False, torch.float32),
                                                      ("float32", False, torch.float32),
                                                      ("bfloat16", True, torch.bfloat16)])
def test_predictor_runs_the_network_in_the_chosen_precision(precision, autocast, dtype):
    img = _volume()
    net = Recorder().eval()
    labels = Predictor(_card(), device="cpu", network=net, precision=precision).predict(img)
    assert net.seen and all(s == (autocast, dtype) for s in net.seen)
    assert labels.array.shape == img.array.shape


def test_bfloat16_labels_agree_with_float32():
    img = _volume()
    net = Recorder().eval()
    full = Predictor(_card(), device="cpu", network=net, precision="float32").predict(img).array
    half = Predictor(_card(), device="cpu", network=net, precision="bfloat16").predict(img).array
    assert (full == half).mean() > 0.99  # bf16 keeps 8 bits of mantissa: a few boundary voxels may move
    assert full.any() and net.seen[0] == (False, torch.float32) and net.seen[-1] == (True, torch.bfloat16)


def test_cli_and_batch_workers_pass_the_precision_on(tmp_path, monkeypatch):
    import napari_cxseg.batch as batch
    from napari_cxseg.cli import build_parser

    args = build_parser().parse_args(["predict", "-m", "x", "-i", "in", "-o", "out", "--precision", "bfloat16"])
    assert args.precision == "bfloat16"
    assert build_parser().parse_args(["predict", "-m", "x", "-i", "in", "-o", "out"]).precision == "auto"
    import yaml

    card_file = tmp_path / "precision-3d.yaml"
    card_file.write_text(yaml.safe_dump(CARD))
    monkeypatch.setattr("napari_cxseg.inference.Predictor.load", lambda self: self)  # no weights needed here
    monkeypatch.setattr(batch, "_PREDICTORS", {})
    half = batch._predictor(str(card_file), "cpu", False, "bfloat16")
    full = batch._predictor(str(card_file), "cpu", False)
    assert half is not full  # one cached Predictor per precision
    assert half.precision == "bfloat16" and half._amp is torch.bfloat16 and full._amp is None
