"""Read -> layer -> write round trips through a real napari viewer and the plugin's contributions."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _nifti(tmp_path, name, data, affine):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _oblique_affine():
    theta = np.deg2rad(15)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.8, 0.9, 2.5])
    aff[:3, 3] = [-40.0, 25.0, 12.5]
    return aff


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([0.7, 0.7, 2.5, 1.0]),  # RAS
        np.array([[-0.7, 0, 0, 90.0], [0, -0.7, 0, 120.0], [0, 0, 2.5, -50.0], [0, 0, 0, 1]]),  # LPS
        _oblique_affine(),
    ],
    ids=["RAS", "LPS", "oblique"],
)
def test_nifti_labels_round_trip_through_viewer(make_napari_viewer, tmp_path, affine):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(20, 24, 10)).astype(np.float32)
    lab = np.zeros((20, 24, 10), np.uint8)
    lab[3:9, 5:15, 2:6] = 1
    lab[12:18, 4:10, 5:9] = 2
    img_path = _nifti(tmp_path, "ct.nii.gz", img, affine)
    lab_path = _nifti(tmp_path, "ct_seg.nii.gz", lab, affine)

    viewer = make_napari_viewer()
    [image_layer] = viewer.open(img_path, plugin="napari-cxseg")
    [labels_layer] = viewer.open(lab_path, plugin="napari-cxseg")
    assert labels_layer._type_string == "labels"
    # both layers map the same voxel to the same world point
    for idx in ([0, 0, 0], [5, 7, 3], [9, 23, 19]):
        np.testing.assert_allclose(
            image_layer.data_to_world(idx), labels_layer.data_to_world(idx), atol=1e-6
        )
    # a world point: the RAS voxel (i, j, k) goes to LPS (z, y, x)
    ras = affine @ np.array([5, 7, 3, 1.0])
    expected_world = [ras[2], -ras[1], -ras[0]]
    ijk = np.array([5, 7, 3])
    held_idx = np.round(labels_layer.world_to_data(expected_world)).astype(int)
    assert labels_layer.data[tuple(held_idx)] == lab[tuple(ijk)]

    out = tmp_path / "saved_seg.nii.gz"
    written = labels_layer.save(str(out), plugin="napari-cxseg")
    assert written
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(back.dataobj), lab)


def test_labels_drawn_on_image_save_with_image_geometry(make_napari_viewer, tmp_path):
    affine = np.array([[-0.7, 0, 0, 90.0], [0, 0.7, 0, -120.0], [0, 0, 2.5, -50.0], [0, 0, 0, 1]])
    img_path = _nifti(tmp_path, "ct.nii.gz", np.zeros((16, 16, 8), np.float32), affine)
    viewer = make_napari_viewer()
    [image_layer] = viewer.open(img_path, plugin="napari-cxseg")
    from napari_cxseg.images import LabelClass, LabelMap
    from napari_cxseg.layers import layer_state, layer_to_image
    from napari_cxseg.widgets._layers import add_label_map

    image = layer_to_image(image_layer.data, layer_state(image_layer))
    lm = LabelMap(np.zeros(image_layer.data.shape, np.uint8), image.geometry, {1: LabelClass("nodule", "#00ff00")})
    labels = add_label_map(viewer, lm, "drawn")
    labels.data_setitem((np.array([2]), np.array([3]), np.array([4])), 1)
    out = tmp_path / "drawn.nii.gz"
    labels.save(str(out), plugin="napari-cxseg")
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    assert np.asarray(back.dataobj).sum() == 1
    sidecar = json.loads((tmp_path / "drawn.nii.gz.labels.json").read_text())
    assert sidecar["classes"]["1"]["name"] == "nodule"
    # reading back gives the name in napari's status bar
    [relabels] = viewer.open(out, plugin="napari-cxseg")
    pos = np.argwhere(relabels.data == 1)[0]
    viewer.dims.set_point(0, relabels.data_to_world(pos)[0])  # status reads the shown slice
    assert "nodule" in relabels.get_status(tuple(pos))["value"]


def test_png_labels_round_trip_with_names(make_napari_viewer, tmp_path):
    from PIL import Image as PILImage

    cxr = (np.linspace(0, 255, 64 * 48).reshape(64, 48)).astype(np.uint8)
    PILImage.fromarray(cxr).save(tmp_path / "cxr.png")
    viewer = make_napari_viewer()
    [image_layer] = viewer.open(tmp_path / "cxr.png", plugin="napari-cxseg")
    from napari_cxseg.images import LabelClass, LabelMap
    from napari_cxseg.layers import layer_state, layer_to_image
    from napari_cxseg.widgets._layers import add_label_map

    image = layer_to_image(image_layer.data, layer_state(image_layer))
    arr = np.zeros((64, 48), np.uint8)
    arr[10:30, 5:20] = 1
    arr[10:30, 28:44] = 2
    classes = {1: LabelClass("right lung", "#1f77b4"), 2: LabelClass("left lung", "#ff7f0e")}
    layer = add_label_map(viewer, LabelMap(arr, image.geometry, classes), "lungs")
    out = tmp_path / "cxr_lungs.png"
    layer.save(str(out), plugin="napari-cxseg")
    np.testing.assert_array_equal(np.asarray(PILImage.open(out)), arr)
    [back] = viewer.open(out, plugin="napari-cxseg")
    assert back._type_string == "labels"
    np.testing.assert_array_equal(back.data, arr)
    assert "right lung" in back.get_status((15, 10))["value"]
    assert "left lung" in back.get_status((15, 30))["value"]


def test_bad_file_gives_message_and_viewer_lives(make_napari_viewer, tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00 this is not a whole gzip stream")
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 4)), name="keep")
    with pytest.raises(Exception) as info:
        viewer.open(bad, plugin="napari-cxseg")
    assert "broken.nii.gz" in str(info.value) or "broken.nii.gz" in str(info.value.__cause__)
    assert [ly.name for ly in viewer.layers] == ["keep"]


def test_writer_never_overwrites_source_image(make_napari_viewer, tmp_path):
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    img_path = _nifti(tmp_path, "ct.nii.gz", np.ones((8, 8, 4), np.float32), affine)
    before = img_path.read_bytes()
    viewer = make_napari_viewer()
    [image_layer] = viewer.open(img_path, plugin="napari-cxseg")
    from napari_cxseg.images import LabelClass, LabelMap
    from napari_cxseg.layers import layer_state, layer_to_image
    from napari_cxseg.widgets._layers import add_label_map

    image = layer_to_image(image_layer.data, layer_state(image_layer))
    lm = LabelMap(np.ones(image_layer.data.shape, np.uint8), image.geometry, {1: LabelClass("x")})
    lm.meta["reference_image_path"] = str(img_path)
    layer = add_label_map(viewer, lm, "labels")
    with pytest.raises(Exception) as info:
        layer.save(str(img_path), plugin="napari-cxseg")
    assert "ct.nii.gz" in str(info.value) or "ct.nii.gz" in str(info.value.__cause__)
    assert img_path.read_bytes() == before


def test_dicom_series_labels_to_dicom_seg_through_viewer(make_napari_viewer, tmp_path):
    """Open a DICOM series folder, label it, save as DICOM SEG, reopen: same voxels in the world."""
    from dicom_factory import write_ct_series
    from napari_cxseg.images import LabelClass, LabelMap
    from napari_cxseg.layers import layer_state, layer_to_image
    from napari_cxseg.widgets._layers import add_label_map

    write_ct_series(tmp_path / "series", n_slices=6, shape=(20, 24), orientation="oblique")
    viewer = make_napari_viewer()
    [ct] = viewer.open(tmp_path / "series", plugin="napari-cxseg")
    image = layer_to_image(ct.data, layer_state(ct))
    arr = np.zeros(ct.data.shape, np.uint8)
    arr[2:4, 5:12, 6:14] = 1
    arr[4, 2:6, 2:6] = 2
    classes = {1: LabelClass("nodule", "#ff0000"), 2: LabelClass("vessel", "#0000ff")}
    layer = add_label_map(viewer, LabelMap(arr, image.geometry, classes), "marks")
    out = tmp_path / "marks_seg.dcm"
    layer.save(str(out), plugin="napari-cxseg")
    [seg] = viewer.open(out, plugin="napari-cxseg")
    assert seg._type_string == "labels"
    for k, name in ((1, "nodule"), (2, "vessel")):
        assert name in list(seg.features["name"])
        k_seg = int(seg.features["index"][list(seg.features["name"]).index(name)])
        world_orig = np.array([layer.data_to_world(i) for i in np.argwhere(arr == k)])
        world_seg = np.array([seg.data_to_world(i) for i in np.argwhere(np.asarray(seg.data) == k_seg)])
        assert len(world_orig) == len(world_seg)
        np.testing.assert_allclose(np.sort(world_orig, axis=0), np.sort(world_seg, axis=0), atol=1e-3)
