"""Autosave of edited Labels layers to the recovery store, and restoring them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _edited_layer(viewer, source: str | None = None):
    """A named, coloured Labels layer on a 2.5 x 0.7 x 0.7 mm grid, and an edit for it."""
    from napari_cxseg.geometry import Geometry
    from napari_cxseg.images import LabelClass, LabelMap
    from napari_cxseg.layers import labels_layer_data
    from napari_cxseg.widgets._layers import apply_array

    lm = LabelMap(
        np.zeros((4, 12, 12), np.uint8),
        Geometry(affine=np.diag([2.5, 0.7, 0.7, 1.0])),
        classes={1: LabelClass("left lung", "#1f77b4")},
        meta={"source_path": source},
    )
    data, kw, _ = labels_layer_data(lm, name="lungs")
    layer = viewer.add_labels(data, **kw)
    new = np.zeros_like(data)
    new[1:3, 2:9, 3:7] = 1
    return layer, new, apply_array


@pytest.fixture(autouse=True)
def _no_startup_offer(monkeypatch):
    from napari_cxseg.widgets.autosave import Autosaver

    monkeypatch.setattr(Autosaver, "offered_at_start", True)
    monkeypatch.setattr(Autosaver, "saved_this_process", set())


def test_idle_save_then_restore_gives_the_same_layer(make_napari_viewer, qtbot):
    from napari_cxseg.widgets.autosave import Autosaver

    viewer = make_napari_viewer()
    saver = Autosaver(viewer, idle_seconds=0.2)
    layer, new, apply_array = _edited_layer(viewer)
    with qtbot.waitSignal(saver.saved, timeout=10000) as blocker:
        apply_array(layer, new)  # an edit; the save follows 0.2 s later
    assert blocker.args == ["lungs"]
    qtbot.waitUntil(lambda: saver._saving is None, timeout=5000)
    entries = list(saver.store.list())
    assert len(entries) == 1
    cache = Path(os.environ["CXSEG_CACHE_DIR"]).resolve()
    assert any(p.is_file() for p in cache.rglob("*"))

    # copies written by this session are not offered unless asked for
    saver.decide = lambda entry: "restore"
    assert saver.offer_recovery() == []
    restored = saver.offer_recovery(include_this_session=True)
    assert len(restored) == 1
    back = restored[0]
    assert back.name == "lungs (recovered)"
    assert np.array_equal(back.data, new) and back.data.dtype == layer.data.dtype
    assert np.allclose(back.scale, layer.scale)
    assert list(back.features["name"]) == ["background", "left lung"]
    assert list(saver.store.list()) == []  # restored copies leave the store


def test_correct_widget_starts_one_autosaver_and_offers_old_copies(
    make_napari_viewer, qtbot, monkeypatch
):
    from napari_cxseg.widgets.autosave import Autosaver
    from napari_cxseg.widgets.correct import CorrectWidget

    viewer = make_napari_viewer()
    first = Autosaver(viewer, idle_seconds=0.1)
    layer, new, apply_array = _edited_layer(viewer)
    with qtbot.waitSignal(first.saved, timeout=10000):
        apply_array(layer, new)
    qtbot.waitUntil(lambda: first._saving is None, timeout=5000)

    # a "later session": the next autosaver made at start-up offers the copy
    decisions = []
    monkeypatch.setattr(Autosaver, "saved_this_process", set())
    monkeypatch.setattr(Autosaver, "offered_at_start", False)
    monkeypatch.setattr(Autosaver, "decide", lambda self, entry: decisions.append(entry) or "keep")
    widget = CorrectWidget(viewer)
    assert widget.autosaver is Autosaver.for_viewer(viewer)
    assert CorrectWidget(viewer).autosaver is widget.autosaver  # one per viewer
    qtbot.waitUntil(lambda: len(decisions) == 1, timeout=5000)
    assert len(list(widget.autosaver.store.list())) == 1  # "keep" leaves it in place
    monkeypatch.setattr(Autosaver, "decide", lambda self, entry: "discard")
    assert widget.autosaver.offer_recovery() == []
    assert list(widget.autosaver.store.list()) == []


def test_opening_a_file_offers_its_copy(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_cxseg.widgets.autosave import Autosaver

    source = str(tmp_path / "case7.nii.gz")
    viewer = make_napari_viewer()
    saver = Autosaver(viewer, idle_seconds=0.1)
    layer, new, apply_array = _edited_layer(viewer, source)
    with qtbot.waitSignal(saver.saved, timeout=10000):
        apply_array(layer, new)
    qtbot.waitUntil(lambda: saver._saving is None, timeout=5000)
    viewer.layers.remove(layer)

    monkeypatch.setattr(Autosaver, "saved_this_process", set())  # as if saved before a crash
    offered = []
    saver.decide = lambda entry: offered.append(entry) or "restore"
    with qtbot.waitSignal(saver.restored, timeout=5000) as blocker:
        viewer.add_image(
            np.zeros((4, 12, 12)), name="case7", metadata={"cxseg": {"source_path": source}}
        )
    assert len(offered) == 1 and offered[0].source_path == source
    assert np.array_equal(blocker.args[0].data, new)
    assert blocker.args[0].name == "case7-lungs (recovered)"
