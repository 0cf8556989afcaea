"""Safe writing: atomic replacement and the rules about what a label writer may overwrite."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..images import CxsegError, LabelMap

#: Multi-part extensions kept on temporary files so format libraries still recognise them.
_KEEP_SUFFIXES = (".nii.gz", ".labels.json")


def _suffix(path: Path) -> str:
    low = path.name.lower()
    for s in _KEEP_SUFFIXES:
        if low.endswith(s):
            return path.name[-len(s) :]
    return path.suffix


def atomic_write(path: str | os.PathLike, write_fn: Callable[[str], None]) -> str:
    """Write a file so that readers see either the old or the complete new content.

    ``write_fn(tmp)`` writes the content to a temporary file in the target's folder (same
    extension, so libraries that pick the format from the name still work); the temporary file is
    flushed to disk and renamed over ``path``. On any failure the temporary file is removed and
    ``path`` is left as it was.

    Parameters
    ----------
    path
        The final file.
    write_fn
        Callable that writes the whole content to the path it is given.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    CxsegError
        When the folder is missing or not writable, or the write fails (names the file).
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise CxsegError(f"cannot write {target}: the folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(
            dir=folder, prefix=f".{target.name}.", suffix=".tmp" + _suffix(target)
        )
    except OSError as e:
        raise CxsegError(f"cannot write {target}: {e.strerror or e}") from e
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _copy_mode(target, tmp)
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, CxsegError):
            raise
        if isinstance(e, OSError):
            raise CxsegError(f"cannot write {target}: {e.strerror or e}") from e
        raise
    _fsync_dir(folder)
    return str(target)


def _copy_mode(target: Path, tmp: str) -> None:
    """Give the new file the old file's mode, or the usual umask-based one (mkstemp uses 0600)."""
    try:
        mode = target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    with contextlib.suppress(OSError):
        os.chmod(tmp, mode)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable where the platform allows it (not on Windows)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        pa, pb = Path(a), Path(b)
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
        return pa.resolve() == pb.resolve()
    except (OSError, ValueError):
        return False


def protected_paths(label_map: LabelMap) -> list[str]:
    """Files a label writer must never replace: the image(s) the label map belongs to.

    Parameters
    ----------
    label_map
        The label map about to be written.

    Returns
    -------
    list of str
        ``meta["reference_image_path"]``, and the geometry's source path (and DICOM files)
        when that source is an image rather than a label file.
    """
    out: list[str] = []
    ref = label_map.meta.get("reference_image_path")
    if ref:
        out.append(str(ref))
    src = label_map.geometry.source or {}
    role = src.get("role")
    is_image = role == "image" or (role is None and src.get("format") in ("dicom", "msd"))
    if is_image:
        if src.get("path"):
            out.append(str(src["path"]))
        out.extend(str(f) for f in src.get("dicom_files") or [])
        out.extend(str(f) for f in src.get("channel_files") or [])
    return out


def is_label_file(path: str | os.PathLike) -> bool:
    """True when an existing file holds a label map (so replacing it loses no image).

    Parameters
    ----------
    path
        An existing file.

    Returns
    -------
    bool
        NIfTI/PNG/JPEG: integer-valued class ids (see the readers' rules); DICOM: a SEG object.
        Anything unreadable or of another kind is not a label file.
    """
    from . import detect_format

    fmt = detect_format(path)
    try:
        if fmt == "nifti":
            from .nifti import nifti_holds_labels

            return nifti_holds_labels(path)
        if fmt in ("png", "jpeg"):
            from .raster import raster_holds_labels

            return raster_holds_labels(path)
        if fmt == "dicom":
            import pydicom

            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            return str(getattr(ds, "SOPClassUID", "")) == SEG_SOP_CLASS
    except Exception:
        return False
    return False


#: DICOM Segmentation Storage SOP class.
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def check_target(path: str | os.PathLike, label_map: LabelMap, overwrite: bool = False) -> None:
    """Refuse unsafe label writes before anything is written.

    Parameters
    ----------
    path
        Where the label map would be written.
    label_map
        The label map (its source image is protected).
    overwrite
        Allow replacing an existing *label* file.

    Raises
    ------
    CxsegError
        When ``path`` is the label map's source/reference image, an existing file that is not a
        label map, a folder, or an existing file while ``overwrite`` is False. The message names
        the file.
    """
    target = Path(path)
    for p in protected_paths(label_map):
        if _same_file(target, p):
            raise CxsegError(
                f"refusing to write labels over {target}: it is the source image of these labels"
            )
    if target.is_dir():
        raise CxsegError(f"cannot write labels to {target}: it is a folder")
    if not target.exists():
        return
    if not is_label_file(target):
        raise CxsegError(
            f"refusing to overwrite {target}: the existing file is not a label map "
            "(an image or another kind of file); choose another name"
        )
    if not overwrite:
        raise CxsegError(f"{target} already exists; pass overwrite=True to replace it")
