"""Files <-> :class:`~napari_cxseg.images.Image` / :class:`~napari_cxseg.images.LabelMap`.

``read`` dispatches on the file or folder (NIfTI, DICOM series/radiograph/SEG, PNG/JPEG, MSD
task), ``detect_format`` is the cheap check the napari reader uses to claim a path, and
``write_labels`` dispatches on the target's extension. No Qt or napari import here; format
libraries are imported when a file is read.

Every reader checks the size its header implies against the file and the memory budget
before it allocates (:mod:`.limits`); radiographs are held in the standard display that their
DICOM PatientOrientation or EXIF orientation asks for (:mod:`.orientation`); a label sidecar is
keyed to the exact file it describes and never decides on its own what a file is
(:mod:`.sidecar`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..images import CxsegError, Image, LabelMap
from .atomic import SEG_SOP_CLASS

__all__ = ["detect_format", "read", "write_labels", "CxsegError"]

#: Options :func:`read` understands (each format uses the ones that apply to it).
READ_OPTIONS = frozenset({"as_labels", "channel_names", "modality", "case", "section", "series_uid"})

#: Projection radiography: opened as a 2D image in its detector plane.
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "MG", "XR", "XA", "RF", "IO", "PX"})
RADIOGRAPH_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.1",  # CR
        "1.2.840.10008.5.1.4.1.1.1.1",  # DX for presentation
        "1.2.840.10008.5.1.4.1.1.1.1.1",  # DX for processing
        "1.2.840.10008.5.1.4.1.1.1.2",  # MG for presentation
        "1.2.840.10008.5.1.4.1.1.1.2.1",  # MG for processing
    }
)
_MAX_DICOM_PROBES = 64


def _lower_name(path: Path) -> str:
    return path.name.lower()


def _is_nifti_name(name: str) -> bool:
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _nifti_magic(head: bytes) -> bool:
    """NIfTI-1/2 header: ``sizeof_hdr`` 348/540 (either byte order) and the magic string."""
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return head[:4] in ((348).to_bytes(4, "little"), (348).to_bytes(4, "big"))
    if len(head) >= 12 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return head[:4] in ((540).to_bytes(4, "little"), (540).to_bytes(4, "big"))
    return False


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _folder_has_dicom(folder: Path) -> bool:
    try:
        with os.scandir(folder) as it:
            for i, entry in enumerate(it):
                if i >= _MAX_DICOM_PROBES:
                    break
                if not entry.is_file() or entry.name.startswith("."):
                    continue
                if entry.name.lower().endswith(".dcm") or _is_dicom_file(Path(entry.path)):
                    return True
    except OSError:
        return False
    return False


def detect_format(path: str | os.PathLike) -> str | None:
    """The format of a file or folder from its name and first bytes (cheap; never raises).

    Parameters
    ----------
    path
        A file or folder.

    Returns
    -------
    str or None
        ``"nifti"``, ``"dicom"`` (a DICOM file, or a folder holding DICOM files), ``"png"``,
        ``"jpeg"``, ``"msd"`` (a folder with ``dataset.json``, or that file), or ``None``.
    """
    from .raster import raster_kind

    try:
        p = Path(path)
        if p.is_dir():
            if (p / "dataset.json").is_file():
                return "msd"
            return "dicom" if _folder_has_dicom(p) else None
        if not p.is_file():
            return None
        name = _lower_name(p)
        if name == "dataset.json":
            return "msd"
        if _is_nifti_name(name):
            # claimed even when broken, so that reading it says what is wrong with the file
            return "nifti"
        if _is_dicom_file(p):
            return "dicom"
        kind = raster_kind(p)
        if kind is not None:
            return kind
        # a known extension with unreadable content is still ours: reading names the problem
        return _guess_from_name(p)
    except Exception:  # never raises: a reader probe must not break napari's open
        return None


def _guess_from_name(p: Path) -> str | None:
    name = _lower_name(p)
    if _is_nifti_name(name):
        return "nifti"
    if name.endswith(".png"):
        return "png"
    if name.endswith((".jpg", ".jpeg")):
        return "jpeg"
    if name.endswith(".dcm"):
        return "dicom"
    return None


def read(
    path: str | os.PathLike | Sequence[str | os.PathLike], **options: Any
) -> list[Image | LabelMap]:
    """Read a file or folder into images and label maps.

    Parameters
    ----------
    path
        A NIfTI file; a DICOM folder or file (SEG, radiograph, or one slice of a CT/MR series,
        which opens the whole series from its folder); a list of DICOM slice files (one
        series); a PNG/JPEG; an MSD task folder or its ``dataset.json``.
    **options
        ``as_labels`` (NIfTI, PNG/JPEG), ``channel_names`` and ``modality`` (NIfTI), ``case`` and
        ``section`` (MSD: index or name; default the first training case), ``series_uid`` (DICOM
        folder).

    Returns
    -------
    list of Image or LabelMap

    Raises
    ------
    CxsegError
        Missing or unreadable input, unknown format (the message names the file).
    TypeError
        For an option name :func:`read` does not know.
    """
    unknown = set(options) - READ_OPTIONS
    if unknown:
        raise TypeError(f"unknown read option(s): {', '.join(sorted(unknown))}")
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return _read_dicom_files([Path(f) for f in path], options.get("series_uid"))
        path = path[0]
    p = Path(path)
    try:
        exists, regular_or_dir = p.exists(), p.is_file() or p.is_dir()
    except OSError as e:  # a name too long, a loop of links ...
        raise CxsegError(f"cannot read {p}: {e.strerror or e}") from None
    if not exists:
        raise CxsegError(f"no such file or folder: {p}")
    if not regular_or_dir:  # reading a device or a pipe would never end
        raise CxsegError(f"cannot read {p}: it is not a regular file or a folder (a device, pipe or socket)")
    fmt = detect_format(p) or (None if p.is_dir() else _guess_from_name(p))
    if fmt is None:
        what = "folder" if p.is_dir() else "file"
        raise CxsegError(
            f"cannot read {p}: not a NIfTI, DICOM, PNG/JPEG {what} or an MSD task folder"
        )
    if fmt == "nifti":
        from .nifti import read_nifti

        return [
            read_nifti(
                p,
                as_labels=options.get("as_labels"),
                channel_names=options.get("channel_names"),
                modality=options.get("modality", ""),
            )
        ]
    if fmt in ("png", "jpeg"):
        from .raster import read_raster

        return [read_raster(p, as_labels=options.get("as_labels"))]
    if fmt == "msd":
        from .msd import read_msd

        return read_msd(p, case=options.get("case"), section=options.get("section"))
    return _read_dicom(p, options.get("series_uid"))


def _as_list(result: Any) -> list[Image | LabelMap]:
    return list(result) if isinstance(result, list | tuple) else [result]


def _read_dicom_files(files: list[Path], series_uid: str | None) -> list[Image | LabelMap]:
    """Several files: the slices of one DICOM series."""
    if not files:
        raise CxsegError("nothing to read: the list of files is empty")
    for f in files:
        if not f.is_file():
            raise CxsegError(f"no such file: {f}")
        if detect_format(f) != "dicom":
            raise CxsegError(f"cannot read {f} with the other files: only DICOM slices are read together")
    from .dicom_series import read_dicom_series

    return _as_list(read_dicom_series([str(f) for f in files], series_uid=series_uid))


def _read_dicom(p: Path, series_uid: str | None) -> list[Image | LabelMap]:
    """Route a DICOM folder or file to the series, radiograph or SEG reader."""
    if p.is_dir():
        from .dicom_series import read_dicom_series

        return _as_list(read_dicom_series(str(p), series_uid=series_uid))
    from .dicom_header import dcmread, integer

    try:
        ds = dcmread(p, stop_before_pixels=True, force=p.name.lower().endswith(".dcm"))
    except CxsegError:
        raise
    except Exception as e:  # InvalidDicomError, truncated files ...
        raise CxsegError(f"cannot read {p} as DICOM: {e}") from e
    sop = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "")).upper()
    if sop == SEG_SOP_CLASS or modality == "SEG":
        from .dicom_seg import read_dicom_seg

        return _as_list(read_dicom_seg(str(p)))
    if modality in RADIOGRAPH_MODALITIES or sop in RADIOGRAPH_SOP_CLASSES:
        from .dicom_radiograph import read_radiograph

        return _as_list(read_radiograph(str(p)))
    frames = integer(ds, "NumberOfFrames", p, 1, lo=1)
    in_patient_space = "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds
    if frames > 1 and ("PerFrameFunctionalGroupsSequence" in ds or in_patient_space):
        from .dicom_series import read_dicom_series

        return _as_list(read_dicom_series([str(p)], series_uid=series_uid))
    if in_patient_space:
        from .dicom_series import read_dicom_series

        uid = series_uid or (str(ds.SeriesInstanceUID) if "SeriesInstanceUID" in ds else None)
        return _as_list(read_dicom_series(str(p.parent), series_uid=uid))
    from .dicom_radiograph import read_radiograph

    return _as_list(read_radiograph(str(p)))


def write_labels(
    label_map: LabelMap, path: str | os.PathLike, overwrite: bool = False
) -> list[str]:
    """Write a label map; the format follows the extension.

    Parameters
    ----------
    label_map
        The labels (their geometry decides voxel order and affine).
    path
        ``.nii``/``.nii.gz`` (NIfTI in the source file's geometry), ``.png`` (2D class ids) or
        ``.dcm`` (DICOM SEG).
    overwrite
        Replace an existing label file. A source image is never replaced.

    Returns
    -------
    list of str
        Files written (the label file and its sidecar, or the SEG file).

    Raises
    ------
    CxsegError
        Unsupported extension, unsafe target or failed write (nothing is written then).
    """
    if not isinstance(label_map, LabelMap):
        raise TypeError(f"write_labels needs a LabelMap, got {type(label_map).__name__}")
    p = Path(path)
    name = _lower_name(p)
    if _is_nifti_name(name):
        from .nifti import write_nifti_labels

        files = write_nifti_labels(label_map, p, overwrite=overwrite)
    elif name.endswith(".png"):
        from .raster import write_png_labels

        files = write_png_labels(label_map, p, overwrite=overwrite)
    elif name.endswith(".dcm"):
        from .dicom_seg import write_dicom_seg

        files = [str(f) for f in write_dicom_seg(label_map, str(p), overwrite=overwrite)]
    else:
        raise CxsegError(
            f"cannot write labels to {p}: use a .nii.gz, .nii, .png (2D) or .dcm (DICOM SEG) name"
        )
    try:  # the saved work needs no crash-recovery copy any more
        from ..editing.recovery import note_saved

        note_saved(label_map)
    except Exception as exc:  # a cache problem must not turn a good save into an error
        import warnings

        warnings.warn(f"saved {p}, but its recovery copy could not be discarded: {exc}", stacklevel=2)
    return files
