"""`napari-cxseg` CLI end to end with user cards and tiny weights made here."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from PIL import Image as PILImage

from napari_cxseg import io
from napari_cxseg.cli import main

torch.set_num_threads(1)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    c = tmp_path / "cache"
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(c))
    (c / "cards").mkdir(parents=True)
    (c / "weights").mkdir()
    return c


def _user_card(cache: Path, name: str, dims: int) -> None:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    args = {"spatial_dims": dims, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2]}
    torch.save(UNet(**args).state_dict(), cache / "weights" / f"{name}.pt")
    card = {
        "name": name,
        "task": f"tiny {dims}D test model",
        "spatial_dims": dims,
        "network": {"name": "UNet", "args": args},
        "output": {"activation": "softmax"},
        "classes": {1: {"name": "a", "colour": "#ff0000"}, 2: {"name": "b", "colour": "#00ff00"}},
        "weights": {"source": "file", "file": f"{name}.pt"},
        "intended_use": "tests",
    }
    if dims == 2:
        card.update(modality=["CR", "DX", "XR"], input={"channels": ["radiograph"], "size": [32, 32],
                                                         "intensity": {"type": "minmax"}},
                    inference={"roi_size": [32, 32], "overlap": 0.0, "sw_batch_size": 1})
    else:
        card.update(modality=["CT"], input={"channels": ["CT"], "orientation": "RAS", "spacing": [2.0, 2.0, 2.0],
                                            "intensity": {"type": "window", "a_min": -200, "a_max": 200}},
                    inference={"roi_size": [16, 16, 16], "overlap": 0.25, "sw_batch_size": 2})
    (cache / "cards" / f"{name}.yaml").write_text(yaml.safe_dump(card))


@pytest.fixture
def models(cache) -> Path:
    _user_card(cache, "tiny-cxr", 2)
    _user_card(cache, "tiny-ct", 3)
    return cache


def _png(path: Path, seed: int = 0, shape=(60, 50)) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    a = 120 + 100 * np.sin(yy / 7.0) * np.cos(xx / 5.0) + rng.normal(0, 10, shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path)
    return path


def _nifti(path: Path) -> Path:
    zi, yi, xi = np.mgrid[:10, :24, :20]
    ct = (-800 + 900 * (((xi - 10) / 7.0) ** 2 + ((yi - 12) / 8.0) ** 2 < 1) + zi * 3).astype(np.float32)
    aff = np.diag([-1.2, -1.0, 3.0, 1.0])
    aff[:3, 3] = [12, 11, -10]
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(ct.transpose(2, 1, 0), aff), str(path))
    return path


def test_predict_single_png(models, tmp_path, capsys):
    src = _png(tmp_path / "in" / "cxr1.png")
    out = tmp_path / "out" / "cxr1_labels.png"
    assert main(["predict", "--model", "tiny-cxr", "--input", str(src), "--output", str(out), "--device", "cpu"]) == 0
    assert out.is_file()
    assert "wrote" in capsys.readouterr().out
    (lab,) = io.read(out, as_labels=True)
    assert lab.array.shape == (60, 50)
    assert set(np.unique(lab.array)) <= {0, 1, 2}
    # existing output without --overwrite: refused with one line, file kept
    before = out.read_bytes()
    rc = main(["predict", "--model", "tiny-cxr", "--input", str(src), "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.count("\n") == 0 and "exists" in err and "--overwrite" in err
    assert out.read_bytes() == before
    assert main(["predict", "-m", "tiny-cxr", "-i", str(src), "-o", str(out), "--overwrite"]) == 0


def test_predict_single_nifti_keeps_input_affine(models, tmp_path):
    src = _nifti(tmp_path / "ct.nii.gz")
    out = tmp_path / "out" / "ct_seg.nii.gz"
    assert main(["predict", "--model", "tiny-ct", "--input", str(src), "--output", str(out)]) == 0
    ref, got = nib.load(str(src)), nib.load(str(out))
    assert got.shape == ref.shape
    assert np.allclose(got.affine, ref.affine)
    assert np.issubdtype(got.get_data_dtype(), np.integer)


def test_predict_into_folder_names_by_stem(models, tmp_path):
    src = _nifti(tmp_path / "case7.nii.gz")
    out = tmp_path / "results"
    assert main(["predict", "--model", "tiny-ct", "--input", str(src), "--output", str(out)]) == 0
    assert (out / "case7.nii.gz").is_file()


def test_batch_folder_with_resume(models, tmp_path, capsys):
    folder = tmp_path / "pngs"
    for i in range(3):
        _png(folder / f"img{i}.png", seed=i)
    out = tmp_path / "out"
    assert main(["predict", "--model", "tiny-cxr", "--input", str(folder), "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "done 3, skipped 0" in text and "failed 0" in text
    assert sorted(p.name for p in out.glob("*.png")) == ["img0.png", "img1.png", "img2.png"]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert main(["predict", "--model", "tiny-cxr", "--input", str(folder), "--output", str(out)]) == 0
    assert "done 0, skipped 3" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps


def test_batch_csv_with_resume_and_failures(models, tmp_path, capsys):
    d = tmp_path / "data"
    _png(d / "a.png")
    _nifti(d / "b.nii.gz")  # a volume given to a 2D model: fails with a reason
    (d / "broken.png").write_bytes(b"not a png at all")
    _png(d / "sub" / "c.png", seed=3)
    csv_path = d / "list.csv"
    csv_path.write_text("patient,image\np1,a.png\np2,b.nii.gz\np3,broken.png\np4,sub/c.png\n")
    out = tmp_path / "out"
    rc = main(["predict", "--model", "tiny-cxr", "--input", str(csv_path), "--output", str(out)])
    cap = capsys.readouterr()
    assert rc == 1
    assert "done 2, skipped 0 (output exists), failed 2" in cap.out
    assert "b.nii.gz: model tiny-cxr is a 2D model" in cap.out
    assert "broken.png" in cap.out
    assert cap.err.strip().splitlines()[-1].startswith("napari-cxseg: error: 2 of 4 inputs failed")
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "c.png"]
    rc = main(["predict", "--model", "tiny-cxr", "--input", str(csv_path), "--output", str(out)])
    assert "done 0, skipped 2 (output exists), failed 2" in capsys.readouterr().out
    # a CSV without header: the first column holds the paths
    plain = d / "plain.csv"
    plain.write_text("a.png\nsub/c.png\n")
    assert main(["predict", "--model", "tiny-cxr", "--input", str(plain), "--output", str(out)]) == 0
    assert "done 0, skipped 2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--model", "no-such-model"], "no model card named 'no-such-model'"),
        (["--input", "/nonexistent/x.png"], "input /nonexistent/x.png does not exist"),
        (["--device", "cuda"], "CUDA is not available"),
    ],
)
def test_failures_exit_nonzero_with_one_line(models, tmp_path, capsys, argv, needle):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("machine has CUDA")
    src = _png(tmp_path / "x.png")
    base = {"--model": "tiny-cxr", "--input": str(src), "--output": str(tmp_path / "o.png")}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    rc = main(["predict", *[x for kv in base.items() for x in kv]])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert len(err.splitlines()) == 1 and err.startswith("napari-cxseg: error: ")
    assert needle in err
    assert not (tmp_path / "o.png").exists()


def test_models_lists_cards_and_missing_weights(models, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "msd-task09-spleen  [CT, 3D]" in out
    assert "cxr-anatomy  [CR/DX/XR, 2D]" in out
    assert "tiny-cxr  [CR/DX/XR, 2D]" in out
    weights = str(models / "weights" / "msd_task02_heart.pt")
    assert f"MISSING missing: put the weights file at {weights}" in out
    assert f"ready   {models / 'weights' / 'tiny-ct.pt'}" in out
    (models / "cards" / "broken.yaml").write_text("name: broken\n")
    assert main(["models"]) == 0
    assert "INVALID" in capsys.readouterr().out


def test_demo_calls_run_demo(monkeypatch, tmp_path):
    seen = []
    fake = types.ModuleType("napari_cxseg.demo")
    fake.run_demo = lambda output: seen.append(output) or 0
    monkeypatch.setitem(sys.modules, "napari_cxseg.demo", fake)
    assert main(["demo", "--output", str(tmp_path / "demo")]) == 0
    assert seen == [tmp_path / "demo"]


def test_entry_point_runs(models):
    exe = Path(sys.executable).parent / "napari-cxseg"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "napari_cxseg.cli"]
    res = subprocess.run([*cmd, "models"], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert res.returncode == 0, res.stderr
    assert "tiny-ct" in res.stdout
    res = subprocess.run([*cmd, "predict"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--model" in res.stderr


def test_batch_msd_task_folder(models, tmp_path, capsys):
    task = tmp_path / "Task99_Toy"
    for name in ("toy_001", "toy_002"):
        _nifti(task / "imagesTs" / f"{name}.nii.gz")
    (task / "dataset.json").write_text(
        '{"name": "Toy", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "thing"}, '
        '"numTraining": 0, "numTest": 2, "training": [], '
        '"test": ["./imagesTs/toy_001.nii.gz", "./imagesTs/toy_002.nii.gz"]}'
    )
    out = tmp_path / "pred"
    assert main(["predict", "--model", "tiny-ct", "--input", str(task), "--output", str(out)]) == 0
    assert "done 2, skipped 0" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["toy_001.nii.gz", "toy_002.nii.gz"]
    ref = nib.load(str(task / "imagesTs" / "toy_001.nii.gz"))
    assert np.allclose(nib.load(str(out / "toy_001.nii.gz")).affine, ref.affine)
