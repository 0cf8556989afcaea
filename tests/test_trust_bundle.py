"""The bundle trust gate decides on what MONAI evaluates; TorchScript needs trust.

Each bypass attempt is a bundle folder written here (a tiny 3D UNet, its seeded random weights
in ``models/model.pt``) whose payload would create a marker file in tmp_path. Each must be
refused by BundleModel, by the Predictor through the card and by ``napari-cxseg predict``
without ``--trust``, with a message that says where, why and how to trust, and the marker must
not exist afterwards. Plain bundles run untrusted; trusted bundles still run their code.
"""

from __future__ import annotations

import io as _io
import json
import os
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from napari_cxseg import cli, io  # noqa: E402
from napari_cxseg.images import CxsegError  # noqa: E402
from napari_cxseg.inference import Predictor  # noqa: E402
from napari_cxseg.models.bundle import BundleModel  # noqa: E402
from napari_cxseg.models.cards import find_card  # noqa: E402
from napari_cxseg.models.trust import (  # noqa: E402
    HOW_TO_TRUST,
    requires_trust,
    target_problem,
    trust_findings,
)

HOW = "--trust in the CLI, or confirm in the Segment widget"
TINY_ARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2],
             "num_res_units": 0}
TINY = {"_target_": "UNet", **TINY_ARGS}
META = {
    "version": "0.1.0",
    "task": "ball segmentation (test)",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": [16, 16, 16],
                             "modality": "CT"}},
        "outputs": {"pred": {"type": "image", "num_channels": 2,
                             "channel_def": {"0": "background", "1": "ball"}}},
    },
}


def pay(marker: Path) -> str:
    """A `$` expression that creates the marker (evaluates to None)."""
    return f"$__import__('pathlib').Path({str(marker)!r}).touch()"


def base_config() -> dict:
    """Like a real zoo config: code outside what the product evaluates, IO transforms in lists."""
    return {
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "image_key": "image",
        "network_def": dict(TINY),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "@image_key"},
            {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
            {"_target_": "ScaleIntensityRanged", "keys": "@image_key", "a_min": -100, "a_max": 200,
             "b_min": 0.0, "b_max": 1.0, "clip": True},
            {"_target_": "EnsureTyped", "keys": "@image_key"},
        ]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 2},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "monai.transforms.SaveImaged", "keys": "pred", "output_dir": "$@bundle_root + '/eval'"},
        ]},
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "network": "@network"},
        "run": ["$@evaluator.run()"],
    }


def write_bundle(root: Path, config: dict | str, meta: dict | None = None, files: dict | None = None,
                 name: str = "inference.json") -> Path:
    """A bundle folder: configs/<name> (a dict as JSON, a str as written), metadata, weights."""
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    text = config if isinstance(config, str) else json.dumps(config, indent=1)
    (root / "configs" / name).write_text(text)
    (root / "configs" / "metadata.json").write_text(json.dumps({**META, **(meta or {})}))
    for rel, content in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content if isinstance(content, str) else json.dumps(content))
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    torch.save(UNet(**TINY_ARGS).state_dict(), root / "models" / "model.pt")
    return root


def evil_module(folder: Path, marker: Path, stem: str) -> str:
    """A module on sys.path that creates the marker when imported; returns its (unique) name."""
    name = f"cxseg_evil_{stem}_{abs(hash(str(folder))) % 10**8}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nclass Reader:\n    pass\n")
    return name


@pytest.fixture
def ct_path(tmp_path) -> Path:
    zi, yi, xi = np.mgrid[:20, :24, :24]
    ct = np.full((24, 24, 20), -100, np.int16)
    ct[((xi - 12) ** 2 + (yi - 12) ** 2 + (zi - 10) ** 2).transpose(2, 1, 0) < 30] = 150
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(ct, np.diag([1.5, 1.5, 2.0, 1.0])), str(path))
    return path


def read_ct(path: Path):
    (img,) = io.read(path, as_labels=False, modality="CT")
    return img


# ---------------------------------------------------------------------- bypass attempts
# Each returns (bundle folder, the id the refusal must name, why it must give).


def meta_reference(tmp, m):
    cfg = base_config()
    cfg["network_def"]["channels"] = "@_meta_#evil"
    return write_bundle(tmp / "b", cfg, meta={"evil": pay(m) + " or [4, 8]"}), "_meta_#evil", "a Python expression"


def relative_reference_into_meta(tmp, m):
    cfg = base_config()
    cfg["network_def"]["channels"] = "@##_meta_#evil"
    return write_bundle(tmp / "b", cfg, meta={"evil": pay(m) + " or [4, 8]"}), "_meta_#evil", "a Python expression"


def macro_inside_bundle(tmp, m):
    cfg = base_config()
    cfg["network_def"] = f"%{tmp / 'b'}/configs/parts.json#net"
    parts = {"net": {**TINY, "channels": pay(m) + " or [4, 8]"}}
    return (write_bundle(tmp / "b", cfg, files={"configs/parts.json": parts}), "network_def#channels",
            "a Python expression")


def macro_outside_bundle(tmp, m):
    outside = tmp / "elsewhere" / "net.json"
    outside.parent.mkdir()
    outside.write_text(json.dumps({"net": {**TINY, "channels": pay(m) + " or [4, 8]"}}))
    cfg = base_config()
    cfg["network_def"] = f"%{outside}#net"
    return write_bundle(tmp / "b", cfg), "network_def", "outside the bundle folder"


def reference_to_code(tmp, m):
    cfg = base_config()
    cfg["inferer"] = "@make_inferer"
    cfg["make_inferer"] = pay(m) + " or monai.inferers.SimpleInferer()"
    return write_bundle(tmp / "b", cfg), "make_inferer", "a Python expression"


def requires_code(tmp, m):
    cfg = base_config()
    cfg["network_def"]["_requires_"] = "@side"
    cfg["side"] = {"_target_": "monai.networks.utils.torch.os.system", "command": f"touch {m}"}
    return write_bundle(tmp / "b", cfg), "network_def#_requires_", "makes MONAI evaluate other ids first"


def mode_debug(tmp, m):
    # pdb would read its commands from stdin: this one creates the marker
    cfg = base_config()
    cfg["network_def"]["_mode_"] = "debug"
    return write_bundle(tmp / "b", cfg), "network_def#_mode_", "debug runs pdb"


def mode_callable(tmp, m):
    cfg = base_config()
    cfg["postprocessing"]["transforms"][0] = {"_target_": "Activationsd", "_mode_": "callable",
                                              "keys": "pred", "softmax": True}
    return write_bundle(tmp / "b", cfg), "postprocessing#transforms#0#_mode_", "callable hands back"


def disabled_reference(tmp, m):
    cfg = base_config()
    cfg["network_def"]["_disabled_"] = "@_meta_#flag"
    return (write_bundle(tmp / "b", cfg, meta={"flag": pay(m) + " or False"}), "network_def#_disabled_",
            "not a literal true/false")


def target_is_reference(tmp, m):
    cfg = base_config()
    cfg["network_def"]["_target_"] = "@_meta_#factory"
    factory = f"$lambda **kw: {pay(m)[1:]} or monai.networks.nets.UNet(**kw)"
    return (write_bundle(tmp / "b", cfg, meta={"factory": factory}), "network_def#_target_",
            "a reference or expression as _target_")


def dotted_path_to_os_system(tmp, m):
    cfg = base_config()
    cfg["postprocessing"]["transforms"].insert(
        2, {"_target_": "monai.networks.utils.torch.os.system", "command": f"touch {m}"})
    return write_bundle(tmp / "b", cfg), "postprocessing#transforms#2#_target_", "a function"


def short_name_into_monai_bundle(tmp, m):
    evil = tmp / "evil_bundle"
    (evil / "configs").mkdir(parents=True)
    (evil / "configs" / "inference.json").write_text(json.dumps({"run": [pay(m)]}))
    (evil / "configs" / "metadata.json").write_text(json.dumps({"version": "0.1"}))
    cfg = base_config()
    cfg["postprocessing"]["transforms"].insert(2, {
        "_target_": "run", "config_file": str(evil / "configs" / "inference.json"),
        "meta_file": str(evil / "configs" / "metadata.json"), "run_id": "run"})
    return write_bundle(tmp / "b", cfg), "postprocessing#transforms#2#_target_", "runs bundles"


def builtin_open(tmp, m):
    cfg = base_config()
    cfg["postprocessing"]["transforms"].insert(2, {"_target_": "open", "file": str(m), "mode": "w"})
    return write_bundle(tmp / "b", cfg), "postprocessing#transforms#2#_target_", "a Python built-in"


def load_image_reader_by_name(tmp, m):
    # not in a transform list, so not stripped: its reader string would be imported
    mod = evil_module(tmp / "mods", m, "reader")
    sys.path.insert(0, str(tmp / "mods"))
    cfg = base_config()
    cfg["preprocessing"]["transforms"].append(
        {"_target_": "Invertd", "keys": "image", "orig_keys": "image",
         "transform": {"_target_": "LoadImaged", "keys": "image", "reader": f"{mod}.Reader"}})
    return (write_bundle(tmp / "b", cfg), "preprocessing#transforms#4#transform#_target_",
            "imports its reader or writer by name")


def lambda_adaptor(tmp, m):
    cfg = base_config()
    cfg["preprocessing"]["transforms"].append({"_target_": "Lambdad", "keys": "image", "func": "@_meta_#fn"})
    fn = f"$lambda x: {pay(m)[1:]} or x"
    return (write_bundle(tmp / "b", cfg, meta={"fn": fn}), "preprocessing#transforms#4#_target_",
            "calls a function given in the config")


def torch_hub(tmp, m):
    repo = tmp / "hubrepo"
    repo.mkdir()
    (repo / "hubconf.py").write_text(f"import pathlib\npathlib.Path({str(m)!r}).touch()\ndef net():\n    pass\n")
    cfg = base_config()
    cfg["network_def"] = {"_target_": "torch.hub.load", "repo_or_dir": str(repo), "model": "net",
                          "source": "local", "trust_repo": True}
    return write_bundle(tmp / "b", cfg), "network_def#_target_", "downloads and runs code"


def network_pretrained_url(tmp, m):
    # HoVerNet copies its pretrained_url into torch hub's folder: the marker is that copy
    src = tmp / "src.pth"
    src.write_bytes(b"0")
    cfg = base_config()
    cfg["network_def"] = {"_target_": "HoVerNet", "pretrained_url": src.as_uri(), "in_channels": 1}
    return write_bundle(tmp / "b", cfg), "network_def#pretrained_url", "downloads or loads weights"


def yaml_nested_key(tmp, m):
    # a YAML config whose `network_def#channels` key (MONAI sets it nested) points at metadata
    cfg = base_config()
    import yaml

    text = yaml.safe_dump(cfg) + "network_def#channels: '@_meta_#evil'\n"
    return (write_bundle(tmp / "b", text, meta={"evil": pay(m) + " or [4, 8]"}, name="inference.yaml"),
            "_meta_#evil", "a Python expression")


def bundle_zip(tmp, m):
    cfg = base_config()
    cfg["network_def"]["channels"] = "@_meta_#evil"
    bdir = write_bundle(tmp / "z" / "zipped", cfg, meta={"evil": pay(m) + " or [4, 8]"})
    zpath = tmp / "zipped.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in bdir.rglob("*"):
            if f.is_file():
                z.write(f, Path("zipped") / f.relative_to(bdir))
    return zpath, "_meta_#evil", "a Python expression"


ATTEMPTS = [meta_reference, relative_reference_into_meta, macro_inside_bundle, macro_outside_bundle,
            reference_to_code, requires_code, mode_debug, mode_callable, disabled_reference,
            target_is_reference, dotted_path_to_os_system, short_name_into_monai_bundle, builtin_open,
            load_image_reader_by_name, lambda_adaptor, torch_hub, network_pretrained_url, yaml_nested_key,
            bundle_zip]


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[a.__name__ for a in ATTEMPTS])
def test_bypass_attempt_is_refused_and_runs_nothing(attempt, tmp_path, ct_path, monkeypatch, capsys):
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    # pdb (``_mode_: debug``) would read these commands
    monkeypatch.setattr(sys, "stdin", _io.StringIO(f"!{pay(tmp_path / 'ran')[1:]}\nc\n"))
    marker = tmp_path / "ran"
    bundle, where, why = attempt(tmp_path, marker)
    card = find_card(bundle)
    bdir = card.bundle_dir
    markers = [marker, tmp_path / "torchhome" / "hub" / "preact-resnet50.pth"]

    with pytest.raises(CxsegError) as e:
        BundleModel(bdir, device="cpu")
    msg = str(e.value)
    assert f"bundle {bdir} holds code" in msg
    assert f"{where}:" in msg and why in msg, msg
    assert HOW in msg and HOW_TO_TRUST in msg

    with pytest.raises(CxsegError, match=f"{where}:.*{HOW}"):
        Predictor(card, device="cpu")
    assert requires_trust(card) and where in [f.where for f in trust_findings(card)]

    out = tmp_path / "out.nii.gz"
    rc = cli.main(["predict", "--model", str(bundle), "--input", str(ct_path), "--output", str(out),
                   "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and f"{where}:" in err and HOW in err, err
    assert not out.exists()
    for m in markers:
        assert not m.exists(), f"{m} was created: code ran"


# ---------------------------------------------------------------------- what may and may not run


def test_plain_bundle_runs_untrusted_and_nothing_outside_what_it_builds_is_evaluated(tmp_path, ct_path,
                                                                                     monkeypatch):
    """`$import` items are evaluated by MONAI before anything else: they never reach it untrusted."""
    marker = tmp_path / "imported"
    monkeypatch.setattr(sys, "path", [str(tmp_path / "mods"), *sys.path])
    mod = evil_module(tmp_path / "mods", marker, "import")
    cfg = base_config()
    cfg["imports"] = [f"$import {mod}"]
    cfg["elsewhere"] = f"%{tmp_path}/missing.json#x"  # a macro the product never evaluates
    cfg["preprocessing"]["transforms"][0]["reader"] = f"{mod}.Reader"  # stripped with its LoadImaged
    bdir = write_bundle(tmp_path / "b", cfg)
    card = find_card(bdir)
    assert not requires_trust(card)
    img = read_ct(ct_path)
    lab = Predictor(card, device="cpu").predict(img)
    assert lab.array.shape == img.array.shape and set(np.unique(lab.array)) <= {0, 1}
    assert lab.classes[1].name == "ball"
    assert not marker.exists()
    # trusted, MONAI evaluates the import statement (it is kept) and the result is the same
    trusted = Predictor(card, device="cpu", trust=True).predict(img)
    assert marker.exists()
    np.testing.assert_array_equal(trusted.array, lab.array)


def test_trusted_code_still_runs(tmp_path, ct_path):
    marker = tmp_path / "ran"
    cfg = base_config()
    cfg["network_def"]["channels"] = "@_meta_#channels"
    cfg["inferer"] = pay(marker) + " or monai.inferers.SlidingWindowInferer(roi_size=[16, 16, 16])"
    bdir = write_bundle(tmp_path / "b", cfg, meta={"channels": "$[4, 8]"})
    with pytest.raises(CxsegError, match="inferer: \\$__import__"):
        Predictor(bdir, device="cpu")
    assert not marker.exists()
    img = read_ct(ct_path)
    lab = Predictor(bdir, device="cpu", trust=True).predict(img)
    assert marker.exists() and lab.array.shape == img.array.shape


def test_macro_to_a_fifo_or_a_missing_file_is_refused_even_trusted(tmp_path):
    cfg = base_config()
    cfg["network_def"] = f"%{tmp_path / 'b'}/configs/fifo.json#net"
    cfg["inferer"] = "%configs/missing.json#inferer"
    bdir = write_bundle(tmp_path / "b", cfg)
    os.mkfifo(bdir / "configs" / "fifo.json")  # reading it would block
    for trust in (False, True):
        with pytest.raises(CxsegError, match="network_def: macro .*fifo.json is not a regular file"):
            BundleModel(bdir, trust=trust)
    cfg["network_def"] = dict(TINY)
    (bdir / "configs" / "inference.json").write_text(json.dumps(cfg))
    with pytest.raises(CxsegError, match="inferer: macro %configs/missing.json#inferer: .*missing.json does not exist"):
        BundleModel(bdir, trust=True)


def test_macro_inside_the_bundle_is_expanded(tmp_path, ct_path):
    cfg = base_config()
    cfg["network_def"] = "%configs/parts.json#net"  # relative to the bundle folder
    cfg["inferer"] = "%configs/parts.json#inferer"
    parts = {"net": dict(TINY), "inferer": {"_target_": "SimpleInferer"}}
    bdir = write_bundle(tmp_path / "b", cfg, files={"configs/parts.json": parts})
    model = BundleModel(bdir).load()
    assert type(model.network).__name__ == "UNet" and type(model.inferer).__name__ == "SimpleInferer"


def test_target_resolution():
    assert target_problem("UNet")[0].__name__ == "UNet"
    assert target_problem("monai.networks.nets.UNet")[0].__name__ == "UNet"
    assert target_problem("torch.nn.Conv3d")[0].__name__ == "Conv3d"
    assert target_problem("ConfigWorkflow")[1:] == ("ConfigWorkflow = monai.bundle.workflows.ConfigWorkflow",
                                                    "runs a workflow")
    assert target_problem("LoadImaged")[2].startswith("reads or writes files")
    assert target_problem("torch.jit.load")[2] == "loads TorchScript programs"
    assert target_problem("eval")[2] == "a Python built-in"
    assert target_problem("@net")[2].startswith("a reference or expression")
    assert target_problem({"_target_": "UNet"})[0] is None
    assert "antigravity" not in sys.modules
    assert target_problem("antigravity.fly")[2] == "would import module 'antigravity' by name"
    assert "antigravity" not in sys.modules  # resolving never imports outside MONAI/torch


def test_refusal_message_says_where_why_and_how(tmp_path):
    cfg = base_config()
    cfg["postprocessing"]["transforms"].insert(2, {"_target_": "ConfigWorkflow", "config_file": "x.json",
                                                   "workflow_type": "infer"})
    bdir = write_bundle(tmp_path / "b", cfg)
    with pytest.raises(CxsegError) as e:
        BundleModel(bdir)
    assert str(e.value) == (
        f"bundle {bdir.resolve()} holds code that would run: postprocessing#transforms#2#_target_: "
        "ConfigWorkflow = monai.bundle.workflows.ConfigWorkflow (runs a workflow). Not run: run it only "
        "if you trust its source: --trust in the CLI, or confirm in the Segment widget"
    )


# ---------------------------------------------------------------------- TorchScript


@pytest.fixture
def torchscript_model(tmp_path) -> Path:
    """A scripted 2-class 3D UNet with a card beside it (<stem>.yaml)."""
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    ts = tmp_path / "models" / "ball.ts"
    ts.parent.mkdir()
    torch.jit.script(UNet(**TINY_ARGS).eval()).save(str(ts))
    card = {
        "name": "ball-ts", "task": "ball (test)", "modality": ["CT"], "spatial_dims": 3,
        "input": {"channels": ["ct"], "orientation": "RAS", "spacing": [1.5, 1.5, 2.0],
                  "intensity": {"type": "window", "a_min": -100, "a_max": 200, "b_min": 0.0, "b_max": 1.0,
                                "clip": True}},
        "inference": {"roi_size": [16, 16, 16], "overlap": 0.25, "sw_batch_size": 2, "mode": "gaussian"},
        "output": {"activation": "softmax"},
        "classes": {1: {"name": "ball", "colour": "#ff0000"}},
        "weights": {"source": "torchscript", "file": "ball.ts"},
        "license": "test", "intended_use": "tests only",
    }
    import yaml

    (tmp_path / "models" / "ball.yaml").write_text(yaml.safe_dump(card))
    return ts


def test_torchscript_needs_trust(torchscript_model, tmp_path, ct_path, capsys):
    card = find_card(torchscript_model)
    assert card.weights.source == "torchscript" and requires_trust(card)
    assert [str(f) for f in trust_findings(card)] == [f"{torchscript_model}: TorchScript (a TorchScript file is a program)"]
    img = read_ct(ct_path)
    with pytest.raises(CxsegError) as e:
        Predictor(card, device="cpu").predict(img)
    assert f"{torchscript_model}: TorchScript (a TorchScript file is a program)" in str(e.value)
    assert HOW in str(e.value)
    lab = Predictor(card, device="cpu", trust=True).predict(img)
    assert lab.array.shape == img.array.shape

    out = tmp_path / "ts.nii.gz"
    args = ["predict", "--model", str(torchscript_model), "--input", str(ct_path), "--output", str(out),
            "--device", "cpu"]
    assert cli.main(args) == 1 and not out.exists()
    assert HOW in capsys.readouterr().err
    assert cli.main([*args, "--trust"]) == 0 and out.is_file()


def test_bundle_with_torchscript_weights_needs_trust(tmp_path, ct_path):
    from monai.networks.nets import UNet

    bdir = write_bundle(tmp_path / "b", base_config())
    (bdir / "models" / "model.pt").unlink()
    torch.manual_seed(0)
    torch.jit.script(UNet(**TINY_ARGS).eval()).save(str(bdir / "models" / "model.ts"))
    card = find_card(bdir)
    assert requires_trust(card)
    with pytest.raises(CxsegError, match=f"models/model.ts: TorchScript .*{HOW}"):
        Predictor(card, device="cpu")
    img = read_ct(ct_path)
    assert Predictor(card, device="cpu", trust=True).predict(img).array.shape == img.array.shape
