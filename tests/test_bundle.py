"""MONAI bundles: the real spleen config runs untrusted, agrees with `monai.bundle run`; trust gate.

The bundle folder is built in tmp_path from the real spleen_ct_segmentation configs
(tests/data/spleen_ct_segmentation, Apache-2.0) and a models/model.pt made from its
network_def with seeded random weights.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_cxseg import io
from napari_cxseg.images import CxsegError
from napari_cxseg.inference import Predictor
from napari_cxseg.models.bundle import (
    BundleModel,
    bundle_findings,
    load_bundle_config,
    requires_trust,
)
from napari_cxseg.models.cards import card_from_bundle, find_card

DATA = Path(__file__).parent / "data" / "spleen_ct_segmentation"
SEED = 2  # seeded random weights whose argmax is neither all background nor all foreground here


@pytest.fixture
def bundle_dir(tmp_path) -> Path:
    from monai.bundle import ConfigParser

    bdir = tmp_path / "spleen_ct_segmentation"
    shutil.copytree(DATA, bdir)
    parser = ConfigParser()
    parser.read_config(str(bdir / "configs" / "inference.json"))
    torch.manual_seed(SEED)
    net = parser.get_parsed_content("network_def")
    (bdir / "models").mkdir()
    torch.save(net.state_dict(), bdir / "models" / "model.pt")
    return bdir


def synthetic_ct(path: Path) -> Path:
    """64 x 64 x 40 CT, 1 x 1 x 2.5 mm, stored LPS-flipped like many DICOM->NIfTI converters."""
    xi, yi, zi = np.mgrid[:64, :64, :40]
    ct = np.full((64, 64, 40), -1000, np.int16)
    ct[((xi - 32) / 28.0) ** 2 + ((yi - 32) / 22.0) ** 2 < 1] = 40
    ct[((xi - 44) / 8.0) ** 2 + ((yi - 36) / 7.0) ** 2 + ((zi - 20) / 6.0) ** 2 < 1] = 110
    aff = np.diag([-1.0, -1.0, 2.5, 1.0])
    aff[:3, 3] = [31.5, 31.5, -50.0]
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(ct, aff), str(path))
    return path


def read_ct(path: Path):
    (img,) = io.read(path, as_labels=False, modality="CT")
    return img


def test_card_derived_from_metadata(bundle_dir):
    card = card_from_bundle(bundle_dir)
    assert card.name == "spleen_ct_segmentation"
    assert card.is_bundle and card.network is None
    assert card.modality == ["CT"] and card.spatial_dims == 3
    assert card.input.channels == ["image"]
    assert {k: c.name for k, c in card.classes.items()} == {1: "spleen"}
    assert card.output.activation == "softmax"
    assert card.metrics == {"mean_dice": 0.961}
    assert find_card(str(bundle_dir)).name == "spleen_ct_segmentation"


def test_spleen_config_is_plain_once_io_is_stripped():
    """Its `$` expressions (device, network, datalist, evaluator ...) and SaveImaged are not
    what the product builds: network_def, preprocessing, inferer and postprocessing are data."""
    bc = load_bundle_config(DATA)
    assert bc.content["preprocessing"]["transforms"][0] == {"_target_": "monai.transforms.Identity",
                                                            "_disabled_": True}
    assert bc.content["postprocessing"]["transforms"][3]["_disabled_"] is True
    assert bc.content["_meta_"]["version"]
    assert bundle_findings(DATA) == []


def test_code_in_what_is_built_is_refused(bundle_dir, tmp_path):
    import json

    cfg_path = bundle_dir / "configs" / "inference.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["inferer"]["overlap"] = "$0.5"
    cfg_path.write_text(json.dumps(cfg))
    card = find_card(bundle_dir)
    with pytest.raises(CxsegError) as e:
        Predictor(card, device="cpu")
    msg = str(e.value)
    assert f"bundle {bundle_dir} holds code that would run: inferer#overlap: $0.5 (a Python expression)" in msg
    assert "run it only if you trust its source: --trust in the CLI, or confirm in the Segment widget" in msg
    with pytest.raises(CxsegError, match="inferer#overlap"):
        BundleModel(bundle_dir, trust=False)
    assert requires_trust(card)
    assert not requires_trust(find_card("msd-task09-spleen"))  # bundle weights, engine pipeline
    assert requires_trust(find_card("msd-task07-pancreas"))  # not downloaded: config unknown


def test_spleen_bundle_runs_untrusted_with_the_trusted_labels(bundle_dir, tmp_path):
    card = find_card(bundle_dir)
    assert not requires_trust(card)
    img = read_ct(synthetic_ct(tmp_path / "ct.nii.gz"))
    untrusted = Predictor(card, device="cpu").predict(img)
    trusted = Predictor(card, device="cpu", trust=True).predict(img)
    np.testing.assert_array_equal(untrusted.array, trusted.array)
    assert 0 < (untrusted.array == 1).sum() < untrusted.array.size


def test_trusted_bundle_runs_on_input_grid(bundle_dir, tmp_path):
    img = read_ct(synthetic_ct(tmp_path / "ct.nii.gz"))
    pred = Predictor(bundle_dir, device="cpu", trust=True)
    steps = []
    lab = pred.predict(img, progress=lambda d, t: steps.append((d, t)))
    assert steps[-1][0] == steps[-1][1] >= 1
    assert lab.array.shape == img.array.shape
    assert np.array_equal(lab.geometry.affine, img.geometry.affine)
    assert np.array_equal(lab.geometry.source_affine, img.geometry.source_affine)
    assert set(np.unique(lab.array)) <= {0, 1}
    assert lab.classes[1].name == "spleen"
    out = tmp_path / "out" / "ct_spleen.nii.gz"
    out.parent.mkdir()
    io.write_labels(lab, out)
    written = nib.load(str(out))
    assert np.allclose(written.affine, nib.load(str(tmp_path / "ct.nii.gz")).affine)
    assert written.shape == (64, 64, 40)


def test_bundle_zip(bundle_dir, tmp_path):
    zpath = tmp_path / "spleen_ct_segmentation.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in bundle_dir.rglob("*"):
            if f.is_file():
                z.write(f, Path("spleen_ct_segmentation") / f.relative_to(bundle_dir))
    card = find_card(zpath)
    assert card.name == "spleen_ct_segmentation" and card.bundle_dir.is_dir()
    assert (card.bundle_dir / "models" / "model.pt").is_file()


@pytest.mark.slow
def test_agrees_with_monai_bundle_run(bundle_dir, tmp_path):
    """Same weights, same input: our engine vs `python -m monai.bundle run` (Dice >= 0.98)."""
    ds = tmp_path / "ds"
    ct_path = synthetic_ct(ds / "imagesTs" / "case01.nii.gz")
    out_dir = tmp_path / "bundle_out"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(bundle_dir / "configs" / "inference.json"),
        "--meta_file", str(bundle_dir / "configs" / "metadata.json"),
        "--bundle_root", str(bundle_dir),
        "--dataset_dir", str(ds),
        "--output_dir", str(out_dir),
        "--device", "$torch.device('cpu')",
        "--dataloader#num_workers", "0",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    ref_file = out_dir / "case01" / "case01_trans.nii.gz"
    assert ref_file.is_file(), f"bundle wrote {list(out_dir.rglob('*'))}"
    ref = np.asarray(nib.load(str(ref_file)).dataobj).squeeze().round().astype(np.uint8)

    img = read_ct(ct_path)
    lab = Predictor(bundle_dir, device="cpu", trust=True).predict(img)
    ours = img.geometry.to_disk(lab.array)
    assert ours.shape == ref.shape == (64, 64, 40)
    frac = ref.mean()
    assert 0.02 < frac < 0.98, f"degenerate reference (foreground fraction {frac:.3f})"
    inter = np.logical_and(ours == 1, ref == 1).sum()
    d = 2 * inter / ((ours == 1).sum() + (ref == 1).sum())
    print(f"foreground {frac:.3f}, Dice vs monai.bundle run {d:.5f}, identical voxels {(ours == ref).mean():.5f}")
    assert d >= 0.98, f"Dice vs monai.bundle run {d:.4f}"


def test_targets_reaching_code_through_reexported_modules_need_trust(tmp_path):
    """A `_target_` is resolved step by step: a path through MONAI/torch to os.system is code."""
    from napari_cxseg.models.trust import check, target_problem

    marker = tmp_path / "ran"
    evil = {"network_def": {"_target_": "monai.networks.utils.torch.os.system", "command": f"touch {marker}"}}
    assert check(evil, ["network_def"]), "must be reported as code"
    for name in ("torch.hub.load", "torch.load", "numpy.load", "monai.bundle.ConfigParser", "os.system",
                 "monai.transforms.LoadImaged"):
        assert target_problem(name)[0] is None, name
    for name in ("monai.networks.nets.UNet", "monai.transforms.Spacingd", "torch.nn.Conv2d", "UNet"):
        assert target_problem(name)[0] is not None, name
    assert not marker.exists()
