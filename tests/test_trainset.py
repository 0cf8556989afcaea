"""The viewer's training set: MSD layout, exact geometry, provenance, replace-not-duplicate, errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from napari_cxseg import io
from napari_cxseg.geometry import Geometry, voxel_to_world
from napari_cxseg.images import CxsegError, Image, LabelClass, LabelMap
from napari_cxseg.io.msd import MSDTask
from napari_cxseg.training.sources import find_cases
from napari_cxseg.training.targets import build_target
from napari_cxseg.training.trainset import TrainingSet
from napari_cxseg.training.trainset_files import thumbnail_array
from training_data import film

LUNGS = {1: LabelClass("right lung", "#1f77b4"), 2: LabelClass("left lung", "#ff7f0e")}


def _rot(deg_x: float, deg_z: float) -> np.ndarray:
    a, b = np.deg2rad(deg_x), np.deg2rad(deg_z)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rz @ rx


def _sphere(shape, centre, r) -> np.ndarray:
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    return ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 < r * r).astype(np.uint8)


def _labels_for(image: Image, arr: np.ndarray, classes=None) -> LabelMap:
    return LabelMap(arr, image.geometry, classes or {1: LabelClass("sphere", "#ff0000")})


def test_oblique_lps_nifti_volume_round_trips_exactly(tmp_path):
    """An oblique NIfTI stored in L-P-S voxel order: the copy and the labels keep its affine and grid."""
    aff = np.eye(4)
    aff[:3, :3] = _rot(-8, 20) @ np.diag([-0.8, -0.9, 2.5])  # x, y flipped: LPS-stored voxels
    aff[:3, 3] = [40.0, 60.0, -20.0]
    vol = np.random.default_rng(0).normal(0, 50, (20, 24, 10)).astype(np.int16)  # nibabel (x, y, z)
    src = tmp_path / "ct_oblique.nii.gz"
    nib.save(nib.Nifti1Image(vol, aff), src)
    image = io.read(src)[0]
    lab = _sphere(image.spatial_shape, np.array(image.spatial_shape) / 2, 4)
    lab[0, 0, 0] = 1  # a corner voxel: a flipped axis would move it
    tset = TrainingSet(tmp_path / "set")
    entry = tset.add(image, _labels_for(image, lab), model="tiny3d", model_output=np.zeros_like(lab))
    assert entry.changed_voxels == int(lab.sum()) and entry.spatial_dims == 3
    # valid MSD task, read back by the package's MSD reader and by find_cases
    task = MSDTask(tset.root)
    assert task.classes[1].name == "sphere" and task.properties["numTraining"] == 1
    (case,) = find_cases(tset.root)
    assert case.image == entry.image and case.label_names == {1: "sphere"}
    # nibabel's own world mapping of the written files is the source's
    np.testing.assert_allclose(nib.load(entry.image).affine, aff)
    np.testing.assert_allclose(nib.load(entry.label).affine, aff, atol=1e-5)
    assert entry.image.read_bytes() == src.read_bytes()  # the image is the source file, byte for byte
    back = io.read(case.masks["label"], as_labels=True)[0]
    np.testing.assert_allclose(back.geometry.affine, image.geometry.affine, atol=1e-5)
    np.testing.assert_array_equal(back.array, lab)
    target = build_target({1: "sphere"}, case, io.read(case.image)[0], multi_label=False)
    np.testing.assert_array_equal(target[0], lab)


def test_dicom_series_is_written_as_nifti_in_the_same_world_place(tmp_path):
    from dicom_factory import oblique_orientation, write_ct_series

    write_ct_series(tmp_path / "series", n_slices=6, orientation=oblique_orientation(15.0))
    image = io.read(tmp_path / "series")[0]
    lab = _sphere(image.spatial_shape, (3, 16, 12), 3)
    entry = TrainingSet(tmp_path / "set").add(image, _labels_for(image, lab))
    assert entry.image.name.endswith(".nii.gz") and entry.model is None
    back = io.read(entry.image)[0]
    np.testing.assert_allclose(back.array, image.array)
    idx = np.array([[0, 0, 0], [5, 31, 0], [2, 7, 30]])
    np.testing.assert_allclose(voxel_to_world(back.geometry, idx), voxel_to_world(image.geometry, idx), atol=1e-4)
    (case,) = find_cases(entry.image.parents[1])
    np.testing.assert_array_equal(build_target({1: "sphere"}, case, back, False)[0], lab)


def test_radiograph_with_exif_orientation_keeps_sides_and_pixels(tmp_path):
    img, lab = film(np.random.default_rng(3), 64)
    stored = np.ascontiguousarray(np.rot90(img))  # stored turned; EXIF 6 turns it back for display
    exif = PILImage.Exif()
    exif[274] = 8
    src = tmp_path / "film.png"
    PILImage.fromarray(stored).save(src, exif=exif)
    image = io.read(src)[0]
    held_lab = np.zeros(image.spatial_shape, np.uint8)
    side = np.argmin(np.abs(np.asarray(image.array, float) - 70), axis=None)  # a dark (lung) pixel
    held_lab.flat[side] = 1
    tset = TrainingSet(tmp_path / "set")
    entry = tset.add(image, LabelMap(held_lab, image.geometry, LUNGS), model="tiny2d", model_output=held_lab)
    assert entry.image.suffix == ".png" and entry.image.read_bytes() == src.read_bytes()
    assert entry.changed_voxels == 0 and entry.classes == {1: "right lung", 2: "left lung"}
    (case,) = find_cases(tset.root)
    again = io.read(case.image)[0]
    np.testing.assert_array_equal(again.array, image.array)
    np.testing.assert_array_equal(build_target({1: "right lung", 2: "left lung"}, case, again, False)[0], held_lab)
    thumb = np.asarray(PILImage.open(tset.thumbnail_path(entry)))
    assert thumb.ndim == 3 and max(thumb.shape[:2]) <= 96
    meta = json.loads(tset.dataset_json.read_text())
    assert meta["modality"] == {"0": "XR"} and meta["tensorImageSize"] == "2D"


def test_lungs_stay_on_their_side(tmp_path):
    """PA film: right lung (1) on the image's left before and after the round trip."""
    img, lab = film(np.random.default_rng(1), 64)
    PILImage.fromarray(img).save(tmp_path / "pa.png")
    image = io.read(tmp_path / "pa.png")[0]
    entry = TrainingSet(tmp_path / "set").add(image, LabelMap(lab, image.geometry, LUNGS))
    back = io.read(entry.label, as_labels=True)[0].array
    cols = np.arange(64)
    assert (cols * (back == 1).sum(0)).sum() / (back == 1).sum() < 32 < (cols * (back == 2).sum(0)).sum() / (
        back == 2).sum()


def test_same_image_replaces_its_entry_and_counts_changes(tmp_path):
    img, lab = film(np.random.default_rng(0), 48)
    PILImage.fromarray(img).save(tmp_path / "a.png")
    image = io.read(tmp_path / "a.png")[0]
    tset = TrainingSet(tmp_path / "set")
    first = tset.add(image, LabelMap(lab, image.geometry, LUNGS), model="m", model_output=lab)
    edited = lab.copy()
    edited[:5, :5] = 2
    second = tset.add(image, LabelMap(edited, image.geometry, LUNGS), model="m", model_output=lab)
    assert len(tset) == 1 and second.case == first.case
    assert second.changed_voxels == int((edited != lab).sum()) > 0
    np.testing.assert_array_equal(io.read(second.label, as_labels=True)[0].array, edited)
    # opened again from the set's own copy: still the same entry
    copy = io.read(second.image)[0]
    third = tset.add(copy, LabelMap(edited, copy.geometry, LUNGS))
    assert len(TrainingSet(tset.root)) == 1 and third.case == first.case
    # a second image is a second entry; removing one deletes its files and its line
    PILImage.fromarray(img[::-1]).save(tmp_path / "b.png")
    other = io.read(tmp_path / "b.png")[0]
    e2 = tset.add(other, LabelMap(lab[::-1].copy(), other.geometry, LUNGS))
    assert [e.case for e in tset.entries()] == [first.case, e2.case]
    tset.remove(first.case)
    assert not first.image.exists() and not first.label.exists()
    assert [c.case_id for c in find_cases(tset.root)] == [e2.case]


def test_image_without_a_file_is_written(tmp_path):
    rng = np.random.default_rng(0)
    arr = (rng.random((40, 30)) * 3000.5 - 20).astype(np.float32)  # negative, fractional: scaled to 16 bits
    geom = Geometry(np.diag([0.2, 0.3, 1.0]), frame="image")
    image = Image(arr, geom, modality="DX", meta={"name": "drawn"})
    lab = np.zeros((40, 30), np.uint8)
    lab[5:10, 3:9] = 1
    entry = TrainingSet(tmp_path / "set").add(image, LabelMap(lab, geom, LUNGS))
    png = np.asarray(PILImage.open(entry.image))
    assert png.dtype == np.uint16 and png.shape == (40, 30)
    assert np.corrcoef(png.ravel(), arr.ravel())[0, 1] > 0.999
    back = io.read(entry.label, as_labels=True)[0]
    np.testing.assert_array_equal(back.array, lab)
    np.testing.assert_allclose(back.geometry.spacing, [0.2, 0.3])


def test_bad_inputs_write_nothing(tmp_path):
    img, lab = film(np.random.default_rng(0), 32)
    PILImage.fromarray(img).save(tmp_path / "a.png")
    image = io.read(tmp_path / "a.png")[0]
    tset = TrainingSet(tmp_path / "set")
    with pytest.raises(CxsegError, match="do not lie on the grid"):
        tset.add(image, LabelMap(lab[:20], image.geometry, LUNGS))
    assert not tset.root.exists()
    tset.add(image, LabelMap(lab, image.geometry, LUNGS))
    before = sorted(p.name for p in tset.root.rglob("*"))
    vol = Image(np.zeros((4, 5, 6), np.float32), Geometry(np.eye(4)), modality="CT", meta={"name": "v"})
    with pytest.raises(CxsegError, match="holds radiographs"):
        tset.add(vol, LabelMap(np.zeros((4, 5, 6), np.uint8), vol.geometry, {1: LabelClass("x")}))
    PILImage.fromarray(img[::-1]).save(tmp_path / "b.png")
    other = io.read(tmp_path / "b.png")[0]
    with pytest.raises(CxsegError, match="calls class 1 'right lung'"):
        tset.add(other, LabelMap(lab, other.geometry, {1: LabelClass("heart"), 2: LabelClass("left lung")}))
    assert sorted(p.name for p in tset.root.rglob("*")) == before
    (tmp_path / "msd").mkdir()
    (tmp_path / "msd" / "dataset.json").write_text(json.dumps({"name": "Task09_Spleen", "training": []}))
    with pytest.raises(CxsegError, match="did not make"):
        TrainingSet(tmp_path / "msd")


def test_thumbnail_tints_labels():
    img = np.tile(np.linspace(0, 255, 200), (100, 1))
    lab = np.zeros((100, 200), np.uint8)
    lab[10:40, 10:40] = 1
    rgb = thumbnail_array(img, lab, {1: LabelClass("x", "#ff0000")}, size=50)
    assert rgb.shape == (25, 50, 3) and rgb[5, 5, 0] > rgb[5, 5, 2]
