"""SA-UNet (Guo et al. 2020) as a MONAI-style module: shapes, DropBlock and the spatial attention."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from napari_cxseg.models.architectures import DropBlock, SAUNet, SpatialAttention
from napari_cxseg.models.cards import card_from_dict
from napari_cxseg.models.networks import build_network, network_class


def test_saunet_shapes_2d_and_3d():
    net = SAUNet(spatial_dims=2, in_channels=1, out_channels=3).eval()
    assert net(torch.randn(2, 1, 64, 96)).shape == (2, 3, 64, 96)
    # the paper's widths: 16, 32, 64 encoder, 128 bottleneck, 3 levels
    assert [b[0][0].out_channels for b in net.down] == [16, 32, 64]
    assert net.bottleneck_in[0].out_channels == 128
    net3 = SAUNet(spatial_dims=3, in_channels=2, out_channels=2, features=(4, 8, 16)).eval()
    assert net3(torch.randn(1, 2, 16, 16, 16)).shape == (1, 2, 16, 16, 16)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.randn(1, 1, 60, 64))


def test_blocks_are_conv_dropblock_batchnorm_relu():
    net = SAUNet()
    block = net.down[0][0]
    assert [type(m).__name__ for m in block] == ["Conv2d", "DropBlock", "BatchNorm2d", "ReLU"]
    assert all(any(isinstance(m, DropBlock) for m in b) for d in net.down for b in d)


def test_spatial_attention_is_sigmoid_of_conv_over_mean_and_max():
    torch.manual_seed(0)
    sa = SpatialAttention(2, kernel_size=7)
    x = torch.randn(2, 5, 12, 12)
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
    expected = torch.sigmoid(F.conv2d(pooled, sa.conv.weight, padding=3))
    att = sa.attention(x)
    assert att.shape == (2, 1, 12, 12)
    assert torch.allclose(att, expected, atol=1e-6)
    assert float(att.min()) > 0 and float(att.max()) < 1
    assert torch.allclose(sa(x), x * expected, atol=1e-6)  # multiplied with the input, every channel
    assert sa.conv.bias is None


def test_dropblock_drops_square_blocks_at_the_paper_rate():
    torch.manual_seed(0)
    db = DropBlock(2, block_size=5, keep_prob=0.9).train()
    y = db(torch.ones(8, 4, 64, 64))
    dropped = (y == 0).float().mean().item()
    assert 0.06 < dropped < 0.14  # about 1 - keep_prob
    kept = y[y > 0]
    assert torch.allclose(kept, kept[0].expand_as(kept))  # kept units rescaled by numel / kept
    assert abs(y.mean().item() - 1.0) < 0.02
    # a single seed becomes one 5 x 5 block
    g = db.gamma((64, 64))
    assert g == pytest.approx(0.1 / 25 * (64 / 60) ** 2)
    db.eval()
    x = torch.randn(1, 1, 16, 16)
    assert torch.equal(db(x), x)


def test_single_seed_makes_one_block(monkeypatch):
    db = DropBlock(2, block_size=3, keep_prob=0.5).train()
    seeds = torch.zeros(1, 1, 8, 8)  # valid seed grid of 10 - 3 + 1 = 8
    seeds[0, 0, 4, 4] = 1
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.where(seeds.bool(), 0.0, 1.0).expand(*a[0]))
    y = db(torch.ones(1, 1, 10, 10))
    zero = (y[0, 0] == 0).nonzero()
    assert len(zero) == 9
    assert zero[:, 0].min() == 4 and zero[:, 0].max() == 6 and zero[:, 1].min() == 4 and zero[:, 1].max() == 6


def test_cards_name_saunet_through_the_one_builder():
    assert network_class("SAUNet") is SAUNet
    assert network_class("napari_cxseg.models.architectures.SAUNet") is SAUNet
    with pytest.raises(Exception, match="not a class"):
        network_class("os.system")
    card = card_from_dict({
        "name": "sa", "task": "t", "modality": ["XR"], "spatial_dims": 2,
        "input": {"channels": ["radiograph"], "size": [64, 64]},
        "network": {"name": "SAUNet", "args": {"spatial_dims": 2, "in_channels": 1, "out_channels": 3}},
        "inference": {"roi_size": [64, 64]}, "output": {"activation": "softmax"},
        "classes": {1: "right lung", 2: "left lung"}, "weights": {"source": "file", "file": "x.pt"},
    })
    assert isinstance(build_network(card), SAUNet)
