"""Sidecars never change what a file is: they are keyed to the exact file they describe."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from napari_cxseg import io
from napari_cxseg.geometry import Geometry
from napari_cxseg.images import CxsegError, Image, LabelClass, LabelMap
from napari_cxseg.io.atomic import is_label_file
from napari_cxseg.io.sidecar import file_digest, find_sidecar, legacy_sidecar_path, sidecar_path
from napari_cxseg.sample_data_files import SAMPLE_DIR

CLASSES = {1: LabelClass("right lung", "#1f77b4"), 2: LabelClass("left lung", "#ff7f0e")}


def _radiograph(shape=(48, 40), seed=0) -> np.ndarray:
    """A smooth 8-bit 'radiograph' with hundreds of grey values and noise."""
    r, c = np.mgrid[: shape[0], : shape[1]]
    base = 120 + 60 * np.sin(r / 7.0) * np.cos(c / 5.0)
    noise = np.random.default_rng(seed).normal(0, 12, shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _lungs(shape=(48, 40)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[8:40, 4:17] = 1
    lab[8:40, 23:36] = 2
    return lab


def _forge(path, classes=None, **extra) -> None:
    """A sidecar for ``path`` with the right name, size and hash, claiming it holds labels."""
    classes = classes or {str(i): {"name": f"c{i}", "colour": "#ffffff"} for i in range(1, 256)}
    data = {
        "sidecar": "napari-cxseg labels",
        "version": 2,
        "file": path.name,
        "size": path.stat().st_size,
        "sha256": file_digest(path),
        "classes": classes,
        "geometry": {"source": {"role": "labels", "path": str(path)}},
        **extra,
    }
    sidecar_path(path).write_text(json.dumps(data))


def test_labels_saved_as_png_beside_a_jpeg_of_the_same_name(tmp_path):
    jpg = tmp_path / "cxr.jpg"
    PILImage.fromarray(_radiograph()).save(jpg, quality=95)
    (img,) = io.read(jpg)
    assert isinstance(img, Image)
    lm = LabelMap(_lungs(), img.geometry, dict(CLASSES))
    files = io.write_labels(lm, tmp_path / "cxr.png")
    assert files == [str(tmp_path / "cxr.png"), str(tmp_path / "cxr.png.labels.json")]
    assert not (tmp_path / "cxr.labels.json").exists()  # nothing keyed by the stem alone
    side = json.loads((tmp_path / "cxr.png.labels.json").read_text())
    assert side["file"] == "cxr.png" and side["sha256"] == file_digest(tmp_path / "cxr.png")
    assert side["reference_image"] == str(jpg)
    # the JPEG is still the radiograph, the PNG the labels with their names
    (again,) = io.read(jpg)
    assert isinstance(again, Image)
    assert "sidecar" not in again.meta
    np.testing.assert_array_equal(again.array, img.array)
    (labels,) = io.read(tmp_path / "cxr.png")
    assert isinstance(labels, LabelMap)
    assert labels.classes == CLASSES
    assert labels.meta["reference_image_path"] == str(jpg)
    # saving again over the labels is allowed, over the source image never
    io.write_labels(labels, tmp_path / "cxr.png", overwrite=True)
    before = jpg.read_bytes()
    with pytest.raises(CxsegError, match=r"cxr\.jpg"):
        io.write_labels(labels, jpg, overwrite=True)
    assert jpg.read_bytes() == before


def test_writer_refuses_the_source_image_even_with_a_sidecar_for_it(tmp_path):
    src = tmp_path / "cxr.png"
    PILImage.fromarray(_radiograph()).save(src)
    (img,) = io.read(src)
    lm = LabelMap(_lungs(), img.geometry, dict(CLASSES))
    before = src.read_bytes()
    _forge(src)
    for overwrite in (False, True):
        with pytest.raises(CxsegError, match=r"source image"):
            io.write_labels(lm, src, overwrite=overwrite)
    assert src.read_bytes() == before


@pytest.mark.parametrize("legacy", [False, True])
def test_forged_sidecar_cannot_make_an_image_labels_or_writable(tmp_path, legacy):
    img_path = tmp_path / "scan.png"
    PILImage.fromarray(_radiograph()).save(img_path)
    before = img_path.read_bytes()
    if legacy:
        legacy_sidecar_path(img_path).write_text(
            json.dumps({"classes": {str(i): f"c{i}" for i in range(1, 256)}})
        )
    else:
        _forge(img_path)  # right name, size and hash: only the content can tell
    assert find_sidecar(img_path).data is not None  # the sidecar does match the file ...
    (img,) = io.read(img_path)
    assert isinstance(img, Image)  # ... but names classes for an image: it stays an image
    assert not is_label_file(img_path)
    other = LabelMap(_lungs(), Geometry(np.eye(3), frame="image"), dict(CLASSES))
    with pytest.raises(CxsegError, match=r"scan\.png.*not a label map"):
        io.write_labels(other, img_path, overwrite=True)
    assert img_path.read_bytes() == before


def test_forged_sidecar_on_a_volume_and_a_jpeg(tmp_path):
    mr = np.random.default_rng(1).integers(0, 3000, (16, 16, 8)).astype(np.uint16)
    path = tmp_path / "t2.nii.gz"
    nib.save(nib.Nifti1Image(mr, np.eye(4)), path)
    _forge(path, classes={str(i): f"c{i}" for i in range(1, 3001)})
    (img,) = io.read(path)
    assert isinstance(img, Image)
    other = LabelMap(np.zeros((8, 16, 16), np.uint8), Geometry(np.eye(4)), {1: LabelClass("x")})
    with pytest.raises(CxsegError, match=r"t2\.nii\.gz.*not a label map"):
        io.write_labels(other, path, overwrite=True)
    jpg = tmp_path / "shapes.jpg"
    PILImage.fromarray(_lungs() * 100).save(jpg, quality=95)
    _forge(jpg, classes={"1": "lung"})
    assert isinstance(io.read(jpg)[0], Image)  # lossy JPEG: only a name can say "mask"


def test_sidecar_of_a_changed_or_renamed_file_is_ignored_with_a_reason(tmp_path):
    geom = Geometry(np.diag([0.5, 0.5, 1.0]), frame="image")
    lm = LabelMap(_lungs(), geom, dict(CLASSES))
    io.write_labels(lm, tmp_path / "a.png")
    # renamed together with its sidecar: the sidecar still names a.png
    (tmp_path / "b.png").write_bytes((tmp_path / "a.png").read_bytes())
    (tmp_path / "b.png.labels.json").write_text((tmp_path / "a.png.labels.json").read_text())
    (b,) = io.read(tmp_path / "b.png")
    assert isinstance(b, LabelMap)  # two values: labels by content alone
    assert b.classes[1].name == "class 1"
    assert b.meta["sidecar"]["used"] is False
    assert "describes 'a.png', not 'b.png'" in b.meta["sidecar"]["reason"]
    assert any("b.png.labels.json ignored" in w for w in b.meta["warnings"])
    np.testing.assert_allclose(b.geometry.spacing, [1.0, 1.0])  # nor its geometry
    # edited by another program after saving: the hash no longer matches
    edited = _lungs()
    edited[0, 0] = 2
    PILImage.fromarray(edited).save(tmp_path / "a.png")
    (a,) = io.read(tmp_path / "a.png")
    assert a.classes[1].name == "class 1"
    assert "a.png has" in a.meta["sidecar"]["reason"]  # its size changed
    side = json.loads((tmp_path / "a.png.labels.json").read_text())
    side.update(size=(tmp_path / "a.png").stat().st_size, sha256="0" * 64)  # same size, other bytes
    (tmp_path / "a.png.labels.json").write_text(json.dumps(side))
    (a,) = io.read(tmp_path / "a.png")
    assert a.classes[1].name == "class 1"
    assert "changed after the sidecar was written" in a.meta["sidecar"]["reason"]
    # a hand-written sidecar without size/hash, named after the exact file, is used
    (tmp_path / "a.png.labels.json").write_text(json.dumps({"classes": {"1": "lung", "2": "heart"}}))
    (a,) = io.read(tmp_path / "a.png")
    assert a.classes[2].name == "heart" and a.meta["sidecar"]["used"] is True


def test_many_class_png_is_labels_through_its_sidecar(tmp_path):
    """29 regions (Chest ImaGenome-like) in a PNG without a name hint: the sidecar confirms it."""
    ids = np.zeros((60, 58), np.uint8)
    for k in range(1, 30):
        ids[2 * k : 2 * k + 2, 2 * k - 2 : 2 * k + 20] = k  # overlapping bands: regions
    classes = {k: LabelClass(f"region {k}") for k in range(1, 30)}
    out = tmp_path / "regions.png"
    io.write_labels(LabelMap(ids, Geometry(np.eye(3), frame="image"), classes), out)
    (back,) = io.read(out)
    assert isinstance(back, LabelMap) and back.classes[29].name == "region 29"
    np.testing.assert_array_equal(back.array, ids)
    assert is_label_file(out)
    io.write_labels(back, out, overwrite=True)  # re-saving one's own labels still works
    sidecar_path(out).unlink()
    (plain,) = io.read(out)
    assert isinstance(plain, Image)  # 30 values and no hint: without its sidecar, an image


def test_legacy_sidecars_still_read_when_unambiguous(tmp_path):
    data = np.zeros((6, 6, 6), np.uint8)
    data[1:3] = 1
    data[4:] = 2
    lab = tmp_path / "organs.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), lab)
    legacy = tmp_path / "organs.labels.json"
    legacy.write_text(json.dumps({"classes": {"1": "liver", "2": "spleen"}, "reference_image": None}))
    (lm,) = io.read(lab)
    assert lm.classes[2].name == "spleen"
    assert lm.meta["sidecar"] == {"path": str(legacy), "used": True, "reason": None, "legacy": True}
    # another label-file candidate with the same stem: the old sidecar is ambiguous
    PILImage.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "organs.png")
    (lm,) = io.read(lab)
    assert lm.classes[2].name == "class 2"
    assert "could describe organs.nii.gz or organs.png" in lm.meta["sidecar"]["reason"]
    # ... unless the sidecar names that other file as the image the labels were drawn on
    legacy.write_text(
        json.dumps({"classes": {"1": "liver", "2": "spleen"}, "reference_image": str(tmp_path / "organs.png")})
    )
    (lm,) = io.read(lab)
    assert lm.classes[2].name == "spleen"
    (png,) = io.read(tmp_path / "organs.png")
    assert png.meta["sidecar"]["used"] is False
    assert "names organs.png as the image" in png.meta["sidecar"]["reason"]
    # a new sidecar takes over from the old one when the labels are saved again
    io.write_labels(lm, lab, overwrite=True)
    assert find_sidecar(lab).path == sidecar_path(lab) and not find_sidecar(lab).legacy


def test_old_collision_jpeg_and_png_of_one_stem(tmp_path):
    """An earlier version saved cxr.png's sidecar as cxr.labels.json beside cxr.jpg."""
    PILImage.fromarray(_radiograph()).save(tmp_path / "cxr.jpg", quality=95)
    PILImage.fromarray(_lungs()).save(tmp_path / "cxr.png")
    (tmp_path / "cxr.labels.json").write_text(
        json.dumps({"classes": {"1": {"name": "right lung"}, "2": {"name": "left lung"}}})
    )
    (jpg,) = io.read(tmp_path / "cxr.jpg")
    assert isinstance(jpg, Image)
    assert "describe .png/.nii/.nii.gz label files only" in jpg.meta["sidecar"]["reason"]
    assert not any("sidecar" in w for w in jpg.meta["warnings"])  # not this file's: no warning
    (png,) = io.read(tmp_path / "cxr.png")
    assert isinstance(png, LabelMap) and png.classes[2].name == "left lung"


def test_shipped_sample_sidecars_still_work():
    for labels in ("chest_ct_labels.nii.gz", "chest_xray_lungs.png"):
        (lm,) = io.read(SAMPLE_DIR / labels)
        assert isinstance(lm, LabelMap)
        assert lm.meta["sidecar"]["used"] is True, lm.meta["sidecar"]
        assert lm.classes[1].name == "right lung" and lm.classes[2].name == "left lung"
    (img,) = io.read(SAMPLE_DIR / "chest_xray.png")
    assert isinstance(img, Image) and "sidecar" not in img.meta
