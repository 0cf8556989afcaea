"""Logical operators, class management, statistics and recovery storage."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_cxseg.editing.classes import (
    add_class,
    class_sizes,
    delete_class,
    merge_classes,
    recolour_class,
    rename_class,
)
from napari_cxseg.editing.logical import (
    apply_mask,
    combine_classes,
    intersect,
    paint_in_range,
    subtract,
    threshold_mask,
    union,
)
from napari_cxseg.editing.recovery import RecoveryStore, default_recovery_dir, recovery_key
from napari_cxseg.editing.statistics import histogram, label_statistics, statistics_to_csv
from napari_cxseg.geometry import Geometry
from napari_cxseg.images import CxsegError, LabelClass

# ---------------------------------------------------------------------- logical


def test_mask_truth_tables():
    a = np.array([False, False, True, True])
    b = np.array([False, True, False, True])
    assert union(a, b).tolist() == [False, True, True, True]
    assert subtract(a, b).tolist() == [False, False, True, False]
    assert intersect(a, b).tolist() == [False, False, False, True]
    with pytest.raises(ValueError, match="shapes differ"):
        union(a, b[:3])


def test_class_operations_within_and_between_arrays():
    lab = np.array([[1, 1, 0, 2], [0, 1, 2, 2]], np.uint8)
    # same array: intersect class 1 with class 2 -> empty class 1
    assert (combine_classes(lab, 1, 2, "intersect") == 1).sum() == 0
    # union with another class of the same array needs overwrite (they are not background)
    assert (combine_classes(lab, 1, 2, "union") == lab).all()
    assert (combine_classes(lab, 1, 2, "union", overwrite=True) == 1).sum() == 6
    # between two arrays: other layer's class 7
    other = np.array([[7, 0, 7, 7], [7, 7, 0, 0]], np.uint8)
    out = combine_classes(lab, 1, 7, "union", other_labels=other)
    assert out.tolist() == [[1, 1, 1, 2], [1, 1, 2, 2]]
    out = combine_classes(lab, 1, 7, "subtract", other_labels=other)
    assert out.tolist() == [[0, 1, 0, 2], [0, 0, 2, 2]]
    out = combine_classes(lab, 1, 7, "intersect", other_labels=other)
    assert out.tolist() == [[1, 0, 0, 2], [0, 1, 2, 2]]
    out = apply_mask(lab, 2, "replace", other == 7)
    assert out.tolist() == [[1, 1, 2, 2], [2, 1, 0, 0]]
    assert lab.tolist() == [[1, 1, 0, 2], [0, 1, 2, 2]]  # untouched
    with pytest.raises(ValueError, match="unknown operation"):
        apply_mask(lab, 1, "xor", other == 7)


def test_threshold_painting_touches_only_in_range_voxels():
    image = np.array([[-100.0, 0.0, 50.0, 100.0], [150.0, 200.0, np.nan, 60.0]])
    assert threshold_mask(image, 0, 100).tolist() == [
        [False, True, True, True],
        [False, False, False, True],
    ]
    assert threshold_mask(image, None, 0).sum() == 2
    lab = np.array([[0, 0, 3, 0], [0, 0, 0, 0]], np.uint8)
    brush = np.ones_like(lab, bool)
    brush[1, 3] = False
    out = paint_in_range(lab, brush, 1, image, 0, 100)
    assert out.tolist() == [[0, 1, 3, 1], [0, 0, 0, 0]]  # class 3 kept, [1,3] outside brush
    out = paint_in_range(lab, brush, 1, image, 0, 100, preserve_other=False)
    assert out.tolist() == [[0, 1, 1, 1], [0, 0, 0, 0]]
    erased = paint_in_range(out, brush, 0, image, 60, 100)
    assert erased.tolist() == [[0, 1, 1, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="above high"):
        threshold_mask(image, 5, 1)


# ---------------------------------------------------------------------- classes


def test_class_management():
    classes = {1: LabelClass("liver", "#ff0000")}
    classes2, cid = add_class(classes, "spleen")
    assert cid == 2 and classes2[2].name == "spleen" and classes2[2].colour.startswith("#")
    assert 2 not in classes  # input untouched
    classes3, cid3 = add_class(classes2, "tumour", colour=(0.0, 1.0, 0.0), class_id=9)
    assert cid3 == 9 and classes3[9].colour == "#00ff00"
    with pytest.raises(ValueError, match="already exists"):
        add_class(classes3, "again", class_id=1)
    assert rename_class(classes3, 2, "Spleen")[2].name == "Spleen"
    assert recolour_class(classes3, 2, "#ABC")[2].colour == "#aabbcc"
    with pytest.raises(ValueError, match="colour"):
        recolour_class(classes3, 2, "reddish")
    with pytest.raises(KeyError, match="does not exist"):
        rename_class(classes3, 5, "x")

    lab = np.array([[1, 2, 2], [9, 0, 4]], np.uint8)
    merged, mclasses = merge_classes(lab, classes3, [2, 4], 1)
    assert merged.tolist() == [[1, 1, 1], [9, 0, 1]] and sorted(mclasses) == [1, 9]
    deleted, dclasses = delete_class(lab, classes3, 9)
    assert deleted.tolist() == [[1, 2, 2], [0, 0, 4]] and 9 not in dclasses
    assert lab.tolist() == [[1, 2, 2], [9, 0, 4]]


def test_class_sizes_mm():
    lab = np.zeros((4, 5, 6), np.uint8)
    lab[0, :2, :3] = 1
    lab[1:3] = 2
    sizes = class_sizes(lab, spacing=(2.5, 0.5, 0.8))
    assert sizes[1] == (6, pytest.approx(6 * 1.0))
    assert sizes[2] == (60, pytest.approx(60.0))
    assert class_sizes(lab[0], spacing=(0.5, 0.8))[1] == (6, pytest.approx(6 * 0.4))


# ---------------------------------------------------------------------- statistics


def test_statistics_against_hand_values(tmp_path):
    # anisotropic, translated affine with a flipped axis
    affine = np.array([[2.5, 0, 0, -100.0], [0, -0.5, 0, 20.0], [0, 0, 0.8, 5.0], [0, 0, 0, 1]])
    lab = np.zeros((4, 6, 8), np.uint8)
    lab[1:3, 2:4, 4:8] = 1  # 16 voxels, centroid index (1.5, 2.5, 5.5)
    image = np.arange(lab.size, dtype=float).reshape(lab.shape)
    classes = {1: LabelClass("nodule", "#ff0000"), 2: LabelClass("empty", "#00ff00")}
    rows = label_statistics(lab, image, spacing=None, affine=affine, classes=classes)
    r = rows[0]
    assert r["label"] == 1 and r["name"] == "nodule" and r["voxels"] == 16
    assert r["volume_mm3"] == pytest.approx(16 * 2.5 * 0.5 * 0.8)
    assert r["volume_ml"] == pytest.approx(16 * 1.0 / 1000)
    vals = image[lab == 1]
    assert r["mean"] == pytest.approx(vals.mean()) and r["std"] == pytest.approx(vals.std())
    assert (r["min"], r["max"]) == (vals.min(), vals.max())
    assert (r["bbox_z_start"], r["bbox_z_stop"], r["bbox_x_start"], r["bbox_x_stop"]) == (
        1,
        3,
        4,
        8,
    )
    assert r["centroid_z_mm"] == pytest.approx(-100 + 1.5 * 2.5)
    assert r["centroid_y_mm"] == pytest.approx(20 - 2.5 * 0.5)
    assert r["centroid_x_mm"] == pytest.approx(5 + 5.5 * 0.8)
    assert rows[1]["voxels"] == 0 and np.isnan(rows[1]["mean"]) and rows[1]["bbox_z_start"] == -1

    path = statistics_to_csv(rows, tmp_path / "stats" / "case.csv")
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    assert table[0]["name"] == "nodule" and float(table[0]["volume_ml"]) == pytest.approx(0.016)
    assert not list(path.parent.glob(".*tmp"))

    # 2D: area in mm2
    rows2 = label_statistics(lab[1], image[1], spacing=(0.5, 0.8))
    assert rows2[0]["area_mm2"] == pytest.approx(8 * 0.4) and "volume_ml" not in rows2[0]
    counts, edges = histogram(image, lab, 1, bins=4)
    assert counts.sum() == 16 and len(edges) == 5


# ---------------------------------------------------------------------- recovery


def test_recovery_round_trip(tmp_path):
    store = RecoveryStore(tmp_path / "rec")
    assert store.list() == []
    geom = Geometry(affine=np.diag([2.5, 0.7, 0.7, 1.0]))
    lab = np.zeros((5, 6, 7), np.uint16)
    lab[1:3, 2:4, 3:5] = 300
    key = recovery_key("a1b2c3", "/data/case 01.nii.gz", "labels")
    assert key == recovery_key("a1b2c3", "/data/case 01.nii.gz", "labels")
    # one layer in one run: another layer (or run) of the same name and file has another key
    assert key != recovery_key("a1b2c4", "/data/case 01.nii.gz", "labels")
    assert key != recovery_key("a1b2c3", "/data/case 01.nii.gz", "labels", session="20200101000000abcdef")
    assert "/" not in key and " " not in key and key.startswith("case_01-labels-")
    classes = {"300": {"name": "lesion", "colour": "#ff0000"}}
    store.save(key, lab, geom.to_dict(), classes, "/data/case 01.nii.gz")
    entries = store.list()
    assert [e.key for e in entries] == [key]
    assert entries[0].source_path == "/data/case 01.nii.gz" and entries[0].shape == (5, 6, 7)
    rec = store.load(key)
    np.testing.assert_array_equal(rec.labels, lab)
    assert rec.labels.dtype == np.uint16 and rec.classes == classes
    lm = rec.to_label_map()
    np.testing.assert_allclose(lm.geometry.affine, geom.affine)
    assert lm.classes[300].name == "lesion"
    # a second save replaces the first
    lab[0, 0, 0] = 1
    store.save(key, lab, geom.to_dict(), classes, "/data/case 01.nii.gz")
    assert len(store.list()) == 1 and store.load(key).labels[0, 0, 0] == 1
    assert not list((tmp_path / "rec").glob("*.tmp"))
    assert store.discard(key) and store.list() == [] and not store.discard(key)
    with pytest.raises(CxsegError, match="no recovery entry"):
        store.load(key)


def test_recovery_default_dir_and_damage(tmp_path, monkeypatch):
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))
    assert default_recovery_dir() == tmp_path / "cache" / "recovery"
    store = RecoveryStore()
    store.save("k1", np.ones((3, 3), np.uint8), {"affine": np.eye(3).tolist()}, {})
    # a damaged array is reported, not returned
    meta = json.loads((store.root / "k1.json").read_text())
    meta["sha256"] = "0" * 64
    (store.root / "k1.json").write_text(json.dumps(meta))
    with pytest.raises(CxsegError, match="checksum"):
        store.load("k1")
    # a half-written entry (array without JSON) is not listed
    (store.root / "k1.json").unlink()
    assert store.list() == []
    with pytest.raises(ValueError, match="invalid recovery key"):
        store.save("../escape", np.ones((2, 2), np.uint8), {}, {})
    with pytest.raises(TypeError, match="integer"):
        store.save("k2", np.ones((2, 2)), {}, {})
    assert not (store.root / "k2.npz").exists()
