"""``napari_cxseg.percentiles``: numpy's percentiles, exactly, from brackets; and the radiograph
intensity transform built on it equals MONAI's ``ScaleIntensityRangePercentiles``."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _arrays():
    rng = np.random.default_rng(7)
    n = 7 * 150_001  # a multiple of 7, above a million
    yield "normal", rng.normal(size=n).astype(np.float32)
    yield "12-bit integers", np.round(rng.random(n) ** 2 * 4095).astype(np.float32)
    yield "three values (ties everywhere)", rng.integers(0, 3, n).astype(np.float32)
    yield "half zeros", np.concatenate([np.zeros(n // 2, np.float32), rng.exponential(size=n - n // 2).astype(np.float32)])
    yield "sorted", np.sort(rng.normal(size=n).astype(np.float32))


@pytest.mark.parametrize("q", [[0.5, 99.5], [0.0, 1.0, 50.0, 100.0], [25.0, 25.0001]])
def test_percentiles_equal_numpy(q):
    from napari_cxseg.percentiles import percentiles

    for name, a in _arrays():
        ref = np.percentile(a, q)
        ours = percentiles(a, q)
        assert np.array_equal(ours, ref), f"{name}: {ours} != {ref}"
        assert np.array_equal(percentiles(torch.from_numpy(a).reshape(-1, 7), q), ref)


def test_percentiles_small_or_nan_fall_back_to_numpy():
    from napari_cxseg.percentiles import percentiles

    a = np.random.default_rng(1).normal(size=(1 << 20) + 1).astype(np.float32)
    a[5] = np.nan
    assert np.isnan(percentiles(a, [50.0])).all()
    b = np.arange(11, dtype=np.float32)
    assert np.array_equal(percentiles(b, [10.0, 95.0]), np.percentile(b, [10.0, 95.0]))


@pytest.mark.parametrize("clip", [True, False])
def test_radiograph_intensity_equals_monai(clip):
    from monai.transforms import ScaleIntensityRangePercentiles

    from napari_cxseg.model_space import intensity_transforms

    rng = np.random.default_rng(2)
    x = torch.as_tensor(np.round(rng.random((1, 1100, 1000)) ** 1.5 * 4095).astype(np.float32))
    spec = {"type": "percentiles", "lower": 0.5, "upper": 99.5, "b_min": 0.0, "b_max": 1.0, "clip": clip}
    ours = intensity_transforms(spec)[0]({"image": x.clone()})["image"]
    ref = ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=clip, channel_wise=True)(x.clone())
    assert torch.equal(torch.as_tensor(ours), torch.as_tensor(ref))


def _small_arrays():
    rng = np.random.default_rng(11)
    for n in (1 << 17, 600_001, 1_000_000):
        yield f"normal {n}", rng.normal(size=n).astype(np.float32)
        yield f"12-bit {n}", np.round(rng.random(n) ** 2 * 4095).astype(np.float32)
        yield f"ties {n}", rng.integers(0, 3, n).astype(np.float32)
        yield f"sorted {n}", np.sort(rng.exponential(size=n).astype(np.float32))


@pytest.mark.parametrize("q", [[0.5, 99.5], [0.0, 1.0, 50.0, 100.0], [25.0, 25.0001], [33.3]])
def test_torch_quantiles_equal_torch_quantile(q):
    from monai.transforms.utils_pytorch_numpy_unification import percentile

    from napari_cxseg.percentiles import torch_quantiles

    for name, a in _small_arrays():
        x = torch.from_numpy(a).reshape(-1, 1)
        ref = percentile(x, np.asarray(q))  # MONAI's: torch.quantile at or below a million elements
        ours = torch_quantiles(x, q)
        assert ours.dtype == torch.float32 and torch.equal(ours, ref), f"{name}: {ours} != {ref}"
    nan = torch.from_numpy(np.r_[np.float32(np.nan), np.arange(200_000, dtype=np.float32)])
    assert torch.isnan(torch_quantiles(nan, [50.0])).all()


@pytest.mark.parametrize("shape", [(1, 1000, 1000), (1, 700, 600)])
def test_radiograph_intensity_equals_monai_below_a_million_pixels(shape):
    from monai.transforms import ScaleIntensityRangePercentiles

    from napari_cxseg.model_space import intensity_transforms

    rng = np.random.default_rng(3)
    x = torch.as_tensor(np.round(rng.random(shape) ** 1.5 * 4095).astype(np.float32))
    spec = {"type": "percentiles", "lower": 0.5, "upper": 99.5, "b_min": 0.0, "b_max": 1.0, "clip": True}
    ours = intensity_transforms(spec)[0]({"image": x.clone()})["image"]
    ref = ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True, channel_wise=True)(x.clone())
    assert torch.equal(torch.as_tensor(ours), torch.as_tensor(ref))
