"""Radiograph orientation comes from the file: DICOM PatientOrientation and EXIF orientation.

A radiograph stored mirrored, upside down or rotated is held in the standard display (patient's
right on the screen's left, head up) by a transpose/flip-only geometry; labels drawn on the held
array are saved back on the file's own pixel grid (PNG, DICOM SEG, NIfTI).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from PIL import ImageOps

from napari_cxseg import io
from napari_cxseg.geometry import voxel_to_world
from napari_cxseg.images import Image, LabelClass, LabelMap
from napari_cxseg.io.dicom_radiograph import read_radiograph
from napari_cxseg.io.dicom_seg import read_dicom_seg
from napari_cxseg.io.orientation import (
    EXIF_ORNT,
    describe,
    exif_value_of,
    from_exif,
    from_patient_orientation,
)
from napari_cxseg.layers import image_layer_data

sys.path.insert(0, str(Path(__file__).parent))
from dicom_factory import write_radiograph  # noqa: E402

CLASSES = {1: LabelClass("right lung", "#1f77b4"), 2: LabelClass("left lung", "#ff7f0e")}
SHAPE = (40, 30)


def _standard() -> np.ndarray:
    """A radiograph as displayed: a bright marker on the patient's right (screen left) near
    the head (top), a dimmer one on the patient's left near the feet."""
    v = np.full(SHAPE, 1000, np.uint16)
    v[3:8, 2:6] = 4000  # patient's right, head end
    v[30:36, 22:27] = 2500  # patient's left, feet end
    v += np.arange(SHAPE[1], dtype=np.uint16)[None, :]  # no symmetry at all
    return v


def _lungs_on(arr: np.ndarray) -> np.ndarray:
    """'Right lung' = screen-left half, 'left lung' = screen-right half of a displayed image."""
    lab = np.zeros(arr.shape, np.uint8)
    h, w = arr.shape
    lab[h // 5 : 4 * h // 5, 1 : w // 2 - 1] = 1
    lab[h // 5 : 4 * h // 5, w // 2 + 1 : w - 1] = 2
    return lab


# ---------------------------------------------------------------------- PatientOrientation
@pytest.mark.parametrize(
    "value, applied",
    [
        ("L\\F", "none"),
        ("R\\F", "columns flipped"),
        ("L\\H", "rows flipped"),
        ("R\\H", "rotated 180 degrees"),
        ("F\\L", "transposed"),
        ("H\\L", "rotated 90 degrees counter-clockwise"),  # stored with the head on the right
        ("F\\R", "rotated 90 degrees clockwise"),
        ("H\\R", "transposed and rotated 180 degrees"),
        ("LF\\FR", "none"),  # the first letter of each value is its main direction
        ("A\\F", "none"),  # a lateral: head up, anterior/posterior as stored
        ("P\\H", "rows flipped"),
        ("R\\P", "columns flipped"),  # axial projection: anterior up, right on the left
    ],
)
def test_patient_orientation_codes(value, applied):
    o = from_patient_orientation(value)
    assert o.info["known"] is True and o.info["source"] == "DICOM PatientOrientation"
    assert o.info["stored"] == value and o.info["applied"] == applied
    assert describe(o.ornt) == applied
    assert value.split("\\")[0] in o.info["note"] or value in o.info["note"]


@pytest.mark.parametrize("value", [None, "", "L", "L\\R", "X\\F", ["L", "F", "A"]])
def test_missing_or_invalid_patient_orientation_changes_nothing(value):
    o = from_patient_orientation(value, "PA")
    assert o.ornt is None
    assert o.info["known"] is False and o.info["applied"] == "none"
    assert "assumed to be shown as acquired" in o.info["note"]
    assert o.info["view_position"] == "PA"


def test_view_position_that_contradicts_the_orientation_is_noted():
    o = from_patient_orientation(["R", "F"], "LL", "B")
    assert o.info["known"] and o.info["laterality"] == "B" and o.info["view_position"] == "LL"
    assert "ViewPosition LL says lateral" in o.info["note"]
    assert "says frontal" in from_patient_orientation("A\\F", "PA").info["note"]


def _dicom(tmp_path: Path, name: str, stored: np.ndarray, orientation: str | None, **kw) -> Path:
    return write_radiograph(
        tmp_path / name, np.ascontiguousarray(stored), "MONOCHROME2", patient_orientation=orientation, **kw
    )


@pytest.mark.parametrize(
    "orientation, to_stored",
    [
        ("R\\F", lambda a: a[:, ::-1]),  # mirrored: patient's right on the image's right
        ("L\\H", lambda a: a[::-1, :]),  # upside down
        ("R\\H", lambda a: a[::-1, ::-1]),
        ("F\\L", lambda a: a.T),  # stored transposed
        ("H\\L", lambda a: np.rot90(a, -1)),  # stored turned 90 degrees clockwise
        ("F\\R", lambda a: np.rot90(a, 1)),  # stored turned 90 degrees counter-clockwise
    ],
)
def test_mirrored_and_turned_dicom_give_the_standard_display(tmp_path, orientation, to_stored):
    standard = _standard()
    ref = read_radiograph(_dicom(tmp_path, "std.dcm", standard, "L\\F", spacing=(0.2, 0.1)))
    stored = to_stored(standard)
    sp = (0.1, 0.2) if stored.shape != standard.shape else (0.2, 0.1)  # spacing follows the axes
    other_path = _dicom(tmp_path, "other.dcm", stored, orientation, spacing=sp)
    other = read_radiograph(other_path)
    # the same held array and the same world placement of the anatomy
    np.testing.assert_array_equal(other.array, ref.array)
    np.testing.assert_allclose(other.geometry.affine, ref.geometry.affine)
    def marker(img):  # the bright marker on the patient's right, near the head
        return voxel_to_world(img.geometry, np.argwhere(img.array >= 4000).mean(axis=0))[0]

    np.testing.assert_allclose(marker(other), marker(ref))
    np.testing.assert_allclose(marker(ref), [5.0 * 0.2, 3.5 * 0.1])  # top left: right, head
    assert other.meta["orientation"]["known"] and other.meta["orientation"]["stored"] == orientation
    assert ref.meta["orientation"]["applied"] == "none" and ref.geometry.disk_ornt is None
    # napari gets the held array, placed with a positive scale (no display trick)
    data, kw, _ = image_layer_data(other)
    assert all(s > 0 for s in kw["scale"]) and kw["metadata"]["orientation"]["known"]

    # labels drawn on the held array go back to the file's own grid, pixel for pixel
    held_labels = _lungs_on(other.array)
    on_file = to_stored(held_labels)
    lm = LabelMap(held_labels, other.geometry, dict(CLASSES))
    png = tmp_path / "lungs.png"
    io.write_labels(lm, png)
    np.testing.assert_array_equal(np.asarray(PILImage.open(png)), on_file)
    assert PILImage.open(png).getexif().get(274, 1) == exif_value_of(other.geometry.disk_ornt)
    (png_back,) = io.read(png)
    np.testing.assert_array_equal(png_back.array, held_labels)
    assert png_back.geometry.same_grid(other.geometry, png_back.array.shape, other.array.shape)
    (png.parent / (png.name + ".labels.json")).unlink()  # even without its sidecar ...
    (bare,) = io.read(png)
    np.testing.assert_array_equal(bare.array, held_labels)  # ... never the mirror image

    seg = tmp_path / "lungs.dcm"
    io.write_labels(lm, seg)
    raw = pydicom.dcmread(seg)
    assert list(raw.PatientOrientation) == orientation.split("\\")
    frames = raw.pixel_array.reshape(-1, *on_file.shape)
    seg_numbers = [int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
                   for f in raw.PerFrameFunctionalGroupsSequence]
    for f, n in zip(frames, seg_numbers, strict=True):
        np.testing.assert_array_equal(f.astype(bool), on_file == n)
    ps = raw.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    np.testing.assert_allclose([float(v) for v in ps], sp)
    seg_back = read_dicom_seg(seg)
    np.testing.assert_array_equal(seg_back.array, held_labels)
    np.testing.assert_allclose(seg_back.geometry.affine, other.geometry.affine)

    nii = tmp_path / "lungs.nii.gz"
    io.write_labels(lm, nii)
    disk = np.asarray(nib.load(nii).dataobj)
    np.testing.assert_array_equal(disk[..., 0].T, on_file)  # x = column, y = row of the file


def test_dicom_without_patient_orientation_is_unknown(tmp_path):
    p = _dicom(tmp_path, "r.dcm", _standard(), None, view_position=None)
    img = read_radiograph(p)
    np.testing.assert_array_equal(img.array, _standard().astype(np.float32))
    assert img.meta["orientation"] == {
        "known": False,
        "source": "none",
        "stored": "",
        "applied": "none",
        "note": img.meta["orientation"]["note"],
    }
    assert "no PatientOrientation" in img.meta["orientation"]["note"]


# ---------------------------------------------------------------------- EXIF
def _exif_bytes(value: int) -> bytes:
    exif = PILImage.Exif()
    exif[274] = value
    return exif.tobytes()


#: Pillow operation that stores an upright image so that EXIF ``v`` turns it upright again.
_INVERSE = {
    1: None,
    2: PILImage.Transpose.FLIP_LEFT_RIGHT,
    3: PILImage.Transpose.ROTATE_180,
    4: PILImage.Transpose.FLIP_TOP_BOTTOM,
    5: PILImage.Transpose.TRANSPOSE,
    6: PILImage.Transpose.ROTATE_90,
    7: PILImage.Transpose.TRANSVERSE,
    8: PILImage.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
@pytest.mark.parametrize("value", range(1, 9))
def test_exif_orientation_gives_the_upright_image(tmp_path, value, fmt):
    noise = np.random.default_rng(value).integers(0, 60, SHAPE)
    upright = PILImage.fromarray((_standard() // 20 + noise).astype(np.uint8))
    stored = upright if _INVERSE[value] is None else upright.transpose(_INVERSE[value])
    path = tmp_path / f"cxr.{'png' if fmt == 'png' else 'jpg'}"
    save = {"quality": 100} if fmt == "jpeg" else {}
    stored.save(path, format=fmt.upper(), exif=_exif_bytes(value), **save)
    (img,) = io.read(path)
    assert isinstance(img, Image)
    # Pillow's own exif_transpose of the same decoded pixels is the reference
    expected = np.asarray(ImageOps.exif_transpose(PILImage.open(path))).astype(np.float32)
    np.testing.assert_array_equal(img.array, expected)
    if fmt == "png":
        np.testing.assert_array_equal(img.array, np.asarray(upright).astype(np.float32))
    o = img.meta["orientation"]
    assert o["known"] is True and o["source"] == "EXIF" and o["stored"] == f"EXIF {value}"
    assert (img.geometry.disk_ornt is None) == (value == 1)
    assert exif_value_of(img.geometry.disk_ornt) == value

    # labels drawn upright are saved on the stored grid, with the same EXIF tag
    held = _lungs_on(img.array)
    out = tmp_path / "lungs.png"
    io.write_labels(LabelMap(held, img.geometry, dict(CLASSES)), out)
    raw = PILImage.open(out)
    assert raw.getexif().get(274, 1) == value  # upright sources need no tag
    back_to_file = PILImage.fromarray(held)
    if _INVERSE[value] is not None:
        back_to_file = back_to_file.transpose(_INVERSE[value])
    np.testing.assert_array_equal(np.asarray(raw), np.asarray(back_to_file))
    (labels,) = io.read(out)
    np.testing.assert_array_equal(labels.array, held)


def test_exif_table_matches_pillow():
    """Each EXIF orientation is the transpose/flip ``ImageOps.exif_transpose`` applies."""
    stored = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for value, ornt in EXIF_ORNT.items():
        pil = PILImage.fromarray(stored)
        exif = pil.getexif()
        exif[274] = value
        pil.info["exif"] = exif.tobytes()
        expected = np.asarray(ImageOps.exif_transpose(pil))
        o = from_exif(value)
        got = stored if o.ornt is None else nib.orientations.apply_orientation(stored, o.ornt)
        np.testing.assert_array_equal(got, expected, err_msg=f"EXIF {value}")
        assert (ornt is None) == (o.ornt is None)


def test_plain_png_and_jpeg_orientation_unknown(tmp_path):
    grey = (_standard() // 20 + np.random.default_rng(0).integers(0, 60, SHAPE)).astype(np.uint8)
    PILImage.fromarray(grey).save(tmp_path / "a.png")
    PILImage.fromarray(grey).save(tmp_path / "a.jpg")
    for name in ("a.png", "a.jpg"):
        (img,) = io.read(tmp_path / name)
        assert img.meta["orientation"]["known"] is False
        assert img.meta["orientation"]["source"] == "none"
        assert img.geometry.disk_ornt is None
    assert from_exif(9).info["known"] is False and "invalid" in from_exif(9).info["note"]


# ---------------------------------------------------------------------- end to end
def test_lung_model_names_lungs_by_anatomy_on_a_mirrored_file(tmp_path):
    """The shipped lung model on the sample radiograph stored mirrored (R\\F): the right lung
    is still on the screen's left, and the saved labels are the file's mirrored grid."""
    from napari_cxseg.inference import Predictor
    from napari_cxseg.models.cards import find_card
    from napari_cxseg.sample_data_files import sample_paths

    ip, lp = sample_paths("chest_xray")
    standard = np.asarray(PILImage.open(ip)).astype(np.uint16)
    mirrored = _dicom(tmp_path, "mirrored.dcm", standard[:, ::-1], "R\\F", bits_stored=8)
    img = read_radiograph(mirrored)
    np.testing.assert_array_equal(img.array, standard.astype(np.float32))
    pred = Predictor(find_card("cxr-lungs"), device="cpu").predict(img)
    ids = {c.name: k for k, c in pred.classes.items()}
    cols = np.arange(pred.array.shape[1])
    right = pred.array == ids["right lung"]
    left = pred.array == ids["left lung"]
    assert cols[right.any(axis=0)].mean() < cols[left.any(axis=0)].mean()
    ref = io.read(lp)[0]
    rref = ref.array == {c.name: k for k, c in ref.classes.items()}["right lung"]
    assert 2 * (right & rref).sum() / (right.sum() + rref.sum()) >= 0.88  # radiographic lung field of a DRR
    out = tmp_path / "pred.png"
    io.write_labels(pred, out)
    np.testing.assert_array_equal(np.asarray(PILImage.open(out)), pred.array[:, ::-1])
