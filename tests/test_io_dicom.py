"""DICOM series and radiograph readers against SimpleITK and against the headers themselves."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from dicom_factory import write_ct_series, write_radiograph
from napari_cxseg.geometry import voxel_to_world, world_to_voxel
from napari_cxseg.images import CxsegError
from napari_cxseg.io.dicom_radiograph import read_radiograph
from napari_cxseg.io.dicom_series import dicom_kind, find_series, read_dicom_series

ORIENTATIONS = ["axial", "coronal", "sagittal", "oblique"]


# ---------------------------------------------------------------------------- helpers
def sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def sitk_index_to_lps(img: sitk.Image) -> np.ndarray:
    """SimpleITK's index (i=col, j=row, k=slice) -> LPS affine from its own metadata."""
    a = np.eye(4)
    a[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
    a[:3, 3] = img.GetOrigin()
    return a


def held_corners(shape) -> np.ndarray:
    return (
        np.array(np.meshgrid(*[[0, s - 1] for s in shape], indexing="ij")).reshape(len(shape), -1).T
    )


def disk_index_of_held(geom, disk_shape) -> np.ndarray:
    """For every held voxel, the (slice, row, col) index it came from on disk."""
    flat = np.arange(int(np.prod(disk_shape))).reshape(disk_shape)
    return np.stack(np.unravel_index(geom.from_disk(flat), disk_shape), axis=-1)


def header_world(files, disk_idx) -> np.ndarray:
    """World (z, y, x) of disk voxels straight from each slice's IPP/IOP/PixelSpacing."""
    out = np.empty(disk_idx.shape[:-1] + (3,))
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        ipp = np.asarray(ds.ImagePositionPatient, float)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        rs, cs = (float(v) for v in ds.PixelSpacing)
        sel = disk_idx[..., 0] == k
        rows, cols = disk_idx[sel][:, 1:2], disk_idx[sel][:, 2:3]
        lps = ipp + rows * rs * iop[3:] + cols * cs * iop[:3]
        out[sel] = lps[:, ::-1]
    return out


# ---------------------------------------------------------------------------- series
@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("reverse", [False, True])
def test_series_matches_simpleitk(tmp_path, orientation, reverse):
    files, stored = write_ct_series(tmp_path / "s", orientation=orientation, reverse_files=reverse)
    img = read_dicom_series(tmp_path / "s")
    ref = sitk_series(tmp_path / "s")
    ref_arr = sitk.GetArrayFromImage(ref)  # (k, j, i)
    geom = img.geometry
    assert img.modality == "CT"
    assert img.array.dtype == np.int16
    assert geom.frame == "LPS"

    # every corner: our world (z, y, x) reversed is SimpleITK's physical point of the same voxel
    for corner in held_corners(img.array.shape):
        lps = voxel_to_world(geom, corner)[0][::-1]
        cidx = np.asarray(ref.TransformPhysicalPointToContinuousIndex(lps.tolist()))
        idx = np.round(cidx).astype(int)
        assert np.allclose(cidx, idx, atol=1e-4)
        assert set(idx.tolist()) <= set(range(max(ref.GetSize())))
        assert np.allclose(ref.TransformIndexToPhysicalPoint(idx.tolist()), lps, atol=1e-4)
        assert img.array[tuple(corner)] == ref_arr[idx[2], idx[1], idx[0]]

    # every voxel: same value at the same world position
    a = sitk_index_to_lps(ref)
    grid = np.indices(img.array.shape).reshape(3, -1).T
    lps = voxel_to_world(geom, grid)[:, ::-1]
    sidx = np.round((np.linalg.inv(a) @ np.c_[lps, np.ones(len(lps))].T).T[:, :3]).astype(int)
    assert np.array_equal(img.array.reshape(-1), ref_arr[sidx[:, 2], sidx[:, 1], sidx[:, 0]])

    # rescale applied: stored - 1024 in slice order on disk
    assert np.array_equal(geom.to_disk(img.array), stored.astype(np.int32) - 1024)
    # files listed in slice order (along the normal), whatever their names
    assert img.geometry.source["dicom_files"] == [str(f) for f in files]


@pytest.mark.parametrize("orientation", [*ORIENTATIONS, "tilt"])
def test_series_world_from_headers(tmp_path, orientation):
    """Every voxel's world position equals IPP + row/col steps of its own slice file."""
    tilt = (0.0, 0.6, 0.0) if orientation == "tilt" else None
    files, _ = write_ct_series(
        tmp_path / "s",
        orientation="axial" if tilt else orientation,
        tilt_shift=tilt,
        reverse_files=True,
    )
    img = read_dicom_series(tmp_path / "s")
    geom = img.geometry
    didx = disk_index_of_held(geom, geom.disk_shape)
    grid = np.indices(img.array.shape).reshape(3, -1).T
    ours = voxel_to_world(geom, grid)
    expected = header_world(files, didx.reshape(-1, 3))
    assert np.allclose(ours, expected, atol=1e-4)
    if tilt:
        # gantry tilt: a sheared affine, given to napari as a full affine
        assert "affine" in geom.layer_kwargs()


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_held_axes_follow_world(tmp_path, orientation):
    """Held axes point along +S, +P, +L as closely as a transpose/flip allows."""
    write_ct_series(tmp_path / "s", orientation=orientation)
    geom = read_dicom_series(tmp_path / "s").geometry
    lin = geom.affine[:3, :3]
    assert np.all(np.argmax(np.abs(lin), axis=0) == [0, 1, 2])
    assert np.all(np.diag(lin) > 0)


def test_axial_series_is_held_as_stored_with_spl_positive(tmp_path):
    write_ct_series(tmp_path / "s", reverse_files=True, origin=(-12.0, -20.0, 30.0))
    img = read_dicom_series(tmp_path / "s")
    assert img.geometry.disk_ornt is None
    assert np.allclose(img.geometry.affine[:3, :3], np.diag([2.5, 0.8, 0.7]))
    assert np.allclose(img.geometry.origin, [30.0, -20.0, -12.0])


def test_reversed_file_order_reads_the_same(tmp_path):
    write_ct_series(tmp_path / "a", reverse_files=False, seed=3)
    write_ct_series(tmp_path / "b", reverse_files=True, seed=3)
    a, b = read_dicom_series(tmp_path / "a"), read_dicom_series(tmp_path / "b")
    assert np.array_equal(a.array, b.array)
    assert np.allclose(a.geometry.affine, b.geometry.affine)


def test_series_metadata(tmp_path):
    files, _ = write_ct_series(tmp_path / "s", window=(40, 400), description="chest")
    img = read_dicom_series(tmp_path / "s")
    src = img.geometry.source
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert src["format"] == "dicom"
    assert src["series_uid"] == ds.SeriesInstanceUID
    assert src["study_uid"] == ds.StudyInstanceUID
    assert src["frame_of_reference_uid"] == ds.FrameOfReferenceUID
    assert src["modality"] == "CT"
    assert src["path"] == str(tmp_path / "s")
    assert img.meta["window"] == (-160.0, 240.0)
    assert img.meta["source_path"] == str(tmp_path / "s")
    assert img.meta["series_description"] == "chest"


def test_non_integral_rescale_gives_float32(tmp_path):
    _, stored = write_ct_series(tmp_path / "s", slope=0.5, intercept=-1000.25)
    img = read_dicom_series(tmp_path / "s")
    assert img.array.dtype == np.float32
    assert np.allclose(img.geometry.to_disk(img.array), stored * 0.5 - 1000.25)


def test_rescale_out_of_int16_range_gives_float32(tmp_path):
    _, stored = write_ct_series(tmp_path / "s", slope=20, intercept=0)
    img = read_dicom_series(tmp_path / "s")
    assert img.array.dtype == np.float32
    assert np.array_equal(img.geometry.to_disk(img.array), stored.astype(np.float32) * 20)


def test_single_slice_is_a_one_slice_volume(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "ct.dcm")
    img = read_dicom_series(folder)
    assert img.array.shape == (1, 128, 128)
    ref = sitk.ReadImage(str(folder / "ct.dcm"))
    ref_arr = sitk.GetArrayFromImage(ref)
    for corner in held_corners(img.array.shape):
        lps = voxel_to_world(img.geometry, corner)[0][::-1]
        idx = np.round(ref.TransformPhysicalPointToContinuousIndex(lps.tolist())).astype(int)
        assert np.allclose(ref.TransformIndexToPhysicalPoint(idx.tolist()), lps, atol=1e-4)
        assert img.array[tuple(corner)] == ref_arr[idx[2], idx[1], idx[0]]
    assert np.array_equal(img.geometry.to_disk(img.array)[0], ref_arr[0])


def test_one_file_opens_its_series(tmp_path):
    files, _ = write_ct_series(tmp_path / "s", description="first", prefix="a")
    write_ct_series(tmp_path / "s", description="second", prefix="b", n_slices=4)
    img = read_dicom_series(files[3])
    assert img.array.shape[0] == 8
    assert img.meta["series_description"] == "first"


def test_enhanced_multiframe_reads_like_its_slices(tmp_path):
    import highdicom as hd
    from pydicom.uid import generate_uid

    files, _ = write_ct_series(tmp_path / "s", orientation="oblique")
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(f) for f in files], generate_uid(), 2, generate_uid(), 1
    )
    enhanced.save_as(tmp_path / "enhanced.dcm")
    a = read_dicom_series(tmp_path / "s")
    b = read_dicom_series(tmp_path / "enhanced.dcm")
    assert dicom_kind(tmp_path / "enhanced.dcm") == "volume"
    assert np.array_equal(a.array, b.array)
    assert np.allclose(a.geometry.affine, b.geometry.affine, atol=1e-4)
    assert b.meta["window"] == (-160.0, 240.0)


# ---------------------------------------------------------------------------- folders
def test_find_series_ignores_non_dicom(tmp_path):
    files, _ = write_ct_series(tmp_path / "s")
    (tmp_path / "s" / "069.xml").write_text("<LidcReadMessage/>")
    (tmp_path / "s" / "notes.txt").write_text("hello")
    (tmp_path / "s" / "fake.dcm").write_text("not dicom at all")
    (tmp_path / "s" / "empty.dcm").write_bytes(b"")
    series = find_series(tmp_path / "s")
    assert list(series) == [pydicom.dcmread(files[0]).SeriesInstanceUID]
    assert sorted(series[next(iter(series))]) == sorted(files)
    assert read_dicom_series(tmp_path / "s").array.shape == (8, 32, 32)


def test_folder_with_two_series_lists_both(tmp_path):
    write_ct_series(tmp_path / "s", description="lung kernel", prefix="a")
    write_ct_series(tmp_path / "s", description="soft kernel", prefix="b", n_slices=5)
    uids = list(find_series(tmp_path / "s"))
    assert len(uids) == 2
    with pytest.raises(CxsegError) as e:
        read_dicom_series(tmp_path / "s")
    msg = str(e.value)
    for uid in uids:
        assert uid in msg
    assert "lung kernel" in msg and "soft kernel" in msg
    assert "8 file(s)" in msg and "5 file(s)" in msg
    assert "series_uid" in msg and str(tmp_path / "s") in msg
    img = read_dicom_series(tmp_path / "s", series_uid=uids[1])
    assert img.array.shape[0] in (5, 8)
    with pytest.raises(CxsegError, match="not found"):
        read_dicom_series(tmp_path / "s", series_uid="1.2.3")


def test_missing_slice_says_where(tmp_path):
    files, _ = write_ct_series(tmp_path / "s", skip=(4,))
    with pytest.raises(CxsegError) as e:
        read_dicom_series(tmp_path / "s")
    msg = str(e.value)
    assert "missing" in msg
    assert files[3].name in msg and files[5].name in msg
    assert "5.000 mm" in msg and "2.500 mm" in msg


def test_mixed_sizes_rejected(tmp_path):
    files, _ = write_ct_series(tmp_path / "s", sizes={2: (30, 32)})
    with pytest.raises(CxsegError, match="Mixed image sizes") as e:
        read_dicom_series(tmp_path / "s")
    assert files[2].name in str(e.value)


def test_mixed_orientations_rejected(tmp_path):
    uid = pydicom.uid.generate_uid()
    write_ct_series(tmp_path / "s", series_uid=uid, prefix="a", n_slices=3)
    write_ct_series(
        tmp_path / "s",
        series_uid=uid,
        prefix="b",
        n_slices=3,
        orientation="oblique",
        origin=(0, 0, 80),
    )
    with pytest.raises(CxsegError, match="Mixed slice orientations"):
        read_dicom_series(tmp_path / "s")


def test_duplicate_positions_rejected(tmp_path):
    uid = pydicom.uid.generate_uid()
    write_ct_series(tmp_path / "s", series_uid=uid, prefix="a", n_slices=4)
    write_ct_series(tmp_path / "s", series_uid=uid, prefix="b", n_slices=4)
    with pytest.raises(CxsegError, match="same position"):
        read_dicom_series(tmp_path / "s")


def test_truncated_slice_named(tmp_path):
    files, _ = write_ct_series(tmp_path / "s")
    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) - 500])
    with pytest.raises(CxsegError) as e:
        read_dicom_series(tmp_path / "s")
    assert files[2].name in str(e.value)


@pytest.mark.parametrize("content", [b"", b"this is not a DICOM file\n" * 20])
def test_series_reader_rejects_non_dicom_file(tmp_path, content):
    p = tmp_path / "x.dcm"
    p.write_bytes(content)
    with pytest.raises(CxsegError, match="Not a readable DICOM") as e:
        read_dicom_series(p)
    assert str(p) in str(e.value)


def test_empty_folder(tmp_path):
    (tmp_path / "a.xml").write_text("<x/>")
    with pytest.raises(CxsegError, match="No DICOM image files"):
        read_dicom_series(tmp_path)


# ---------------------------------------------------------------------------- radiographs
@pytest.fixture
def stored12():
    rng = np.random.default_rng(7)
    v = rng.integers(0, 4096, size=(40, 30)).astype(np.uint16)
    v[:5, :5] = 0  # dark corner (air) and a bright block (bone)
    v[-5:, -5:] = 4095
    return v


@pytest.mark.parametrize("window", [None, (2000, 1000), (1500, 2001)])
def test_monochrome1_equals_monochrome2(tmp_path, stored12, window):
    top = 4095
    m2 = write_radiograph(tmp_path / "m2.dcm", stored12, "MONOCHROME2", window=window)
    # the same radiograph encoded MONOCHROME1: inverted values, mirrored window (PS3.3 C.11.2.1.2)
    w1 = None if window is None else (top - window[0] + 1, window[1])
    m1 = write_radiograph(
        tmp_path / "m1.dcm", (top - stored12).astype(np.uint16), "MONOCHROME1", window=w1
    )
    a, b = read_radiograph(m2), read_radiograph(m1)
    assert a.array.dtype == np.float32 and b.array.dtype == np.float32
    assert np.allclose(a.array, b.array, atol=1e-3)
    assert a.meta["window"] == b.meta["window"]
    # lungs dark: the air corner is the minimum, bone the maximum
    assert a.array[:5, :5].max() == a.array.min()
    assert b.array[-5:, -5:].min() == b.array.max()
    assert b.meta["photometric"] == "MONOCHROME1"
    if window is None:
        assert np.array_equal(a.array, stored12.astype(np.float32))


def test_window_matches_pydicom_voi(tmp_path, stored12):
    from pydicom.pixels import apply_voi_lut

    p = write_radiograph(
        tmp_path / "w.dcm", stored12, "MONOCHROME2", window=(1800, 900), modality="CR"
    )
    img = read_radiograph(p)
    ds = pydicom.dcmread(p)
    assert np.allclose(img.array, apply_voi_lut(ds.pixel_array, ds), atol=1e-3)
    assert img.modality == "CR"
    assert img.meta["voi"] == "window"
    assert img.meta["window"] == (0.0, 4095.0)


def test_rescale_applied_to_radiograph(tmp_path, stored12):
    p = write_radiograph(tmp_path / "r.dcm", stored12, "MONOCHROME2", intercept=-100, slope=2)
    img = read_radiograph(p)
    assert np.array_equal(img.array, stored12.astype(np.float32) * 2 - 100)


@pytest.mark.parametrize(
    "tag, expected, source",
    [
        ("ImagerPixelSpacing", (0.15, 0.14), "ImagerPixelSpacing"),
        ("PixelSpacing", (0.15, 0.14), "PixelSpacing"),
        (None, (1.0, 1.0), "default"),
    ],
)
def test_radiograph_spacing(tmp_path, stored12, tag, expected, source):
    p = write_radiograph(tmp_path / "r.dcm", stored12, spacing_tag=tag, spacing=(0.15, 0.14))
    img = read_radiograph(p)
    geom = img.geometry
    assert geom.frame == "image"
    assert np.allclose(geom.spacing, expected)
    assert np.allclose(geom.origin, 0)
    assert img.meta["spacing_source"] == source
    assert (source == "default") == any("1.0 mm" in w for w in img.meta.get("warnings", []))
    # world (row, col) mm: the last pixel's centre
    assert np.allclose(voxel_to_world(geom, [39, 29])[0], [39 * expected[0], 29 * expected[1]])
    assert np.allclose(world_to_voxel(geom, [39 * expected[0], 29 * expected[1]])[0], [39, 29])
    assert img.modality == "DX"
    assert geom.source["dicom_files"] == [str(p)]


def test_pixel_spacing_preferred_over_imager_spacing(tmp_path, stored12):
    p = write_radiograph(
        tmp_path / "r.dcm", stored12, spacing_tag="ImagerPixelSpacing", spacing=(0.2, 0.2)
    )
    ds = pydicom.dcmread(p)
    ds.PixelSpacing = [0.18, 0.18]
    ds.save_as(p)
    img = read_radiograph(p)
    assert img.meta["spacing_source"] == "PixelSpacing"
    assert np.allclose(img.geometry.spacing, 0.18)


def test_rgb_secondary_capture_becomes_grey():
    path = get_testdata_file("SC_rgb_small_odd.dcm")
    img = read_radiograph(path)
    rgb = pydicom.dcmread(path).pixel_array.astype(float)
    assert img.array.shape == rgb.shape[:2]
    assert np.allclose(img.array, rgb @ np.array([0.299, 0.587, 0.114]), atol=1e-3)


def test_truncated_radiograph(tmp_path, stored12):
    p = write_radiograph(tmp_path / "r.dcm", stored12)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 300])
    with pytest.raises(CxsegError) as e:
        read_radiograph(p)
    assert str(p) in str(e.value)


def test_pydicom_truncated_file():
    path = get_testdata_file("MR_truncated.dcm")
    with pytest.raises(CxsegError, match="MR_truncated.dcm"):
        read_radiograph(path)


def test_header_cut_short(tmp_path, stored12):
    p = write_radiograph(tmp_path / "r.dcm", stored12)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(CxsegError) as e:
        read_radiograph(p)
    assert str(p) in str(e.value)


def test_non_dicom_with_dcm_name(tmp_path):
    p = tmp_path / "photo.dcm"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)
    with pytest.raises(CxsegError, match="Not a DICOM file") as e:
        read_radiograph(p)
    assert str(p) in str(e.value)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.dcm"
    p.write_bytes(b"")
    with pytest.raises(CxsegError, match="Empty file") as e:
        read_radiograph(p)
    assert str(p) in str(e.value)


def test_dicom_kind(tmp_path, stored12):
    files, _ = write_ct_series(tmp_path / "s", n_slices=2)
    assert dicom_kind(files[0]) == "slice"
    assert dicom_kind(write_radiograph(tmp_path / "r.dcm", stored12)) == "radiograph"
    (tmp_path / "x.dcm").write_text("nope")
    assert dicom_kind(tmp_path / "x.dcm") == ""
