"""CXLSeg browser with a real viewer: filter, open, step, unsaved edits, save with backup, model
Dice, and a 243,324-row table (CXLSeg's size) that stays lazy."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cxlseg_data import make_big_csvs, make_dataset

pytestmark = pytest.mark.gui


def _widget(viewer):
    from napari_cxseg.widgets.cxlseg_browser import CXLSegBrowser

    w = CXLSegBrowser(viewer)
    viewer.window.add_dock_widget(w)
    return w


def _open(qtbot, w, folder, timeout=60_000):
    with qtbot.waitSignal(w.loaded, timeout=timeout) as sig:
        w.open_dataset(str(folder))
    return sig.args[0]


def test_browse_open_step_save_and_dice(make_napari_viewer, qtbot, tmp_path):
    from napari_cxseg.cxlseg_masks import BACKUP_DIR
    from napari_cxseg.widgets.cxlseg_browser import IMAGE_LAYER, MASK_LAYER, PRED_LAYER

    ds = make_dataset(tmp_path, n=3)
    viewer = make_napari_viewer()
    w = _widget(viewer)
    assert _open(qtbot, w, ds["root"]) == 3
    assert w.model.rowCount() == 3
    w.split_combo.setCurrentText("validate")
    assert w.model.rowCount() == 1 and w.model.record(0)["dicom_id"] == ds["rows"][1]["dicom_id"]
    w.split_combo.setCurrentText("all")
    w.finding_combo.setCurrentText("Atelectasis")
    assert w.model.rowCount() == 2
    w.finding_combo.setCurrentText("all")
    assert w.model.rowCount() == 3
    assert w.model.data(w.model.index(0, 5)) == "Atelectasis, Pleural Effusion"

    with qtbot.waitSignal(w.opened, timeout=30_000) as sig:
        w.open_row(0)
    assert sig.args[0] == ds["rows"][0]["dicom_id"]
    mask = viewer.layers[MASK_LAYER]
    assert viewer.layers[IMAGE_LAYER].data.shape == (512, 448) == mask.data.shape
    assert set(np.unique(mask.data)) == {0, 1, 2}
    with qtbot.waitSignal(w.opened, timeout=30_000) as sig:
        w.step(1)
    assert sig.args[0] == ds["rows"][1]["dicom_id"]

    # an edited mask is not dropped by stepping: the first press only warns
    mask = viewer.layers[MASK_LAYER]
    data = np.array(mask.data)
    data[:, :200] = 0
    mask.data = data
    w.step(1)
    assert "unsaved edits" in w.status.text()
    assert w.current.dicom_id == ds["rows"][1]["dicom_id"]
    with qtbot.waitSignal(w.saved, timeout=30_000) as sig:
        w.save_mask()
    rel = f"{ds['rows'][1]['rel']}/{ds['rows'][1]['dicom_id']}-mask.jpg"
    assert sig.args[0]["backup"] == ds["root"] / BACKUP_DIR / rel
    assert (ds["root"] / BACKUP_DIR / rel).is_file()
    with qtbot.waitSignal(w.opened, timeout=30_000) as sig:
        w.step(1)  # saved: steps at once
    assert sig.args[0] == ds["rows"][2]["dicom_id"]

    w.model_combo.setCurrentText("cxr-lungs")
    with qtbot.waitSignal(w.checked, timeout=120_000) as sig:
        w.check_dice()
    res = sig.args[0]
    assert all(0.0 <= res[k] <= 1.0 for k in ("lungs", "right", "left"))
    assert "Dice lungs" in w.status.text()
    assert PRED_LAYER in viewer.layers
    qtbot.waitUntil(lambda: w.dice_btn.isEnabled() and w.save_btn.isEnabled(), timeout=10_000)


def test_open_errors_are_notified(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w = _widget(viewer)
    with qtbot.waitSignal(w.failed, timeout=30_000) as sig:
        w.open_dataset(str(tmp_path))
    assert "is not a CXLSeg dataset" in sig.args[0] and str(tmp_path) in sig.args[0]
    with qtbot.waitSignal(w.failed, timeout=5_000) as sig:
        w.save_mask()
    assert "Open a case first" in sig.args[0]


def test_243k_rows_open_lazily(make_napari_viewer, qtbot, tmp_path):
    n = 243_324
    t0 = time.perf_counter()
    folder = make_big_csvs(tmp_path, n)
    t1 = time.perf_counter()
    viewer = make_napari_viewer()
    w = _widget(viewer)
    w.show()
    assert _open(qtbot, w, folder, timeout=300_000) == n
    t2 = time.perf_counter()
    qtbot.wait(200)  # the view paints its visible rows
    assert w.model.rowCount() == n
    assert w.model.formatted_rows < 1000  # only rows the view asked for were formatted
    assert w.model.data(w.model.index(0, 5)) == "Cardiomegaly, Pleural Effusion"
    assert w.model.data(w.model.index(n - 1, 0)) == f"{n - 1:08x}-aaaa-bbbb"
    w.split_combo.setCurrentText("validate")
    t3 = time.perf_counter()
    assert w.model.rowCount() == int(np.sum(np.arange(n) % 10 == 8))
    w.view.scrollToBottom()
    qtbot.wait(100)
    assert w.model.formatted_rows < 2000
    print(f"\n243k CXLSeg rows: CSVs written in {t1 - t0:.1f} s, read + shown in {t2 - t1:.1f} s, "
          f"split filter {t3 - t2:.2f} s")
