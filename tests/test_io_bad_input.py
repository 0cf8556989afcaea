"""Bad inputs and unsafe writes: each error names the file, and nothing is written or lost."""

from __future__ import annotations

import gzip
import json
import os

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from napari_cxseg import io
from napari_cxseg.geometry import Geometry
from napari_cxseg.images import CxsegError, LabelClass, LabelMap
from napari_cxseg.io import atomic
from napari_cxseg.io.atomic import atomic_write, check_target

AFF = np.diag([0.8, 0.8, 2.0, 1.0])


def _nii(path, data, affine=AFF):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------- reading
def test_gzip_of_text_named_nii_gz(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_bytes(gzip.compress(b"this is not an image\n" * 40))
    # claimed by name, so that opening it in napari says what is wrong instead of "no reader"
    assert io.detect_format(path) == "nifti"
    with pytest.raises(CxsegError, match=r"notes\.nii\.gz"):
        io.read(path)


def test_plain_text_named_nii_gz_and_nii(tmp_path):
    for name in ("text.nii.gz", "text.nii"):
        (tmp_path / name).write_text("hello " * 100)
        with pytest.raises(CxsegError, match=name.replace(".", r"\.")):
            io.read(tmp_path / name)


def test_truncated_gzip(tmp_path):
    data = np.random.default_rng(0).random((40, 40, 20)).astype(np.float32)
    path = _nii(tmp_path / "cut.nii.gz", data)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CxsegError, match=r"cut\.nii\.gz.*(truncated|corrupt)"):
        io.read(path)


def test_truncated_uncompressed_nifti(tmp_path):
    path = _nii(tmp_path / "cut.nii", np.ones((30, 30, 10), np.float32))
    raw = path.read_bytes()
    path.write_bytes(raw[: 352 + 100])
    with pytest.raises(CxsegError, match=r"cut\.nii"):
        io.read(path)


@pytest.mark.parametrize("name", ["empty.nii.gz", "empty.nii", "empty.png", "empty.jpg"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    # claimed by extension so that opening it says what is wrong with the file
    assert io.detect_format(tmp_path / name) == {"gz": "nifti", "nii": "nifti", "png": "png", "jpg": "jpeg"}[name.rsplit(".", 1)[1]]
    with pytest.raises(CxsegError, match=name.replace(".", r"\.")):
        io.read(tmp_path / name)


def test_text_file_named_png(tmp_path):
    (tmp_path / "fake.png").write_text("definitely not a PNG")
    assert io.detect_format(tmp_path / "fake.png") == "png"
    with pytest.raises(CxsegError, match=r"fake\.png"):
        io.read(tmp_path / "fake.png")


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    PILImage.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "cut.jpg")
    raw = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CxsegError, match=r"cut\.jpg"):
        io.read(tmp_path / "cut.jpg")


def test_nan_filled_volume(tmp_path):
    path = _nii(tmp_path / "allnan.nii.gz", np.full((5, 5, 5), np.nan, np.float32))
    with pytest.raises(CxsegError, match=r"allnan\.nii\.gz.*no finite"):
        io.read(path)
    inf = _nii(tmp_path / "allinf.nii.gz", np.full((5, 5, 5), np.inf, np.float32))
    with pytest.raises(CxsegError, match=r"allinf\.nii\.gz"):
        io.read(inf)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(CxsegError, match=r"ghost\.nii\.gz"):
        io.read(tmp_path / "ghost.nii.gz")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(CxsegError, match="nothing"):
        io.read(tmp_path / "nothing")


def test_corrupt_sidecar_is_ignored_with_a_reason_naming_it(tmp_path):
    """A broken sidecar never makes its label file unreadable: ignored, and the reason kept."""
    data = np.zeros((3, 3, 3), np.uint8)
    data[0] = 1
    path = _nii(tmp_path / "lab.nii.gz", data)
    (tmp_path / "lab.nii.gz.labels.json").write_text("{broken")
    (lm,) = io.read(path)
    assert lm.classes[1].name == "class 1"
    assert lm.meta["sidecar"]["used"] is False
    assert "not readable JSON" in lm.meta["sidecar"]["reason"]
    assert any("lab.nii.gz.labels.json" in w for w in lm.meta["warnings"])
    # an earlier version's name: ignored the same way (no warning: it may belong to another file)
    (tmp_path / "lab.nii.gz.labels.json").unlink()
    (tmp_path / "lab.labels.json").write_text("[1, 2]")
    (lm,) = io.read(path)
    assert lm.meta["sidecar"] == {
        "path": str(tmp_path / "lab.labels.json"),
        "used": False,
        "reason": "it is not a JSON object",
        "legacy": True,
    }


def test_msd_label_grid_differs_from_image_grid(tmp_path):
    task = tmp_path / "Task09_Spleen"
    _nii(task / "imagesTr" / "spleen_2.nii.gz", np.zeros((8, 8, 4), np.float32))
    _nii(task / "labelsTr" / "spleen_2.nii.gz", np.zeros((8, 8, 5), np.uint8))  # one slice more
    _nii(task / "imagesTr" / "spleen_3.nii.gz", np.zeros((8, 8, 4), np.float32))
    shifted = AFF.copy()
    shifted[0, 3] = 5.0  # same shape, other place
    _nii(task / "labelsTr" / "spleen_3.nii.gz", np.zeros((8, 8, 4), np.uint8), shifted)
    (task / "dataset.json").write_text(
        json.dumps(
            {
                "labels": {"0": "background", "1": "spleen"},
                "modality": {"0": "CT"},
                "training": [
                    {"image": "./imagesTr/spleen_2.nii.gz", "label": "./labelsTr/spleen_2.nii.gz"},
                    {"image": "./imagesTr/spleen_3.nii.gz", "label": "./labelsTr/spleen_3.nii.gz"},
                ],
                "test": [],
            }
        )
    )
    for case in ("spleen_2", "spleen_3"):
        with pytest.raises(CxsegError) as e:
            io.read(task, case=case)
        msg = str(e.value)
        assert f"labelsTr/{case}.nii.gz" in msg and f"imagesTr/{case}.nii.gz" in msg


def test_msd_missing_image_file(tmp_path):
    task = tmp_path / "Task02_Heart"
    task.mkdir()
    (task / "dataset.json").write_text(
        json.dumps({"training": [{"image": "./imagesTr/la_003.nii.gz", "label": "./labelsTr/la_003.nii.gz"}]})
    )
    with pytest.raises(CxsegError, match=r"la_003\.nii\.gz"):
        io.read(task)


# ---------------------------------------------------------------------------------- writing
def _image_and_labels(tmp_path):
    img_path = _nii(tmp_path / "ct.nii.gz", np.random.default_rng(0).random((6, 6, 4)).astype(np.float32))
    (image,) = io.read(img_path)
    labels = LabelMap(np.ones(image.array.shape, np.uint8), image.geometry, {1: LabelClass("organ")})
    return img_path, image, labels


def test_refuses_to_overwrite_source_image(tmp_path):
    img_path, _, labels = _image_and_labels(tmp_path)
    before = img_path.read_bytes()
    with pytest.raises(CxsegError, match=r"ct\.nii\.gz.*source image"):
        io.write_labels(labels, img_path, overwrite=True)
    assert img_path.read_bytes() == before
    assert _files(tmp_path) == ["ct.nii.gz"]


def test_refuses_reference_image_even_if_it_looks_like_labels(tmp_path):
    # an 8-bit binary PNG "radiograph" could pass for a mask: the recorded reference still protects it
    ref = tmp_path / "xray.png"
    PILImage.fromarray((np.arange(64).reshape(8, 8) % 2 * 255).astype(np.uint8)).save(ref)
    before = ref.read_bytes()
    lm = LabelMap(np.ones((8, 8), np.uint8), Geometry(np.eye(3), frame="image"),
                  meta={"reference_image_path": str(ref)})
    with pytest.raises(CxsegError, match=r"xray\.png"):
        io.write_labels(lm, ref, overwrite=True)
    assert ref.read_bytes() == before


def test_refuses_to_overwrite_other_images(tmp_path):
    _, _, labels = _image_and_labels(tmp_path)
    other = _nii(tmp_path / "other_mr.nii.gz", np.random.default_rng(1).random((6, 6, 4)).astype(np.float32))
    many = _nii(tmp_path / "ct_int.nii.gz", np.arange(144, dtype=np.int16).reshape(6, 6, 4))
    for target in (other, many):
        before = target.read_bytes()
        with pytest.raises(CxsegError, match=target.name.replace(".", r"\.") + ".*not a label map"):
            io.write_labels(labels, target, overwrite=True)
        assert target.read_bytes() == before


def test_check_target_allows_new_files_and_label_overwrite(tmp_path):
    _, _, labels = _image_and_labels(tmp_path)
    check_target(tmp_path / "new.nii.gz", labels)
    io.write_labels(labels, tmp_path / "seg.nii.gz")
    check_target(tmp_path / "seg.nii.gz", labels, overwrite=True)
    with pytest.raises(CxsegError, match=r"seg\.nii\.gz"):
        check_target(tmp_path / "seg.nii.gz", labels)
    (tmp_path / "dir.nii.gz").mkdir()
    with pytest.raises(CxsegError, match=r"dir\.nii\.gz.*folder"):
        check_target(tmp_path / "dir.nii.gz", labels, overwrite=True)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores folder permissions"
)
def test_read_only_folder_leaves_nothing(tmp_path):
    _, _, labels = _image_and_labels(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(CxsegError, match=r"ro/seg\.nii\.gz"):
            io.write_labels(labels, ro / "seg.nii.gz")
        assert _files(ro) == []
    finally:
        ro.chmod(0o755)


def test_failed_rename_leaves_no_temp_and_keeps_old_file(tmp_path, monkeypatch):
    """What a read-only folder (or full disk) does at the last step, simulated so it also runs as root."""
    _, _, labels = _image_and_labels(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    io.write_labels(labels, out / "seg.nii.gz")
    before = {n: (out / n).read_bytes() for n in _files(out)}

    def deny(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(atomic.os, "replace", deny)
    labels.array[0] = 0
    with pytest.raises(CxsegError, match=r"seg\.nii\.gz.*Permission denied"):
        io.write_labels(labels, out / "seg.nii.gz", overwrite=True)
    assert {n: (out / n).read_bytes() for n in _files(out)} == before
    with pytest.raises(CxsegError, match=r"new\.png"):
        io.write_labels(LabelMap(np.ones((4, 4), np.uint8), Geometry(np.eye(3), frame="image")), out / "new.png")
    assert _files(out) == sorted(before)


def test_write_fn_failure_removes_temp(tmp_path):
    def boom(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(tmp_path / "x.nii.gz", boom)
    assert _files(tmp_path) == []
    with pytest.raises(CxsegError, match=r"missing/x\.png.*does not exist"):
        atomic_write(tmp_path / "missing" / "x.png", boom)


def test_unwritable_target_is_reported_with_its_name(tmp_path, monkeypatch):
    import tempfile

    def no_space(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", no_space)
    _, _, labels = _image_and_labels(tmp_path)
    with pytest.raises(CxsegError, match=r"full\.nii\.gz.*No space"):
        io.write_labels(labels, tmp_path / "full.nii.gz")
