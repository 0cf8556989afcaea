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
def _no_startup_offer(monkeypatch, tmp_path):
    from napari_cxseg.editing import recovery
    from napari_cxseg.widgets.autosave import Autosaver

    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))  # a recovery folder per test
    monkeypatch.setattr(Autosaver, "offered_at_start", True)
    monkeypatch.setitem(recovery._SESSION, "id", recovery.session_id())  # restored afterwards


def _restart() -> None:
    """As if napari was started again: a new run id (copies so far are an earlier run's)."""
    from napari_cxseg.editing import recovery

    recovery.start_new_session()


def _wait_saved(qtbot, saver, layer, array, apply_array) -> None:
    with qtbot.waitSignal(saver.saved, timeout=10000):
        apply_array(layer, array)
    qtbot.waitUntil(lambda: saver._saving is None, timeout=5000)


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
    # the copy now belongs to the restored layer (a crash right after restoring keeps it)
    from napari_cxseg.widgets.autosave import layer_key

    assert [e.key for e in saver.store.list()] == [layer_key(back)]
    assert np.array_equal(saver.store.load(layer_key(back)).labels, new)


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
    _restart()
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

    _restart()  # as if saved before a crash
    offered = []
    saver.decide = lambda entry: offered.append(entry) or "restore"
    with qtbot.waitSignal(saver.restored, timeout=5000) as blocker:
        viewer.add_image(
            np.zeros((4, 12, 12)), name="case7", metadata={"cxseg": {"source_path": source}}
        )
    assert len(offered) == 1 and offered[0].source_path == source
    assert np.array_equal(blocker.args[0].data, new)
    assert blocker.args[0].name == "lungs (recovered)"


def test_saving_with_the_writer_discards_the_recovery_copy(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    from napari_cxseg.editing.recovery import label_map_key
    from napari_cxseg.widgets._layers import label_map_from_layer
    from napari_cxseg.widgets.autosave import Autosaver, layer_key

    viewer = make_napari_viewer()
    saver = Autosaver(viewer, idle_seconds=0.1)
    layer, new, apply_array = _edited_layer(viewer, str(tmp_path / "case9.nii.gz"))
    assert label_map_key(label_map_from_layer(layer)) == layer_key(layer)  # one key for both
    with qtbot.waitSignal(saver.saved, timeout=10000):
        apply_array(layer, new)
    qtbot.waitUntil(lambda: saver._saving is None, timeout=5000)
    assert [e.key for e in saver.store.list()] == [layer_key(layer)]

    written = layer.save(str(tmp_path / "lungs.nii.gz"), plugin="napari-cxseg")
    assert written and list(saver.store.list()) == []

    # after a restart nothing is offered: the edits are in the file
    _restart()
    offered = []
    saver.decide = lambda entry: offered.append(entry) or "restore"
    assert saver.offer_recovery() == [] and offered == []

    # edits after the save are autosaved again
    newer = new.copy()
    newer[0, 0, 0] = 1
    with qtbot.waitSignal(saver.saved, timeout=10000):
        apply_array(layer, newer)
    qtbot.waitUntil(lambda: saver._saving is None, timeout=5000)
    assert len(saver.store.list()) == 1

    # an edit saved to a file before the autosave fires: no copy is left behind
    saver.idle_seconds = 0.3
    newest = newer.copy()
    newest[0, 1, 1] = 1
    apply_array(layer, newest)
    layer.save(str(tmp_path / "lungs.nii.gz"), plugin="napari-cxseg")
    assert list(saver.store.list()) == []
    qtbot.wait(600)  # the autosave timer fires and finds the state saved
    qtbot.waitUntil(lambda: saver._saving is None and not saver.timer.isActive(), timeout=5000)
    assert list(saver.store.list()) == []

    # editing back to the saved state leaves nothing unsaved either
    with qtbot.waitSignal(saver.saved, timeout=10000):
        apply_array(layer, newer)
    qtbot.waitUntil(lambda: saver._saving is None, timeout=5000)
    assert len(saver.store.list()) == 1
    apply_array(layer, newest)
    qtbot.wait(600)
    qtbot.waitUntil(lambda: saver._saving is None and not saver.timer.isActive(), timeout=5000)
    assert list(saver.store.list()) == []


def test_a_copy_being_written_while_the_file_is_saved_is_dropped(
    make_napari_viewer, qtbot, tmp_path
):
    import threading

    from napari_cxseg.editing.recovery import RecoveryStore
    from napari_cxseg.widgets.autosave import Autosaver

    started, release = threading.Event(), threading.Event()

    class SlowStore(RecoveryStore):
        def save(self, *args, **kwargs):
            started.set()
            release.wait(10)
            return super().save(*args, **kwargs)

    viewer = make_napari_viewer()
    saver = Autosaver(viewer, idle_seconds=0.1, store=SlowStore(tmp_path / "own-store"))
    layer, new, apply_array = _edited_layer(viewer, str(tmp_path / "case3.nii.gz"))
    apply_array(layer, new)
    qtbot.waitUntil(started.is_set, timeout=5000)  # the autosave is writing its copy ...
    layer.save(str(tmp_path / "saved.nii.gz"), plugin="napari-cxseg")  # ... when the file is saved
    release.set()
    qtbot.waitUntil(lambda: saver._saving is None, timeout=10000)
    assert list(saver.store.list()) == []  # the stale copy did not survive


def test_save_marks_are_keyed_counted_and_tell_listeners(tmp_path):
    from napari_cxseg.editing import recovery

    store = recovery.RecoveryStore(tmp_path / "rec")
    other = recovery.RecoveryStore(tmp_path / "other")
    key = recovery.recovery_key("0123abcd", str(tmp_path / "a.nii.gz"), "seg")
    labels = np.arange(6, dtype=np.uint8).reshape(2, 3)
    for s in (store, other):
        s.save(key, labels, {}, {})
    told = []

    class Listener:
        def on_saved(self, k: str) -> None:
            told.append(k)
            other.discard(k)

    listener = Listener()
    recovery.add_saved_listener(listener.on_saved)
    before = recovery.save_counter()
    assert not recovery.saved_after(key, before)
    assert recovery.mark_saved(key, labels, store=store) is True
    assert told == [key] and store.list() == [] and other.list() == []
    assert recovery.saved_after(key, before) and not recovery.saved_after(key, before + 1)
    assert recovery.is_saved(key, labels.copy()) and not recovery.is_saved(key, labels + 1)
    recovery.remove_saved_listener(listener.on_saved)
    recovery.mark_saved(key, labels, store=store)
    assert told == [key]  # removed listeners are not told
    # label maps of layers no autosaver watched (a model's output from the command line) have
    # no key, whatever their name: copies are never found by name
    assert recovery.label_map_key(type("LM", (), {"meta": {"source_path": "x.nii"}})()) is None
    named = {"source_path": str(tmp_path / "a.nii.gz"), "name": "seg"}
    assert recovery.label_map_key(type("LM", (), {"meta": named})()) is None


def test_a_new_layer_of_the_same_name_never_overwrites_an_earlier_runs_copy(
    make_napari_viewer, qtbot, tmp_path
):
    from napari_cxseg.widgets.autosave import Autosaver, layer_key

    source = str(tmp_path / "case5.nii.gz")
    viewer = make_napari_viewer()
    saver = Autosaver(viewer, idle_seconds=0.1)
    first, new, apply_array = _edited_layer(viewer, source)
    _wait_saved(qtbot, saver, first, new, apply_array)
    earlier_key = layer_key(first)
    viewer.layers.remove(first)  # closed without saving; napari then crashes

    _restart()
    saver.decide = lambda entry: "keep"  # "Later"
    again, _, _ = _edited_layer(viewer, source)  # same file, same layer name
    assert again.name == "lungs" and layer_key(again) != earlier_key
    other = np.zeros_like(new)
    other[0, 0, :5] = 1
    _wait_saved(qtbot, saver, again, other, apply_array)
    assert {e.key for e in saver.store.list()} == {earlier_key, layer_key(again)}
    np.testing.assert_array_equal(saver.store.load(earlier_key).labels, new)
    # saving the new layer to a file drops its own copy only
    again.save(str(tmp_path / "lungs.nii.gz"), plugin="napari-cxseg")
    assert [e.key for e in saver.store.list()] == [earlier_key]
    np.testing.assert_array_equal(saver.store.load(earlier_key).labels, new)


def test_a_duplicated_layer_gets_its_own_copy(make_napari_viewer, qtbot):
    from napari_cxseg.widgets.autosave import Autosaver, layer_key

    viewer = make_napari_viewer()
    saver = Autosaver(viewer, idle_seconds=0.1)
    layer, new, apply_array = _edited_layer(viewer)
    twin = viewer.add_labels(  # what napari's "duplicate layer" does: the metadata are copied
        np.array(layer.data), name="lungs copy", metadata=dict(layer.metadata)
    )
    assert layer_key(twin) != layer_key(layer)
    _wait_saved(qtbot, saver, layer, new, apply_array)
    other = new.copy()
    other[0] = 1
    _wait_saved(qtbot, saver, twin, other, apply_array)
    assert {e.key for e in saver.store.list()} == {layer_key(layer), layer_key(twin)}
    np.testing.assert_array_equal(saver.store.load(layer_key(layer)).labels, new)


def test_later_keeps_the_copy_until_it_is_discarded(make_napari_viewer, qtbot, tmp_path):
    from napari_cxseg.widgets.autosave import Autosaver, layer_key

    source = str(tmp_path / "case6.nii.gz")
    viewer = make_napari_viewer()
    saver = Autosaver(viewer, idle_seconds=0.1)
    layer, new, apply_array = _edited_layer(viewer, source)
    _wait_saved(qtbot, saver, layer, new, apply_array)
    key = layer_key(layer)
    viewer.layers.remove(layer)

    for _ in range(2):  # two restarts answered "Later": still there, offered each time
        _restart()
        offered = []
        saver.decide = lambda entry, seen=offered: seen.append(entry.key) or "keep"
        assert saver.offer_recovery() == [] and offered == [key]
        # in this run, the user works on a layer of the same name and file, and saves it
        work, _, _ = _edited_layer(viewer, source)
        edit = np.zeros_like(new)
        edit[2, 2, 2] = 1
        _wait_saved(qtbot, saver, work, edit, apply_array)
        work.save(str(tmp_path / f"work{len(offered)}.nii.gz"), plugin="napari-cxseg")
        viewer.layers.remove(work)
        assert [e.key for e in saver.store.list()] == [key]
        np.testing.assert_array_equal(saver.store.load(key).labels, new)
    # only an explicit "Discard" removes it
    saver.decide = lambda entry: "discard"
    _restart()
    assert saver.offer_recovery() == [] and saver.store.list() == []


def test_a_crash_during_an_autosave_keeps_the_previous_copy(make_napari_viewer, qtbot, monkeypatch):
    from napari_cxseg.editing.recovery import RecoveryStore
    from napari_cxseg.widgets.autosave import Autosaver, layer_key

    viewer = make_napari_viewer()
    saver = Autosaver(viewer, idle_seconds=0.1)
    layer, new, apply_array = _edited_layer(viewer)
    _wait_saved(qtbot, saver, layer, new, apply_array)

    def crash(self, path, text):
        raise OSError("disk gone while switching the manifest")

    errors = []
    newer = new.copy()
    newer[0] = 1
    with monkeypatch.context() as m:
        m.setattr(RecoveryStore, "_write_manifest", crash)
        m.setattr(
            "napari_cxseg.widgets.autosave.notify_error", lambda exc, ctx: errors.append(str(exc))
        )
        apply_array(layer, newer)
        qtbot.waitUntil(lambda: bool(errors), timeout=10000)
        qtbot.waitUntil(lambda: saver._saving is None, timeout=5000)
    assert "disk gone" in errors[0]
    entries = saver.store.list()
    assert [e.key for e in entries] == [layer_key(layer)]
    np.testing.assert_array_equal(saver.store.load(layer_key(layer)).labels, new)
    assert len(list(saver.store.root.glob("*.npz"))) == 1  # the new array file was removed
    _restart()
    saver.decide = lambda entry: "restore"
    back = saver.offer_recovery()
    assert len(back) == 1 and np.array_equal(back[0].data, new)
