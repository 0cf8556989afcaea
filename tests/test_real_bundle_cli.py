"""The real spleen_ct_segmentation configs through `napari-cxseg predict` on a real CT.

What the product evaluates of these configs (network_def, preprocessing, inferer,
postprocessing, file IO stripped) is plain data, so the bundle runs without --trust, with the
same labels as with it. The labels must land on the input's exact grid and geometry and agree
with `python -m monai.bundle run` on the same weights (Dice >= 0.98). The CT is a crop around the spleen
of the public LIDC-IDRI-0001 volume (see napari_cxseg.public_data), kept small for CPU time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data" / "spleen_ct_segmentation"


def _bundle(tmp_path: Path, seed: int) -> Path:
    from monai.bundle import ConfigParser

    bdir = tmp_path / "spleen_ct_segmentation"
    shutil.copytree(DATA, bdir)
    parser = ConfigParser()
    parser.read_config(str(bdir / "configs" / "inference.json"))
    torch.manual_seed(seed)
    net = parser.get_parsed_content("network_def")
    (bdir / "models").mkdir()
    torch.save(net.state_dict(), bdir / "models" / "model.pt")
    return bdir


def _spleen_crop(public_data, folder: Path) -> Path:
    ct = nib.load(str(public_data.ct_nifti()))
    mask = np.asarray(nib.load(str(public_data.ct_mask_nifti())).dataobj)
    idx = np.argwhere(mask == 1)
    centre = idx.mean(axis=0).astype(int)
    half = np.array([64, 64, 16])
    lo = np.clip(centre - half, 0, np.array(ct.shape) - 2 * half)
    hi = lo + 2 * half
    data = np.asarray(ct.dataobj)[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    affine = ct.affine.copy()
    affine[:3, 3] = ct.affine[:3, :3] @ lo + ct.affine[:3, 3]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spleen_crop.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.int16), affine), str(path))
    return path


def test_spleen_bundle_cli_agrees_with_monai_bundle_run(public_data, tmp_path):
    bundle = _bundle(tmp_path, seed=2)
    ct_path = _spleen_crop(public_data, tmp_path / "ds" / "imagesTs")
    out = tmp_path / "ours.nii.gz"
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore")
    cli = Path(sys.executable).with_name("napari-cxseg")
    res = subprocess.run(
        [str(cli), "predict", "--model", str(bundle), "--trust", "--device", "cpu",
         "--input", str(ct_path), "--output", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    # without --trust: the same labels (nothing the product evaluates is code)
    untrusted = tmp_path / "untrusted.nii.gz"
    res = subprocess.run(
        [str(cli), "predict", "--model", str(bundle), "--device", "cpu",
         "--input", str(ct_path), "--output", str(untrusted)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    np.testing.assert_array_equal(np.asarray(nib.load(str(untrusted)).dataobj), np.asarray(nib.load(str(out)).dataobj))
    # code in what it evaluates is refused without --trust, and nothing is written
    cfg_path = bundle / "configs" / "inference.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["inferer"]["overlap"] = "$0.5"
    evil = tmp_path / "evil"
    shutil.copytree(bundle, evil)
    (evil / "configs" / "inference.json").write_text(json.dumps(cfg))
    refused = subprocess.run(
        [str(cli), "predict", "--model", str(evil), "--device", "cpu",
         "--input", str(ct_path), "--output", str(tmp_path / "refused.nii.gz")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert refused.returncode != 0
    assert "inferer#overlap: $0.5 (a Python expression)" in refused.stderr
    assert "--trust in the CLI, or confirm in the Segment widget" in refused.stderr
    assert not (tmp_path / "refused.nii.gz").exists()

    ref_dir = tmp_path / "bundle_out"
    res = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run",
         "--config_file", str(bundle / "configs" / "inference.json"),
         "--meta_file", str(bundle / "configs" / "metadata.json"),
         "--bundle_root", str(bundle), "--dataset_dir", str(tmp_path / "ds"),
         "--output_dir", str(ref_dir), "--device", "$torch.device('cpu')",
         "--dataloader#num_workers", "0"],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    ref_img = nib.load(str(ref_dir / "spleen_crop" / "spleen_crop_trans.nii.gz"))
    ours_img = nib.load(str(out))
    src = nib.load(str(ct_path))
    # exact input grid and geometry
    assert ours_img.shape == src.shape
    np.testing.assert_array_equal(ours_img.affine, src.affine)
    ours = np.asarray(ours_img.dataobj)
    ref = np.asarray(ref_img.dataobj).squeeze().round().astype(np.uint8)
    frac = (ref == 1).mean()
    assert 0.02 < frac < 0.98, f"degenerate reference (foreground fraction {frac:.3f})"
    inter = np.logical_and(ours == 1, ref == 1).sum()
    dice = 2 * inter / ((ours == 1).sum() + (ref == 1).sum())
    print(f"foreground {frac:.3f}; Dice ours vs monai.bundle run {dice:.5f}")
    assert dice >= 0.98
