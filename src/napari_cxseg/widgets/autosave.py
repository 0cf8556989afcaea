"""Autosave of edited Labels layers, and recovery of them after a crash.

:class:`Autosaver` watches every Labels layer of a viewer. After a few seconds without edits it
writes the edited layers (array, geometry, classes) to the recovery store in the user cache
(``CXSEG_CACHE_DIR``), off the GUI thread. Each layer's copy has its own key: this run's
session id plus the layer's id (:func:`layer_key`, stamped into the layer's metadata so that
writers find it), so a new layer of the same name never overwrites an earlier copy. When the
plugin starts, and when a file is opened whose labels have a recovery copy from an earlier run,
it offers to restore them as new Labels layers; "Later" keeps a copy (it is offered again next
time) until the user restores or discards it.

A layer saved to a file (the plugin's writer, or ``io.write_labels``) loses its recovery copy
(``editing.recovery.note_saved``); the autosaver does not write a copy of that saved state
again, nor keeps one of an older state that it was writing while the file was saved. Edits
made after the save are autosaved as before.
"""

from __future__ import annotations

import os
import re
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QMessageBox

from ..layers import META_KEY
from ._jobs import start_worker
from ._layers import add_label_map, label_map_from_layer, notify_error
from ._preview import is_scratch, layer_meta

if TYPE_CHECKING:
    import napari

#: the autosaver of each open viewer (one per viewer)
_BY_VIEWER: dict[int, Autosaver] = {}


def layer_source(layer: Any) -> str | None:
    """The file a layer's labels belong to: its own source, else its reference image."""
    md = layer_meta(layer)
    return md.get("source_path") or md.get("reference_image_path") or None


def layer_id(layer: Any) -> str:
    """An id of the layer object, unique in this run (napari's ``unique_id``)."""
    uid = getattr(layer, "unique_id", None)
    if uid is None:  # napari without unique ids: one of our own, kept on the object
        uid = getattr(layer, "_cxseg_uid", None) or uuid.uuid4()
        layer._cxseg_uid = uid
    text = uid.hex if isinstance(uid, uuid.UUID) else re.sub(r"[^A-Za-z0-9]", "", str(uid))
    return text[:32] or uuid.uuid4().hex


def layer_key(layer: Any) -> str:
    """The recovery key of a layer in this run: session id + layer id (never its name alone).

    The key is stamped into the layer's metadata (``metadata["cxseg"]["recovery"]``) so that a
    writer, which only sees the metadata, discards the right copy. A stamp made in another run,
    or copied onto another layer (napari's "duplicate layer"), is replaced by a fresh key.
    """
    from ..editing.recovery import recovery_key, session_id

    md = layer_meta(layer)
    stamp = md.get("recovery") or {}
    uid, session = layer_id(layer), session_id()
    if stamp.get("session") == session and stamp.get("layer") == uid and stamp.get("key"):
        return str(stamp["key"])
    key = recovery_key(uid, layer_source(layer), layer.name)
    md["recovery"] = {"session": session, "layer": uid, "key": key}
    layer.metadata = {**layer.metadata, META_KEY: md}
    return key


class Autosaver(QObject):
    """Save edited Labels layers after ``idle_seconds`` without edits; offer recovery.

    Parameters
    ----------
    viewer
        The viewer whose Labels layers are watched.
    idle_seconds
        Seconds without edits before the edited layers are saved.
    store
        A recovery store; the default is one in the user cache.
    """

    #: the name of a layer that was saved to the recovery store
    saved = Signal(str)
    #: a Labels layer restored from the recovery store
    restored = Signal(object)

    #: whether the offer at start-up was already made in this process
    offered_at_start = False

    def __init__(self, viewer: napari.Viewer, idle_seconds: float = 5.0, store: Any = None):
        # a child of the viewer's window: it stops when the window closes
        super().__init__(getattr(getattr(viewer, "window", None), "_qt_window", None))
        self.viewer = viewer
        self._store = store
        self._dirty: dict[int, Any] = {}
        self._saving = None
        self._offered: set[str] = set()
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.timeout.connect(self.save_now)
        self.idle_seconds = idle_seconds
        from ..editing.recovery import add_saved_listener

        add_saved_listener(self._on_file_saved)  # held weakly
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        for layer in viewer.layers:
            self._watch(layer)
        if not Autosaver.offered_at_start:
            Autosaver.offered_at_start = True
            QTimer.singleShot(0, self.offer_recovery)

    @classmethod
    def for_viewer(cls, viewer: napari.Viewer, **kwargs: Any) -> Autosaver:
        """The viewer's autosaver, created on first use (one per viewer)."""
        existing = _BY_VIEWER.get(id(viewer))
        if existing is not None and existing.viewer is viewer:
            return existing
        saver = cls(viewer, **kwargs)
        _BY_VIEWER[id(viewer)] = saver
        saver.destroyed.connect(partial(_forget, id(viewer)))
        return saver

    @property
    def idle_seconds(self) -> float:
        """Seconds without edits before saving."""
        return self.timer.interval() / 1000.0

    @idle_seconds.setter
    def idle_seconds(self, value: float) -> None:
        self.timer.setInterval(max(1, int(float(value) * 1000)))

    @property
    def store(self):
        """The recovery store (in ``CXSEG_CACHE_DIR`` unless one was given)."""
        if self._store is None:
            from ..editing.recovery import RecoveryStore

            self._store = RecoveryStore()
        return self._store

    # ------------------------------------------------------------------ watching
    def _on_inserted(self, event: Any) -> None:
        layer = event.value
        self._watch(layer)
        if _is_labels(layer) or _is_image(layer):
            QTimer.singleShot(0, lambda: self._offer_for_source(layer))

    def _on_removed(self, event: Any) -> None:
        layer = event.value
        if _is_labels(layer):
            for ev in (layer.events.paint, layer.events.data):
                ev.disconnect(self._on_edit)
        # a closed layer's pending edits are still saved when the timer fires

    def _watch(self, layer: Any) -> None:
        if _is_labels(layer) and not is_scratch(layer):
            try:  # a fresh key now: a duplicated layer must not carry its original's key
                layer_key(layer)
            except Exception as exc:
                notify_error(exc, f"Autosave of '{layer.name}'")
            for ev in (layer.events.paint, layer.events.data):
                ev.connect(self._on_edit)

    def _on_edit(self, event: Any) -> None:
        layer = getattr(event, "source", None)
        if layer is None or is_scratch(layer):
            return
        self._dirty[id(layer)] = layer
        self.timer.start()

    # ------------------------------------------------------------------ saving
    def save_now(self) -> None:
        """Save every edited layer now (in a worker)."""
        self.timer.stop()
        if self._saving is not None:  # one save at a time; the next one follows it
            self.timer.start()
            return
        from ..editing import recovery

        layers, self._dirty = list(self._dirty.values()), {}
        counter = recovery.save_counter()  # saves to a file after this make these copies stale
        jobs = []
        for layer in layers:
            try:
                lm = label_map_from_layer(layer)
                jobs.append(
                    (
                        layer.name,
                        layer_key(layer),
                        np.array(lm.array, copy=True),
                        lm.geometry.to_dict(),
                        lm.classes_to_dict(),
                        layer_source(layer),
                    )
                )
            except Exception as exc:
                notify_error(exc, f"Autosave of '{layer.name}'")
        if not jobs:
            return
        store = self.store

        def write() -> list[tuple[str, str]]:
            done = []
            for name, key, array, geometry, classes, source in jobs:
                if recovery.is_saved(key, array):  # this very state is in a file
                    store.discard(key)
                    continue
                store.save(key, array, geometry, classes, source_path=source, layer_name=name)
                if recovery.saved_after(key, counter):  # a file got a newer state meanwhile
                    store.discard(key)
                    continue
                done.append((name, key))
            return done

        def finished(done: list[tuple[str, str]]) -> None:
            for name, _key in done:
                self.saved.emit(name)

        def failed(exc: BaseException) -> None:
            notify_error(exc, f"Autosave to {store.root}")

        def cleared() -> None:
            self._saving = None

        self._saving = start_worker(write, on_done=finished, on_error=failed, on_finished=cleared)

    def _on_file_saved(self, key: str) -> None:
        """A layer was written to a file: drop its copy from this autosaver's store too.

        Called by ``editing.recovery.mark_saved``, possibly off the GUI thread (no Qt here).
        """
        try:
            self.store.discard(key)
        except Exception:
            pass

    # ------------------------------------------------------------------ recovery
    def offer_recovery(self, include_this_session: bool = False) -> list:
        """Offer every recovery copy from earlier runs; returns the restored layers.

        ``include_this_session`` also offers copies this run wrote (e.g. of a layer that was
        closed without saving). A copy the user answers "Later" for stays in the store.
        """
        try:
            entries = list(self.store.list())
        except Exception as exc:
            notify_error(exc, "Reading the recovery folder")
            return []
        if not include_this_session:
            entries = [e for e in entries if not e.from_this_session]
        return self._offer(entries)

    def _offer_for_source(self, layer: Any) -> None:
        """A file was opened: offer copies of its labels from earlier sessions."""
        source = layer_meta(layer).get("source_path")
        if not source or layer not in self.viewer.layers:
            return
        try:
            entries = [
                e
                for e in self.store.list()
                if not e.from_this_session
                and _entry_key(e) not in self._offered
                and _same_path(e.source_path or "", source)
            ]
        except Exception as exc:
            notify_error(exc, "Reading the recovery folder")
            return
        self._offer(entries)

    def _offer(self, entries: list) -> list:
        restored = []
        for entry in entries:
            self._offered.add(_entry_key(entry))
            choice = self.decide(entry)
            try:
                if choice == "restore":
                    restored.append(self.restore(entry))
                elif choice == "discard":
                    self.store.discard(entry.key)
            except Exception as exc:
                notify_error(exc, f"Recovering '{_entry_name(entry)}'")
        return restored

    def restore(self, entry: Any):
        """Add a recovery copy as a new Labels layer; its copy moves to the new layer's key.

        The old copy is deleted only once the new layer's copy is written, so a crash right
        after restoring still finds the edits.
        """
        rec = self.store.load(entry.key)
        lm = rec.to_label_map()
        name = f"{_entry_name(entry)} (recovered)"
        layer = add_label_map(self.viewer, lm, name)
        self.store.save(
            layer_key(layer),
            rec.labels,
            rec.geometry,
            rec.classes,
            source_path=rec.source_path,
            layer_name=layer.name,
        )
        self.store.discard(entry.key)
        self.restored.emit(layer)
        return layer

    def decide(self, entry: Any) -> str:
        """Ask what to do with one recovery copy: ``"restore"``, ``"discard"`` or ``"keep"``.

        Tests (and scripts) override this method.
        """
        box = QMessageBox(self.viewer.window._qt_window if hasattr(self.viewer, "window") else None)
        box.setWindowTitle("Recover unsaved labels?")
        source = f"\nImage: {entry.source_path}" if entry.source_path else ""
        box.setText(
            f"Unsaved edits of '{_entry_name(entry)}' were kept from an earlier session "
            f"(saved {entry.saved_at_text}).{source}\n\nRestore them as a new Labels layer?"
        )
        restore = box.addButton("Restore", QMessageBox.ButtonRole.AcceptRole)
        discard = box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Later", QMessageBox.ButtonRole.RejectRole)
        box.exec()
        clicked = box.clickedButton()
        return "restore" if clicked is restore else "discard" if clicked is discard else "keep"


def _forget(viewer_id: int, *args: Any) -> None:
    """Drop a closed viewer's autosaver from the registry."""
    _BY_VIEWER.pop(viewer_id, None)


def _is_labels(layer: Any) -> bool:
    from napari.layers import Labels

    return isinstance(layer, Labels)


def _is_image(layer: Any) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image)


def _entry_key(entry: Any) -> str:
    return str(entry.key)


def _entry_name(entry: Any) -> str:
    """The layer name a copy was saved under (older copies: from the key's readable stem)."""
    name = getattr(entry, "layer_name", None)
    if name:
        return str(name)
    return str(entry.key).rsplit("-", 1)[0] or "labels"


def _same_path(a: str, b: str) -> bool:
    if not a or not b:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)
