"""Which label states this process wrote to files, so recovery copies of them can go.

When a layer is written to a file (the napari writer, or :func:`napari_cxseg.io.write_labels`),
:func:`note_saved` deletes its recovery copy and remembers which state was saved (a checksum)
and when (a counter). The autosaver then neither rewrites a copy of that saved state
(:func:`is_saved`) nor keeps a copy of an older one that it was writing while the file was
saved (:func:`saved_after`). Re-exported by :mod:`napari_cxseg.editing.recovery`.
"""

from __future__ import annotations

import hashlib
import re
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .recovery import RecoveryStore

_KEY_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # as recovery keys

_SAVED_LOCK = threading.Lock()
#: key -> (counter value when saved, checksum of the saved array or None)
_SAVED: dict[str, tuple[int, str | None]] = {}
_COUNTER = [0]
_LISTENERS: list[Callable[[], Callable[[str], Any] | None]] = []


def labels_digest(labels: Any) -> str:
    """SHA-256 of a label array's bytes (the checksum recovery files carry)."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(labels)).tobytes()).hexdigest()


def label_map_key(label_map: Any) -> str | None:
    """The recovery key of a :class:`~napari_cxseg.images.LabelMap` made from a layer.

    A label map built from a layer (``layers.layer_to_label_map``) carries the key the
    autosaver gave that layer (``meta["recovery_key"]``, from the layer's metadata). ``None``
    for a label map without one (a layer no autosaver watched, or a model's output written
    by the command line): no copy of it can exist.
    """
    meta = getattr(label_map, "meta", None) or {}
    key = meta.get("recovery_key")
    return str(key) if key and _KEY_OK.match(str(key)) else None


def save_counter() -> int:
    """The current value of the counter that :func:`mark_saved` advances.

    Take it when snapshotting a layer for autosave; :func:`saved_after` then tells whether the
    layer was written to a file since.
    """
    with _SAVED_LOCK:
        return _COUNTER[0]


def mark_saved(key: str, labels: Any = None, store: RecoveryStore | None = None) -> bool:
    """Record that the labels under ``key`` were written to a file; delete their copy.

    Parameters
    ----------
    key
        From :func:`recovery_key` (or :func:`label_map_key`).
    labels
        The array that was written; later autosaves of the same content are skipped.
    store
        The recovery store to clean; the default one when ``None``. Listeners added with
        :func:`add_saved_listener` (an autosaver with its own store) are told as well.

    Returns
    -------
    bool
        Whether a recovery copy was deleted from ``store``.
    """
    digest = None if labels is None else labels_digest(labels)
    with _SAVED_LOCK:
        _COUNTER[0] += 1
        _SAVED[key] = (_COUNTER[0], digest)
        alive, callbacks = [], []
        for ref in _LISTENERS:
            callback = ref()
            if callback is not None:
                alive.append(ref)
                callbacks.append(callback)
        _LISTENERS[:] = alive
    if store is None:
        from .recovery import RecoveryStore

        store = RecoveryStore()
    found = store.discard(key)
    for callback in callbacks:
        try:
            callback(key)
        except Exception:  # a listener must never fail a save
            pass
    return found


def note_saved(label_map: Any, store: RecoveryStore | None = None) -> bool:
    """:func:`mark_saved` for a label map that was just written (no-op without a key).

    Returns
    -------
    bool
        Whether a recovery copy was deleted.
    """
    key = label_map_key(label_map)
    if key is None:
        return False
    return mark_saved(key, getattr(label_map, "array", None), store)


def is_saved(key: str, labels: Any) -> bool:
    """Whether ``labels`` is exactly the state last written to a file under ``key``."""
    with _SAVED_LOCK:
        state = _SAVED.get(key)
    return state is not None and state[1] is not None and state[1] == labels_digest(labels)


def saved_after(key: str, counter: int) -> bool:
    """Whether the labels under ``key`` were written to a file after :func:`save_counter` gave
    ``counter``."""
    with _SAVED_LOCK:
        state = _SAVED.get(key)
    return state is not None and state[0] > counter


def add_saved_listener(callback: Callable[[str], Any]) -> None:
    """Call ``callback(key)`` after each :func:`mark_saved` (held weakly; any thread).

    A bound method is held with :class:`weakref.WeakMethod`, so a listener's object can be
    collected without removing it first.
    """
    ref: Callable[[], Any]
    try:
        ref = weakref.WeakMethod(callback)  # type: ignore[arg-type]
    except TypeError:
        ref = weakref.ref(callback)
    with _SAVED_LOCK:
        _LISTENERS.append(ref)


def remove_saved_listener(callback: Callable[[str], Any]) -> None:
    """Stop calling ``callback`` after saves."""
    with _SAVED_LOCK:
        _LISTENERS[:] = [ref for ref in _LISTENERS if ref() not in (None, callback)]
