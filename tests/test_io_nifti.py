"""NIfTI reading/writing and the io.read / io.write_labels / io.detect_format dispatch."""

from __future__ import annotations

import json
import sys
import types

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from napari_cxseg import io
from napari_cxseg.images import CxsegError, Image, LabelClass, LabelMap
from napari_cxseg.io.nifti import read_nifti, write_nifti_labels
from napari_cxseg.io.sidecar import read_sidecar, sidecar_path

AFF = np.array([[-0.7, 0, 0, 90.0], [0, -0.7, 0, 120.0], [0, 0, 2.5, -300.0], [0, 0, 0, 1]])


def _save(path, data, affine=AFF):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


# ---------------------------------------------------------------------------------- images
def test_float_volume_is_an_image_with_geometry_and_header(tmp_path):
    data = np.random.default_rng(0).normal(size=(10, 12, 5)).astype(np.float32)
    path = _save(tmp_path / "mr.nii.gz", data)
    img = read_nifti(path)
    assert isinstance(img, Image)
    assert img.array.dtype == np.float32 and img.array.shape == (5, 12, 10)
    assert img.geometry.source["path"] == str(path)
    assert img.geometry.source["format"] == "nifti"
    assert img.geometry.source["role"] == "image"
    np.testing.assert_array_equal(img.geometry.source_affine, nib.load(str(path)).affine)
    assert isinstance(img.meta["nifti_header"], nib.Nifti1Header)
    assert img.meta["source_path"] == str(path)
    assert img.meta["name"] == "mr"
    assert img.meta["warnings"] == []
    # LPS-stored x/y already run along L and P: only the axis order changes
    np.testing.assert_array_equal(img.array, data.transpose(2, 1, 0))
    np.testing.assert_allclose(img.geometry.spacing, [2.5, 0.7, 0.7])


def test_ct_int16_stays_an_image(tmp_path):
    data = np.random.default_rng(0).integers(-1024, 2000, (8, 8, 4)).astype(np.int16)
    img = read_nifti(_save(tmp_path / "ct.nii.gz", data))
    assert isinstance(img, Image) and img.array.dtype == np.int16


def test_scaled_int_image_gets_float32(tmp_path):
    data = np.arange(64, dtype=np.int16).reshape(4, 4, 4)
    im = nib.Nifti1Image(data, AFF)
    im.header.set_slope_inter(0.5, -10)
    nib.save(im, str(tmp_path / "s.nii"))
    img = read_nifti(tmp_path / "s.nii")
    assert isinstance(img, Image) and img.array.dtype == np.float32
    assert img.array.min() == -10.0


def test_4d_multichannel_channel_axis_first(tmp_path):
    data = np.random.default_rng(0).random((6, 7, 5, 3)).astype(np.float32)
    path = _save(tmp_path / "brats.nii.gz", data)
    img = read_nifti(path)
    assert img.channel_names == ["c0", "c1", "c2"]
    assert img.array.shape == (3, 5, 7, 6)
    np.testing.assert_array_equal(img.array[1], data[..., 1].transpose(2, 1, 0))
    named = io.read(path, channel_names=["FLAIR", "T1", "T2"])[0]
    assert named.channel_names == ["FLAIR", "T1", "T2"]
    wrong = read_nifti(path, channel_names=["a", "b"])
    assert wrong.channel_names == ["c0", "c1", "c2"] and wrong.meta["warnings"]


def test_4d_with_one_volume_and_2d_files_are_3d(tmp_path):
    img = read_nifti(_save(tmp_path / "one.nii.gz", np.ones((4, 5, 3, 1), np.float32)))
    assert img.array.shape == (3, 5, 4) and img.channel_names is None
    flat = read_nifti(_save(tmp_path / "flat.nii.gz", np.ones((4, 5), np.float32)))
    assert flat.array.shape == (1, 5, 4) and flat.geometry.ndim == 3


def test_some_nan_replaced_by_minimum_with_warning(tmp_path):
    data = np.random.default_rng(0).random((5, 5, 5)).astype(np.float32) + 3
    data[0, 0, 0] = np.nan
    data[1, 1, 1] = np.inf
    path = _save(tmp_path / "nan.nii.gz", data)
    img = read_nifti(path)
    assert np.isfinite(img.array).all()
    lo = np.nanmin(np.where(np.isinf(data), np.nan, data))
    assert img.array.min() == pytest.approx(lo)
    assert len(img.meta["warnings"]) == 1 and str(path) in img.meta["warnings"][0]


# ---------------------------------------------------------------------------------- labels
@pytest.mark.parametrize(
    "rel",
    ["labelsTr/case_001.nii.gz", "case_seg.nii.gz", "lung-mask.nii", "label.nii.gz", "plain.nii.gz"],
)
def test_integer_label_files_open_as_label_maps(tmp_path, rel):
    path = tmp_path / rel
    path.parent.mkdir(exist_ok=True)
    data = np.zeros((6, 6, 6), np.uint8)
    data[1:3, 1:3, 1:3] = 1
    data[4:, 4:, 4:] = 3
    lm = read_nifti(_save(path, data))
    assert isinstance(lm, LabelMap)
    assert lm.array.dtype == np.uint8
    assert set(lm.classes) == {1, 3}
    assert lm.geometry.source["role"] == "labels"


def test_float_mask_with_name_hint_is_labels_but_float_image_is_not(tmp_path):
    mask = np.zeros((5, 5, 5), np.float32)
    mask[2, 2, 2] = 2.0
    assert isinstance(read_nifti(_save(tmp_path / "x_mask.nii.gz", mask)), LabelMap)
    assert isinstance(read_nifti(_save(tmp_path / "x.nii.gz", mask)), Image)  # float, no hint
    noisy = mask + 0.25
    assert isinstance(read_nifti(_save(tmp_path / "y_mask.nii.gz", noisy)), Image)


def test_as_labels_overrides_and_validates(tmp_path):
    data = np.zeros((4, 4, 4), np.uint8)
    data[0, 0, 0] = 1
    path = _save(tmp_path / "tiny.nii.gz", data)
    assert isinstance(read_nifti(path, as_labels=False), Image)
    assert isinstance(io.read(path, as_labels=True)[0], LabelMap)
    fpath = _save(tmp_path / "prob.nii.gz", np.full((4, 4, 4), 0.3, np.float32))
    with pytest.raises(CxsegError, match="prob.nii.gz"):
        read_nifti(fpath, as_labels=True)
    neg = _save(tmp_path / "neg.nii.gz", np.full((4, 4, 4), -1, np.int16))
    with pytest.raises(CxsegError, match="neg.nii.gz"):
        read_nifti(neg, as_labels=True)
    four = _save(tmp_path / "four.nii.gz", np.zeros((3, 3, 3, 2), np.uint8))
    with pytest.raises(CxsegError, match="four.nii.gz"):
        read_nifti(four, as_labels=True)


def test_sidecar_gives_classes_and_reference_image(tmp_path):
    data = np.zeros((4, 4, 4), np.uint8)
    data[0] = 1
    data[1] = 2
    path = _save(tmp_path / "organs.nii.gz", data)
    sidecar_path(path).write_text(
        json.dumps(
            {
                "classes": {"1": {"name": "liver", "colour": "#aa0000"}, "2": "spleen"},
                "reference_image": "/data/ct.nii.gz",
            }
        )
    )
    lm = read_nifti(path)
    assert lm.classes[1] == LabelClass("liver", "#aa0000")
    assert lm.classes[2].name == "spleen"
    assert lm.meta["reference_image_path"] == "/data/ct.nii.gz"


def test_write_dtypes_and_sidecar(tmp_path):
    geom = read_nifti(_save(tmp_path / "img.nii.gz", np.zeros((4, 5, 6), np.float32))).geometry
    arr = np.zeros((6, 5, 4), np.int64)
    arr[0, 0, 0] = 300
    lm = LabelMap(arr, geom, {300: LabelClass("vessel", "#00ff00")})
    files = write_nifti_labels(lm, tmp_path / "big.nii.gz")
    assert nib.load(files[0]).get_data_dtype() == np.uint16
    side = read_sidecar(files[0])
    assert files[1] == str(sidecar_path(files[0]))
    assert side["classes"] == {"300": {"name": "vessel", "colour": "#00ff00"}}
    assert side["reference_image"] == str(tmp_path / "img.nii.gz")
    assert side["geometry"]["source"]["format"] == "nifti"
    arr[0, 0, 1] = 70000
    files = write_nifti_labels(LabelMap(arr, geom), tmp_path / "huge.nii")
    assert nib.load(files[0]).get_data_dtype() == np.int32
    back = read_nifti(files[0])
    assert isinstance(back, LabelMap) and back.array[0, 0, 1] == 70000
    assert back.classes[300].name == "class 300"


def test_write_refuses_existing_labels_unless_overwrite(tmp_path):
    geom = read_nifti(_save(tmp_path / "img.nii.gz", np.zeros((4, 4, 4), np.float32))).geometry
    lm = LabelMap(np.ones((4, 4, 4), np.uint8), geom, {1: LabelClass("a")})
    target = tmp_path / "lab.nii.gz"
    io.write_labels(lm, target)
    with pytest.raises(CxsegError, match="lab.nii.gz.*overwrite=True"):
        io.write_labels(lm, target)
    lm.array[0] = 2
    io.write_labels(lm, target, overwrite=True)
    assert 2 in np.asarray(nib.load(str(target)).dataobj)


def test_write_rejects_shape_mismatch_and_non_integer(tmp_path):
    geom = read_nifti(_save(tmp_path / "img.nii.gz", np.zeros((4, 4, 4), np.float32))).geometry
    with pytest.raises(CxsegError, match="bad.nii.gz"):
        write_nifti_labels(LabelMap(np.ones((3, 4, 4), np.uint8), geom), tmp_path / "bad.nii.gz")
    with pytest.raises(CxsegError, match="frac.nii.gz"):
        write_nifti_labels(LabelMap(np.full((4, 4, 4), 0.5), geom), tmp_path / "frac.nii.gz")
    assert not (tmp_path / "bad.nii.gz").exists() and not (tmp_path / "frac.nii.gz").exists()


# ---------------------------------------------------------------------------------- dispatch
def test_detect_format(tmp_path):
    nii = _save(tmp_path / "a.nii.gz", np.zeros((2, 2, 2), np.float32))
    nii_plain = _save(tmp_path / "b.nii", np.zeros((2, 2, 2), np.float32))
    PILImage.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "c.png")
    PILImage.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "d.jpg")
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "dataset.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    assert io.detect_format(nii) == "nifti"
    assert io.detect_format(nii_plain) == "nifti"
    assert io.detect_format(tmp_path / "c.png") == "png"
    assert io.detect_format(tmp_path / "d.jpg") == "jpeg"
    assert io.detect_format(tmp_path / "task") == "msd"
    assert io.detect_format(tmp_path / "task" / "dataset.json") == "msd"
    assert io.detect_format(tmp_path / "notes.txt") is None
    assert io.detect_format(tmp_path / "empty") is None
    assert io.detect_format(tmp_path / "missing.nii.gz") is None


def test_read_rejects_unknown_options_and_formats(tmp_path):
    path = _save(tmp_path / "a.nii.gz", np.zeros((2, 2, 2), np.float32))
    with pytest.raises(TypeError, match="as_label"):
        io.read(path, as_label=True)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CxsegError, match="notes.txt"):
        io.read(tmp_path / "notes.txt")
    with pytest.raises(CxsegError, match="nothing.nii"):
        io.read(tmp_path / "nothing.nii")
    with pytest.raises(CxsegError, match=r"x\.tif"):
        io.write_labels(LabelMap(np.zeros((2, 2), np.uint8), read_nifti(path).geometry), tmp_path / "x.tif")


def _dicom(path, sop_class, modality, with_position=True, series_uid="1.2.3.4"):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    if with_position:
        ds.ImagePositionPatient = [0, 0, 0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.save_as(str(path), enforce_file_format=True)
    return path


@pytest.fixture
def fake_dicom_readers(monkeypatch):
    """Stand-ins for the DICOM modules (written separately) that record how they were called."""
    calls = []
    mods = {
        "dicom_series": {"read_dicom_series": lambda p, series_uid=None: calls.append(("series", p, series_uid)) or "S"},
        "dicom_radiograph": {"read_radiograph": lambda p: calls.append(("radiograph", p)) or "R"},
        "dicom_seg": {
            "read_dicom_seg": lambda p: calls.append(("seg", p)) or "L",
            "write_dicom_seg": lambda lm, p: calls.append(("write_seg", p)) or [p],
        },
    }
    for name, funcs in mods.items():
        m = types.ModuleType(f"napari_cxseg.io.{name}")
        for k, f in funcs.items():
            setattr(m, k, f)
        monkeypatch.setitem(sys.modules, f"napari_cxseg.io.{name}", m)
    return calls


def test_dicom_dispatch(tmp_path, fake_dicom_readers):
    calls = fake_dicom_readers
    seg = _dicom(tmp_path / "seg.dcm", "1.2.840.10008.5.1.4.1.1.66.4", "SEG")
    cr = _dicom(tmp_path / "cxr.dcm", "1.2.840.10008.5.1.4.1.1.1", "CR", with_position=False)
    dx = _dicom(tmp_path / "IM0001", "1.2.840.10008.5.1.4.1.1.1.1", "DX", with_position=False)
    series = tmp_path / "series"
    series.mkdir()
    ct = _dicom(series / "slice1.dcm", "1.2.840.10008.5.1.4.1.1.2", "CT", series_uid="9.8.7")
    assert io.detect_format(dx) == "dicom" and io.detect_format(series) == "dicom"
    assert io.read(seg) == ["L"] and calls[-1] == ("seg", str(seg))
    assert io.read(cr) == ["R"] and calls[-1] == ("radiograph", str(cr))
    assert io.read(dx) == ["R"] and calls[-1] == ("radiograph", str(dx))
    assert io.read(ct) == ["S"] and calls[-1] == ("series", str(series), "9.8.7")
    assert io.read(series, series_uid="5.5") == ["S"] and calls[-1] == ("series", str(series), "5.5")
    ct2 = _dicom(series / "slice2.dcm", "1.2.840.10008.5.1.4.1.1.2", "CT", series_uid="9.8.7")
    assert io.read([str(ct), str(ct2)]) == ["S"] and calls[-1] == ("series", [str(ct), str(ct2)], None)
    assert io.read([ct]) == ["S"]
    with pytest.raises(CxsegError, match="cxr_copy.png"):
        PILImage.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "cxr_copy.png")
        io.read([ct, tmp_path / "cxr_copy.png"])


def test_dicom_seg_write_dispatch_with_real_writer(tmp_path):
    """io.write_labels(.dcm) writes a SEG over a DICOM source, replaces it only with overwrite,
    and never writes over a source slice."""
    from dicom_factory import write_ct_series

    files, _ = write_ct_series(tmp_path / "series", n_slices=4, shape=(16, 16))
    [image] = io.read(tmp_path / "series")
    lm = LabelMap(np.zeros(image.array.shape, np.uint8), image.geometry, {1: "lesion"})
    lm.array[1, 4:8, 4:8] = 1
    out = tmp_path / "seg.dcm"
    assert io.write_labels(lm, out) == [str(out)]
    with pytest.raises(CxsegError, match="seg.dcm"):
        io.write_labels(lm, out)
    assert io.write_labels(lm, out, overwrite=True) == [str(out)]
    [back] = io.read(out)
    assert isinstance(back, LabelMap) and back.classes[1].name == "lesion"
    before = files[0].read_bytes()
    with pytest.raises(CxsegError, match=files[0].name):
        io.write_labels(lm, files[0], overwrite=True)
    assert files[0].read_bytes() == before
