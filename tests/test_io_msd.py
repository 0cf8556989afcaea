"""Medical Segmentation Decathlon task folders, built small in tmp_path."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_cxseg import io
from napari_cxseg.images import CxsegError, Image, LabelMap
from napari_cxseg.io.msd import MSDTask, modality_of, read_msd

AFF = np.array([[-1.0, 0, 0, 10], [0, -1.0, 0, 20], [0, 0, 1.0, -5], [0, 0, 0, 1]])


def _nii(path, data, affine=AFF):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def make_task01(root):
    """BRATS-like: 4D 4-channel images, 3 tumour classes, test list of plain strings."""
    task = root / "Task01_BrainTumour"
    rng = np.random.default_rng(0)
    training = []
    for i in (1, 2):
        _nii(task / "imagesTr" / f"BRATS_00{i}.nii.gz", rng.random((8, 9, 5, 4)).astype(np.float32))
        lab = np.zeros((8, 9, 5), np.uint8)
        lab[2:4, 2:4, 1:3] = i
        lab[5, 5, 2] = 3
        _nii(task / "labelsTr" / f"BRATS_00{i}.nii.gz", lab)
        training.append({"image": f"./imagesTr/BRATS_00{i}.nii.gz", "label": f"./labelsTr/BRATS_00{i}.nii.gz"})
    _nii(task / "imagesTs" / "BRATS_557.nii.gz", rng.random((8, 9, 5, 4)).astype(np.float32))
    # macOS resource forks shipped in the real tarballs must be ignored
    (task / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    (task / "dataset.json").write_text(
        json.dumps(
            {
                "name": "BRATS",
                "description": "Gliomas segmentation tumour and oedema in on brain images",
                "release": "2.0 04/05/2018",
                "tensorImageSize": "4D",
                "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
                "numTraining": 2,
                "numTest": 1,
                "training": training,
                "test": ["./imagesTs/BRATS_557.nii.gz"],
            }
        )
    )
    return task


def make_task04(root):
    """Hippocampus-like: 3D MRI, the "relase" typo, test as plain strings."""
    task = root / "Task04_Hippocampus"
    rng = np.random.default_rng(1)
    training = []
    for i in (1, 3):
        _nii(task / "imagesTr" / f"hippocampus_00{i}.nii.gz", rng.random((6, 7, 5)).astype(np.float32))
        lab = np.zeros((6, 7, 5), np.uint8)
        lab[1:3, 1:3, 1:3] = 1
        lab[3:5, 3:5, 2:4] = 2
        _nii(task / "labelsTr" / f"hippocampus_00{i}.nii.gz", lab)
        training.append({"image": f"./imagesTr/hippocampus_00{i}.nii.gz", "label": f"./labelsTr/hippocampus_00{i}.nii.gz"})
    for i in (2, 4):
        _nii(task / "imagesTs" / f"hippocampus_00{i}.nii.gz", rng.random((6, 7, 5)).astype(np.float32))
    (task / "dataset.json").write_text(
        json.dumps(
            {
                "name": "Hippocampus",
                "relase": "1.0 04/05/2018",
                "tensorImageSize": "3D",
                "modality": {"0": "MRI"},
                "labels": {"0": "background", "1": "Anterior", "2": "Posterior"},
                "numTraining": 260,
                "numTest": 130,
                "training": training,
                "test": ["./imagesTs/hippocampus_002.nii.gz", "./imagesTs/hippocampus_004.nii.gz"],
            }
        )
    )
    return task


def make_nnunet_v2(root):
    """nnU-Net v2 form: channel_names, labels name->id, per-channel _0000 files, no case lists."""
    task = root / "Dataset005_Prostate"
    rng = np.random.default_rng(2)
    for case in ("prostate_00", "prostate_01"):
        for ch in (0, 1):
            _nii(task / "imagesTr" / f"{case}_{ch:04d}.nii.gz", rng.random((6, 6, 4)).astype(np.float32))
        lab = np.zeros((6, 6, 4), np.uint8)
        lab[1:3, 1:3, 1:3] = 1
        lab[3:5, 3:5, 1:3] = 2
        _nii(task / "labelsTr" / f"{case}.nii.gz", lab)
    (task / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "T2", "1": "ADC"},
                "labels": {"background": 0, "PZ": 1, "TZ": 2},
                "numTraining": 2,
                "file_ending": ".nii.gz",
            }
        )
    )
    return task


def test_task01_4d_channels_and_classes(tmp_path):
    task = MSDTask(make_task01(tmp_path))
    assert task.name == "BRATS" and task.release == "2.0 04/05/2018"
    assert task.channel_names == ["FLAIR", "T1w", "t1gd", "T2w"]
    assert task.modality == "MR"
    assert [c["name"] for c in task.cases()] == ["BRATS_001", "BRATS_002"]
    assert task.cases("test")[0]["label"] is None
    image, labels = task.read_case(0)
    assert isinstance(image, Image) and isinstance(labels, LabelMap)
    assert image.channel_names == ["FLAIR", "T1w", "t1gd", "T2w"]
    assert image.array.shape == (4, 5, 9, 8)
    assert image.modality == "MR"
    assert image.meta["name"] == "BRATS_001"
    assert {k: c.name for k, c in labels.classes.items()} == {
        1: "edema", 2: "non-enhancing tumor", 3: "enhancing tumour"
    }
    assert labels.array.shape == image.spatial_shape
    assert labels.meta["reference_image_path"].endswith("imagesTr/BRATS_001.nii.gz")
    assert image.geometry.same_grid(labels.geometry, image.spatial_shape, labels.array.shape)


def test_task01_case_by_name_and_test_case(tmp_path):
    root = make_task01(tmp_path)
    image, labels = MSDTask(root).read_case("BRATS_002")
    assert image.meta["msd"]["case"] == "BRATS_002"
    assert (labels.array == 2).any()
    out = io.read(root, case="BRATS_557")
    assert len(out) == 1 and isinstance(out[0], Image)
    assert out[0].meta["msd"]["section"] == "test"


def test_task04_quirks(tmp_path):
    root = make_task04(tmp_path)
    task = MSDTask(root / "dataset.json")
    assert task.release == "1.0 04/05/2018"  # from the "relase" typo
    assert task.tensor_image_size == "3D"
    assert [c["name"] for c in task.cases("test")] == ["hippocampus_002", "hippocampus_004"]
    image, labels = task.read_case(1)
    assert image.channel_names is None and image.array.ndim == 3
    assert image.meta["name"] == "hippocampus_003"
    assert labels.classes[1].name == "Anterior" and labels.classes[2].name == "Posterior"
    test_image, none = task.read_case(0, section="test")
    assert none is None and test_image.meta["name"] == "hippocampus_002"


def test_io_read_default_is_first_training_case(tmp_path):
    root = make_task04(tmp_path)
    assert io.detect_format(root) == "msd"
    for p in (root, root / "dataset.json"):
        image, labels = io.read(p)
        assert image.meta["name"] == "hippocampus_001"
        assert isinstance(labels, LabelMap)
    assert read_msd(root, case=1)[0].meta["name"] == "hippocampus_003"


def test_nnunet_v2_form(tmp_path):
    task = MSDTask(make_nnunet_v2(tmp_path))
    assert task.channel_names == ["T2", "ADC"]
    assert {k: c.name for k, c in task.classes.items()} == {1: "PZ", 2: "TZ"}
    cases = task.cases()
    assert [c["name"] for c in cases] == ["prostate_00", "prostate_01"]
    assert len(cases[0]["image"]) == 2
    image, labels = task.read_case("prostate_01")
    assert image.channel_names == ["T2", "ADC"] and image.array.shape[0] == 2
    assert labels.classes[2].name == "TZ"


def test_unknown_case_and_section_name_the_task(tmp_path):
    task = MSDTask(make_task04(tmp_path))
    with pytest.raises(CxsegError, match="dataset.json.*nope"):
        task.read_case("nope")
    with pytest.raises(CxsegError, match="dataset.json.*99"):
        task.read_case(99)
    with pytest.raises(CxsegError, match="dataset.json.*'validation'"):
        task.cases("validation")


def test_bad_dataset_json(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(CxsegError, match="dataset.json"):
        MSDTask(tmp_path)
    with pytest.raises(CxsegError, match="no dataset.json"):
        MSDTask(tmp_path / "elsewhere")


def test_modality_of():
    assert modality_of(["CT"]) == "CT"
    assert modality_of(["FLAIR", "T1w"]) == "MR"
    assert modality_of(["MRI"]) == "MR"
    assert modality_of(["something"]) == ""
