"""World mapping of NIfTI volumes against nibabel and SimpleITK, left/right, and exact round trips."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_cxseg import io
from napari_cxseg.geometry import Geometry, voxel_to_world
from napari_cxseg.images import LabelClass, LabelMap
from napari_cxseg.layers import labels_layer_data, layer_to_label_map

SHAPE = (6, 7, 8)


def _rot_z(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _rot_x(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _affine(lin: np.ndarray, offset=(-12.5, 30.0, -40.0)) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = lin
    a[:3, 3] = offset
    return a


SP = np.diag([0.8, 0.9, 2.5])
AFFINES = {
    "ras": _affine(SP),
    "lps": _affine(np.diag([-0.8, -0.9, 2.5])),
    # disk axes stored as (S, R, A): axis 0 runs superior, axis 1 towards the right, axis 2 anterior
    "permuted_sra": _affine(np.array([[0, -0.8, 0], [0, 0, 0.9], [2.5, 0, 0.0]])),
    "oblique": _affine(_rot_x(-8) @ _rot_z(20) @ SP),
    "oblique_lps": _affine(_rot_z(20) @ np.diag([-0.8, -0.9, 2.5])),
}


def _save(path, data, affine, qcode=1, scode=1):
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=qcode)
    img.header.set_sform(affine, code=scode)
    nib.save(img, str(path))
    return path


def _ras_to_world(ras: np.ndarray) -> np.ndarray:
    """RAS (x, y, z) -> LPS -> napari order (S, P, L)."""
    ras = np.atleast_2d(ras)
    return np.stack([ras[:, 2], -ras[:, 1], -ras[:, 0]], axis=1)


def _held_index_of(held: np.ndarray, value: int) -> np.ndarray:
    idx = np.argwhere(held == value)
    assert len(idx) == 1
    return idx[0]


@pytest.mark.parametrize("name", list(AFFINES))
def test_world_mapping_matches_nibabel_and_simpleitk(tmp_path, name):
    import SimpleITK as sitk

    affine = AFFINES[name]
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    path = _save(tmp_path / f"{name}.nii.gz", data, affine)
    (image,) = io.read(path)
    geom = image.geometry
    assert image.array.ndim == 3
    assert sorted(image.array.shape) == sorted(SHAPE)  # transposed/flipped, never resampled
    np.testing.assert_array_equal(geom.source_affine, nib.load(str(path)).affine)

    sitk_img = sitk.ReadImage(str(path))
    rng = np.random.default_rng(0)
    disk_idx = np.stack([rng.integers(0, s, 12) for s in SHAPE], axis=1)
    disk_idx = np.vstack([disk_idx, [0, 0, 0], np.array(SHAPE) - 1])
    for ijk in disk_idx:
        value = data[tuple(ijk)]
        h = _held_index_of(image.array, value)
        ours = voxel_to_world(geom, h)[0]
        via_nibabel = _ras_to_world(nib.affines.apply_affine(affine, ijk))[0]
        np.testing.assert_allclose(ours, via_nibabel, atol=1e-4)
        lps = np.array(sitk_img.TransformIndexToPhysicalPoint([int(v) for v in ijk]))
        np.testing.assert_allclose(ours, lps[::-1], atol=1e-3)

    # held axes follow the world axes (S, P, L), each increasing
    lin = geom.affine[:3, :3]
    assert np.all(np.argmax(np.abs(lin), axis=0) == [0, 1, 2])
    assert np.all(np.diag(lin) > 0)


@pytest.mark.parametrize("name", ["ras", "lps", "permuted_sra", "oblique_lps"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_patient_left_is_held_axis2_high_and_screen_right(tmp_path, name, side):
    """NIfTI is RAS+: x grows towards the patient's RIGHT, so the patient's LEFT is RAS x < 0
    (LPS x > 0). Left must land at the high end of held axis 2 (world L), i.e. on the screen's
    right in an axial slice (radiological display); right on the screen's left."""
    affine = AFFINES[name].copy()
    data = np.zeros(SHAPE, np.float32)
    # centre the volume on the RAS origin, then light the voxel nearest to x = -/+1.6 mm
    centre = nib.affines.apply_affine(affine, (np.array(SHAPE) - 1) / 2)
    affine[:3, 3] -= centre
    x_ras = -1.6 if side == "left" else 1.6
    ijk = np.round(nib.affines.apply_affine(np.linalg.inv(affine), [x_ras, 0.0, 0.0])).astype(int)
    data[tuple(ijk)] = 1000.0
    assert np.sign(nib.affines.apply_affine(affine, ijk)[0]) == np.sign(x_ras)
    path = _save(tmp_path / f"{name}.nii.gz", data, affine)
    (image,) = io.read(path)
    z, row, col = np.argwhere(image.array == 1000.0)[0]
    mid = (image.array.shape[2] - 1) / 2
    world_l = voxel_to_world(image.geometry, (z, row, col))[0][2]  # world L = LPS x = -RAS x
    axial = image.array[z]  # displayed axial slice: napari draws axis -1 left-to-right
    screen_col = np.argwhere(axial == 1000.0)[0][1]
    if side == "left":
        assert col > mid, "patient's left must be at the high end of held axis 2 (world L)"
        assert world_l > 0
        assert screen_col > (axial.shape[1] - 1) / 2, "patient's left must be on the screen's right"
    else:
        assert col < mid and world_l < 0
        assert screen_col < (axial.shape[1] - 1) / 2, "patient's right must be on the screen's left"
    # the layer transform must not flip the displayed axes back
    kw = image.geometry.layer_kwargs()
    if "scale" in kw:
        assert all(s > 0 for s in kw["scale"])
    if "rotate" in kw:
        assert kw["rotate"][2, 2] > 0.9 and kw["rotate"][1, 1] > 0.9


def test_right_left_labels_are_not_swapped_on_round_trip(tmp_path):
    """A 'left lung' painted at the high end of held axis 2 is saved at RAS x < 0 (patient left)."""
    affine = AFFINES["lps"].copy()
    affine[:3, 3] = [2.0, 2.7, 0.0]  # LPS-stored volume centred on the origin
    img_path = _save(tmp_path / "ct.nii.gz", np.zeros(SHAPE, np.int16) - 1000, affine)
    (image,) = io.read(img_path)
    labels = np.zeros(image.array.shape, np.uint8)
    labels[:, :, -2:] = 2  # held axis 2 high = world L = patient's left
    labels[:, :, :2] = 1
    lm = LabelMap(labels, image.geometry, {1: LabelClass("right lung"), 2: LabelClass("left lung")})
    out, _ = io.write_labels(lm, tmp_path / "lungs.nii.gz")
    saved = nib.load(out)
    left = np.argwhere(np.asarray(saved.dataobj) == 2)
    right = np.argwhere(np.asarray(saved.dataobj) == 1)
    assert (nib.affines.apply_affine(saved.affine, left)[:, 0] < 0).all()
    assert (nib.affines.apply_affine(saved.affine, right)[:, 0] > 0).all()


@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize("codes", [(1, 1), (2, 0), (0, 4), (1, 3)])
def test_label_round_trip_keeps_affine_voxels_and_header_codes(tmp_path, name, codes):
    affine = AFFINES[name]
    rng = np.random.default_rng(1)
    data = rng.integers(0, 4, SHAPE).astype(np.uint8)
    src = _save(tmp_path / "src_seg.nii.gz", data, affine, *codes)
    (lm,) = io.read(src)
    assert isinstance(lm, LabelMap)
    out, sidecar = io.write_labels(lm, tmp_path / "out.nii.gz")
    a, b = nib.load(str(src)), nib.load(out)
    np.testing.assert_array_equal(b.affine, a.affine)
    np.testing.assert_array_equal(np.asarray(b.dataobj), data)
    ha, hb = a.header, b.header
    for key in ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
                "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z"):
        np.testing.assert_array_equal(hb[key], ha[key], err_msg=key)
    np.testing.assert_array_equal(hb["pixdim"][:4], ha["pixdim"][:4])
    np.testing.assert_array_equal(hb.get_qform(), ha.get_qform())
    np.testing.assert_array_equal(hb.get_sform(), ha.get_sform())
    assert hb.get_data_dtype() == np.uint8


def test_labels_from_image_geometry_through_layer_tuple_keep_image_affine(tmp_path):
    affine = AFFINES["oblique"]
    img_path = _save(tmp_path / "mr.nii.gz", np.random.rand(*SHAPE).astype(np.float32), affine, 2, 0)
    (image,) = io.read(img_path)
    labels = np.zeros(image.array.shape, np.uint8)
    labels[1:3, 2:4, 3:6] = 1
    lm = LabelMap(labels, image.geometry, {1: LabelClass("lesion", "#ff0000")})
    data, kw, _ = labels_layer_data(lm)
    back = layer_to_label_map(data, {"metadata": kw["metadata"], "name": "x", "features": kw["features"]})
    out, _ = io.write_labels(back, tmp_path / "lesion.nii.gz")
    saved = nib.load(out)
    np.testing.assert_array_equal(saved.affine, nib.load(str(img_path)).affine)
    assert saved.header["qform_code"] == 2 and saved.header["sform_code"] == 0
    disk = np.asarray(saved.dataobj)
    assert disk.shape == SHAPE
    (again,) = io.read(out)
    np.testing.assert_array_equal(again.array, labels)
    assert again.classes[1].name == "lesion"


def test_geometry_without_nifti_source_writes_its_world_affine(tmp_path):
    (image,) = io.read(_save(tmp_path / "v.nii.gz", np.random.rand(*SHAPE).astype(np.float32), AFFINES["oblique_lps"]))
    bare = Geometry(affine=image.geometry.affine)  # e.g. a DICOM- or layer-born geometry
    labels = np.zeros(image.array.shape, np.uint8)
    labels[0, 0, -1] = 1
    out, _ = io.write_labels(LabelMap(labels, bare, {1: LabelClass("dot")}), tmp_path / "dot.nii.gz")
    (back,) = io.read(out)
    np.testing.assert_allclose(back.geometry.affine, image.geometry.affine, atol=1e-4)
    np.testing.assert_array_equal(back.array, labels)
    hdr = nib.load(out).header
    assert hdr["sform_code"] == 1 and hdr["qform_code"] == 1


def test_flat_volume_stays_3d(tmp_path):
    data = np.random.rand(9, 11, 1).astype(np.float32)
    (image,) = io.read(_save(tmp_path / "flat.nii.gz", data, AFFINES["ras"]))
    assert image.array.ndim == 3 and image.array.shape[0] == 1
    assert image.geometry.ndim == 3
