"""CXLSeg-layout datasets written by the tests (the real one is credentialed).

Layout (../shared/reference/formats.md section 2): ``<root>/CXLSeg-{mask,split,segmented,metadata}.csv``
joined on ``dicom_id, subject_id, study_id``; masks ``files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>-mask.jpg``
(224 x 224 lossy grey JPEG, both lungs in one class) and CXLSeg's own segmented image
``<dicom_id>.jpg`` (224 px, 3 channels) beside them; the MIMIC-CXR-JPG originals at the same
relative path in a sibling ``mimic-cxr-jpg-2.0.0`` folder.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

FINDINGS = ("Atelectasis", "Cardiomegaly", "Pleural Effusion", "No Finding")


def lungs(shape: tuple[int, int]) -> np.ndarray:
    """Two ellipses: the right lung on the image's left, the left lung on its right (PA)."""
    r, c = np.mgrid[: shape[0], : shape[1]]
    h, w = shape
    right = ((r - 0.5 * h) / (0.35 * h)) ** 2 + ((c - 0.3 * w) / (0.15 * w)) ** 2 <= 1
    left = ((r - 0.5 * h) / (0.33 * h)) ** 2 + ((c - 0.7 * w) / (0.14 * w)) ** 2 <= 1
    return right.astype(np.uint8) + 2 * left.astype(np.uint8)


def film(shape: tuple[int, int] = (512, 448), seed: int = 0) -> np.ndarray:
    """A grey 'radiograph': dark lungs on a bright body, with noise."""
    rng = np.random.default_rng(seed)
    img = 200.0 - 140.0 * (lungs(shape) > 0) + rng.normal(0, 8, shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_dataset(root: Path, n: int = 3) -> dict:
    """Write an n-case dataset under ``root / 'cxlseg'``; returns its paths and rows."""
    ds = root / "cxlseg"
    mimic = root / "mimic-cxr-jpg-2.0.0"
    rows = []
    for i in range(n):
        did = f"d{i:03d}abc-{i}"
        subject, study = f"1000{i:04d}", f"5000{i:04d}"
        rel = f"files/p10/p{subject}/s{study}"
        for base in (ds, mimic):
            (base / rel).mkdir(parents=True, exist_ok=True)
        Image.fromarray(film(seed=i)).save(mimic / rel / f"{did}.jpg", quality=92)
        m = (lungs((224, 224)) > 0).astype(np.uint8) * 255
        Image.fromarray(m).save(ds / rel / f"{did}-mask.jpg", quality=75)
        seg = np.repeat((film((224, 224), i) * (m > 0))[..., None], 3, axis=2)
        Image.fromarray(seg.astype(np.uint8)).save(ds / rel / f"{did}.jpg", quality=90)
        rows.append({"dicom_id": did, "subject_id": subject, "study_id": study, "rel": rel,
                     "split": ("train", "validate", "test")[i % 3], "view": ("PA", "AP")[i % 2],
                     "findings": {f: (1.0 if (i + k) % 2 == 0 else "") for k, f in enumerate(FINDINGS)}})
    keys = ["dicom_id", "subject_id", "study_id"]

    def write(name: str, head: list[str], fn) -> None:
        with open(ds / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(head)
            for r in rows:
                w.writerow(fn(r))

    write("CXLSeg-mask.csv", [*keys, "DicomPath"], lambda r: [*(r[k] for k in keys), f"{r['rel']}/{r['dicom_id']}-mask.jpg"])
    write("CXLSeg-split.csv", [*keys, "split"], lambda r: [*(r[k] for k in keys), r["split"]])
    write("CXLSeg-segmented.csv", [*keys, "DicomPath", *FINDINGS],
          lambda r: [*(r[k] for k in keys), f"{r['rel']}/{r['dicom_id']}.jpg", *(r["findings"][f] for f in FINDINGS)])
    write("CXLSeg-metadata.csv", [*keys, "ViewPosition", "Reports"],
          lambda r: [*(r[k] for k in keys), r["view"], "FINDINGS: none."])
    return {"root": ds, "mimic": mimic, "rows": rows}


def make_big_csvs(root: Path, n: int = 243_324) -> Path:
    """CSVs of ``n`` rows (CXLSeg's size) without images: for the lazy table."""
    import pandas as pd

    ds = root / "big"
    ds.mkdir(parents=True, exist_ok=True)
    i = np.arange(n)
    did = pd.Series(i).map(lambda k: f"{k:08x}-aaaa-bbbb")
    subject = (10_000_000 + i // 4).astype(str)
    study = (50_000_000 + i // 2).astype(str)
    keys = pd.DataFrame({"dicom_id": did, "subject_id": subject, "study_id": study})
    rel = "files/p10/p" + keys["subject_id"] + "/s" + keys["study_id"] + "/" + keys["dicom_id"]
    keys.assign(DicomPath=rel + "-mask.jpg").to_csv(ds / "CXLSeg-mask.csv", index=False)
    split = np.where(i % 10 == 8, "validate", np.where(i % 10 == 9, "test", "train"))
    keys.assign(split=split).to_csv(ds / "CXLSeg-split.csv", index=False)
    seg = keys.assign(DicomPath=rel + ".jpg", Cardiomegaly=np.where(i % 7 == 0, 1.0, np.nan),
                      **{"Pleural Effusion": np.where(i % 5 == 0, 1.0, 0.0)})
    seg.to_csv(ds / "CXLSeg-segmented.csv", index=False)
    keys.assign(ViewPosition=np.where(i % 3 == 0, "AP", "PA")).to_csv(ds / "CXLSeg-metadata.csv", index=False)
    return ds
