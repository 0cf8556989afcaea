"""The Predictor: output on the input grid, real inversion, left/right, progress and cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_cxseg.geometry import (
    Geometry,
    held_geometry,
    voxel_to_world,
    world_from_lps_affine,
    world_from_ras_affine,
)
from napari_cxseg.images import CxsegError, Image
from napari_cxseg.inference import Cancelled, Predictor, combine_masks
from napari_cxseg.models.cards import card_from_dict

torch.set_num_threads(1)


def card3d(**over) -> object:
    d = {
        "name": "test-3d",
        "task": "threshold test",
        "modality": ["CT"],
        "spatial_dims": 3,
        "input": {"channels": ["CT"], "orientation": "RAS", "spacing": [1.5, 1.5, 1.5],
                  "intensity": {"type": "none"}},
        "network": {"name": "UNet", "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                                             "channels": [4, 8], "strides": [2]}},
        "inference": {"roi_size": [32, 32, 32], "overlap": 0.25, "sw_batch_size": 2, "mode": "gaussian"},
        "output": {"activation": "softmax"},
        "classes": {1: {"name": "bright", "colour": "#ff0000"}},
        "weights": {"source": "file", "file": "unused.pt"},
    }
    d.update(over)
    return card_from_dict(d, origin="test-3d")


class ThresholdNet(nn.Module):
    """Class 1 where the input is above ``t`` (a position-independent, exact rule)."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.t - x, x - self.t], dim=1) * 20.0


class RightwardNet(nn.Module):
    """Class 1 where intensity increases along model axis 0 (RAS x: towards the patient's Right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nxt = torch.cat([x[:, :, 1:], x[:, :, -1:]], dim=2)
        d = (nxt - x) * 50.0
        return torch.cat([-d, d], dim=1)


def volume(disk_shape, ras_affine=None, lps_affine=None, fn=None, modality="CT") -> Image:
    """An Image whose disk array stores ``fn(world zyx)`` with the given file affine."""
    if ras_affine is not None:
        aff_world = world_from_ras_affine(np.asarray(ras_affine, float))
        src = {"format": "nifti", "path": "synthetic.nii.gz"}
        geom = held_geometry(disk_shape, aff_world, source_affine=np.asarray(ras_affine, float), source=src)
    else:
        aff_world = world_from_lps_affine(np.asarray(lps_affine, float))
        geom = held_geometry(disk_shape, aff_world, source={"format": "dicom"})
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in disk_shape], indexing="ij"), -1).reshape(-1, 3)
    hom = np.c_[idx, np.ones(len(idx))]
    world = (aff_world @ hom.T).T[:, :3]
    disk = fn(world).reshape(disk_shape).astype(np.float32)
    arr = geom.from_disk(disk)
    return Image(array=np.ascontiguousarray(arr), geometry=geom, modality=modality,
                 meta={"source_path": "synthetic.nii.gz"})


def blob(world: np.ndarray) -> np.ndarray:
    """Ellipsoid centred 18 mm to the patient's LEFT (world x = L), value 100 at centre."""
    c = np.array([0.0, 4.0, 18.0])
    r = np.array([14.0, 16.0, 12.0])
    q = (((world - c) / r) ** 2).sum(-1)
    return 100.0 * (1.0 - q)


def rot_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    m = np.eye(4)
    m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return m


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


# RAS-stored (NIfTI canonical), LPS-stored (DICOM-like) and oblique inputs, anisotropic voxels.
def _ras_affine(spacing, shape):
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = -np.asarray(spacing) * (np.asarray(shape) - 1) / 2
    return a


SHAPE = (44, 40, 14)
SP = (1.1, 0.9, 3.0)
CASES = {
    "ras": {"ras_affine": _ras_affine(SP, SHAPE)},
    "lps": {"lps_affine": _ras_affine(SP, SHAPE)},  # same numbers read as LPS: x grows to the Left
    "las_flipped": {"ras_affine": np.diag([-1, 1, 1, 1]) @ _ras_affine(SP, SHAPE)},
    "oblique": {"ras_affine": rot_z(20) @ _ras_affine(SP, SHAPE)},
    "permuted": {"ras_affine": _ras_affine(SP, SHAPE)[:, [2, 0, 1, 3]]},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_3d_output_on_input_grid_and_inverts(case):
    shape = SHAPE if case != "permuted" else (SHAPE[2], SHAPE[0], SHAPE[1])
    kw = dict(CASES[case])
    if case == "permuted":
        sp = np.array(SP)
        a = np.eye(4)
        a[:3, :3] = np.eye(3)[:, [2, 0, 1]] * sp[[2, 0, 1]]
        a[:3, 3] = -(a[:3, :3] @ (np.asarray(shape) - 1)) / 2
        kw = {"ras_affine": a}
    img = volume(shape, fn=blob, **kw)
    before = img.array.copy()
    pred = Predictor(card3d(), device="cpu", network=ThresholdNet(50.0))
    lab = pred.predict(img)
    assert lab.array.shape == img.array.shape
    assert np.array_equal(lab.geometry.affine, img.geometry.affine)
    assert lab.geometry is not img.geometry
    if img.geometry.disk_ornt is None:
        assert lab.geometry.disk_ornt is None
    else:
        assert np.array_equal(lab.geometry.disk_ornt, img.geometry.disk_ornt)
    assert lab.geometry.source == img.geometry.source
    assert np.array_equal(img.array, before)  # input untouched
    expected = img.array > 50.0
    assert expected.sum() > 200
    d = dice(lab.array == 1, expected)
    assert d > 0.95, f"{case}: Dice {d:.3f}"
    # the blob sits on the patient's left: world x (L) of the label centroid is positive
    cz = voxel_to_world(lab.geometry, np.argwhere(lab.array == 1)).mean(0)
    assert cz[2] > 10
    assert lab.meta["model"] == "test-3d" and lab.meta["reference_image_path"] == "synthetic.nii.gz"
    assert lab.classes[1].name == "bright"


@pytest.mark.parametrize("case", ["ras", "lps", "oblique"])
def test_3d_model_sees_ras_orientation(case):
    """Intensity grows towards the patient's Right; in RAS model space that is +x."""
    img = volume(SHAPE, fn=lambda w: -w[:, 2] * 2.0, **CASES[case])  # world x is L, so -L is R
    lab = Predictor(card3d(), device="cpu", network=RightwardNet()).predict(img)
    frac = (lab.array == 1).mean()
    assert frac > 0.85, f"{case}: only {frac:.2f} labelled; the model did not see RAS order"


def test_3d_left_right_flip_detected():
    """The same check fails for a ramp towards the patient's Left (guards the test itself)."""
    img = volume(SHAPE, fn=lambda w: w[:, 2] * 2.0, **CASES["lps"])
    lab = Predictor(card3d(), device="cpu", network=RightwardNet()).predict(img)
    assert (lab.array == 1).mean() < 0.05


def _radiograph(shape=(100, 80), spacing=(0.4, 0.5)) -> Image:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    arr = 200.0 * np.exp(-(((yy - 40) / 20.0) ** 2 + ((xx - 50) / 15.0) ** 2)) + rng.normal(0, 5, shape)
    aff = np.diag([*spacing, 1.0])
    aff[:2, 2] = [3.0, -2.0]
    geom = Geometry(affine=aff, frame="image", source={"format": "png", "path": "cxr.png"})
    return Image(array=arr.astype(np.float32), geometry=geom, modality="XR",
                 meta={"source_path": "cxr.png", "name": "cxr"})


def card2d(tmp_path, **over):
    torch.manual_seed(0)
    args = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2]}
    from monai.networks.nets import UNet

    w = tmp_path / "tiny_unet2d.pt"
    torch.save(UNet(**args).state_dict(), w)
    d = {
        "name": "tiny-cxr",
        "task": "test",
        "modality": ["CR", "DX", "XR"],
        "spatial_dims": 2,
        "input": {"channels": ["radiograph"], "size": [64, 64], "intensity": {"type": "percentiles"}},
        "network": {"name": "UNet", "args": args},
        "inference": {"roi_size": [64, 64], "overlap": 0.25, "sw_batch_size": 1},
        "output": {"activation": "softmax", "largest_component": True},
        "classes": {1: "right lung", 2: "left lung"},
        "weights": {"source": "file", "file": str(w)},
    }
    d.update(over)
    return card_from_dict(d, origin="tiny-cxr")


@pytest.mark.parametrize("fit", ["stretch", "pad"])
def test_2d_unet_card_shape_and_geometry(tmp_path, fit):
    card = card2d(tmp_path)
    card.input.fit = fit
    img = _radiograph()
    lab = Predictor(card, device="cpu").predict(img)
    assert lab.array.shape == img.array.shape
    assert np.array_equal(lab.geometry.affine, img.geometry.affine)
    assert lab.geometry.frame == "image"
    assert lab.array.dtype == np.uint8
    assert set(np.unique(lab.array)) <= {0, 1, 2}
    assert lab.meta["model"] == "tiny-cxr"
    assert len(np.unique(lab.array)) <= 3


def test_largest_component_override(tmp_path):
    card = card2d(tmp_path, input={"channels": ["radiograph"], "size": [64, 64], "intensity": {"type": "none"}})
    img = _radiograph()
    img.array[80:95, 5:15] = 250.0  # a second, smaller bright island
    net = ThresholdNet(100.0)
    kept = Predictor(card, device="cpu", network=net).predict(img)  # card: largest_component true
    assert not kept.array[85, 10]
    both = Predictor(card, device="cpu", network=net, largest_component=False).predict(img)
    assert both.array[85, 10] == 1


def test_2d_resize_round_trip_is_exact_for_threshold_net(tmp_path):
    card = card2d(tmp_path, input={"channels": ["radiograph"], "size": [64, 64], "fit": "pad",
                                   "intensity": {"type": "none"}})
    img = _radiograph()
    lab = Predictor(card, device="cpu", network=ThresholdNet(100.0)).predict(img)
    assert dice(lab.array > 0, img.array > 100.0) > 0.9


def test_2d_rgb_is_averaged_and_wrong_channels_refused(tmp_path):
    card = card2d(tmp_path)
    g = _radiograph()
    rgb = Image(np.stack([g.array] * 3), g.geometry, "XR", ["R", "G", "B"], dict(g.meta))
    lab = Predictor(card, device="cpu").predict(rgb)
    assert lab.array.shape == g.array.shape
    vol = volume(SHAPE, fn=blob, **CASES["ras"])
    with pytest.raises(CxsegError, match="2D model.*3D"):
        Predictor(card, device="cpu").predict(vol)
    ct2 = Image(g.array, g.geometry, "CT", None, {"source_path": "x.dcm"})
    with pytest.raises(CxsegError, match="expects CR/DX/XR images; x.dcm has modality CT"):
        Predictor(card, device="cpu").predict(ct2)


def test_multichannel_matched_by_name():
    card = card3d(input={"channels": ["t1gd", "FLAIR"], "orientation": "RAS", "spacing": [1.5, 1.5, 1.5],
                         "intensity": {"type": "none"}}, modality=["MR"])
    v = volume(SHAPE, fn=blob, modality="MR", **CASES["ras"])
    arr = np.stack([np.zeros_like(v.array), v.array, np.full_like(v.array, -5.0)])
    img = Image(arr, v.geometry, "MR", ["T1w", "FLAIR", "T2w"], dict(v.meta))
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.shape[1])
            return ThresholdNet(50.0)(x[:, 1:2])  # FLAIR must arrive second

    with pytest.raises(CxsegError, match=r"expects 2 channels \(t1gd, FLAIR\); synthetic.nii.gz has 3"):
        Predictor(card, device="cpu", network=Spy()).predict(img)
    img.channel_names = ["FLAIR", "T1w", "t1gd"]
    lab = Predictor(card, device="cpu", network=Spy()).predict(img)
    assert seen[0] == 2
    two = Image(arr[1::-1].copy(), v.geometry, "MR", ["T1w", "T2w"], dict(v.meta))
    with pytest.raises(CxsegError, match=r"expects 2 channels \(t1gd, FLAIR\); .* has 2 \(T1w, T2w\)"):
        Predictor(card, device="cpu", network=Spy()).validate(two)
    two.channel_names = ["c0", "c1"]  # unnamed channels: taken in the card's order
    Predictor(card, device="cpu", network=Spy()).validate(two)
    assert dice(lab.array == 1, v.array > 50) > 0.95 or (lab.array == 1).sum() == 0


def test_progress_monotonic_to_total_and_cancel_within_one_batch():
    img = volume((64, 64, 40), fn=blob, **{"ras_affine": np.diag([1.0, 1.0, 1.5, 1.0])})
    card = card3d(inference={"roi_size": [16, 16, 16], "overlap": 0.25, "sw_batch_size": 2})
    calls = []

    class Counting(ThresholdNet):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    pred = Predictor(card, device="cpu", network=Counting(50.0))
    steps = []
    gen = pred.iter_predict(img)
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            lab = stop.value
            break
    totals = {t for _, t in steps}
    assert len(totals) == 1
    total = totals.pop()
    assert total > 5
    done = [d for d, _ in steps]
    assert done == sorted(done) and done[0] == 0 and done[-1] == total
    assert len(calls) == total
    assert lab.array.shape == img.array.shape

    calls.clear()
    n = {"polls": 0}

    def cancel():
        n["polls"] += 1
        return len(calls) >= 1

    with pytest.raises(Cancelled):
        pred.predict(img, progress=lambda d, t: None, cancel=cancel)
    assert len(calls) == 1  # stopped before the second window batch

    # closing the generator (napari worker quit) stops it too
    calls.clear()
    gen = pred.iter_predict(img)
    next(gen)
    next(gen)
    gen.close()
    assert len(calls) == 1


def test_sliding_window_matches_monai():
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    from monai.networks.nets import UNet

    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,)).eval()
    x = torch.randn(1, 1, 40, 37, 20)
    pred = Predictor(card3d(), device="cpu", network=net)
    with torch.inference_mode():
        gen = pred._sliding_window(x, (16, 16, 24), 0.25, 3, "gaussian")
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                ours = stop.value
                break
        ref = sliding_window_inference(x, (16, 16, 24), 3, net, overlap=0.25, mode="gaussian")
    assert ours.shape == ref.shape
    assert torch.allclose(ours, torch.as_tensor(ref), atol=1e-5)


def test_combine_masks_smallest_and_priority():
    big = np.zeros((10, 10), bool)
    big[1:9, 1:9] = True
    small = np.zeros((10, 10), bool)
    small[4:6, 4:6] = True
    masks = np.stack([small, big])
    out = combine_masks(masks, {0: 1, 1: 2}, "smallest")
    assert out[5, 5] == 1 and out[2, 2] == 2 and out[0, 0] == 0
    out = combine_masks(masks, {0: 1, 1: 2}, "priority", priority=[1, 0])
    assert out[5, 5] == 2
    out = combine_masks(masks[::-1], {0: 2, 1: 1}, "last")
    assert out[5, 5] == 1


def test_multilabel_sigmoid_smallest_structure_wins(tmp_path):
    """Sigmoid card, two nested structures: the smaller one is shown where both claim a pixel."""
    card = card2d(tmp_path, output={"activation": "sigmoid", "overlap": "smallest",
                                    "label_map": {0: 1, 1: 2}},
                  input={"channels": ["radiograph"], "size": [64, 64], "intensity": {"type": "none"}})

    class Nested(nn.Module):
        def forward(self, x):
            return torch.cat([(x - 150.0), (x - 20.0)], 1)  # channel 0 small core, channel 1 large

    img = _radiograph()
    lab = Predictor(card, device="cpu", network=Nested()).predict(img)
    core = img.array > 150
    assert core.sum() > 20
    assert (lab.array[core] == 1).mean() > 0.9
    ring = (img.array > 40) & (img.array < 120)
    assert (lab.array[ring] == 2).mean() > 0.9


def test_no_inference_mode_leaks_to_the_caller_between_steps():
    img = volume((40, 40, 20), fn=blob, **{"ras_affine": np.diag([1.0, 1.0, 1.5, 1.0])})
    card = card3d(inference={"roi_size": [16, 16, 16], "overlap": 0.0, "sw_batch_size": 1})
    gen = Predictor(card, device="cpu", network=ThresholdNet(50.0)).iter_predict(img)
    for _ in range(3):
        next(gen)
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    gen.close()


def test_nan_and_inf_in_an_image_warn_and_give_a_result():
    """A volume with NaN/Inf voxels (other plugins' layers, odd files) still segments, with a warning."""
    import warnings

    from napari_cxseg import io
    from napari_cxseg.inference import Predictor
    from napari_cxseg.sample_data_files import sample_paths

    image = io.read(sample_paths("chest_xray")[0])[0]
    clean = Predictor("cxr-lungs", device="cpu").predict(image).array
    bad = image.array.astype(np.float32).copy()
    bad[:40, :40] = np.nan
    bad[-5:, -5:] = np.inf
    image.array = bad
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = Predictor("cxr-lungs", device="cpu").predict(image).array
    assert any("non-finite" in str(x.message) for x in w)
    assert (out == 1).sum() > 0.8 * (clean == 1).sum() and (out == 2).sum() > 0.8 * (clean == 2).sum()
