"""VISTA3D point-prompt backend: geometry, plumbing against MONAI, bundle errors and trust.

A tiny real VISTA3D (MONAI's ``VISTA3D`` with a 3-level, 8-filter ``SegResNetDS2``) stands in
for the 218M-parameter ``vista3d132``: its architecture is a plain-valued ``network_def`` in the
test bundle's config, its random weights are ``models/model.pt``. Nothing is downloaded.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
torch.set_num_threads(1)

from monai.apps.vista3d.inferer import point_based_window_inferer  # noqa: E402
from monai.data import MetaTensor  # noqa: E402
from monai.networks.nets import SegResNetDS2  # noqa: E402
from monai.networks.nets.vista3d import VISTA3D, ClassMappingClassify, PointMappingSAM  # noqa: E402
from monai.transforms import ScaleIntensityRange, Spacing  # noqa: E402
from monai.transforms.utils import keep_components_with_positive_points  # noqa: E402

from napari_cxseg.editing.interactive import Prompts  # noqa: E402
from napari_cxseg.images import CxsegError  # noqa: E402
from napari_cxseg.models import vista3d as v3  # noqa: E402

FEAT = 8
PATCH = [32, 32, 32]
TINY_DEF = {
    "_target_": "monai.networks.nets.VISTA3D",
    "image_encoder": {
        "_target_": "monai.networks.nets.SegResNetDS2",
        "in_channels": 1,
        "blocks_down": [1, 1, 1],
        "norm": "instance",
        "out_channels": FEAT,
        "init_filters": FEAT,
        "dsdepth": 1,
    },
    "class_head": {
        "_target_": "monai.networks.nets.vista3d.ClassMappingClassify",
        "n_classes": 16,
        "feature_size": FEAT,
    },
    "point_head": {
        "_target_": "monai.networks.nets.vista3d.PointMappingSAM",
        "feature_size": FEAT,
        "n_classes": 16,
        "last_supported": 8,
    },
}
#: The real bundle's numbers (model-zoo models/vista3d/configs/inference.json).
A_MIN, A_MAX = -963.8247715525971, 1053.678477684517
SPACING = np.array([2.5, 0.8, 0.9])  # held (S, P, L) mm
SHAPE = (20, 36, 40)


def tiny_network() -> VISTA3D:
    """The same architecture as TINY_DEF, built here without the config."""
    torch.manual_seed(0)
    return VISTA3D(
        image_encoder=SegResNetDS2(
            in_channels=1, blocks_down=(1, 1, 1), norm="instance", out_channels=FEAT,
            init_filters=FEAT, dsdepth=1,
        ),
        class_head=ClassMappingClassify(n_classes=16, feature_size=FEAT, use_mlp=True),
        point_head=PointMappingSAM(feature_size=FEAT, n_classes=16, last_supported=8),
    ).eval()


def write_bundle(root, network_def, state, extra=None):
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    cfg = {
        "patch_size": PATCH,
        "resample_spacing": [1.5, 1.5, 1.5],
        "input_channels": 1,
        "network_def": network_def,
        "preprocessing_transforms": [
            {"_target_": "ScaleIntensityRanged", "keys": "@image_key", "a_min": A_MIN,
             "a_max": A_MAX, "b_min": 0, "b_max": 1, "clip": True},
        ],
        **(extra or {}),
    }
    (root / "configs" / "inference.json").write_text(json.dumps(cfg))
    torch.save(state, root / "models" / "model.pt")
    return root


@pytest.fixture(scope="module")
def net():
    return tiny_network()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, net):
    # a checkpoint dict, as training scripts save them
    return write_bundle(tmp_path_factory.mktemp("vista3d"), TINY_DEF, {"state_dict": net.state_dict()})


@pytest.fixture(scope="module")
def ct():
    """A 60 HU ball in -100 HU soft tissue, with noise; held (S, P, L)."""
    rng = np.random.default_rng(1)
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(SHAPE, SPACING, strict=True)],
                          indexing="ij")
    ball = (z - 25) ** 2 + (y - 14) ** 2 + (x - 20) ** 2 <= 9.0**2
    img = np.where(ball, 60.0, -100.0) + rng.normal(0, 10, SHAPE)
    return img.astype(np.int16)


def reference(net, image, spacing, pos, neg):
    """What the bundle does, written out with MONAI: RAS, Spacing, scale, inferer, invert."""
    ras = np.ascontiguousarray(image[:, ::-1, ::-1].transpose(2, 1, 0), dtype=np.float32)
    ras_affine = np.diag([*spacing[::-1], 1.0])
    spacing_t = Spacing(pixdim=(1.5, 1.5, 1.5), mode="bilinear")
    x = spacing_t(MetaTensor(torch.from_numpy(ras)[None], affine=torch.as_tensor(ras_affine)))
    x = ScaleIntensityRange(a_min=A_MIN, a_max=A_MAX, b_min=0, b_max=1, clip=True)(x)
    # the bundle's evaluator: points through inv(affine after) @ affine before
    n = np.array(image.shape)
    held = np.concatenate([pos, neg])
    ras_idx = np.stack([n[2] - 1 - held[:, 2], n[1] - 1 - held[:, 1], held[:, 0]], 1)
    m = np.linalg.inv(x.affine.numpy()) @ ras_affine
    pts = (m[:3, :3] @ ras_idx.T + m[:3, 3:]).T
    coords = torch.as_tensor(pts[None], dtype=torch.float32)
    labels = torch.as_tensor([[1] * len(pos) + [0] * len(neg)])
    with torch.no_grad():
        logits = point_based_window_inferer(
            x.as_tensor()[None], roi_size=PATCH, predictor=net, point_coords=coords,
            point_labels=labels, transpose=True,
        )
    logits = keep_components_with_positive_points(torch.as_tensor(logits).float(), coords, labels)
    prob = torch.nan_to_num(torch.sigmoid(logits[0]), nan=0.0)
    # back to the input grid with the Spacing transform's own inverse (as Invertd does)
    pred = MetaTensor(prob, affine=x.affine, applied_operations=x.applied_operations)
    back = spacing_t.inverse(pred)
    assert tuple(back.shape[1:]) == ras.shape
    mask_ras = back[0].numpy() > 0.5
    return np.ascontiguousarray(mask_ras.transpose(2, 1, 0)[:, ::-1, ::-1]), logits


# ---------------------------------------------------------------------- (1) geometry


def test_points_round_trip_and_patient_sides():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, (20, 3)) * (np.array(SHAPE) - 1)
    ras = v3.held_points_to_ras(pts, SHAPE, SPACING, (1.5, 1.5, 1.5))
    back = v3.ras_points_to_held(ras, SHAPE, SPACING, (1.5, 1.5, 1.5))
    np.testing.assert_allclose(back, pts, atol=1e-9)

    ras_shape = v3.resampled_shape(SHAPE, SPACING, (1.5, 1.5, 1.5))
    centre = (np.array(ras_shape) - 1) / 2
    left, right = np.array([[10, 18, 35]]), np.array([[10, 18, 4]])  # held x grows toward Left
    anterior, superior = np.array([[10, 2, 20]]), np.array([[18, 18, 20]])
    # RAS x grows toward the patient's Right: a click on the left lies below the centre
    assert v3.held_points_to_ras(left, SHAPE, SPACING)[0, 0] < centre[0]
    assert v3.held_points_to_ras(right, SHAPE, SPACING)[0, 0] > centre[0]
    assert v3.held_points_to_ras(anterior, SHAPE, SPACING)[0, 1] > centre[1]
    assert v3.held_points_to_ras(superior, SHAPE, SPACING)[0, 2] > centre[2]


def test_points_follow_the_resampled_array():
    """A linear field of held mm coordinates, resampled by MONAI, reads back at the points."""
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(SHAPE, SPACING, strict=True)],
                          indexing="ij")
    field = (z + 3 * y + 7 * x).astype(np.float32)
    sub = v3._resample_to_ras(field, SPACING, np.array([1.5, 1.5, 1.5]))
    assert tuple(sub.shape[1:]) == v3.resampled_shape(SHAPE, SPACING, (1.5, 1.5, 1.5))
    pts = np.array([[3, 4, 5], [10, 20, 30], [17.0, 30.0, 12.0]])
    ras = v3.held_points_to_ras(pts, SHAPE, SPACING)
    idx = np.round(ras).astype(int)
    # read at the nearest resampled voxel: the field there is the point's mm position
    for p, i, r in zip(pts, idx, ras, strict=True):
        got = float(sub[0][tuple(i)])
        off = (i - r) * 1.5  # mm between the voxel and the point, RAS axes
        mm = p * SPACING + np.array([off[2], -off[1], -off[0]])
        assert got == pytest.approx(mm[0] + 3 * mm[1] + 7 * mm[2], abs=1e-3)


def test_window_box_holds_the_window():
    shape, spacing = (200, 300, 300), np.array([1.0, 0.7, 0.7])
    width = 128 * 1.5
    centre = np.array([[100, 150, 150]])
    box = v3.window_box(centre, shape, spacing)
    for ax, sl in enumerate(box):
        assert sl.start * spacing[ax] <= centre[0, ax] * spacing[ax] - width / 2
        assert (sl.stop - 1) * spacing[ax] >= centre[0, ax] * spacing[ax] + width / 2
        assert (sl.stop - sl.start) * spacing[ax] < width + 8 * 1.5  # not much more
    corner = v3.window_box(np.array([[1, 2, 297]]), shape, spacing)
    assert corner[0].start == 0 and corner[0].stop * 1.0 >= width
    assert corner[2].stop == 300 and (300 - 1 - corner[2].start) * 0.7 >= width
    small = v3.window_box(np.array([[10, 18, 20]]), SHAPE, SPACING, PATCH)
    assert small == tuple(slice(0, n) for n in SHAPE)  # the test volume fits one window


# ---------------------------------------------------------------------- (2) plumbing


@pytest.mark.filterwarnings("ignore:Setting affine")
def test_backend_equals_monai_pipeline(bundle, net, ct):
    pos, neg = np.array([[10.0, 17.0, 22.0]]), np.array([[3.0, 30.0, 5.0]])
    expected, logits = reference(net, ct, SPACING, pos, neg)
    assert 0 < expected.sum() < expected.size  # not trivial
    got = v3.vista3d_backend(ct, Prompts(pos, neg), SPACING, None, 30.0, bundle_dir=bundle,
                             device="cpu")
    assert got.dtype == bool and got.shape == ct.shape  # (5)
    np.testing.assert_array_equal(got, expected)


def test_crop_changes_only_the_grid_phase(bundle, ct):
    """On a long volume the backend crops around the click; the crop is the whole story."""
    wide = np.concatenate([ct, ct, ct], axis=2)  # 120 voxels along L
    pos = np.array([[10.0, 17.0, 60.0]])
    box = v3.window_box(pos, wide.shape, SPACING, PATCH)
    assert box[2] != slice(0, 120)
    got = v3.vista3d_backend(wide, Prompts(pos, np.zeros((0, 3))), SPACING, None, 30.0,
                             bundle_dir=bundle, device="cpu")
    start = np.array([s.start for s in box])
    sub = wide[box]
    assert v3.window_box(pos - start, sub.shape, SPACING, PATCH) == tuple(
        slice(0, n) for n in sub.shape
    )
    alone = v3.vista3d_backend(sub, Prompts(pos - start, np.zeros((0, 3))), SPACING, None,
                               30.0, bundle_dir=bundle, device="cpu")
    np.testing.assert_array_equal(got[box], alone)
    outside = np.ones(wide.shape, bool)
    outside[box] = False
    assert not got[outside].any()


def test_existing_mask_kept_outside_the_edit(bundle, ct):
    wide = np.concatenate([ct, ct, ct], axis=2)
    existing = np.zeros(wide.shape, bool)
    existing[5:15, 10:25, 100:115] = True  # far from the click: outside its window
    existing[8:12, 14:20, 58:62] = True  # under the click
    pos = np.array([[10.0, 17.0, 60.0]])
    got = v3.vista3d_backend(wide, Prompts(pos, np.zeros((0, 3))), SPACING, existing, 30.0,
                             bundle_dir=bundle, device="cpu")
    assert got.shape == wide.shape and got.dtype == bool
    np.testing.assert_array_equal(got[:, :, 90:], existing[:, :, 90:])
    # a mask alone (no click) comes back unchanged
    same = v3.vista3d_backend(wide, Prompts(np.zeros((0, 3)), np.zeros((0, 3))), SPACING,
                              existing, 30.0, bundle_dir=bundle, device="cpu")
    np.testing.assert_array_equal(same, existing)


def test_box_centre_and_footprint(bundle, ct):
    box = np.array([[10.0, 8.0, 12.0], [10.0, 26.0, 30.0]])  # flat along S
    got = v3.vista3d_backend(ct, Prompts(np.zeros((0, 3)), np.zeros((0, 3)), box), SPACING,
                             None, 30.0, bundle_dir=bundle, device="cpu")
    assert got.shape == ct.shape and got.dtype == bool
    assert not got[:, :8].any() and not got[:, 27:].any()
    assert not got[:, :, :12].any() and not got[:, :, 31:].any()
    centre = v3.vista3d_backend(ct, Prompts(box.mean(0, keepdims=True), np.zeros((0, 3))),
                                SPACING, None, 30.0, bundle_dir=bundle, device="cpu")
    np.testing.assert_array_equal(got, centre & v3.box_footprint(ct.shape, box))


def test_label_prompt(bundle, ct):
    pos = np.array([[10.0, 17.0, 22.0]])
    for label in (5, 12, "3"):  # class head + points; zero-shot (> last_supported 8)
        got = v3.vista3d_backend(ct, Prompts(pos, np.zeros((0, 3))), SPACING, None, 30.0,
                                 bundle_dir=bundle, device="cpu", label_prompt=label)
        assert got.shape == ct.shape and got.dtype == bool
    with pytest.raises(CxsegError, match="sub-classes"):
        v3.vista3d_backend(ct, Prompts(pos, np.zeros((0, 3))), SPACING, None, 30.0,
                           bundle_dir=bundle, device="cpu", label_prompt=2)
    with pytest.raises(CxsegError, match="no class named"):
        v3.vista3d_backend(ct, Prompts(pos, np.zeros((0, 3))), SPACING, None, 30.0,
                           bundle_dir=bundle, device="cpu", label_prompt="unicorn")


def test_network_is_cached_and_settings_read(bundle):
    a, settings = v3.load_vista3d(bundle, device="cpu")
    b, _ = v3.load_vista3d(bundle, device="cpu")
    assert a is b
    assert settings.patch_size == tuple(PATCH)
    assert (settings.a_min, settings.a_max, settings.clip) == (A_MIN, A_MAX, True)
    assert isinstance(a, VISTA3D) and not a.training


def test_2d_image_is_refused(bundle):
    with pytest.raises(CxsegError, match="3D"):
        v3.vista3d_backend(np.zeros((8, 8)), Prompts(np.array([[2.0, 2.0]]), np.zeros((0, 2))),
                           np.array([1.0, 1.0]), None, 30.0, bundle_dir=bundle, device="cpu")


# ---------------------------------------------------------------------- (3) missing files


def test_missing_bundle_and_weights(tmp_path, ct):
    prompts = Prompts(np.array([[10.0, 17.0, 22.0]]), np.zeros((0, 3)))
    with pytest.raises(CxsegError, match="monai.bundle download vista3d --bundle_dir"):
        v3.vista3d_backend(ct, prompts, SPACING, None, 30.0)
    missing = tmp_path / "nowhere"
    with pytest.raises(CxsegError, match=str(missing)):
        v3.vista3d_backend(ct, prompts, SPACING, None, 30.0, bundle_dir=missing)
    (tmp_path / "b" / "configs").mkdir(parents=True)
    with pytest.raises(CxsegError, match=str(tmp_path / "b" / "models" / "model.pt")):
        v3.vista3d_backend(ct, prompts, SPACING, None, 30.0, bundle_dir=tmp_path / "b")


# ---------------------------------------------------------------------- (4) trust


def test_dollar_network_def_runs_only_with_trust(tmp_path, net, ct):
    marker = tmp_path / "code-ran"
    code = "$pathlib.Path(@marker).touch() or @tiny"
    extra = {"imports": ["$import pathlib"], "marker": str(marker), "tiny": TINY_DEF}
    root = write_bundle(tmp_path / "bundle", code, net.state_dict(), extra=extra)
    prompts = Prompts(np.array([[10.0, 17.0, 22.0]]), np.zeros((0, 3)))
    # untrusted: the expression is ignored, vista3d132 is built (on the meta device) and
    # the tiny weights do not fit it
    with pytest.raises(CxsegError, match="do not fit"):
        v3.vista3d_backend(ct, prompts, SPACING, None, 30.0, bundle_dir=root, device="cpu")
    assert not marker.exists()
    got = v3.vista3d_backend(ct, prompts, SPACING, None, 30.0, bundle_dir=root, device="cpu",
                             trust=True)
    assert marker.exists() and got.shape == ct.shape


def test_plain_network_def_rules():
    assert v3.is_plain_network_def(TINY_DEF)
    assert not v3.is_plain_network_def({**TINY_DEF, "_mode_": "debug"})
    assert not v3.is_plain_network_def({**TINY_DEF, "_target_": "os.system"})
    assert not v3.is_plain_network_def({**TINY_DEF, "image_encoder": "@encoder"})
    assert not v3.is_plain_network_def("$monai.networks.nets.vista3d132(in_channels=1)")


def test_through_the_click_engine(bundle, ct):
    from napari_cxseg.editing.interactive import (
        PromptSession,
        available_backends,
        segment_from_prompts,
    )

    if "vista3d" not in available_backends():
        pytest.skip("the vista3d backend is not registered in this checkout")
    opts = {"bundle_dir": str(bundle), "device": "cpu"}
    direct = v3.vista3d_backend(ct, Prompts(np.array([[10.0, 17.0, 22.0]]), np.zeros((0, 3))),
                                SPACING, None, 30.0, **opts)
    got = segment_from_prompts(ct, [[10, 17, 22]], spacing=SPACING, backend="vista3d", **opts)
    np.testing.assert_array_equal(got, direct)
    session = PromptSession(ct, spacing=SPACING, backend="vista3d", options=opts)
    first = session.add_point((10, 17, 22)).copy()
    session.add_point((3, 30, 5), positive=False)
    np.testing.assert_array_equal(session.undo_last(), first)


def test_untrusted_network_def_cannot_reach_os_system(tmp_path):
    """`monai.networks.utils.torch.os.system` starts with monai.networks. but is not a network."""
    from napari_cxseg.models.vista3d import is_plain_network_def

    marker = tmp_path / "ran"
    evil = {"_target_": "monai.networks.utils.torch.os.system", "command": f"touch {marker}"}
    assert not is_plain_network_def(evil)
    assert is_plain_network_def({"_target_": "monai.networks.nets.SegResNet", "spatial_dims": 3})
    assert not marker.exists()


def test_untrusted_network_def_uses_the_bundle_runners_trust_decision(tmp_path, monkeypatch, net, ct):
    """One decision for both: a monai.networks class that downloads (HoVerNet copies its
    pretrained_url into torch hub's folder) or a reference into metadata holding code is not
    built untrusted; a plain network_def referencing plain metadata is."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    src = tmp_path / "src.pth"
    src.write_bytes(b"0")
    hover = {"_target_": "monai.networks.nets.HoVerNet", "pretrained_url": src.as_uri(), "in_channels": 1}
    prompts = Prompts(np.array([[10.0, 17.0, 22.0]]), np.zeros((0, 3)))
    root = write_bundle(tmp_path / "hover", hover, net.state_dict())
    with pytest.raises(CxsegError, match="do not fit"):  # vista3d132 instead of the config's code
        v3.vista3d_backend(ct, prompts, SPACING, None, 30.0, bundle_dir=root, device="cpu")
    assert not (tmp_path / "torchhome" / "hub" / "preact-resnet50.pth").exists()

    marker = tmp_path / "ran"
    head = {**TINY_DEF["class_head"], "n_classes": "@_meta_#n_classes"}
    root = write_bundle(tmp_path / "meta", {**TINY_DEF, "class_head": head}, net.state_dict())
    meta = root / "configs" / "metadata.json"
    meta.write_text(json.dumps({"n_classes": f"$__import__('pathlib').Path({str(marker)!r}).touch() or 16"}))
    with pytest.raises(CxsegError, match="do not fit"):
        v3.vista3d_backend(ct, prompts, SPACING, None, 30.0, bundle_dir=root, device="cpu")
    assert not marker.exists()
    meta.write_text(json.dumps({"n_classes": 16}))
    v3.clear_cache()
    got = v3.vista3d_backend(ct, prompts, SPACING, None, 30.0, bundle_dir=root, device="cpu")
    assert got.shape == ct.shape and not marker.exists()
