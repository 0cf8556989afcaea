"""DRR rendering: PA orientation, attenuation, mask projection, geometry, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cxseg.drr import (
    LUNG_CLASSES,
    Projection,
    Rendering,
    compose,
    hu_to_attenuation,
    project_ct,
    random_projection,
    random_radiograph,
    render_drr,
)
from napari_cxseg.geometry import Geometry
from napari_cxseg.images import Image, LabelMap
from napari_cxseg.io import read
from napari_cxseg.sample_data_files import sample_paths


@pytest.fixture(scope="module")
def sample_ct():
    ip, lp = sample_paths("chest_ct")
    ct = read(ip)[0]
    ct.array = np.asarray(ct.array, np.float32)
    return ct, read(lp, as_labels=True)[0]


def _ids(labels: LabelMap) -> dict[str, int]:
    return {c.name: k for k, c in labels.classes.items()}


def _synthetic(shape=(20, 30, 40), spacing=(2.0, 2.0, 2.0)) -> tuple[Image, np.ndarray]:
    """Water cylinder-ish block in air with a known geometry (world = S, P, L)."""
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = [-20.0, -30.0, -40.0]
    hu = np.full(shape, -1000.0, np.float32)
    hu[2:-2, 5:-5, 5:-5] = 0.0
    return Image(hu, Geometry(aff), "CT"), aff


def test_liver_and_right_lung_on_the_image_left(sample_ct):
    ct, labels = sample_ct
    ids = _ids(labels)
    classes = {1: (ids["right lung"],), 2: (ids["left lung"],), 3: (ids["liver"],), 4: (ids["spleen"],)}
    img, lab = render_drr(ct, labels, classes, projection=Projection(pixel_spacing=2.0))
    cols = np.arange(lab.array.shape[1])

    def centre(k: int) -> float:
        return float(cols[(lab.array == k).any(axis=0)].mean())

    mid = (lab.array.shape[1] - 1) / 2
    assert centre(3) < mid < centre(4)  # liver (patient right) left, spleen right
    assert centre(1) < centre(2)
    # rows: head at the top, so the lungs sit above the liver's lowest row
    rows = np.arange(lab.array.shape[0])
    assert rows[(lab.array == 1).any(axis=1)].min() < rows[(lab.array == 3).any(axis=1)].max()
    assert img.geometry.frame == "image"
    assert img.modality == "DX" and img.meta["view_position"] == "PA"


def test_lungs_are_dark_and_range_is_unit(sample_ct):
    ct, labels = sample_ct
    ids = _ids(labels)
    classes = {1: (ids["right lung"],), 2: (ids["left lung"],), 3: (ids["liver"],), 4: (ids["heart"],)}
    stack = project_ct(ct, labels, classes, projection=Projection(pixel_spacing=2.0))
    img, lab = compose(stack)
    a = img.array
    assert a.dtype == np.float32 and a.min() >= 0.0 and a.max() <= 1.0
    lung = (stack.paths[0] > 2) | (stack.paths[1] > 2)
    solid = ((stack.paths[2] > 2) | (stack.paths[3] > 2)) & ~lung  # liver, heart off the lungs
    assert np.median(a[lung]) < np.median(a[solid]) - 0.15
    _, lungs_only = compose(project_ct(ct, labels, {k: classes[k] for k in (1, 2)}, dict(LUNG_CLASSES),
                                       projection=Projection(pixel_spacing=2.0)))
    assert {k: c.name for k, c in lungs_only.classes.items()} == {1: "right lung", 2: "left lung"}


def test_patient_left_block_lands_on_image_right():
    ct, _ = _synthetic()
    lab = np.zeros(ct.array.shape, np.uint8)
    lab[8:12, 10:20, 30:36] = 1  # large held x index = patient left
    img, out = render_drr(ct, LabelMap(lab, Geometry(ct.geometry.affine)), {1: (1,)},
                          projection=Projection(pixel_spacing=2.0))
    cols = np.nonzero(out.array.any(axis=0))[0]
    assert cols.min() > out.array.shape[1] / 2
    rows = np.nonzero(out.array.any(axis=1))[0]
    # the block spans S indices 8..11 of 20: the middle rows (head up)
    assert abs(rows.mean() - (out.array.shape[0] - 1) / 2) < 2


def test_mask_projection_uses_path_length():
    ct, _ = _synthetic()
    lab = np.zeros(ct.array.shape, np.uint8)
    lab[5:15, 10:13, 10:20] = 1  # 3 voxels = 6 mm deep along P
    lm = LabelMap(lab, Geometry(ct.geometry.affine))
    stack = project_ct(ct, lm, {1: (1,)}, projection=Projection(pixel_spacing=2.0, step_mm=0.5))
    inside = stack.paths[0][stack.paths[0] > 0.5]
    assert np.median(inside) == pytest.approx(6.0, abs=0.7)
    _, shallow = compose(stack, mask_threshold_mm=2.0)
    _, deep = compose(stack, mask_threshold_mm=8.0)
    assert shallow.array.sum() > 0 and deep.array.sum() == 0
    # footprint: 10 S voxels x 10 L voxels of 2 mm = 20 x 20 mm -> about 10 x 10 pixels
    assert 80 <= (shallow.array == 1).sum() <= 130


def test_attenuation_and_bone_weight():
    mu = hu_to_attenuation(np.array([-2000.0, -1000.0, 0.0, 1000.0]), bone_weight=0.0)
    assert mu[0] == 0.0 and mu[1] == 0.0 and mu[3] == pytest.approx(2 * mu[2])
    assert hu_to_attenuation(np.array([1000.0]), bone_weight=1.0)[0] > mu[3]


def test_cone_beam_magnifies_and_spacing_is_detector_pixel():
    ct, _ = _synthetic()
    lab = np.zeros(ct.array.shape, np.uint8)
    lab[5:15, 10:20, 10:30] = 1
    lm = LabelMap(lab, Geometry(ct.geometry.affine))
    _, par = render_drr(ct, lm, {1: (1,)}, projection=Projection(pixel_spacing=1.0))
    _, cone = render_drr(ct, lm, {1: (1,)}, projection=Projection(pixel_spacing=1.0, source_distance=600.0,
                                                                      object_distance=400.0, shape=(80, 120)))
    w_par = np.ptp(np.nonzero(par.array.any(axis=0))[0])
    w_cone = np.ptp(np.nonzero(cone.array.any(axis=0))[0])
    assert w_cone / w_par == pytest.approx(1.5, rel=0.12)
    assert np.allclose(cone.geometry.spacing, [1.0, 1.0])


def test_rendering_is_deterministic(sample_ct):
    ct, labels = sample_ct
    ids = _ids(labels)
    proj = Projection(pixel_spacing=3.0, rotation_deg=(5.0, -2.0, 3.0), source_distance=1500.0)
    a1, l1 = render_drr(ct, labels, {1: (ids["right lung"],)}, projection=proj, rendering=Rendering(gamma=1.2))
    a2, l2 = render_drr(ct, labels, {1: (ids["right lung"],)}, projection=proj, rendering=Rendering(gamma=1.2))
    assert np.array_equal(a1.array, a2.array) and np.array_equal(l1.array, l2.array)
    stack = project_ct(ct, labels, {1: (ids["right lung"],), 2: (ids["left lung"],)},
                       projection=random_projection(np.random.default_rng(3), pixel_spacing=3.0))
    x1, y1 = random_radiograph(stack, np.random.default_rng(5), (64, 64), pad_to_square=True)
    x2, y2 = random_radiograph(stack, np.random.default_rng(5), (64, 64), pad_to_square=True)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert x1.shape == (64, 64) and set(np.unique(y1)) <= {0, 1, 2}


def test_hu_lungs_match_reference_lungs(sample_ct):
    """The classical lungs agree with TotalSegmentator's on the sample CT, sides included."""
    from napari_cxseg.hu_lungs import lung_label_map

    ct, labels = sample_ct
    ids = _ids(labels)
    hu = lung_label_map(ct)
    for k, name in ((1, "right lung"), (2, "left lung")):
        a = hu.array == k
        b = labels.array == ids[name]
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9


def test_radiographic_lung_fields_leave_out_what_the_heart_and_domes_hide():
    """A lung pixel whose ray also crosses the heart/mediastinum or a subdiaphragmatic organ is
    not lung field (SCR convention); the lung seen on its own is, with its side kept."""
    from napari_cxseg.drr import DRRStack
    from napari_cxseg.drr_fields import FIELD_GROUPS, lung_fields

    paths = np.zeros((4, 6, 8), np.float32)
    paths[0, :, :3] = 40.0  # right lung (image left)
    paths[1, :, 5:] = 40.0  # left lung
    paths[2, 2:4, 2:6] = 30.0  # heart over the medial lungs
    paths[3, 5, :] = 20.0  # liver/stomach behind the lowest row
    paths[1, 0, 7] = 1.0  # below the threshold
    stack = DRRStack(np.zeros((6, 8)), np.zeros((6, 8)), paths, list(FIELD_GROUPS), {},
                     Geometry(affine=np.eye(3), frame="image"), {})
    lab = lung_fields(stack)
    want = np.zeros((6, 8), np.uint8)
    want[:5, :3] = 1
    want[:5, 5:] = 2
    want[2:4, 2] = 0
    want[2:4, 5] = 0
    want[0, 7] = 0
    np.testing.assert_array_equal(lab.array, want)
    assert {c.name for c in lab.classes.values()} == {"right lung", "left lung"}
    with pytest.raises(ValueError, match="FIELD_GROUPS"):
        lung_fields(DRRStack(stack.base, stack.bone, paths[:2], [1, 2], {}, stack.geometry, {}))
