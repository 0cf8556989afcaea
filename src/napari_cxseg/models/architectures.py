"""Networks of our own, written as MONAI-style ``nn.Module`` classes (cards name them like MONAI's).

:class:`SAUNet` is SA-UNet (Guo et al., "SA-UNet: Spatial Attention U-Net for Retinal Vessel
Segmentation", ICPR 2020), the network CXLSeg trained on MIMIC-CXR: a small U-Net whose
convolution blocks use structured dropout (DropBlock, Ghiasi et al. 2018) and whose bottleneck
holds a spatial-attention module. Following the official Keras code: three encoder levels of
16/32/64 features, a 128-feature bottleneck ``block -> spatial attention -> block``, transposed
3x3 stride-2 up-convolutions, blocks of ``[conv 3x3 -> DropBlock -> BatchNorm -> ReLU] x 2``.
The head returns logits (MONAI convention); the card's activation turns them into
probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ARCHITECTURES", "DropBlock", "SAUNet", "SpatialAttention"]


def _conv(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


class DropBlock(nn.Module):
    """Structured dropout: drops ``block_size``-wide squares (cubes) of a feature map.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    block_size
        Side of the dropped blocks in pixels.
    keep_prob
        Probability of keeping a unit (1.0 turns the block off).

    Notes
    -----
    The seed rate follows the paper and SA-UNet's code,
    ``gamma = (1 - keep_prob) / block_size**d * prod(n / (n - block_size + 1))``; seeds are drawn
    only where a whole block fits, blocks are made by max pooling, and kept units are rescaled by
    ``numel / kept``. Identity in eval mode.
    """

    def __init__(self, spatial_dims: int = 2, block_size: int = 7, keep_prob: float = 0.9) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
        self.spatial_dims = spatial_dims
        self.block_size = int(block_size)
        self.keep_prob = float(keep_prob)

    def gamma(self, sizes: Sequence[int]) -> float:
        """The Bernoulli seed rate for a feature map of these spatial sizes."""
        b = min(self.block_size, *sizes)
        g = (1.0 - self.keep_prob) / b**self.spatial_dims
        for n in sizes:
            g *= n / max(n - b + 1, 1)
        return g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.keep_prob >= 1.0:
            return x
        sizes = x.shape[2:]
        b = min(self.block_size, *sizes)
        valid = [n - b + 1 for n in sizes]
        seeds = (torch.rand((x.shape[0], x.shape[1], *valid), device=x.device) < self.gamma(sizes)).to(x.dtype)
        seeds = F.pad(seeds, _pad_to(sizes, valid, b))
        pool = F.max_pool2d if self.spatial_dims == 2 else F.max_pool3d
        blocks = seeds
        for axis in range(self.spatial_dims):  # separable max pooling: b per axis, not b**d
            k = [1] * self.spatial_dims
            p = [0] * self.spatial_dims
            k[axis], p[axis] = b, b // 2
            blocks = pool(blocks, kernel_size=tuple(k), stride=1, padding=tuple(p))
        if blocks.shape[2:] != sizes:  # even block sizes pool to one more
            blocks = blocks[(..., *[slice(0, n) for n in sizes])]
        mask = 1.0 - blocks
        kept = mask.sum()
        return x * mask * (mask.numel() / kept.clamp(min=1.0))


def _pad_to(sizes: Sequence[int], valid: Sequence[int], b: int) -> list[int]:
    """F.pad widths (last axis first) that centre the seed grid of valid block centres."""
    out: list[int] = []
    for n, v in zip(reversed(list(sizes)), reversed(list(valid)), strict=True):
        lo = (b - 1) // 2
        out += [lo, n - v - lo]
    return out


class SpatialAttention(nn.Module):
    """Spatial attention (CBAM's spatial branch, as in SA-UNet).

    Channel-wise mean and max (2 maps) -> ``kernel_size`` convolution to one map, no bias ->
    sigmoid -> multiplied with the input.
    """

    def __init__(self, spatial_dims: int = 2, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = _conv(spatial_dims)(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.kaiming_normal_(self.conv.weight)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map in (0, 1), one channel."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class _Block(nn.Sequential):
    """``[conv 3x3 -> DropBlock -> BatchNorm -> ReLU]``."""

    def __init__(self, spatial_dims: int, cin: int, cout: int, block_size: int, keep_prob: float) -> None:
        norm = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims]
        super().__init__(
            _conv(spatial_dims)(cin, cout, 3, padding=1, bias=False),
            DropBlock(spatial_dims, block_size, keep_prob),
            norm(cout),
            nn.ReLU(inplace=True),
        )


class SAUNet(nn.Module):
    """SA-UNet (see the module docstring).

    Parameters
    ----------
    spatial_dims
        2 (the paper) or 3.
    in_channels, out_channels
        Input channels; output channels (logits).
    features
        Encoder features per level, bottleneck last (paper: 16, 32, 64, 128).
    block_size, keep_prob
        DropBlock settings (paper: 7 and 0.82-0.9 depending on the data set).
    attention_kernel
        Kernel of the spatial-attention convolution (paper: 7).

    Inputs must have spatial sizes divisible by ``2 ** (len(features) - 1)``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (16, 32, 64, 128),
        block_size: int = 7,
        keep_prob: float = 0.9,
        attention_kernel: int = 7,
    ) -> None:
        super().__init__()
        feats = [int(f) for f in features]
        if len(feats) < 2:
            raise ValueError("features needs at least one encoder level and the bottleneck")
        d = spatial_dims
        conv_t = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[d]

        def double(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(_Block(d, cin, cout, block_size, keep_prob), _Block(d, cout, cout, block_size, keep_prob))

        self.down = nn.ModuleList()
        cin = in_channels
        for f in feats[:-1]:
            self.down.append(double(cin, f))
            cin = f
        self.pool = nn.MaxPool2d(2) if d == 2 else nn.MaxPool3d(2)
        self.bottleneck_in = _Block(d, cin, feats[-1], block_size, keep_prob)
        self.attention = SpatialAttention(d, attention_kernel)
        self.bottleneck_out = _Block(d, feats[-1], feats[-1], block_size, keep_prob)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        cin = feats[-1]
        for f in reversed(feats[:-1]):
            self.up.append(conv_t(cin, f, 3, stride=2, padding=1, output_padding=1))
            self.dec.append(double(2 * f, f))
            cin = f
        self.head = _conv(d)(cin, out_channels, 1)
        self.divisor = 2 ** (len(feats) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % self.divisor for s in x.shape[2:]):
            raise ValueError(f"SAUNet needs spatial sizes divisible by {self.divisor}, got {tuple(x.shape[2:])}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck_out(self.attention(self.bottleneck_in(x)))
        for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)


#: Our own architectures by the name cards use (``network.name``).
ARCHITECTURES: dict[str, type[nn.Module]] = {"SAUNet": SAUNet}
