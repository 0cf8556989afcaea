"""The bundled sample data: present, small, readable, with the right classes and grids."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cxseg.images import Image, LabelMap
from napari_cxseg.io import read
from napari_cxseg.sample_data_files import SAMPLE_DIR, SAMPLES

CT_CLASSES = {
    "right lung", "left lung", "heart", "aorta", "trachea", "esophagus", "liver", "spleen",
    "right kidney", "left kidney", "stomach", "vertebrae", "ribs",
}


def test_files_exist_and_are_small():
    files = [SAMPLE_DIR / f for pair in SAMPLES.values() for f in pair]
    files += [SAMPLE_DIR / "chest_ct_labels.labels.json", SAMPLE_DIR / "chest_xray_lungs.png.labels.json"]
    for f in files:
        assert f.is_file(), f
    total = sum(f.stat().st_size for f in SAMPLE_DIR.iterdir() if f.is_file())
    assert total < 5_000_000
    text = (SAMPLE_DIR / "SOURCE.md").read_text()
    for needed in ("LIDC-IDRI", "CC BY 3.0", "CC BY 4.0", "TotalSegmentator"):
        assert needed in text


def test_ct_and_labels_share_a_grid_and_classes():
    ct = read(SAMPLE_DIR / "chest_ct.nii.gz")[0]
    lab = read(SAMPLE_DIR / "chest_ct_labels.nii.gz", as_labels=True)[0]
    assert isinstance(ct, Image) and isinstance(lab, LabelMap)
    assert ct.geometry.same_grid(lab.geometry, ct.array.shape, lab.array.shape)
    assert np.allclose(ct.geometry.spacing, [5.0, 2.0, 2.0])
    assert {c.name for c in lab.classes.values()} == CT_CLASSES
    assert set(np.unique(lab.array)) == set(range(14))
    # HU: air, soft tissue and bone are there
    assert ct.array.min() <= -900 and ct.array.max() >= 700


def test_ct_labels_are_on_the_right_sides():
    """World L grows toward the patient's left: the liver and right lung sit at smaller L."""
    lab = read(SAMPLE_DIR / "chest_ct_labels.nii.gz", as_labels=True)[0]
    names = {c.name: k for k, c in lab.classes.items()}
    w = lab.geometry.affine

    def centre_l(name: str) -> float:
        idx = np.argwhere(lab.array == names[name]).mean(axis=0)
        return float((w @ np.r_[idx, 1.0])[2])

    assert centre_l("liver") < centre_l("spleen")
    assert centre_l("right lung") < centre_l("left lung")
    assert centre_l("right kidney") < centre_l("left kidney")


def test_radiograph_and_lungs_overlay():
    img = read(SAMPLE_DIR / "chest_xray.png")[0]
    lungs = read(SAMPLE_DIR / "chest_xray_lungs.png")[0]
    assert isinstance(img, Image) and isinstance(lungs, LabelMap)
    assert img.geometry.frame == "image" and lungs.geometry.frame == "image"
    assert img.geometry.same_grid(lungs.geometry, img.array.shape, lungs.array.shape)
    assert {k: c.name for k, c in lungs.classes.items()} == {1: "right lung", 2: "left lung"}
    assert 400 <= max(img.array.shape) <= 600
    cols = np.arange(lungs.array.shape[1])
    right = cols[(lungs.array == 1).any(axis=0)].mean()
    left = cols[(lungs.array == 2).any(axis=0)].mean()
    assert right < left  # PA: the patient's right lung on the image's left
    # lungs are darker than the rest of the patient
    body = img.array > 20
    assert img.array[lungs.array > 0].mean() < img.array[body & (lungs.array == 0)].mean()


@pytest.mark.parametrize("command", ["sample_ct", "sample_cxr"])
def test_sample_commands_give_image_and_labels(command):
    from napari_cxseg import _sample_data

    layers = getattr(_sample_data, command)()
    assert [t for _, _, t in layers] == ["image", "labels"]
    (img, ikw, _), (lab, lkw, _) = layers
    assert img.shape == lab.shape
    assert ikw["scale"] == lkw["scale"] and ikw["translate"] == lkw["translate"]
    assert "right lung" in list(lkw["features"]["name"])
