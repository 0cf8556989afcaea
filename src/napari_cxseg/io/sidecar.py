"""Class names, colours and geometry of a label file, kept beside it in a sidecar.

A sidecar is keyed to the exact file it describes: ``<full file name>.labels.json`` (for
``lungs.png``: ``lungs.png.labels.json``), and it records that file's name, size and SHA-256::

    {"sidecar": "napari-cxseg labels", "version": 2,
     "file": "lungs.png", "size": 1234, "sha256": "<hex digest of lungs.png>",
     "classes": {"1": {"name": "right lung", "colour": "#1f77b4"}},
     "geometry": Geometry.to_dict(),          # PNG: also "spacing": [row_mm, col_mm]
     "reference_image": "/path/of/the/image"}

A sidecar whose ``file``, ``size`` or ``sha256`` does not match the file beside it is ignored
(the reason is kept, see :func:`find_sidecar`); hand-written sidecars may leave out ``size`` and
``sha256``, never a wrong name. Earlier versions wrote ``<stem>.labels.json`` (``lungs.labels.json``)
for ``.png``/``.nii``/``.nii.gz`` label files; such a sidecar is still read for the one file of
that stem and those suffixes that it can describe, never for a JPEG, a DICOM file or when two
candidates share the stem.

A sidecar never decides what a file is on its own: it may only confirm that a lossless integer
file holds labels when all of its values are classes the sidecar names and it is made of regions
(:func:`sidecar_confirms_labels`), and the writers' overwrite rules (``atomic.check_target``) use
the same test, so a sidecar cannot make an image read as labels or become writable.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..images import CxsegError, LabelClass, LabelMap
from .label_names import (  # noqa: F401 - re-exported: readers import them from here
    LABEL_NAME_TOKENS,
    STEM_SUFFIXES,
    has_label_name,
    label_stem,
)
from .label_values import piecewise_constant, values_are_classes

SIDECAR_SUFFIX = ".labels.json"
SIDECAR_KIND = "napari-cxseg labels"
SIDECAR_VERSION = 2
#: The label files earlier versions wrote ``<stem>.labels.json`` for.
LEGACY_SUFFIXES = (".nii.gz", ".nii", ".png")


@dataclass
class SidecarLookup:
    """What :func:`find_sidecar` found beside a file.

    Attributes
    ----------
    data
        The sidecar content when it describes the file, else ``None``.
    path
        The sidecar considered (``None`` when there is none).
    reason
        Why the sidecar at ``path`` was not used (``None`` when it was, or there is none).
    legacy
        True for an earlier version's ``<stem>.labels.json``.
    """

    data: dict[str, Any] | None = None
    path: Path | None = None
    reason: str | None = None
    legacy: bool = False

    def as_meta(self) -> dict[str, Any] | None:
        """``{"path", "used", "reason", "legacy"}`` for ``meta["sidecar"]`` (``None`` if none)."""
        if self.path is None:
            return None
        return {
            "path": str(self.path),
            "used": self.data is not None,
            "reason": self.reason,
            "legacy": self.legacy,
        }


def sidecar_path(path: str | os.PathLike) -> Path:
    """Path of the sidecar that belongs to a label file.

    Parameters
    ----------
    path
        The label file (``.nii.gz``, ``.nii``, ``.png`` ...).

    Returns
    -------
    Path
        ``<folder>/<file name>.labels.json``.
    """
    p = Path(path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def legacy_sidecar_path(path: str | os.PathLike) -> Path:
    """Where earlier versions put a label file's sidecar: ``<folder>/<stem>.labels.json``.

    Parameters
    ----------
    path
        The label file.

    Returns
    -------
    Path
    """
    p = Path(path)
    return p.with_name(label_stem(p) + SIDECAR_SUFFIX)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, hex.

    Parameters
    ----------
    path
        Any file.

    Returns
    -------
    str
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_json(sc: Path) -> tuple[dict[str, Any] | None, str | None]:
    from .documents import load_json
    from .limits import MAX_SIDECAR_BYTES, human

    try:
        size = sc.stat().st_size
    except OSError as e:
        return None, f"it cannot be read ({e.strerror or e})"
    if size > MAX_SIDECAR_BYTES:
        return None, f"it is {human(size)}, more than a sidecar may be ({human(MAX_SIDECAR_BYTES)})"
    try:  # bounded: a regular file, UTF-8, nesting (see documents)
        data = load_json(sc, MAX_SIDECAR_BYTES, "a label sidecar")
    except CxsegError as e:
        return None, f"it is not readable JSON ({e})"
    if not isinstance(data, dict):
        return None, "it is not a JSON object"
    return data, None


def _keyed_mismatch(data: dict[str, Any], path: Path) -> str | None:
    """Why a sidecar's ``file``/``size``/``sha256`` do not describe ``path`` (``None`` if they do)."""
    name = data.get("file")
    if name is not None and str(name) != path.name:
        return f"it describes {name!r}, not {path.name!r}"
    size = data.get("size")
    try:
        real = path.stat().st_size
    except OSError as e:
        return f"the file cannot be read ({e})"
    if size is not None and (not isinstance(size, int) or size != real):
        return f"it describes a file of {size} bytes, {path.name} has {real}"
    digest = data.get("sha256")
    if digest is not None and str(digest).lower() != file_digest(path):
        return f"{path.name} changed after the sidecar was written (SHA-256 differs)"
    return None


def _same_path(a: Any, b: Path) -> bool:
    if not a:
        return False
    try:
        pa = Path(str(a))
        if pa.exists() and b.exists():
            return os.path.samefile(pa, b)
        return pa.resolve() == b.resolve()
    except (OSError, ValueError):
        return False


def _images_named(data: dict[str, Any]) -> list[Any]:
    """Paths a sidecar names as images (its reference image, its geometry's image source)."""
    out = [data.get("reference_image")]
    geom = data.get("geometry")
    src = geom.get("source") if isinstance(geom, dict) else None
    if isinstance(src, dict) and src.get("role") == "image":
        out.append(src.get("path"))
    return [p for p in out if p]


def _legacy_mismatch(data: dict[str, Any], path: Path) -> str | None:
    """Why an earlier version's ``<stem>.labels.json`` does not unambiguously describe ``path``."""
    if "file" in data:  # a keyed sidecar under the old name: its own key decides
        return _keyed_mismatch(data, path)
    low = path.name.lower()
    if not low.endswith(LEGACY_SUFFIXES):
        return (
            "sidecars named <stem>.labels.json describe .png/.nii/.nii.gz label files only, "
            f"not {path.name}"
        )
    if any(_same_path(p, path) for p in _images_named(data)):
        return f"it names {path.name} as the image its labels belong to"
    stem = label_stem(path)
    others: dict[tuple[int, int], str] = {}
    try:
        seen = {(path.stat().st_dev, path.stat().st_ino)}
    except OSError:
        seen = set()
    for suffix in LEGACY_SUFFIXES:  # the siblings an earlier version could have described
        for sib in (path.with_name(stem + suffix), path.with_name(stem + suffix.upper())):
            try:
                st = sib.stat()
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)  # one file, however a case-insensitive disk spells it
            if key in seen or not sib.is_file():
                continue
            seen.add(key)
            if any(_same_path(p, sib) for p in _images_named(data)):
                continue  # the image the labels were drawn on, not the label file
            others[key] = sib.name
    if others:
        return (
            f"it could describe {path.name} or {', '.join(sorted(others.values()))}; rename it to "
            f"<file name>{SIDECAR_SUFFIX} beside the label file it belongs to"
        )
    return None


def find_sidecar(path: str | os.PathLike) -> SidecarLookup:
    """The sidecar of a file, with the reason when one lies beside it but does not describe it.

    Parameters
    ----------
    path
        The label (or image) file, not the sidecar itself.

    Returns
    -------
    SidecarLookup
        ``data`` is set only for a sidecar that matches the file (see the module docstring).
    """
    p = Path(path)
    exact = sidecar_path(p)
    if exact.is_file():
        data, reason = _load_json(exact)
        if data is not None:
            reason = _keyed_mismatch(data, p)
        return SidecarLookup(None if reason else data, exact, reason, legacy=False)
    old = legacy_sidecar_path(p)
    if old != exact and old.is_file():
        data, reason = _load_json(old)
        if data is not None:
            reason = _legacy_mismatch(data, p)
        return SidecarLookup(None if reason else data, old, reason, legacy=True)
    return SidecarLookup()


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The parsed sidecar of a label file, or ``None`` when none describes it.

    Parameters
    ----------
    path
        The label file (not the sidecar itself).

    Returns
    -------
    dict or None
        The JSON content of a matching sidecar (:func:`find_sidecar` says why one was ignored).
    """
    return find_sidecar(path).data


def note_sidecar(lookup: SidecarLookup, meta: dict[str, Any]) -> None:
    """Record a sidecar lookup in a reader's ``meta`` (``meta["sidecar"]``, and a warning when a
    sidecar named after the file was ignored).

    Parameters
    ----------
    lookup
        What :func:`find_sidecar` returned.
    meta
        The image's or label map's ``meta`` (its ``"warnings"`` list is created if needed).
    """
    info = lookup.as_meta()
    if info is None:
        return
    meta["sidecar"] = info
    if lookup.reason and not lookup.legacy:
        meta.setdefault("warnings", []).append(
            f"sidecar {lookup.path} ignored: {lookup.reason}"
        )


def classes_from_sidecar(data: dict[str, Any] | None) -> dict[int, LabelClass]:
    """Class names and colours from a parsed sidecar (``{}`` when it has none).

    Parameters
    ----------
    data
        What :func:`read_sidecar` returned.

    Returns
    -------
    dict
        ``{id: LabelClass}``.
    """
    if not data or not isinstance(data.get("classes"), dict):
        return {}
    try:
        classes = LabelMap.classes_from_dict(data["classes"])
    except (TypeError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in classes.items() if k > 0}


def sidecar_confirms_labels(arr: np.ndarray, data: dict[str, Any] | None) -> bool:
    """Whether a matching sidecar may make ``arr`` (lossless, single-channel data) a label map.

    Parameters
    ----------
    arr
        The file's values (spatial axes only).
    data
        The sidecar content.

    Returns
    -------
    bool
        True only when the sidecar names classes, every non-zero value of ``arr`` is one of
        them, and ``arr`` is made of regions (see :func:`~.label_values.piecewise_constant`):
        an image with a forged sidecar stays an image.
    """
    classes = classes_from_sidecar(data)
    if not classes:
        return False
    return values_are_classes(arr, frozenset(classes)) and piecewise_constant(arr)


def sidecar_dict(
    label_map: LabelMap,
    geometry: dict[str, Any] | None = None,
    reference_image: str | None = None,
    described: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The sidecar content for a label map.

    Parameters
    ----------
    label_map
        Gives the classes; its geometry is used when ``geometry`` is not given.
    geometry
        Geometry dict to store (e.g. with an added ``spacing``).
    reference_image
        Path of the image the labels belong to.
    described
        The written label file: its name, size and SHA-256 key the sidecar to it.

    Returns
    -------
    dict
        JSON-ready content.
    """
    geom = geometry if geometry is not None else label_map.geometry.to_dict()
    out: dict[str, Any] = {"sidecar": SIDECAR_KIND, "version": SIDECAR_VERSION}
    if described is not None:
        d = Path(described)
        out.update(file=d.name, size=d.stat().st_size, sha256=file_digest(d))
    out.update(
        classes=label_map.classes_to_dict(), geometry=geom, reference_image=reference_image
    )
    return out


def write_sidecar(
    label_map: LabelMap,
    path: str | os.PathLike,
    geometry: dict[str, Any] | None = None,
    reference_image: str | None = None,
) -> str:
    """Write the sidecar of the (already written) label file ``path`` atomically.

    Parameters
    ----------
    label_map
        The label map written to ``path``.
    path
        The label file; the sidecar goes beside it as ``<file name>.labels.json`` and records
        its name, size and SHA-256. An earlier version's ``<stem>.labels.json`` for the same
        file is left alone (it is no longer read once the new one exists).
    geometry
        Geometry dict to store instead of ``label_map.geometry.to_dict()``.
    reference_image
        Path of the image the labels belong to.

    Returns
    -------
    str
        The sidecar path.

    Raises
    ------
    CxsegError
        When ``path`` does not exist or the sidecar cannot be written.
    """
    from .atomic import atomic_write

    p = Path(path)
    if not p.is_file():
        raise CxsegError(f"cannot write the sidecar of {p}: the label file does not exist")
    sc = sidecar_path(p)
    text = json.dumps(sidecar_dict(label_map, geometry, reference_image, described=p), indent=2)

    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")

    atomic_write(sc, _write)
    return str(sc)
