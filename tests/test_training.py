"""The Trainer: data layouts, targets, loss going down, resume, bundle export, CLI train."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_cxseg.models.cards import card_from_dict
from napari_cxseg.training import TrainConfig, Trainer, find_cases, split_cases
from napari_cxseg.training.targets import build_target, split_lungs
from training_data import film, write_msd_volumes, write_structure_set

pytestmark = pytest.mark.slow


def tiny_card_2d(**over) -> dict:
    d = {
        "name": "tiny-lungs", "task": "test lungs", "modality": ["CR", "DX", "XR"], "spatial_dims": 2,
        "input": {"channels": ["radiograph"], "size": [64, 64], "fit": "pad",
                  "intensity": {"type": "percentiles", "lower": 0.5, "upper": 99.5, "b_min": 0.0, "b_max": 1.0,
                                "clip": True}},
        "network": {"name": "UNet", "args": {"spatial_dims": 2, "in_channels": 1, "out_channels": 3,
                                             "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}},
        "inference": {"roi_size": [64, 64], "overlap": 0.0, "sw_batch_size": 1, "mode": "constant"},
        "output": {"activation": "softmax", "largest_component": True},
        "classes": {1: {"name": "right lung", "colour": "#1f77b4"}, 2: {"name": "left lung", "colour": "#ff7f0e"}},
        "weights": {"source": "file", "file": "none.pt"},
    }
    d.update(over)
    return d


def tiny_card_3d() -> dict:
    return {
        "name": "tiny-sphere", "task": "test sphere", "modality": ["CT"], "spatial_dims": 3,
        "input": {"channels": ["CT"], "orientation": "RAS", "spacing": [4.0, 4.0, 4.0],
                  "intensity": {"type": "window", "a_min": -200, "a_max": 300, "b_min": 0.0, "b_max": 1.0,
                                "clip": True}},
        "network": {"name": "UNet", "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                                             "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}},
        "inference": {"roi_size": [16, 16, 16], "overlap": 0.25, "sw_batch_size": 2, "mode": "gaussian"},
        "output": {"activation": "softmax"},
        "classes": {1: {"name": "sphere", "colour": "#ff0000"}},
        "weights": {"source": "file", "file": "none.pt"},
    }


def test_structure_folder_cases_and_patient_split(tmp_path):
    write_structure_set(tmp_path / "jsrt", n=10)
    write_structure_set(tmp_path / "shenzhen", n=10, combined=True, seed=1)
    cases = find_cases(tmp_path)
    assert {c.source for c in cases} == {"jsrt", "shenzhen"} and len(cases) == 20
    train, val = split_cases(cases, 0.3, seed=0)
    assert {c.key for c in train}.isdisjoint({c.key for c in val})
    assert {c.source for c in val} == {"jsrt", "shenzhen"}  # every source is validated
    again, _ = split_cases(list(reversed(cases)), 0.3, seed=0)
    assert sorted(c.key for c in again) == sorted(c.key for c in train)  # stable, order-free


def test_combined_lungs_split_by_anatomy(tmp_path):
    from napari_cxseg import io

    write_structure_set(tmp_path, n=2, combined=True)
    case = find_cases(tmp_path)[0]
    image = io.read(case.image)[0]
    target = build_target({1: "right lung", 2: "left lung"}, case, image, multi_label=False)[0]
    cols = np.arange(target.shape[1])
    right_c = (cols * (target == 1).sum(0)).sum() / (target == 1).sum()
    left_c = (cols * (target == 2).sum(0)).sum() / (target == 2).sum()
    assert right_c < target.shape[1] / 2 < left_c  # PA view: the right lung is on the image's left
    # touching lungs are cut at the emptiest middle column
    m = np.zeros((40, 60), bool)
    m[5:35, 5:28] = True
    m[5:35, 31:55] = True
    m[18:20, 28:31] = True
    s = split_lungs(m)
    assert (s[:, :28][m[:, :28]] == 1).all() and (s[:, 31:][m[:, 31:]] == 2).all()


def test_multilabel_target_keeps_overlaps(tmp_path):
    from PIL import Image

    from napari_cxseg import io

    write_structure_set(tmp_path, n=1)
    (tmp_path / "masks" / "clavicles").mkdir()
    clav = np.zeros((96, 96), np.uint8)
    clav[20:24, 20:40] = 1
    Image.fromarray(clav).save(tmp_path / "masks" / "clavicles" / "case00.png")
    case = find_cases(tmp_path)[0]
    image = io.read(case.image)[0]
    t = build_target({1: "right lung", 2: "left lung", 3: "right clavicle"}, case, image, multi_label=True)
    assert t.shape == (3, 96, 96) and (t[2] == clav).all()
    assert (t[0] & t[2]).any()  # the clavicle lies over the right lung in both channels


def test_trainer_lowers_loss_and_validates_with_predictor(tmp_path):
    write_structure_set(tmp_path / "data", n=14)
    train, val = split_cases(find_cases(tmp_path / "data"), 0.2)
    card = card_from_dict(tiny_card_2d())
    cfg = TrainConfig(epochs=20, batch_size=2, lr=1e-2, threads=1, augment=False, val_every=10)
    res = Trainer(card, train, val, tmp_path / "run", cfg, progress=False).fit()
    losses = [r["loss"] for r in res.history]
    assert losses[-1] < 0.8 * losses[0]
    assert res.best_dice > 0.7 and set(res.per_class) == {"right lung", "left lung"}
    assert (tmp_path / "run" / "train" / "training_curve.png").stat().st_size > 1000
    hist = json.loads((tmp_path / "run" / "train" / "history.json").read_text())
    assert len(hist) == 20 and "dice" in hist[-1] and "dice" not in hist[0]


def test_resume_repeats_the_uninterrupted_run(tmp_path):
    write_structure_set(tmp_path / "data", n=6)
    cases = find_cases(tmp_path / "data")
    card = card_from_dict(tiny_card_2d())
    cfg = dict(batch_size=3, lr=5e-3, threads=1, val_every=10)
    full = Trainer(card, cases[:5], cases[5:], tmp_path / "a", TrainConfig(epochs=3, **cfg), progress=False).fit()
    Trainer(card, cases[:5], cases[5:], tmp_path / "b", TrainConfig(epochs=3, max_minutes=0.0, **cfg),
            progress=False).fit()  # stops after epoch 1 (time budget)
    part = torch.load(tmp_path / "b" / "train" / "last.pt", weights_only=True)
    assert part["state"]["epoch"] == 1
    resumed = Trainer(card, cases[:5], cases[5:], tmp_path / "b", TrainConfig(epochs=3, **cfg),
                      progress=False).fit(resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert np.allclose([r["loss"] for r in resumed.history], [r["loss"] for r in full.history], rtol=1e-5)
    a = torch.load(tmp_path / "a" / "train" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "train" / "last.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_cancel_keeps_last_epoch_checkpoint(tmp_path):
    from napari_cxseg.training import TrainingCancelled

    write_structure_set(tmp_path / "data", n=4)
    cases = find_cases(tmp_path / "data")
    card = card_from_dict(tiny_card_2d())
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 2  # one epoch of two steps, then stop

    tr = Trainer(card, cases[:4], [], tmp_path / "r", TrainConfig(epochs=5, batch_size=2, threads=1), progress=False)
    with pytest.raises(TrainingCancelled):
        tr.fit(cancel=cancel)
    ck = torch.load(tr.last_checkpoint, weights_only=True)
    assert ck["state"]["epoch"] == 1


def test_msd_train_export_bundle_runs_untrusted_and_with_monai(tmp_path, monkeypatch):
    from napari_cxseg import io
    from napari_cxseg.inference import Predictor
    from napari_cxseg.training.bundle_export import export_bundle

    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))
    task = write_msd_volumes(tmp_path / "Task", n=3)
    cases = find_cases(task)
    assert [c.source for c in cases] == ["TaskXX_Sphere"] * 3
    card = card_from_dict(tiny_card_3d())
    res = Trainer(card, cases[:2], cases[2:], tmp_path / "bundle",
                  TrainConfig(epochs=6, batch_size=2, lr=1e-2, threads=1, patches_per_volume=2),
                  progress=False).fit()
    bdir = export_bundle(card, res.weights, tmp_path / "bundle", metrics={"val_mean_dice": res.best_dice})
    for f in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md"):
        assert (bdir / f).is_file()
    image = io.read(cases[2].image)[0]
    by_card = Predictor(card.with_weights(source="file", file=str(bdir / "models" / "model.pt")), device="cpu")
    by_bundle = Predictor(bdir, device="cpu")  # plain-data network/pre/post: no --trust needed
    a, b = by_card.predict(image).array, by_bundle.predict(image).array
    assert a.shape == b.shape == image.spatial_shape
    assert (a == b).mean() > 0.99
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "vol.nii.gz").write_bytes(cases[2].image.read_bytes())
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bdir / "configs/inference.json"),
                        "--meta_file", str(bdir / "configs/metadata.json"), "--bundle_root", str(bdir),
                        "--dataset_dir", str(tmp_path / "in"), "--output_dir", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    seg = io.read(next(out.glob("*.nii.gz")), as_labels=True)[0]
    assert seg.array.shape == image.spatial_shape
    assert (np.asarray(seg.array) == b).mean() > 0.99


def test_cli_train_then_predict_and_evaluate(tmp_path, monkeypatch, capsys):
    from napari_cxseg.cli import main

    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))
    write_structure_set(tmp_path / "data", n=6)
    out = tmp_path / "tinybundle"
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(out), "--epochs", "2", "--patch", "64", "64",
                 "--network", "BasicUNet", "--batch", "3"]) == 0
    assert (out / "models" / "model.pt").is_file()
    assert (tmp_path / "cache" / "cards" / "tinybundle.yaml").is_file()
    img = tmp_path / "data" / "images" / "case00.png"
    assert main(["predict", "--model", "tinybundle", "--input", str(img), "--output", str(tmp_path / "p.png")]) == 0
    assert main(["predict", "--model", str(out), "--input", str(img), "--output", str(tmp_path / "q.png")]) == 0
    assert main(["evaluate", "--pred", str(tmp_path / "p.png"), "--ref", str(tmp_path / "data" / "masks" / "lungs"
                                                                            / "case00.png"),
                 "--out", str(tmp_path / "ev")]) == 0
    for ext in (".txt", ".csv", ".png"):
        assert (tmp_path / f"ev{ext}").is_file()


def test_film_fixture_is_pa():
    img, lab = film(np.random.default_rng(0))
    assert lab[:, :48].max() == 1 and lab[:, 48:].max() == 2


def test_dicom_series_with_dicom_seg_pairs(tmp_path):
    from dicom_factory import write_ct_series
    from napari_cxseg import io
    from napari_cxseg.images import LabelClass, LabelMap

    write_ct_series(tmp_path / "data" / "images" / "case0", n_slices=8)
    image = io.read(tmp_path / "data" / "images" / "case0")[0]
    lab = np.zeros(image.spatial_shape, np.uint8)
    lab[2:5, 10:20, 8:16] = 1
    (tmp_path / "data" / "labels").mkdir()
    io.write_labels(LabelMap(lab, image.geometry, {1: LabelClass("liver")}), tmp_path / "data" / "labels" / "case0.dcm")
    cases = find_cases(tmp_path / "data")
    assert len(cases) == 1 and cases[0].masks["label"].suffix == ".dcm"
    target = build_target({1: "liver"}, cases[0], image, multi_label=False)
    assert target.shape == (1, *image.spatial_shape)
    assert np.array_equal(target[0], lab)  # the SEG's frames land on their slices of the series


def test_fine_tune_card_from_a_bundle_keeps_its_network_and_preprocessing(tmp_path):
    import shutil
    from pathlib import Path

    from monai.networks.nets import UNet

    from napari_cxseg.training.card_builder import card_for_training
    from napari_cxseg.training.checkpoint import init_weights

    bdir = tmp_path / "spleen"
    shutil.copytree(Path(__file__).parent / "data" / "spleen_ct_segmentation", bdir)
    ref = UNet(3, 1, 2, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2, norm="batch")
    (bdir / "models").mkdir()
    torch.save(ref.state_dict(), bdir / "models" / "model.pt")
    card = card_for_training([], "spleen-ft", start=bdir)
    assert card.network.name == "UNet" and card.network.args["num_res_units"] == 2
    assert card.input.spacing == (1.5, 1.5, 2.0) and card.input.intensity["a_min"] == -57
    assert tuple(card.inference.roi_size) == (96, 96, 96)
    net = UNet(3, 1, 2, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2, norm="batch")
    assert init_weights(net, bdir) == []
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values(), strict=True))
    # a new head for other classes: everything else is copied, the head keeps its fresh weights
    net3 = UNet(3, 1, 3, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2, norm="batch")
    left = init_weights(net3, bdir)
    assert left and all("model.2" in k for k in left)


def test_torchrun_two_cpu_processes_follow_the_single_process_loss(tmp_path, monkeypatch):
    """DDP with 2 CPU processes (gloo) through torchrun gives the loss curve of one process."""
    import os
    import shutil

    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))
    write_structure_set(tmp_path / "data", n=12)
    # the same global batch: 4 in one process, 2 per process in two
    common = ["train", "--data", str(tmp_path / "data"), "--epochs", "6", "--patch", "64", "64",
              "--lr", "0.01", "--val-every", "6", "--no-register"]
    env = {**os.environ, "CXSEG_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "napari_cxseg.cli", *common, "--batch", "4", "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "napari_cxseg.cli", *common,
                          "--batch", "2", "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    a = [r["loss"] for r in json.loads((tmp_path / "one" / "train" / "history.json").read_text())]
    b = [r["loss"] for r in json.loads((tmp_path / "two" / "train" / "history.json").read_text())]
    assert len(a) == len(b) == 6
    assert a[-1] < 0.8 * a[0] and b[-1] < 0.8 * b[0]  # both learn
    # same shape: every epoch's loss within 35 % of the other's, and they fall together
    assert all(abs(x - y) / x < 0.35 for x, y in zip(a, b, strict=True))
    assert np.corrcoef(a, b)[0, 1] > 0.9
    assert (tmp_path / "two" / "models" / "model.pt").is_file()  # rank 0 exported the bundle


def test_fewer_cases_than_a_batch_still_train(tmp_path):
    """5 films and the default batch of 8: one step per epoch (no epoch without steps)."""
    write_structure_set(tmp_path / "data", n=5)
    cases = find_cases(tmp_path / "data")
    res = Trainer(card_from_dict(tiny_card_2d()), cases, [], tmp_path / "r",
                  TrainConfig(epochs=2, batch_size=8, threads=1), progress=False).fit()
    assert all(np.isfinite(r["loss"]) for r in res.history)
