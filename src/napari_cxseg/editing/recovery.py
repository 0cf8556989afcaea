"""Autosave and recovery of label edits (no timers here: the widget decides when to save).

A recovery copy belongs to ONE layer in ONE run of napari: its key is a readable stem (file and
layer name) plus the run's :func:`session_id` and a per-layer id, never the layer name alone, so
a new layer with the same name (in this run or a later one) never overwrites an earlier copy.

Each entry is a manifest ``<key>.json`` (when, which run and layer, source, geometry, classes,
the array's checksum and the name of its array file) and an array file ``<key>~<token>.npz``.
A save writes a NEW array file under a new name (fsynced), then switches the manifest with an
atomic rename (fsynced), and only then deletes the previous array file: a crash at any point
leaves either the previous entry or the new one, complete, and never a half-written one.

A copy is only worth keeping while its edits are unsaved: :func:`note_saved` (in
:mod:`.saved_state`, importable from here) deletes a layer's copy once it is written to a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..images import CxsegError

FORMAT_VERSION = 2
_KEY_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ID_OK = re.compile(r"^[A-Za-z0-9]{1,40}$")
_TOKEN_OK = re.compile(r"^[0-9a-f]{8,40}$")
_SESSION_OK = re.compile(r"^[0-9]{14}[0-9a-f]{6}$")


def _new_session_id() -> str:
    return time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(3)


_SESSION = {"id": _new_session_id()}


def session_id() -> str:
    """The id of this run of napari (this process): start time + random, letters and digits."""
    return _SESSION["id"]


def start_new_session() -> str:
    """Give this process a new session id and return it.

    Copies written before count as an earlier run's afterwards. Meant for tests and scripts
    that simulate a restart.
    """
    _SESSION["id"] = _new_session_id()
    return _SESSION["id"]


def default_recovery_dir() -> Path:
    """``$CXSEG_CACHE_DIR/recovery``, else ``$XDG_CACHE_HOME`` or ``~/.cache`` + ``napari-cxseg/recovery``."""
    env = os.environ.get("CXSEG_CACHE_DIR")
    if env:
        return Path(env) / "recovery"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "napari-cxseg" / "recovery"


def recovery_key(
    layer_id: str,
    source_path: str | os.PathLike | None = None,
    layer_name: str | None = None,
    session: str | None = None,
) -> str:
    """File-name-safe key of one layer's copy in one run: ``<stem>-<session>-<layer id>``.

    Parameters
    ----------
    layer_id
        An id unique among the layers of this run (letters and digits, e.g. a uuid's hex).
    source_path, layer_name
        Only make the key readable (the file's stem and the layer's name); they do not make it
        unique: two layers of the same name and file get different keys.
    session
        The run's id; :func:`session_id` when ``None``.

    Returns
    -------
    str
        The key (at most 128 characters of letters, digits, ``.``, ``_`` and ``-``).
    """
    session = session_id() if session is None else str(session)
    for what, value in (("layer id", layer_id), ("session id", session)):
        if not isinstance(value, str) or not _ID_OK.match(value):
            raise ValueError(f"invalid {what} {value!r}: use 1-40 letters or digits")
    stem = ""
    if source_path is not None:
        stem = Path(str(source_path)).name
        for suffix in (".gz", ".nii", ".nrrd", ".dcm", ".png", ".jpg", ".jpeg"):
            stem = stem.removesuffix(suffix)
    text = "-".join(t for t in (stem, layer_name or "") if t) or "labels"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:60] or "labels"
    return f"{slug}-{session}-{layer_id}"


@dataclass(frozen=True)
class RecoveryEntry:
    """What :meth:`RecoveryStore.list` reports about one saved state."""

    key: str
    saved_at: float  # seconds since the epoch
    source_path: str | None
    shape: tuple[int, ...]
    dtype: str
    classes: dict[str, Any]
    path: Path  # the array file
    session_id: str | None = None  # the run that wrote it (None: a format-1 copy)
    layer_id: str | None = None
    layer_name: str | None = None

    @property
    def saved_at_text(self) -> str:
        """Local time of the save, ``YYYY-MM-DD HH:MM:SS``."""
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at))

    @property
    def from_this_session(self) -> bool:
        """Whether this run of napari wrote it."""
        return self.session_id == session_id()


@dataclass
class Recovered:
    """A state brought back by :meth:`RecoveryStore.load`."""

    key: str
    labels: np.ndarray
    geometry: dict[str, Any]
    classes: dict[str, Any]
    source_path: str | None
    saved_at: float
    layer_name: str | None = None

    def to_label_map(self):
        """The state as a :class:`~napari_cxseg.images.LabelMap` (geometry and classes rebuilt)."""
        from ..geometry import Geometry
        from ..images import LabelMap

        geometry = Geometry.from_dict(self.geometry)
        meta = {"recovered_from": self.key}
        if self.source_path:
            meta["reference_image_path"] = self.source_path
        return LabelMap(self.labels, geometry, LabelMap.classes_from_dict(self.classes), meta)


def _key_ids(key: str) -> tuple[str | None, str | None]:
    """``(session id, layer id)`` of a key made by :func:`recovery_key` (else ``None``s)."""
    parts = key.rsplit("-", 2)
    if len(parts) == 3 and _SESSION_OK.match(parts[1]) and _ID_OK.match(parts[2]):
        return parts[1], parts[2]
    return None, None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} cannot be stored in a recovery file")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, write: Callable[[Any], Any]) -> None:
    """Write ``path`` through a temporary file in its folder: fsync, then rename into place."""
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

    def _manifest(self, key: str) -> Path:
        if not isinstance(key, str) or not _KEY_OK.match(key):
            raise ValueError(
                f"invalid recovery key {key!r}: use letters, digits, '.', '_' or '-' "
                "(see recovery_key())"
            )
        return self.root / f"{key}.json"

    def _array_files(self, key: str) -> list[Path]:
        """Every array file of ``key`` on disk (the current one, and leftovers of crashes)."""
        found = [p for p in self.root.glob(f"{key}~*.npz") if p.is_file()]
        legacy = self.root / f"{key}.npz"  # format 1
        return [*found, legacy] if legacy.is_file() else found

    def _array_path(self, key: str, meta: dict[str, Any]) -> Path:
        """The array file a manifest names (checked to be this key's, inside the folder)."""
        name = meta.get("array_file")
        if name is None:  # format 1: <key>.npz
            return self.root / f"{key}.npz"
        prefix = f"{key}~"
        token = str(name)[len(prefix) : -len(".npz")] if str(name).startswith(prefix) else ""
        if not str(name).endswith(".npz") or not _TOKEN_OK.match(token):
            raise CxsegError(f"recovery manifest {self._manifest(key)} names a bad file {name!r}")
        return self.root / str(name)

    def _write_manifest(self, path: Path, text: bytes) -> None:
        """Switch an entry to its new state: one atomic rename (the last step of a save)."""
        _write_file(path, lambda f: f.write(text))
        _fsync_dir(path.parent)

    def save(
        self,
        key: str,
        labels: np.ndarray,
        geometry_dict: dict[str, Any],
        classes_dict: dict[str, Any],
        source_path: str | os.PathLike | None = None,
        layer_name: str | None = None,
    ) -> RecoveryEntry:
        """Save (or replace) the state under ``key``; the previous state survives any crash.

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
        layer_name
            The layer's name now (shown when the copy is offered).

        Returns
        -------
        RecoveryEntry
            What was written.
        """
        json_path = self._manifest(key)
        previous = self._previous_array(key)
        arr = np.ascontiguousarray(np.asarray(labels))
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise TypeError(f"labels must be an integer array, got dtype {arr.dtype}")
        self.root.mkdir(parents=True, exist_ok=True)
        saved_at = time.time()
        token = f"{time.time_ns():x}{secrets.token_hex(4)}"
        array_path = self.root / f"{key}~{token}.npz"
        session, layer_id = _key_ids(key)
        meta = {
            "format_version": FORMAT_VERSION,
            "key": key,
            "session_id": session,
            "layer_id": layer_id,
            "layer_name": layer_name,
            "saved_at": saved_at,
            "source_path": None if source_path is None else str(source_path),
            "shape": list(arr.shape),
            "dtype": arr.dtype.str,
            "sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
            "geometry": geometry_dict,
            "classes": classes_dict,
            "array_file": array_path.name,
        }
        text = json.dumps(meta, default=_json_default, indent=1).encode()
        # 1. the new array under a new name; the manifest still names the previous one
        _write_file(array_path, lambda f: np.savez_compressed(f, labels=arr))
        try:
            # 2. switch the manifest (atomic rename): from here on the new state is the entry
            self._write_manifest(json_path, text)
        except BaseException:
            array_path.unlink(missing_ok=True)
            raise
        # 3. the previous array file is garbage now
        if previous is not None and previous != array_path:
            previous.unlink(missing_ok=True)
        return self._entry(meta, array_path)

    def _previous_array(self, key: str) -> Path | None:
        """The array file the current manifest of ``key`` names (``None`` without one)."""
        try:
            meta = json.loads(self._manifest(key).read_text())
            return self._array_path(key, meta) if isinstance(meta, dict) else None
        except (OSError, ValueError, CxsegError):
            return None

    def _entry(self, meta: dict[str, Any], array_path: Path) -> RecoveryEntry:
        return RecoveryEntry(
            key=meta["key"],
            saved_at=float(meta["saved_at"]),
            source_path=meta.get("source_path"),
            shape=tuple(meta["shape"]),
            dtype=meta["dtype"],
            classes=dict(meta.get("classes") or {}),
            path=array_path,
            session_id=meta.get("session_id"),
            layer_id=meta.get("layer_id"),
            layer_name=meta.get("layer_name"),
        )

    def _read_meta(self, key: str) -> tuple[dict[str, Any], Path]:
        json_path = self._manifest(key)
        if not json_path.exists():
            raise CxsegError(f"no recovery entry {key!r} in {self.root}")
        try:
            meta = json.loads(json_path.read_text())
        except (OSError, ValueError) as exc:
            raise CxsegError(f"recovery file {json_path} is unreadable: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("key") != key:
            raise CxsegError(f"recovery file {json_path} does not describe entry {key!r}")
        array_path = self._array_path(key, meta)
        if not array_path.is_file():
            raise CxsegError(f"recovery entry {key!r} lacks its array file {array_path}")
        return meta, array_path

    def list(self) -> list[RecoveryEntry]:
        """Saved states, newest first (unreadable or incomplete entries are skipped)."""
        if not self.root.is_dir():
            return []
        out = []
        for json_path in self.root.glob("*.json"):
            try:
                meta, array_path = self._read_meta(json_path.stem)
                out.append(self._entry(meta, array_path))
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
        meta, array_path = self._read_meta(key)
        try:
            with np.load(array_path, allow_pickle=False) as data:
                labels = data["labels"]
        except (OSError, ValueError, KeyError) as exc:
            raise CxsegError(f"recovery file {array_path} is unreadable: {exc}") from exc
        if hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest() != meta.get("sha256"):
            raise CxsegError(f"recovery file {array_path} does not match its checksum (damaged)")
        return Recovered(
            key=key,
            labels=labels,
            geometry=meta.get("geometry") or {},
            classes=meta.get("classes") or {},
            source_path=meta.get("source_path"),
            saved_at=float(meta["saved_at"]),
            layer_name=meta.get("layer_name"),
        )

    def discard(self, key: str) -> bool:
        """Delete the entry (manifest, then array files); ``True`` when something was deleted."""
        json_path = self._manifest(key)
        found = False
        try:  # the manifest first: without it the entry is invisible
            json_path.unlink()
            found = True
        except FileNotFoundError:
            pass
        if self.root.is_dir():
            for p in self._array_files(key):
                p.unlink(missing_ok=True)
                found = True
        return found


# the record of states written to files lives beside the store (names kept importable here)
from .saved_state import (  # noqa: E402
    add_saved_listener,
    is_saved,
    label_map_key,
    labels_digest,
    mark_saved,
    note_saved,
    remove_saved_listener,
    save_counter,
    saved_after,
)

__all__ = [  # the store, then the record of saves
    "FORMAT_VERSION", "Recovered", "RecoveryEntry", "RecoveryStore", "default_recovery_dir",
    "recovery_key", "session_id", "start_new_session",
    "add_saved_listener", "is_saved", "label_map_key", "labels_digest", "mark_saved",
    "note_saved", "remove_saved_listener", "save_counter", "saved_after",
]
