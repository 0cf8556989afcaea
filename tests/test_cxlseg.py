"""CXLSeg datasets the tests write: CSV joins, lossy low-resolution masks (threshold, resize,
split by anatomy), corrected masks saved back with backups, predictions exported as a dataset."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxlseg_data import FINDINGS, lungs, make_dataset
from napari_cxseg.cxlseg import (
    browse_table,
    cxlseg_cases,
    filter_rows,
    positive_findings,
    read_tables,
)
from napari_cxseg.cxlseg_masks import BACKUP_DIR, LOG_CSV, load_case, save_corrected_mask
from napari_cxseg.images import CxsegError

KERMANY = Path(__file__).parent / "data" / "kermany_cxr"


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.logical_and(a, b).sum()) / float(a.sum() + b.sum())


def test_csv_joins_and_filters(tmp_path):
    ds = make_dataset(tmp_path, n=4)
    t = browse_table(ds["root"])
    assert len(t) == 4
    assert list(t["split"]) == [r["split"] for r in ds["rows"]]
    assert list(t["view"]) == [r["view"] for r in ds["rows"]]
    assert "segmented_path" in t.columns and "Reports" in t.columns
    assert all(c in t.columns for c in FINDINGS)
    assert list(filter_rows(t, split="validate")) == [1]
    assert list(filter_rows(t, view="AP")) == [1, 3]
    pos = [i for i, r in enumerate(ds["rows"]) if r["findings"]["Cardiomegaly"] == 1.0]
    assert list(filter_rows(t, finding="Cardiomegaly")) == pos
    assert list(filter_rows(t, text=ds["rows"][2]["dicom_id"][:6])) == [2]
    assert positive_findings(t.iloc[0], list(FINDINGS)) == "Atelectasis, Pleural Effusion"
    with pytest.raises(CxsegError, match="no finding column 'Edema'"):
        filter_rows(t, finding="Edema")
    with pytest.raises(CxsegError, match="is not a CXLSeg dataset"):
        read_tables(tmp_path)


def test_lossy_mask_thresholded_resized_and_split(tmp_path):
    ds = make_dataset(tmp_path, n=1)
    r = ds["rows"][0]
    case = load_case(ds["root"], f"{r['rel']}/{r['dicom_id']}-mask.jpg")
    assert case.image_path.parent.parts[-5] == "mimic-cxr-jpg-2.0.0"  # the original, not the 224 px segmented image
    assert case.image.spatial_shape == (512, 448)
    m = np.asarray(case.mask.array)
    assert m.shape == (512, 448) and set(np.unique(m)) == {0, 1, 2}
    truth = lungs((512, 448))
    assert _dice(m == 1, truth == 1) > 0.95 and _dice(m == 2, truth == 2) > 0.95
    cols = np.nonzero(m == 1)[1].mean(), np.nonzero(m == 2)[1].mean()
    assert cols[0] < cols[1]  # right lung on the image's left
    assert case.mask.classes[1].name == "right lung"
    # the training cases take the same original
    cases = cxlseg_cases(ds["root"])
    assert cases[0].image == case.image_path and cases[0].split == "train"


def test_corrected_mask_saved_back_with_a_backup(tmp_path):
    ds = make_dataset(tmp_path, n=1)
    r = ds["rows"][0]
    rel = f"{r['rel']}/{r['dicom_id']}-mask.jpg"
    original = (ds["root"] / rel).read_bytes()
    case = load_case(ds["root"], rel)
    edited = np.asarray(case.mask.array).copy()
    edited[:, :200] = 0  # the user erases the right lung
    res = save_corrected_mask(ds["root"], rel, edited, case.image, r["dicom_id"])
    backup = ds["root"] / BACKUP_DIR / rel
    assert res["backup"] == backup and backup.read_bytes() == original
    assert res["size"] == (224, 224)
    with Image.open(ds["root"] / rel) as im:
        assert im.size == (224, 224) and im.mode == "L"
    again = np.asarray(load_case(ds["root"], rel).mask.array)
    assert _dice(again > 0, edited > 0) > 0.95 and not (again[:, :190] > 0).any()
    # a second save keeps the first backup (the original) as it was
    save_corrected_mask(ds["root"], rel, np.asarray(case.mask.array), case.image, r["dicom_id"])
    assert backup.read_bytes() == original
    log = list(csv.DictReader(open(ds["root"] / LOG_CSV)))
    assert [row["dicom_id"] for row in log] == [r["dicom_id"]] * 2 and log[0]["backup"] == f"{BACKUP_DIR}/{rel}"
    # never over the image itself
    img_rel = Path("..") / "mimic-cxr-jpg-2.0.0" / r["rel"] / f"{r['dicom_id']}.jpg"
    before = case.image_path.read_bytes()
    with pytest.raises(CxsegError, match="refusing to write the mask over its image"):
        save_corrected_mask(ds["root"], str(img_rel), edited, case.image)
    assert case.image_path.read_bytes() == before
    with pytest.raises(CxsegError, match="not on the grid"):
        save_corrected_mask(ds["root"], rel, edited[:10], case.image)


def test_missing_image_names_the_paths(tmp_path):
    ds = make_dataset(tmp_path, n=1)
    r = ds["rows"][0]
    shutil.rmtree(ds["mimic"])
    with pytest.raises(CxsegError, match="no MIMIC-CXR-JPG image for mask"):
        load_case(ds["root"], f"{r['rel']}/{r['dicom_id']}-mask.jpg")
    with pytest.raises(CxsegError, match="does not exist"):
        load_case(ds["root"], "files/nothing-mask.jpg")


def test_predictions_exported_as_a_cxlseg_dataset(tmp_path):
    from napari_cxseg.cxlseg_export import export_predictions

    src = tmp_path / "mimic" / "files" / "p10" / "p10000001" / "s50000001"
    src.mkdir(parents=True)
    for p in sorted(KERMANY.glob("normal_*.png")):
        shutil.copy(p, src / p.name)
    out = tmp_path / "export"

    def run(**kw):
        gen = export_predictions(tmp_path / "mimic", out, model="cxr-lungs", device="cpu", **kw)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value

    res = run()
    assert sorted(res.written) == ["normal_1427", "normal_1438"] and not res.failed
    t = read_tables(out)
    assert set(t["split"]) <= {"train", "validate", "test"}
    assert set(t["subject_id"]) == {"10000001"} and set(t["study_id"]) == {"50000001"}
    rel = t.loc[t["dicom_id"] == "normal_1427", "mask_path"].item()
    assert rel == "files/p10/p10000001/s50000001/normal_1427-mask.jpg"
    with Image.open(out / rel) as im:
        assert im.size == (224, 224)
        m = np.asarray(im) > 127
    assert 0.1 < m.mean() < 0.7
    with Image.open(out / "files/p10/p10000001/s50000001/normal_1427.jpg") as im:
        assert im.mode == "RGB" and im.size == (224, 224)
    cases = cxlseg_cases(out)  # usable for training: originals found through source_image
    assert {c.image.name for c in cases} == {"normal_1427.png", "normal_1438.png"}
    again = run()
    assert sorted(again.skipped) == ["normal_1427", "normal_1438"] and not again.written
    assert len(read_tables(out)) == 2


def test_cxlseg_export_command(tmp_path, capsys):
    from napari_cxseg.cli import main

    film = tmp_path / "normal_1438.png"
    shutil.copy(KERMANY / "normal_1438.png", film)
    out = tmp_path / "ds"
    assert main(["cxlseg-export", "-i", str(film), "-o", str(out), "--model", "cxr-lungs", "--device", "cpu",
                 "--mask-size", "0"]) == 0
    assert "1 written, 0 kept, 0 failed" in capsys.readouterr().out
    with Image.open(out / "files" / "normal_1438-mask.jpg") as im, Image.open(film) as src:
        assert im.size == src.size  # --mask-size 0: the film's own size
    assert main(["cxlseg-export", "-i", str(tmp_path / "none"), "-o", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
