"""Recovery store: a crash at any point of a save keeps the previous good copy; keys are per run
and per layer."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_cxseg.editing import recovery
from napari_cxseg.editing.recovery import RecoveryStore, recovery_key
from napari_cxseg.images import CxsegError


def _states():
    first = np.zeros((3, 4, 5), np.uint8)
    first[1, 1:3, 1:4] = 1
    second = first.copy()
    second[2] = 2
    return first, second


@pytest.fixture
def store(tmp_path):
    return RecoveryStore(tmp_path / "rec")


def _save(store, key, labels):
    return store.save(key, labels, {"affine": np.eye(4).tolist()}, {"1": {"name": "lung"}},
                      source_path="/data/case.nii.gz", layer_name="lungs")


@pytest.mark.parametrize("crash_at", ["array", "manifest"])
def test_a_crash_while_saving_keeps_the_previous_copy(store, monkeypatch, crash_at):
    """The rename that switches the manifest is the commit point; before it, the old entry is
    the entry (today's format renamed the array over the old one first)."""
    key = recovery_key("ab12cd34", "/data/case.nii.gz", "lungs")
    first, second = _states()
    _save(store, key, first)
    real_replace = os.replace

    def crashing_replace(src, dst, *args, **kwargs):
        name = os.fspath(dst)
        if (crash_at == "manifest" and name.endswith(".json")) or (
            crash_at == "array" and name.endswith(".npz")
        ):
            raise OSError(f"power cut while renaming to {name}")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="power cut"):
        _save(store, key, second)
    monkeypatch.setattr(os, "replace", real_replace)

    back = store.load(key)  # the previous copy, complete and checksum-valid
    np.testing.assert_array_equal(back.labels, first)
    assert [e.key for e in store.list()] == [key]
    assert len(list(store.root.glob("*.npz"))) == 1 and not list(store.root.glob("*.tmp"))
    _save(store, key, second)  # the next save works and leaves one array file
    np.testing.assert_array_equal(store.load(key).labels, second)
    assert len(list(store.root.glob("*.npz"))) == 1


def test_manifest_is_switched_last_and_old_files_are_deleted_after(store, monkeypatch):
    key = recovery_key("ab12cd34", None, "lungs")
    first, second = _states()
    _save(store, key, first)
    old_array = store.list()[0].path
    seen = []
    real = RecoveryStore._write_manifest

    def watch(self, path, text):
        # when the manifest switches, the new array is complete on disk and the old one is there
        name = json.loads(text)["array_file"]
        seen.append((old_array.exists(), (self.root / name).is_file()))
        with np.load(self.root / name) as data:
            np.testing.assert_array_equal(data["labels"], second)
        return real(self, path, text)

    monkeypatch.setattr(RecoveryStore, "_write_manifest", watch)
    entry = _save(store, key, second)
    assert seen == [(True, True)]
    assert not old_array.exists() and entry.path.exists() and entry.path != old_array


def test_a_hard_crash_leaves_a_stray_array_that_changes_nothing(store):
    key = recovery_key("ab12cd34", None, "lungs")
    first, second = _states()
    _save(store, key, first)
    stray = store.root / f"{key}~{'0' * 16}.npz"  # written, then the process died
    np.savez_compressed(stray, labels=second)
    np.testing.assert_array_equal(store.load(key).labels, first)
    assert len(store.list()) == 1
    assert store.discard(key) and not stray.exists() and store.list() == []


def test_a_manifest_cannot_point_outside_its_entry(store):
    key = recovery_key("ab12cd34", None, "lungs")
    _save(store, key, _states()[0])
    manifest = store.root / f"{key}.json"
    meta = json.loads(manifest.read_text())
    for bad in ("../../etc/passwd", f"{key}~../../x.npz", "other~0000000000000000.npz"):
        meta["array_file"] = bad
        manifest.write_text(json.dumps(meta))
        with pytest.raises(CxsegError, match="bad file"):
            store.load(key)
        assert store.list() == []


def test_keys_name_the_run_and_the_layer(store, monkeypatch):
    monkeypatch.setitem(recovery._SESSION, "id", recovery.session_id())
    key = recovery_key("ab12cd34", "/data/case 01.nii.gz", "lungs")
    entry = _save(store, key, _states()[0])
    assert entry.session_id == recovery.session_id() and entry.layer_id == "ab12cd34"
    assert entry.layer_name == "lungs" and entry.from_this_session
    recovery.start_new_session()
    assert not store.list()[0].from_this_session
    with pytest.raises(ValueError, match="layer id"):
        recovery_key("../x", None, "lungs")


def test_format_1_copies_still_load(store):
    """Copies written before this format (``<key>.npz`` + ``<key>.json``) are still offered."""
    import hashlib

    first = _states()[0]
    store.root.mkdir(parents=True)
    np.savez_compressed(store.root / "old-copy-1234.npz", labels=first)
    meta = {"format_version": 1, "key": "old-copy-1234", "saved_at": 1.0, "source_path": None,
            "shape": list(first.shape), "dtype": first.dtype.str,
            "sha256": hashlib.sha256(first.tobytes()).hexdigest(), "geometry": {}, "classes": {}}
    (store.root / "old-copy-1234.json").write_text(json.dumps(meta))
    [entry] = store.list()
    assert entry.session_id is None and not entry.from_this_session
    np.testing.assert_array_equal(store.load("old-copy-1234").labels, first)
    assert store.discard("old-copy-1234") and not list(store.root.iterdir())
