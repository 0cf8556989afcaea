"""Model cards: the shipped ones validate and tell the truth; bad cards fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from napari_cxseg.images import CxsegError
from napari_cxseg.inference import combine_masks
from napari_cxseg.models.cards import PACKAGE_CARDS_DIR, find_card, list_cards, load_card

DATA = Path(__file__).parent / "data" / "spleen_ct_segmentation"
MSD = ["Task01_BrainTumour", "Task02_Heart", "Task03_Liver", "Task04_Hippocampus", "Task05_Prostate",
       "Task06_Lung", "Task07_Pancreas", "Task08_HepaticVessel", "Task09_Spleen", "Task10_Colon"]


def test_all_shipped_cards_validate():
    files = sorted(PACKAGE_CARDS_DIR.glob("*.yaml"))
    cards = [load_card(p) for p in files]
    names = [c.name for c in cards]
    assert len(set(names)) == len(names)
    for c in cards:
        assert c.classes and c.intended_use and c.license and c.training_data
        assert "not for clinical use" in c.intended_use.lower()
        assert all(cl.colour and cl.colour.startswith("#") for cl in c.classes.values())
    for t in MSD:
        assert (PACKAGE_CARDS_DIR / f"{t}.yaml").is_file()
    assert (PACKAGE_CARDS_DIR / "cxr-anatomy.yaml").is_file()
    listed = {c.name for c in list_cards()}
    assert set(names) <= listed


def test_shipped_networks_build():
    """Every card's network args are accepted by the MONAI class they name."""
    from napari_cxseg.models.networks import build_network

    for p in sorted(PACKAGE_CARDS_DIR.glob("*.yaml")):
        c = load_card(p)
        if c.network is None:
            continue
        net = build_network(c)
        assert net.__class__.__name__ == c.network.name
        if not p.name.startswith("Task"):
            continue  # other teams' cards: building is the check
        assert c.network.args["in_channels"] == len(c.input.channels)
        if c.output.activation == "softmax":
            assert c.network.args["out_channels"] == len(c.classes) + 1
        assert all(r % 8 == 0 for r in c.inference.roi_size), p.name


def test_msd_class_names_and_channels():
    expect = {
        "Task01_BrainTumour": ["edema", "non-enhancing tumor", "enhancing tumour"],
        "Task02_Heart": ["left atrium"],
        "Task03_Liver": ["liver", "cancer"],
        "Task04_Hippocampus": ["Anterior", "Posterior"],
        "Task05_Prostate": ["PZ", "TZ"],
        "Task06_Lung": ["cancer"],
        "Task07_Pancreas": ["pancreas", "cancer"],
        "Task08_HepaticVessel": ["Vessel", "Tumour"],
        "Task09_Spleen": ["spleen"],
        "Task10_Colon": ["colon cancer primaries"],
    }
    for t, names in expect.items():
        c = find_card(t)  # the file stem also finds the card
        assert [k.name for k in c.classes.values()] == names, t
        assert c.spatial_dims == 3 and c.input.orientation == "RAS"
    assert find_card("Task05_Prostate").input.channels == ["T2", "ADC"]
    assert sorted(find_card("Task01_BrainTumour").input.channels) == sorted(["FLAIR", "T1w", "t1gd", "T2w"])


def test_task09_mirrors_real_spleen_bundle_config():
    cfg = json.loads((DATA / "configs" / "inference.json").read_text())
    c = find_card("msd-task09-spleen")
    assert c.weights.source == "bundle" and c.weights.bundle == "spleen_ct_segmentation"
    nd = {k: v for k, v in cfg["network_def"].items() if k != "_target_"}
    assert c.network.name == cfg["network_def"]["_target_"] and c.network.args == nd
    pre = {t["_target_"]: t for t in cfg["preprocessing"]["transforms"]}
    assert c.input.orientation == pre["Orientationd"]["axcodes"]
    assert list(c.input.spacing) == pre["Spacingd"]["pixdim"]
    win = pre["ScaleIntensityRanged"]
    assert c.input.intensity == {"type": "window", "a_min": win["a_min"], "a_max": win["a_max"],
                                 "b_min": win["b_min"], "b_max": win["b_max"], "clip": win["clip"]}
    assert list(c.inference.roi_size) == cfg["inferer"]["roi_size"]
    assert c.inference.overlap == cfg["inferer"]["overlap"]
    assert c.inference.sw_batch_size == cfg["inferer"]["sw_batch_size"]
    assert c.inference.mode == "constant"  # SlidingWindowInferer's default
    assert c.output.activation == "softmax"
    assert not c.is_bundle  # runs the bundle's weights through the card: no bundle code executed


def test_task07_runs_through_bundle_and_others_are_to_be_trained():
    assert find_card("msd-task07-pancreas").is_bundle
    for t in ["Task02_Heart", "Task03_Liver", "Task04_Hippocampus", "Task05_Prostate", "Task06_Lung",
              "Task08_HepaticVessel", "Task10_Colon"]:
        c = find_card(t)
        assert c.weights.source == "file"
        assert "to be trained" in c.notes.lower()
        assert c.metrics == {}


def test_task01_label_mapping_from_brats_channels():
    """TC/WT/ET sigmoid channels map to disjoint MSD labels: ET->3, TC-ET->2, WT-TC->1."""
    c = find_card("msd-task01-braintumour")
    assert c.weights.bundle == "brats_mri_segmentation" and c.output.activation == "sigmoid"
    r = np.arange(20)
    wt, tc, et = (np.abs(r - 10) < 8), (np.abs(r - 10) < 5), (np.abs(r - 10) < 2)
    labels = combine_masks(np.stack([tc, wt, et]), c.output.label_map, c.output.overlap, c.output.priority)
    assert labels[10] == 3 and labels[13] == 2 and labels[16] == 1 and labels[0] == 0
    assert c.classes[3].name == "enhancing tumour" and c.classes[1].name == "edema"


def test_cxr_anatomy_card():
    from napari_cxseg.models.networks import XRV_PSPNET_TARGETS

    c = find_card("cxr-anatomy")
    assert [k.name for k in c.classes.values()] == list(XRV_PSPNET_TARGETS)
    assert c.output.activation == "sigmoid" and c.output.overlap == "smallest"
    assert c.input.size == (512, 512) and c.weights.source == "torchxrayvision"
    assert "smallest" in (PACKAGE_CARDS_DIR / "cxr-anatomy.yaml").read_text().lower()


def test_cxr_anatomy_without_torchxrayvision_says_pip_install():
    pytest.importorskip("monai")
    try:
        import torchxrayvision  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torchxrayvision installed")
    from napari_cxseg.models.networks import build_xrv_pspnet

    with pytest.raises(CxsegError, match="pip install torchxrayvision"):
        build_xrv_pspnet()


GOOD = {
    "name": "good",
    "task": "t",
    "modality": ["CT"],
    "spatial_dims": 3,
    "input": {"channels": ["CT"], "orientation": "RAS", "spacing": [1, 1, 1], "intensity": {"type": "zscore"}},
    "network": {"name": "UNet", "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                                         "channels": [4, 8], "strides": [2]}},
    "inference": {"roi_size": [32, 32, 32]},
    "classes": {1: {"name": "organ", "colour": "#123456"}},
    "weights": {"source": "file", "file": "good.pt"},
}


def _bad(**changes):
    d = json.loads(json.dumps(GOOD))
    for path, val in changes.items():
        keys = path.split("__")
        tgt = d
        for k in keys[:-1]:
            tgt = tgt[k]
        if val is _DELETE:
            del tgt[keys[-1]]
        else:
            tgt[keys[-1]] = val
    return d


_DELETE = object()


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"name": _DELETE}, "name"),
        ({"spatial_dims": 4}, "spatial_dims"),
        ({"input__spacing": [1, 1]}, "input.spacing"),
        ({"input__orientation": "RAX"}, "input.orientation"),
        ({"input__intensity": {"type": "window", "a_min": 5}}, "input.intensity.a_max"),
        ({"classes__1__colour": "red"}, "classes.1.colour"),
        ({"weights__source": "ftp"}, "weights.source"),
        ({"weights__file": _DELETE}, "weights.file"),
        ({"output": {"activation": "relu"}}, "output.activation"),
        ({"output": {"activation": "sigmoid", "label_map": {0: 7}}}, "output.label_map"),
        ({"inference__roi_size": [32, 32]}, "inference.roi_size"),
        ({"colour_scheme": "x"}, "colour_scheme"),
        ({"network": _DELETE}, "network"),
    ],
)
def test_bad_card_names_file_and_field(tmp_path, changes, field):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(_bad(**changes)))
    with pytest.raises(CxsegError) as e:
        load_card(p)
    msg = str(e.value)
    assert str(p) in msg
    assert f"field '{field}'" in msg


def test_bad_yaml_and_missing_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(CxsegError, match=f"model card {p} is not valid YAML"):
        load_card(p)
    with pytest.raises(CxsegError, match="does not exist"):
        find_card(str(tmp_path / "nope.yaml"))


def test_user_cards_are_found_and_bad_ones_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))
    udir = tmp_path / "cache" / "cards"
    udir.mkdir(parents=True)
    (udir / "good.yaml").write_text(yaml.safe_dump(GOOD))
    (udir / "broken.yaml").write_text(yaml.safe_dump(_bad(spatial_dims=5)))
    errors = []
    names = [c.name for c in list_cards(errors)]
    assert "good" in names and "msd-task09-spleen" in names
    assert len(errors) == 1 and errors[0][0].name == "broken.yaml" and "spatial_dims" in errors[0][1]
    with pytest.raises(CxsegError, match="spatial_dims"):
        list_cards()
    assert find_card("good").path == (udir / "good.yaml").resolve()
    with pytest.raises(CxsegError, match=r"broken.yaml: field 'spatial_dims'"):
        find_card("broken")
    with pytest.raises(CxsegError, match=r"no model card named 'nothing' \(available: .*good"):
        find_card("nothing")


def test_weights_file_needs_a_card(tmp_path):
    import torch

    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, pt)
    with pytest.raises(CxsegError, match=r"without a model card: write .*model.yaml"):
        find_card(pt)
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(GOOD))
    c = find_card(pt)
    assert c.weights.source == "file" and c.weights.file == str(pt.resolve())
    ts = tmp_path / "model.ts"
    ts.write_bytes(b"")
    assert find_card(ts).weights.source == "torchscript"


def test_core_modules_import_without_torch_or_monai():
    """Cards, the Predictor module and the CLI stay cheap to import (napari start-up)."""
    import subprocess
    import sys

    code = ("import sys, napari_cxseg.models, napari_cxseg.inference, napari_cxseg.cli, napari_cxseg.device;"
            "napari_cxseg.models.list_cards();"
            "print(sorted(m for m in ('torch', 'monai', 'qtpy', 'napari') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
