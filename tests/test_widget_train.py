"""Train widget with a real viewer: a subprocess run that is cancelled, resumed and registered;
segment -> correct -> add to the training set -> fine-tune (new version, old kept) -> next case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image as PILImage

from training_data import film, write_structure_set

pytestmark = [pytest.mark.gui, pytest.mark.slow]
torch.set_num_threads(1)


def _tiny_card(cache: Path, name: str = "tiny") -> Path:
    """A tiny 2D lung model with (random) weights in the user's card folder."""
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    args = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [8, 16, 32], "strides": [2, 2],
            "num_res_units": 1}
    (cache / "weights").mkdir(parents=True, exist_ok=True)
    (cache / "cards").mkdir(parents=True, exist_ok=True)
    torch.save(UNet(**args).state_dict(), cache / "weights" / f"{name}.pt")
    card = {
        "name": name, "task": "tiny test lungs", "modality": ["CR", "DX", "XR"], "spatial_dims": 2,
        "input": {"channels": ["radiograph"], "size": [64, 64], "fit": "pad",
                  "intensity": {"type": "percentiles", "lower": 0.5, "upper": 99.5, "b_min": 0.0, "b_max": 1.0,
                                "clip": True}},
        "network": {"name": "UNet", "args": args},
        "inference": {"roi_size": [64, 64], "overlap": 0.0, "sw_batch_size": 1, "mode": "constant"},
        "output": {"activation": "softmax", "largest_component": False},
        "classes": {1: {"name": "right lung", "colour": "#1f77b4"}, 2: {"name": "left lung", "colour": "#ff7f0e"}},
        "weights": {"source": "file", "file": f"{name}.pt"}, "intended_use": "tests",
    }
    path = cache / "cards" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(card))
    return cache / "weights" / f"{name}.pt"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    c = tmp_path / "cache"
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(c))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the training subprocesses: one torch thread
    _tiny_card(c)
    return c


def _widgets(viewer):
    from napari_cxseg.widgets.segment import SegmentWidget
    from napari_cxseg.widgets.train import TrainWidget

    seg, train = SegmentWidget(viewer), TrainWidget(viewer)
    viewer.window.add_dock_widget(seg)
    viewer.window.add_dock_widget(train)
    outcomes: list[str] = []
    train.run_ended.connect(lambda outcome, name: outcomes.append(outcome))
    train.device_combo.setCurrentText("cpu")
    seg.device_combo.setCurrentText("cpu")
    return seg, train, outcomes


def test_train_cancel_resume_and_register(make_napari_viewer, qtbot, cache, tmp_path):
    from napari_cxseg.training import versions

    viewer = make_napari_viewer()
    seg, w, outcomes = _widgets(viewer)
    data = write_structure_set(tmp_path / "data", n=6, size=64)
    w.data_edit.setText(str(data))
    w.start_combo.setCurrentText("tiny")
    assert not w.network_combo.isEnabled()  # the starting model decides the network
    w.name_edit.setText("mylungs")
    w.epochs_spin.setValue(12)
    w.batch_spin.setValue(5)
    assert w.train()
    vdir = versions.models_root() / "mylungs" / "v1"
    qtbot.waitUntil(lambda: len(w._run.history) >= 1, timeout=180_000)
    w.cancel_run()
    qtbot.waitUntil(lambda: bool(outcomes), timeout=30_000)
    assert outcomes == ["cancelled"]
    done = torch.load(vdir / "train" / "last.pt", weights_only=True)["state"]["epoch"]
    assert 1 <= done < 12 and not versions.finished(vdir) and w.resume_btn.isEnabled()
    assert seg.model_combo.findText("mylungs") < 0  # nothing registered yet
    assert w.resume_run()
    qtbot.waitUntil(lambda: len(outcomes) == 2, timeout=240_000)
    assert outcomes[1] == "finished", w.run_status.text()
    assert w._run.start_event["resume"] is True
    assert [r["epoch"] for r in w._run.history] == list(range(1, 13))  # the plot shows every epoch once
    assert all("dice" in r for r in w._run.history[done:])
    assert (cache / "cards" / "mylungs.yaml").is_file() and versions.finished(vdir)
    assert seg.model_combo.findText("mylungs") >= 0  # listed in the Segment widget at once
    assert "best mean Dice" in w.result.text()
    (rec,) = versions.read_log("mylungs")
    assert rec["version"] == "v1" and rec["kind"] == "train" and 0 <= rec["best_dice"] <= 1


def _open_film(viewer, tmp_path: Path, name: str, seed: int):
    img, lab = film(np.random.default_rng(seed), 64)
    path = tmp_path / f"{name}.png"
    PILImage.fromarray(img).save(path)
    (layer,) = viewer.open(str(path), plugin="napari-cxseg")
    return layer, lab


def _segment(qtbot, seg, layer):
    seg.image_combo.setCurrentText(layer.name)
    seg.model_combo.setCurrentText("tiny" if seg.model_combo.findText("tiny") >= 0 else seg.model_combo.currentText())
    with qtbot.waitSignal(seg.finished_layer, timeout=60_000) as sig:
        seg.run()
    return sig.args[0]


def test_add_fine_tune_versions_and_next_case(make_napari_viewer, qtbot, cache, tmp_path):
    from napari_cxseg.training import versions
    from napari_cxseg.widgets._train_next_tab import NextCaseTab

    viewer = make_napari_viewer()
    seg, w, outcomes = _widgets(viewer)
    tab = w.set_tab
    tab.folder_edit.setText(str(tmp_path / "set"))
    tab.refresh_list()
    entries = []
    tab.added.connect(entries.append)
    painted = []
    for i in range(3):  # segment, correct (paint the reference in), add
        image_layer, ref = _open_film(viewer, tmp_path, f"film{i}", seed=10 + i)
        labels = _segment(qtbot, seg, image_layer)
        changed = np.nonzero(np.asarray(labels.data) != ref)
        labels.data_setitem(changed, ref[changed])
        painted.append(changed[0].size)
        tab.labels_combo.setCurrentText(labels.name)
        assert tab.image_combo.currentText() == image_layer.name  # the labels' own image
        assert tab.add_current()
        qtbot.waitUntil(lambda n=i: len(entries) == n + 1, timeout=30_000)
    assert [e.model for e in entries] == ["tiny"] * 3
    assert [e.changed_voxels for e in entries] == painted
    assert tab.list.count() == 3 and not tab.list.item(0).icon().isNull()  # radiograph thumbnails
    assert tab.add_current()  # the same image again: replaced, not duplicated
    qtbot.waitUntil(lambda: len(entries) == 4, timeout=30_000)
    assert tab.list.count() == 3 and entries[3].case == entries[2].case

    # fine-tune: a new version, the held-out Dice before and after, the start model untouched
    start_weights = (cache / "weights" / "tiny.pt").read_bytes()
    comparisons = []
    tab.compared.connect(comparisons.append)
    assert tab.model_combo.currentText() == "tiny"  # the model that made the labels
    tab.ft_epochs.setValue(3)
    tab.ft_lr.setValue(5e-3)
    assert tab.fine_tune()
    qtbot.waitUntil(lambda: bool(comparisons), timeout=240_000)
    assert outcomes == ["finished"]
    res = comparisons[0]
    assert len(res["cases"]) >= 1 and res["old"] == "tiny" and res["new"] == "tiny-ft"
    assert 0 <= res["before"]["dice"] <= 1 and 0 <= res["after"]["dice"] <= 1
    assert "Held-out Dice" in tab.status.text()
    v1 = versions.models_root() / "tiny-ft" / "v1"
    new = torch.load(v1 / "models" / "model.pt", weights_only=True)
    old = torch.load(cache / "weights" / "tiny.pt", weights_only=True)
    assert any(not torch.equal(new[k], old[k]) for k in old)  # fine-tuning changed the weights
    assert (cache / "weights" / "tiny.pt").read_bytes() == start_weights  # the previous model is kept
    assert seg.model_combo.findText("tiny-ft") >= 0
    rec = versions.read_log("tiny-ft")[0]
    assert rec["started_from"] == "tiny" and rec["held_out"] == res["cases"] and "dice_after" in rec

    # fine-tune the fine-tuned model: v2 of the same lineage, v1 stays and can be restored
    assert tab.model_combo.currentText() == "tiny-ft"
    assert tab.fine_tune()
    qtbot.waitUntil(lambda: len(comparisons) == 2, timeout=240_000)
    v2 = versions.models_root() / "tiny-ft" / "v2"
    assert versions.finished(v1) and versions.finished(v2)
    card = yaml.safe_load((cache / "cards" / "tiny-ft.yaml").read_text())
    assert Path(card["weights"]["file"]).parents[1] == v2  # the card runs the newest version
    tab.refresh_versions()
    assert tab.versions_combo.count() == 2
    tab.versions_combo.setCurrentIndex(0)
    tab.use_version()
    card = yaml.safe_load((cache / "cards" / "tiny-ft.yaml").read_text())
    assert Path(card["weights"]["file"]).parents[1] == v1

    # next case: score a pool, open the least certain image, the ranking survives a restart
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(3):
        PILImage.fromarray(film(np.random.default_rng(40 + i), 64)[0]).save(pool / f"new{i}.png")
    nxt = w.next_tab
    nxt.source_edit.setText(str(pool))
    nxt.model_combo.setCurrentText("tiny-ft")
    with qtbot.waitSignal(nxt.scored, timeout=120_000) as sig:
        assert nxt.score()
    assert sig.args == [3]
    qtbot.waitUntil(lambda: nxt._worker is None, timeout=10_000)
    assert nxt.table.rowCount() == 3
    first = nxt.ranked()[0]
    n_layers = len(viewer.layers)
    with qtbot.waitSignal(nxt.opened, timeout=30_000) as sig:
        assert nxt.open_next()
    item, score = sig.args
    assert item.key == first[0].key and score == pytest.approx(first[1])
    assert len(viewer.layers) == n_layers + 1 and f"{score:.4f}" in nxt.status.text()
    saved = json.loads((tmp_path / "set" / "next_case_ranking.json").read_text())
    assert item.key in saved["opened"]
    again = NextCaseTab(w)  # a restart: the scores come from disk, the opened case is skipped
    from napari_cxseg.widgets.train import card_names

    again.refresh_models(card_names())
    again.source_edit.setText(str(pool))
    again.model_combo.setCurrentText("tiny-ft")
    from napari_cxseg.training.uncertainty import unlabelled_items

    again._items = unlabelled_items(pool)
    assert [it.key for it, _ in again.ranked()] == [it.key for it, _ in nxt.ranked()]
    assert item.key not in [it.key for it, _ in again.ranked()] and len(again.ranked()) == 2
