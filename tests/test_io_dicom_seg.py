"""DICOM SEG writing and reading: voxels, world positions, names and colours survive."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicom_factory import write_ct_series, write_radiograph
from napari_cxseg.geometry import Geometry, voxel_to_world, world_to_voxel
from napari_cxseg.images import CxsegError, LabelClass, LabelMap
from napari_cxseg.io.dicom_radiograph import read_radiograph
from napari_cxseg.io.dicom_seg import read_dicom_seg, write_dicom_seg
from napari_cxseg.io.dicom_series import read_dicom_series

CLASSES = {
    1: LabelClass("liver", "#dd8265"),
    2: LabelClass("spleen", "#9d6cb0"),
    3: LabelClass("right lung", "#1f77b4"),
}


def make_labels(shape) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[1:4, 3:12, 4:15] = 1
    lab[4:7, 14:25, 2:9] = 2
    lab[2:6, 20:30, 20:30] = 3
    lab[0, 0, 0] = 3  # a single voxel at a corner catches off-by-one placement
    return lab


def assert_same_world_voxels(read: LabelMap, original: LabelMap) -> None:
    """Every labelled voxel read back sits on an original voxel with the same label."""
    nz = np.argwhere(read.array > 0)
    world = voxel_to_world(read.geometry, nz)
    idx = world_to_voxel(original.geometry, world)
    assert np.allclose(idx, np.round(idx), atol=1e-3)
    idx = np.round(idx).astype(int)
    assert np.all(idx >= 0) and np.all(idx < np.asarray(original.array.shape))
    assert np.array_equal(original.array[tuple(idx.T)], read.array[tuple(nz.T)])
    for k in np.unique(original.array[original.array > 0]):
        assert (read.array == k).sum() == (original.array == k).sum()


@pytest.mark.parametrize("orientation", ["axial", "coronal", "sagittal", "oblique"])
def test_ct_seg_round_trip(tmp_path, orientation):
    write_ct_series(tmp_path / "ct", orientation=orientation, reverse_files=True)
    img = read_dicom_series(tmp_path / "ct")
    lm = LabelMap(
        make_labels(img.array.shape), img.geometry, dict(CLASSES), meta={"name": "organs"}
    )
    out = write_dicom_seg(lm, tmp_path / "seg.dcm")
    assert out == [str(tmp_path / "seg.dcm")]
    back = read_dicom_seg(tmp_path / "seg.dcm")
    assert back.geometry.frame == "LPS"
    assert back.geometry.source["format"] == "dicom-seg"
    assert back.geometry.source["referenced_series_uid"] == img.geometry.source["series_uid"]
    assert (
        back.geometry.source["frame_of_reference_uid"]
        == img.geometry.source["frame_of_reference_uid"]
    )
    assert {k: (c.name, c.colour) for k, c in back.classes.items()} == {
        k: (c.name, c.colour) for k, c in CLASSES.items()
    }
    assert back.meta["source_path"] == str(tmp_path / "seg.dcm")
    assert_same_world_voxels(back, lm)
    # nothing left behind but the SEG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "seg.dcm"]


def test_seg_attributes(tmp_path):
    files, _ = write_ct_series(tmp_path / "ct")
    img = read_dicom_series(tmp_path / "ct")
    lm = LabelMap(make_labels(img.array.shape), img.geometry, dict(CLASSES))
    write_dicom_seg(lm, tmp_path / "manual.dcm")
    lm.meta["algorithm"] = {"name": "ct-organs", "version": "0.1"}
    write_dicom_seg(lm, tmp_path / "auto.dcm")
    manual = pydicom.dcmread(tmp_path / "manual.dcm")
    auto = pydicom.dcmread(tmp_path / "auto.dcm")
    ct = pydicom.dcmread(files[0])
    assert manual.Modality == "SEG" and manual.SegmentationType == "BINARY"
    assert manual.StudyInstanceUID == ct.StudyInstanceUID
    assert manual.FrameOfReferenceUID == ct.FrameOfReferenceUID
    assert manual.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.SeriesInstanceUID
    assert [s.SegmentLabel for s in manual.SegmentSequence] == ["liver", "spleen", "right lung"]
    assert {s.SegmentAlgorithmType for s in manual.SegmentSequence} == {"MANUAL"}
    assert {s.SegmentAlgorithmType for s in auto.SegmentSequence} == {"AUTOMATIC"}
    assert auto.SegmentSequence[0].SegmentAlgorithmName == "ct-organs"
    cat = manual.SegmentSequence[0].SegmentedPropertyCategoryCodeSequence[0]
    assert (cat.CodingSchemeDesignator, cat.CodeValue) == ("SCT", "91723000")
    assert all("RecommendedDisplayCIELabValue" in s for s in manual.SegmentSequence)


def test_non_contiguous_ids_and_empty_class(tmp_path):
    write_ct_series(tmp_path / "ct")
    img = read_dicom_series(tmp_path / "ct")
    lab = np.zeros(img.array.shape, np.uint16)
    lab[2:4, 5:9, 5:9] = 7
    lab[5:6, 10:20, 10:20] = 300
    classes = {
        7: LabelClass("nodule", "#ff0000"),
        12: LabelClass("unused", "#00ff00"),
        300: LabelClass("mass"),
    }
    write_dicom_seg(LabelMap(lab, img.geometry, classes), tmp_path / "seg.dcm")
    back = read_dicom_seg(tmp_path / "seg.dcm")
    # segments are numbered 1..N in class-id order
    assert {k: c.name for k, c in back.classes.items()} == {1: "nodule", 2: "unused", 3: "mass"}
    assert back.classes[1].colour == "#ff0000"
    assert (back.array == 1).sum() == (lab == 7).sum()
    assert (back.array == 3).sum() == (lab == 300).sum()
    assert (back.array == 2).sum() == 0


def test_read_back_sub_grid_can_be_saved_again(tmp_path):
    """A SEG read alone spans only its frames; it still saves onto the source slices."""
    files, _ = write_ct_series(tmp_path / "ct", orientation="coronal")
    img = read_dicom_series(tmp_path / "ct")
    lm = LabelMap(make_labels(img.array.shape), img.geometry, dict(CLASSES))
    lm.array[:, 0, :] = 0  # leave empty frames so the SEG holds a sub-block
    write_dicom_seg(lm, tmp_path / "a.dcm")
    back = read_dicom_seg(tmp_path / "a.dcm")
    assert back.array.shape != lm.array.shape
    write_dicom_seg(back, tmp_path / "b.dcm", source_files=files)
    again = read_dicom_seg(tmp_path / "b.dcm")
    assert_same_world_voxels(again, lm)


def test_enhanced_source(tmp_path):
    import highdicom as hd
    from pydicom.uid import generate_uid

    files, _ = write_ct_series(tmp_path / "ct", orientation="oblique")
    hd.legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(f) for f in files], generate_uid(), 2, generate_uid(), 1
    ).save_as(tmp_path / "enhanced.dcm")
    img = read_dicom_series(tmp_path / "enhanced.dcm")
    lm = LabelMap(make_labels(img.array.shape), img.geometry, dict(CLASSES))
    write_dicom_seg(lm, tmp_path / "seg.dcm")
    assert_same_world_voxels(read_dicom_seg(tmp_path / "seg.dcm"), lm)


@pytest.mark.parametrize("spacing_tag", ["ImagerPixelSpacing", "PixelSpacing", None])
def test_radiograph_seg_round_trip(tmp_path, spacing_tag):
    rng = np.random.default_rng(0)
    p = write_radiograph(
        tmp_path / "cxr.dcm",
        rng.integers(0, 4096, (40, 30)).astype(np.uint16),
        "MONOCHROME1",
        spacing_tag=spacing_tag,
        spacing=(0.15, 0.14),
    )
    img = read_radiograph(p)
    lab = np.zeros((40, 30), np.uint8)
    lab[5:30, 2:12] = 1
    lab[5:30, 16:28] = 2
    classes = {1: LabelClass("right lung", "#1f77b4"), 2: LabelClass("left lung", "#ff7f0e")}
    write_dicom_seg(
        LabelMap(lab, img.geometry, classes, meta={"algorithm": "cxr-lungs"}), tmp_path / "seg.dcm"
    )
    back = read_dicom_seg(tmp_path / "seg.dcm")
    assert back.geometry.frame == "image"
    assert np.array_equal(back.array, lab)
    assert np.allclose(back.geometry.affine, img.geometry.affine)
    assert {k: (c.name, c.colour) for k, c in back.classes.items()} == {
        k: (c.name, c.colour) for k, c in classes.items()
    }


def test_refuses_without_dicom_source(tmp_path):
    lm = LabelMap(np.ones((4, 5, 6), np.uint8), Geometry(affine=np.eye(4)), {1: LabelClass("x")})
    with pytest.raises(CxsegError, match="NIfTI") as e:
        write_dicom_seg(lm, tmp_path / "seg.dcm")
    assert "DICOM source" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_refuses_grid_that_is_not_the_series(tmp_path):
    write_ct_series(tmp_path / "ct")
    img = read_dicom_series(tmp_path / "ct")
    geom = Geometry(
        affine=img.geometry.affine @ np.diag([1.0, 0.5, 0.5, 1.0]), source=dict(img.geometry.source)
    )
    lm = LabelMap(np.ones((8, 64, 64), np.uint8), geom, {1: LabelClass("x")})
    with pytest.raises(CxsegError, match="does not lie on the grid"):
        write_dicom_seg(lm, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def test_never_overwrites_source_or_existing(tmp_path):
    files, _ = write_ct_series(tmp_path / "ct")
    img = read_dicom_series(tmp_path / "ct")
    lm = LabelMap(make_labels(img.array.shape), img.geometry, dict(CLASSES))
    before = files[0].read_bytes()
    with pytest.raises(CxsegError, match="source image"):
        write_dicom_seg(lm, files[0], overwrite=True)
    assert files[0].read_bytes() == before
    write_dicom_seg(lm, tmp_path / "seg.dcm")
    first = (tmp_path / "seg.dcm").read_bytes()
    with pytest.raises(CxsegError, match="exists"):
        write_dicom_seg(lm, tmp_path / "seg.dcm")
    assert (tmp_path / "seg.dcm").read_bytes() == first
    write_dicom_seg(lm, tmp_path / "seg.dcm", overwrite=True)
    assert read_dicom_seg(tmp_path / "seg.dcm").classes[1].name == "liver"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "seg.dcm"]


def test_read_pydicom_seg():
    lm = read_dicom_seg(get_testdata_file("liver_1frame.dcm"))
    assert lm.array.shape == (1, 512, 512)
    assert lm.classes[1].name == "Liver"
    assert lm.array.max() == 1 and lm.array.sum() > 0
    assert lm.geometry.frame == "LPS"


def test_read_rejects_non_seg(tmp_path):
    p = tmp_path / "x.dcm"
    p.write_text("not dicom")
    with pytest.raises(CxsegError, match="Not a readable DICOM SEG") as e:
        read_dicom_seg(p)
    assert str(p) in str(e.value)


def test_seg_saved_beside_its_series_does_not_break_the_folder(tmp_path):
    files, _ = write_ct_series(tmp_path / "ct")
    img = read_dicom_series(tmp_path / "ct")
    lm = LabelMap(make_labels(img.array.shape), img.geometry, dict(CLASSES))
    write_dicom_seg(lm, tmp_path / "ct" / "labels.dcm")
    again = read_dicom_series(tmp_path / "ct")
    assert np.array_equal(again.array, img.array)
    assert again.geometry.source["dicom_files"] == [str(f) for f in files]
    with pytest.raises(CxsegError, match="DICOM SEG"):
        read_dicom_series(tmp_path / "ct" / "labels.dcm")
