"""Autosave and recovery of label edits (no timers here: the widget decides when to save).

Each entry is two files in the recovery folder: ``<key>.npz`` (the label array, compressed)
and ``<key>.json`` (when, from which source, geometry, classes and the array's checksum). Both
are written to temporary files and renamed into place, the JSON last, so a crash mid-save
leaves the previous entry intact and never a half-written one.

A copy is only worth keeping while its edits are unsaved: when a layer is written to a file
(the napari writer, or :func:`napari_cxseg.io.write_labels`), :func:`note_saved` deletes its
copy and remembers, for this process, which state was saved (a checksum) and when (a counter).
The autosaver then neither rewrites a copy of that saved state (:func:`is_saved`) nor keeps a
copy of an older one that it was writing while the file was saved (:func:`saved_after`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..images import CxsegError

FORMAT_VERSION = 1
_KEY_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_recovery_dir() -> Path:
    """``$CXSEG_CACHE_DIR/recovery``, else ``$XDG_CACHE_HOME`` or ``~/.cache`` + ``napari-cxseg/recovery``."""
    env = os.environ.get("CXSEG_CACHE_DIR")
    if env:
        return Path(env) / "recovery"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "napari-cxseg" / "recovery"


def recovery_key(
    source_path: str | os.PathLike | None = None, layer_name: str | None = None
) -> str:
    """Stable, file-name-safe key for a layer: readable stem + hash of (absolute source, layer).

    The same file and layer name always give the same key, so a new autosave replaces the
    previous one; two files with the same name in different folders get different keys.
    """
    if source_path is None and not layer_name:
        raise ValueError("a recovery key needs a source path or a layer name")
    src = str(Path(source_path).expanduser().resolve()) if source_path is not None else ""
    ident = f"{src}\n{layer_name or ''}"
    stem = Path(src).name if src else str(layer_name)
    for suffix in (".gz", ".nii", ".nrrd", ".dcm", ".png"):
        stem = stem.removesuffix(suffix)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{stem}-{layer_name}" if src and layer_name else stem)
    slug = slug.strip("._-")[:60] or "labels"
    return f"{slug}-{hashlib.sha1(ident.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class RecoveryEntry:
    """What :meth:`RecoveryStore.list` reports about one saved state."""

    key: str
    saved_at: float  # seconds since the epoch
    source_path: str | None
    shape: tuple[int, ...]
    dtype: str
    classes: dict[str, Any]
    path: Path  # the .npz file

    @property
    def saved_at_text(self) -> str:
        """Local time of the save, ``YYYY-MM-DD HH:MM:SS``."""
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at))


@dataclass
class Recovered:
    """A state brought back by :meth:`RecoveryStore.load`."""

    key: str
    labels: np.ndarray
    geometry: dict[str, Any]
    classes: dict[str, Any]
    source_path: str | None
    saved_at: float

    def to_label_map(self):
        """The state as a :class:`~napari_cxseg.images.LabelMap` (geometry and classes rebuilt)."""
        from ..geometry import Geometry
        from ..images import LabelMap

        geometry = Geometry.from_dict(self.geometry)
        meta = {"recovered_from": self.key}
        if self.source_path:
            meta["reference_image_path"] = self.source_path
        return LabelMap(self.labels, geometry, LabelMap.classes_from_dict(self.classes), meta)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} cannot be stored in a recovery file")


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RecoveryStore:
    """Folder of autosaved label states, one per key.

    Parameters
    ----------
    cache_dir
        Folder to use; :func:`default_recovery_dir` when ``None``. Created on first save.
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        self.root = Path(cache_dir) if cache_dir is not None else default_recovery_dir()

    def _paths(self, key: str) -> tuple[Path, Path]:
        if not isinstance(key, str) or not _KEY_OK.match(key):
            raise ValueError(
                f"invalid recovery key {key!r}: use letters, digits, '.', '_' or '-' "
                "(see recovery_key())"
            )
        return self.root / f"{key}.npz", self.root / f"{key}.json"

    def save(
        self,
        key: str,
        labels: np.ndarray,
        geometry_dict: dict[str, Any],
        classes_dict: dict[str, Any],
        source_path: str | os.PathLike | None = None,
    ) -> RecoveryEntry:
        """Save (or replace) the state under ``key``.

        Parameters
        ----------
        key
            From :func:`recovery_key`.
        labels
            The label array (any integer dtype; converted with ``numpy.asarray``).
        geometry_dict
            ``Geometry.to_dict()``.
        classes_dict
            ``LabelMap.classes_to_dict()`` (``{"1": {"name", "colour"}}``).
        source_path
            The image (or label file) the labels belong to.

        Returns
        -------
        RecoveryEntry
            What was written.
        """
        npz_path, json_path = self._paths(key)
        arr = np.ascontiguousarray(np.asarray(labels))
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise TypeError(f"labels must be an integer array, got dtype {arr.dtype}")
        self.root.mkdir(parents=True, exist_ok=True)
        saved_at = time.time()
        meta = {
            "format_version": FORMAT_VERSION,
            "key": key,
            "saved_at": saved_at,
            "source_path": None if source_path is None else str(source_path),
            "shape": list(arr.shape),
            "dtype": arr.dtype.str,
            "sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
            "geometry": geometry_dict,
            "classes": classes_dict,
        }
        text = json.dumps(meta, default=_json_default, indent=1).encode()
        _atomic_write(npz_path, lambda f: np.savez_compressed(f, labels=arr))
        _atomic_write(json_path, lambda f: f.write(text))
        return self._entry(meta, npz_path)

    def _entry(self, meta: dict[str, Any], npz_path: Path) -> RecoveryEntry:
        return RecoveryEntry(
            key=meta["key"],
            saved_at=float(meta["saved_at"]),
            source_path=meta.get("source_path"),
            shape=tuple(meta["shape"]),
            dtype=meta["dtype"],
            classes=dict(meta.get("classes") or {}),
            path=npz_path,
        )

    def _read_meta(self, key: str) -> tuple[dict[str, Any], Path]:
        npz_path, json_path = self._paths(key)
        if not json_path.exists() or not npz_path.exists():
            raise CxsegError(f"no recovery entry {key!r} in {self.root}")
        try:
            meta = json.loads(json_path.read_text())
        except (OSError, ValueError) as exc:
            raise CxsegError(f"recovery file {json_path} is unreadable: {exc}") from exc
        return meta, npz_path

    def list(self) -> list[RecoveryEntry]:
        """Saved states, newest first (unreadable or half-written entries are skipped)."""
        if not self.root.is_dir():
            return []
        out = []
        for json_path in self.root.glob("*.json"):
            try:
                meta, npz_path = self._read_meta(json_path.stem)
                out.append(self._entry(meta, npz_path))
            except (CxsegError, ValueError, KeyError, TypeError):
                continue
        return sorted(out, key=lambda e: e.saved_at, reverse=True)

    def load(self, key: str) -> Recovered:
        """Bring back the state saved under ``key``.

        Raises
        ------
        CxsegError
            When there is no such entry, or its files are damaged (the message names them).
        """
        meta, npz_path = self._read_meta(key)
        try:
            with np.load(npz_path, allow_pickle=False) as data:
                labels = data["labels"]
        except (OSError, ValueError, KeyError) as exc:
            raise CxsegError(f"recovery file {npz_path} is unreadable: {exc}") from exc
        if hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest() != meta.get("sha256"):
            raise CxsegError(f"recovery file {npz_path} does not match its checksum (damaged)")
        return Recovered(
            key=key,
            labels=labels,
            geometry=meta.get("geometry") or {},
            classes=meta.get("classes") or {},
            source_path=meta.get("source_path"),
            saved_at=float(meta["saved_at"]),
        )

    def discard(self, key: str) -> bool:
        """Delete the entry (both files); ``True`` when something was deleted."""
        npz_path, json_path = self._paths(key)
        found = False
        for p in (json_path, npz_path):  # the JSON first: without it the entry is invisible
            try:
                p.unlink()
                found = True
            except FileNotFoundError:
                pass
        return found


# ---------------------------------------------------------------------- saved to a file

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

    A label map built from a layer (``layers.layer_to_label_map``) carries the layer's name
    and source in its ``meta``; the key is the one the autosaver uses for that layer. ``None``
    for a label map without a name (e.g. a model's output written by the command line).
    """
    meta = getattr(label_map, "meta", None) or {}
    name = meta.get("name")
    if not name:
        return None
    source = meta.get("source_path") or meta.get("reference_image_path") or None
    return recovery_key(source, str(name))


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
    found = (store or RecoveryStore()).discard(key)
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
