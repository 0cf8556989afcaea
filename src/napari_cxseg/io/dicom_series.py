"""DICOM CT/MR series -> :class:`~napari_cxseg.images.Image` in the LPS world frame.

A series is a stack of single-frame slices sharing ``SeriesInstanceUID``. Slices are sorted by
their position along the slice normal (``ImagePositionPatient . (row x column direction)``), not
by file name or ``InstanceNumber``; the stack must be regular (one orientation, one image size,
evenly spaced, no duplicates). One enhanced multi-frame CT/MR file is read as a volume too
(frame geometry by highdicom). The index->LPS affine comes from ``ImageOrientationPatient``,
``ImagePositionPatient`` and ``PixelSpacing``; the slice step is the vector between the first and
last slice positions, so a gantry-tilted stack keeps its shear. The stored array is then only
transposed/flipped (:func:`~napari_cxseg.geometry.held_geometry`) to follow the world axes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import Geometry, held_geometry, world_from_lps_affine
from ..images import CxsegError, Image

#: Media Storage SOP Class of a DICOMDIR (an index, not an image).
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"

#: DICOM Segmentation Storage SOP class.
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"

#: Relative tolerance on slice spacing regularity (same default as highdicom/ITK).
SPACING_RTOL = 0.01
#: Tolerance on direction cosines when comparing slice orientations.
ORIENTATION_ATOL = 1e-4


@dataclass
class SliceHeader:
    """Header facts of one slice file that sorting and validation need."""

    path: Path
    dataset: Any  # pydicom Dataset read with stop_before_pixels

    @property
    def series_uid(self) -> str:
        return str(self.dataset.get("SeriesInstanceUID", ""))


def read_header(path: str | Path) -> Any | None:
    """Read a DICOM header (no pixel data); ``None`` when the file is not DICOM.

    Parameters
    ----------
    path
        A file.

    Returns
    -------
    pydicom.Dataset or None
        ``None`` for non-DICOM files (no ``DICM`` preamble), DICOMDIR indexes and empty files.
    """
    from pydicom.errors import InvalidDicomError

    from .dicom_header import dcmread

    p = Path(path)
    try:
        if p.stat().st_size == 0:
            return None
        ds = dcmread(p, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, CxsegError):
        return None
    except Exception:  # noqa: BLE001 - a damaged header is "not a readable DICOM file" here
        return None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_CLASS:
        return None
    return ds


def _looks_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or (path.suffix.lower() == ".dcm" and len(head) > 0)


def _scan(files: Iterable[Path], left_out: list[tuple[Path, str | None]] | None = None) -> list[SliceHeader]:
    """Headers of the DICOM image files among ``files`` (others are skipped).

    ``left_out`` collects the files that look like DICOM but could not be read, and image
    objects without an image (a truncated slice: series uid ``None``), and other DICOM files
    without an image (with their series uid): a damaged slice of the series being read must
    not vanish without a word.
    """
    out = []
    for f in files:
        if not f.is_file():
            continue
        ds = read_header(f)
        if ds is None or "Rows" not in ds:  # not an image (SR, presentation state, ...)
            if left_out is None or f.name.upper() == "DICOMDIR":  # the folder's index
                continue
            if ds is None and _looks_dicom(f):
                left_out.append((f, None))
            elif ds is not None:
                sop = ds.get("SOPClassUID")
                damaged = sop is None or "Image Storage" in str(getattr(sop, "name", ""))
                left_out.append((f, None if damaged else str(ds.get("SeriesInstanceUID", ""))))
            continue
        if _is_seg(ds):  # a segmentation saved beside its series is not part of it
            continue
        out.append(SliceHeader(f, ds))
    return out


def _is_seg(ds: Any) -> bool:
    return str(ds.get("Modality", "")) == "SEG" or str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS


def _folder_files(folder: Path, recursive: bool) -> list[Path]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and not p.name.startswith("."))


def _group(headers: Sequence[SliceHeader]) -> dict[str, list[SliceHeader]]:
    groups: dict[str, list[SliceHeader]] = {}
    for h in headers:
        groups.setdefault(h.series_uid, []).append(h)
    return groups


def find_series(folder: str | Path, recursive: bool = False) -> dict[str, list[Path]]:
    """The DICOM image series in a folder.

    Reads headers only (``stop_before_pixels``); files that are not DICOM images (LIDC ``.xml``
    annotations, DICOMDIR, structured reports, text files) and DICOM SEG objects (label files,
    read with :func:`~napari_cxseg.io.dicom_seg.read_dicom_seg`) are ignored.

    Parameters
    ----------
    folder
        A folder of DICOM files.
    recursive
        Also look in sub-folders.

    Returns
    -------
    dict
        ``SeriesInstanceUID -> [files]`` (file lists sorted by name; series in order of their
        first file).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CxsegError(f"Not a folder: {folder}")
    groups = _group(_scan(_folder_files(folder, recursive)))
    return {uid: [h.path for h in hs] for uid, hs in groups.items()}


def describe_series(groups: dict[str, list[SliceHeader]]) -> str:
    """One line per series: uid, modality, description, number of files, one file name."""
    lines = []
    for uid, hs in groups.items():
        ds = hs[0].dataset
        desc = str(ds.get("SeriesDescription", "") or "(no description)")
        lines.append(
            f"  - {uid or '(no SeriesInstanceUID)'}: {ds.get('Modality', '?')} '{desc}', "
            f"{len(hs)} file(s), e.g. {hs[0].path.name}"
        )
    return "\n".join(lines)


def _select_headers(
    path_or_files: str | Path | Sequence[str | Path], series_uid: str | None,
    left_out: list[tuple[Path, str | None]] | None = None,
) -> tuple[list[SliceHeader], str]:
    """Headers of the one series to read, and the path to report as its source (``left_out``:
    see :func:`_scan`)."""
    if isinstance(path_or_files, (str, Path)):
        p = Path(path_or_files)
        if not p.exists():
            raise CxsegError(f"No such file or folder: {p}")
        if p.is_dir():
            headers = _scan(_folder_files(p, recursive=False), left_out)
            where = f"folder {p}"
        else:
            first = read_header(p)
            if first is None:
                raise CxsegError(
                    f"Not a readable DICOM file (empty, damaged or another format): {p}"
                )
            if "Rows" not in first:
                raise CxsegError(
                    f"DICOM file holds no image (SOP class {first.get('SOPClassUID', '?')}): {p}"
                )
            if _is_seg(first):
                raise CxsegError(
                    f"{p} is a DICOM SEG (labels), not an image series; open it as labels"
                )
            if series_uid is None:
                series_uid = str(first.get("SeriesInstanceUID", ""))
            # one file opens its whole series: its siblings with the same SeriesInstanceUID
            others = [f for f in _folder_files(p.parent, recursive=False) if f != p]
            headers = [SliceHeader(p, first), *_scan(others, left_out)]
            where = f"folder {p.parent}"
        source = str(p)
    else:
        files = [Path(f) for f in path_or_files]
        if not files:
            raise CxsegError("No DICOM files given")
        headers = []
        for f in files:
            ds = read_header(f)
            if ds is None:
                raise CxsegError(
                    f"Not a readable DICOM file (empty, damaged or another format): {f}"
                )
            if "Rows" in ds and not _is_seg(ds):
                headers.append(SliceHeader(f, ds))
        where = f"the {len(files)} given files (first {files[0]})"
        source = str(files[0].parent) if len({f.parent for f in files}) == 1 else str(files[0])
    if not headers:
        raise CxsegError(f"No DICOM image files in {where}")
    groups = _group(headers)
    if series_uid is not None:
        if series_uid not in groups:
            raise CxsegError(
                f"Series {series_uid} not found in {where}; series there:\n{describe_series(groups)}"
            )
        return groups[series_uid], source
    if len(groups) > 1:
        raise CxsegError(
            f"{where} holds {len(groups)} DICOM series; open one of them by selecting one of "
            f"its files, or pass series_uid=...:\n{describe_series(groups)}"
        )
    return next(iter(groups.values())), source


# ---------------------------------------------------------------------------- geometry
def slice_frame(ds: Any, path: Path | str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row direction, column direction and pixel spacing of one slice.

    Returns
    -------
    row_dir, col_dir : ndarray
        LPS unit vectors along which the column index and the row index grow
        (``ImageOrientationPatient[:3]`` and ``[3:]``).
    spacing : ndarray
        ``(between rows, between columns)`` in mm (``PixelSpacing``).
    """
    from .dicom_header import numbers

    for keyword in ("ImageOrientationPatient", "PixelSpacing"):
        if keyword not in ds:
            raise CxsegError(
                f"DICOM slice lacks {keyword} (ImageOrientationPatient/PixelSpacing are needed "
                f"for a volume): {path}"
            )
    iop = np.asarray(numbers(ds, "ImageOrientationPatient", path, 6), float)
    ps = np.asarray(numbers(ds, "PixelSpacing", path, 2, positive=True), float)
    row_dir, col_dir = iop[:3], iop[3:]
    norms = np.linalg.norm(row_dir), np.linalg.norm(col_dir)
    if min(norms) < 1e-6 or not np.isfinite(norms).all():
        raise CxsegError(f"Invalid ImageOrientationPatient {iop.tolist()} (a zero direction) in {path}")
    row_dir = row_dir / norms[0]
    col_dir = col_dir / norms[1]
    if np.linalg.norm(np.cross(row_dir, col_dir)) < 1e-3:
        raise CxsegError(
            f"Invalid ImageOrientationPatient {iop.tolist()} (row and column directions are "
            f"parallel) in {path}"
        )
    return row_dir, col_dir, ps


def slice_position(ds: Any, path: Path | str = "") -> np.ndarray:
    """``ImagePositionPatient`` (LPS mm of the first transmitted pixel's centre)."""
    from .dicom_header import numbers

    if "ImagePositionPatient" not in ds:
        raise CxsegError(f"DICOM slice lacks ImagePositionPatient (needed for a volume): {path}")
    return np.asarray(numbers(ds, "ImagePositionPatient", path, 3), float)


def stack_affine(
    positions: np.ndarray,
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    pixel_spacing: np.ndarray,
    single_slice_step: float = 1.0,
) -> np.ndarray:
    """Index ``(slice, row, column)`` -> LPS ``(x, y, z)`` affine of a sorted slice stack.

    Parameters
    ----------
    positions
        ``(n, 3)`` slice positions, sorted along the normal.
    row_dir, col_dir, pixel_spacing
        From :func:`slice_frame`.
    single_slice_step
        Slice thickness used along the normal when there is only one slice.
    """
    a = np.eye(4)
    n = len(positions)
    if n > 1:
        step = (positions[-1] - positions[0]) / (n - 1)
    else:
        step = np.cross(row_dir, col_dir) * float(single_slice_step)
    a[:3, 0] = step
    a[:3, 1] = col_dir * pixel_spacing[0]
    a[:3, 2] = row_dir * pixel_spacing[1]
    a[:3, 3] = positions[0]
    return a


def sort_and_check(headers: Sequence[SliceHeader]) -> tuple[list[SliceHeader], np.ndarray]:
    """Sort slices along their normal and check that they form one regular volume.

    Returns
    -------
    headers, positions
        The slices in order and their ``(n, 3)`` positions.

    Raises
    ------
    CxsegError
        Mixed image sizes, orientations or pixel spacings; duplicate positions; missing slices
        (uneven spacing); slice positions that do not lie on one line.
    """
    from .dicom_header import integer

    for h in headers:
        if integer(h.dataset, "NumberOfFrames", h.path, 1, lo=1) > 1:
            raise CxsegError(
                f"Multi-frame DICOM ({h.dataset.get('NumberOfFrames')} frames in one file) cannot "
                f"be read as a slice of a series of {len(headers)} file(s); only an enhanced "
                f"multi-frame CT/MR file opened on its own is read as a volume: {h.path}"
            )
    first = headers[0]
    size0 = (integer(first.dataset, "Rows", first.path, 0), integer(first.dataset, "Columns", first.path, 0))
    if min(size0) < 1:
        raise CxsegError(f"DICOM slice has no pixels (Rows {size0[0]}, Columns {size0[1]}): {first.path}")
    row0, col0, ps0 = slice_frame(first.dataset, first.path)
    for h in headers[1:]:
        size = (integer(h.dataset, "Rows", h.path, 0), integer(h.dataset, "Columns", h.path, 0))
        if size != size0:
            raise CxsegError(
                f"Mixed image sizes in one series: {first.path.name} is {size0[0]}x{size0[1]}, "
                f"{h.path.name} is {size[0]}x{size[1]} (folder {h.path.parent})"
            )
        r, c, ps = slice_frame(h.dataset, h.path)
        if not (
            np.allclose(r, row0, atol=ORIENTATION_ATOL)
            and np.allclose(c, col0, atol=ORIENTATION_ATOL)
        ):
            raise CxsegError(
                f"Mixed slice orientations in one series: {first.path.name} has "
                f"ImageOrientationPatient {np.r_[row0, col0].round(4).tolist()}, {h.path.name} has "
                f"{np.r_[r, c].round(4).tolist()} (folder {h.path.parent})"
            )
        if not np.allclose(ps, ps0, rtol=1e-4, atol=1e-5):
            raise CxsegError(
                f"Mixed pixel spacings in one series: {first.path.name} has {ps0.tolist()}, "
                f"{h.path.name} has {ps.tolist()} (folder {h.path.parent})"
            )
    normal = np.cross(row0, col0)
    positions = np.array([slice_position(h.dataset, h.path) for h in headers])
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    headers = [headers[i] for i in order]
    positions, dist = positions[order], dist[order]
    if len(headers) < 2:
        return list(headers), positions
    gaps = np.diff(dist)
    dup = np.flatnonzero(np.abs(gaps) < 1e-3)
    if dup.size:
        i = int(dup[0])
        raise CxsegError(
            f"Two slices at the same position ({dist[i]:.3f} mm along the slice normal): "
            f"{headers[i].path.name} and {headers[i + 1].path.name} (folder {headers[i].path.parent}). "
            "The folder may hold several acquisitions of one series; open them separately."
        )
    step = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - step) > SPACING_RTOL * step)
    if bad.size:
        i = int(bad[0])
        missing = round(gaps[i] / step) - 1
        what = f"about {missing} slice(s) missing" if missing >= 1 else "uneven slice spacing"
        raise CxsegError(
            f"Slices are not evenly spaced ({what}): between {headers[i].path.name} at "
            f"{dist[i]:.3f} mm and {headers[i + 1].path.name} at {dist[i + 1]:.3f} mm the gap is "
            f"{gaps[i]:.3f} mm, elsewhere {step:.3f} mm (folder {headers[i].path.parent})"
        )
    # positions must lie on a line (a gantry tilt shifts them in-plane, but linearly)
    n = len(positions)
    expected = positions[0] + np.outer(np.arange(n), (positions[-1] - positions[0]) / (n - 1))
    off = np.linalg.norm(positions - expected, axis=1)
    if off.max() > max(0.01, SPACING_RTOL * step):
        i = int(np.argmax(off))
        raise CxsegError(
            f"Slice {headers[i].path.name} is {off[i]:.3f} mm off the line through the other "
            f"slice positions: not one regular volume (folder {headers[i].path.parent})"
        )
    return list(headers), positions


# ---------------------------------------------------------------------------- pixels
def _rescale(ds: Any, path: Path | str = "") -> tuple[float, float]:
    from .dicom_header import number

    return number(ds, "RescaleSlope", path, 1.0), number(ds, "RescaleIntercept", path, 0.0)


def _thickness(ds: Any, path: Path | str = "") -> float:
    """The step used along the normal of a single slice: its slice spacing or thickness."""
    from .dicom_header import number

    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = number(ds, keyword, path, 0.0)
        except CxsegError:
            continue  # a damaged thickness only matters for one slice: use the next or 1 mm
        if value > 0:
            return value
    return 1.0


def _pixels(path: Path) -> tuple[Any, np.ndarray]:
    """Full dataset and raw stored pixel array of one slice file."""
    from .dicom_header import dcmread

    ds = None
    try:
        ds = dcmread(path)
        arr = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - pydicom raises many types for damaged/undecodable data
        ts = ""
        try:
            ts = f" (transfer syntax {ds.file_meta.TransferSyntaxUID.name})"
        except Exception:  # noqa: BLE001
            pass
        raise CxsegError(f"Cannot read the pixel data of {path}{ts}: {e}") from e
    if arr.ndim != 2:
        raise CxsegError(
            f"Expected single-frame greyscale slices, got an array of shape {arr.shape} in {path}"
        )
    return ds, arr


def first_value(v: Any) -> float:
    """First number of a (possibly multi-valued) DICOM numeric attribute."""
    if isinstance(v, (str, bytes)):
        return float(v)
    try:
        return float(v[0])
    except TypeError:
        return float(v)


def _window(ds: Any) -> tuple[float, float] | None:
    """``(low, high)`` of the first VOI window of a dataset, if it has one."""
    c, w = ds.get("WindowCenter"), ds.get("WindowWidth")
    if c is None or w is None:
        return None
    try:
        c, w = first_value(c), first_value(w)
    except (TypeError, ValueError, IndexError):
        return None
    if w <= 0:
        return None
    return (c - w / 2.0, c + w / 2.0)


def read_dicom_series(
    path_or_files: str | Path | Sequence[str | Path], series_uid: str | None = None
) -> Image:
    """Read a CT/MR DICOM series as a volume in the LPS world frame.

    Parameters
    ----------
    path_or_files
        A folder holding one series, one file of a series (its siblings with the same
        ``SeriesInstanceUID`` in the same folder are read with it), a list of files, or one
        enhanced multi-frame file.
    series_uid
        Which series to read when the folder or list holds several.

    Returns
    -------
    Image
        ``array`` in held order (``(z, y, x)`` for an axial series, S, P, L increasing);
        ``int16`` when the rescaled values are integers that fit, else ``float32``.
        ``geometry.source`` has ``path``, ``format="dicom"``, ``series_uid``, ``study_uid``,
        ``frame_of_reference_uid``, ``modality`` and ``dicom_files`` (in slice order, i.e. along
        the first on-disk axis). ``meta`` has ``source_path``, ``window`` (``(low, high)`` of the
        first slice's VOI window) when present, ``series_description`` and ``name``, and
        ``warnings`` naming the files beside the series that look like its slices (DICOM, or of
        this series) but could not be read as images and were left out.

    Raises
    ------
    CxsegError
        Several series without ``series_uid``; missing, duplicate or irregular slices; mixed
        sizes or orientations; unreadable files; slice headers claiming more pixel data than
        their files hold, or a volume beyond the memory budget (checked before allocating).
    """
    left_out: list[tuple[Path, str | None]] = []
    headers, source = _select_headers(path_or_files, series_uid, left_out)
    if len(headers) == 1 and _is_enhanced(headers[0].dataset):
        return _read_enhanced(headers[0], source)
    image = _read_slices(headers, source)
    uid = headers[0].series_uid
    damaged = sorted(f.name for f, u in left_out if u is None or u == uid)
    if damaged:
        image.meta.setdefault("warnings", []).append(
            f"{len(damaged)} file(s) beside the series could not be read as images and were left "
            f"out (damaged or truncated?): {', '.join(damaged[:5])}{' ...' if len(damaged) > 5 else ''}"
        )
    return image


def _read_slices(headers: list[SliceHeader], source: str) -> Image:
    """The volume of a series' single-frame slices."""
    headers, positions = sort_and_check(headers)
    ds0 = headers[0].dataset
    row_dir, col_dir, ps = slice_frame(ds0, headers[0].path)
    thickness = _thickness(ds0, headers[0].path)
    lps = stack_affine(positions, row_dir, col_dir, ps, single_slice_step=thickness)

    # integer output when every slice's rescale is integral and small enough for int32
    rescales = [_rescale(h.dataset, h.path) for h in headers]
    integral = all(s.is_integer() and b.is_integer() and abs(s) <= 2**12 and abs(b) <= 2**28
                   for s, b in rescales)
    rows, cols = int(ds0.Rows), int(ds0.Columns)
    from .dicom_limits import check_series_pixels

    # before allocating: every slice file can hold its pixels, the volume fits the budget
    check_series_pixels([(h.path, h.dataset) for h in headers], itemsize=4)
    out = np.empty((len(headers), rows, cols), dtype=np.int32 if integral else np.float32)
    top = float(np.finfo(np.float32).max)
    for k, h in enumerate(headers):
        _, raw = _pixels(h.path)
        if raw.shape != (rows, cols):
            raise CxsegError(f"Pixel data of {h.path} is {raw.shape}, header says {(rows, cols)}")
        slope, intercept = rescales[k]
        if integral:
            out[k] = raw.astype(np.int64) * int(slope) + int(intercept)
            continue
        values = raw.astype(np.float64) * slope + intercept
        if values.size and float(np.abs(values).max()) > top:
            raise CxsegError(
                f"Rescaling the pixels of {h.path} (RescaleSlope {slope:g}, RescaleIntercept "
                f"{intercept:g}) gives values beyond the float32 range: the header is damaged"
            )
        out[k] = values
    if integral:
        lo, hi = (int(out.min()), int(out.max())) if out.size else (0, 0)
        ii = np.iinfo(np.int16)
        out = out.astype(np.int16) if ii.min <= lo and hi <= ii.max else out.astype(np.float32)

    return _image(out, lps, ds0, [h.path for h in headers], source, _window(ds0))


def _image(
    disk: np.ndarray,
    lps: np.ndarray,
    ds0: Any,
    files: Sequence[Path],
    source: str,
    window: tuple[float, float] | None,
) -> Image:
    """Wrap a disk-order ``(slice, row, col)`` array and its index->LPS affine as an Image."""
    modality = str(ds0.get("Modality", "") or "")
    src = {
        "path": source,
        "format": "dicom",
        "role": "image",
        "series_uid": str(ds0.get("SeriesInstanceUID", "")),
        "study_uid": str(ds0.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(ds0.get("FrameOfReferenceUID", "")),
        "dicom_files": [str(f) for f in files],
        "modality": modality,
    }
    try:
        geom = held_geometry(disk.shape, world_from_lps_affine(lps), source_affine=lps, source=src)
    except ValueError as e:
        raise CxsegError(f"Cannot place DICOM series {source} in the world: {e}") from e
    description = str(ds0.get("SeriesDescription", "") or "")
    meta: dict[str, Any] = {
        "source_path": source,
        "series_description": description,
        "name": description or Path(source).name,
    }
    if window is not None:
        meta["window"] = window
    return Image(
        array=np.ascontiguousarray(geom.from_disk(disk)),
        geometry=geom,
        modality=modality,
        meta=meta,
    )


def _is_enhanced(ds: Any) -> bool:
    """A multi-frame image with per-frame plane positions (enhanced CT/MR/PET)."""
    return int(ds.get("NumberOfFrames", 1) or 1) > 1 and "PerFrameFunctionalGroupsSequence" in ds


def _frame_window(ds: Any) -> tuple[float, float] | None:
    """VOI window of an enhanced image (shared, else first frame's Frame VOI LUT)."""
    for groups in (
        ds.get("SharedFunctionalGroupsSequence"),
        ds.get("PerFrameFunctionalGroupsSequence"),
    ):
        if groups and groups[0].get("FrameVOILUTSequence"):
            window = _window(groups[0].FrameVOILUTSequence[0])
            if window is not None:
                return window
    return _window(ds)


def _enhanced_volume_geometry(path: Path) -> Any:
    import highdicom as hd

    try:
        from .dicom_header import dcmread

        vg = hd.Image.from_dataset(dcmread(path), copy=False).get_volume_geometry()
    except Exception as e:  # noqa: BLE001 - highdicom/pydicom raise many types
        raise CxsegError(f"Cannot read the frame geometry of multi-frame DICOM {path}: {e}") from e
    if vg is None:
        raise CxsegError(
            f"The frames of multi-frame DICOM {path} do not form a regular volume "
            "(missing, duplicate or unevenly spaced frames)"
        )
    return vg


def _read_enhanced(header: SliceHeader, source: str) -> Image:
    """An enhanced (multi-frame) CT/MR/PET file as a volume, via highdicom."""
    import highdicom as hd

    path = header.path
    from .dicom_limits import check_dicom_pixels

    check_dicom_pixels(path, working_itemsize=8)  # highdicom decodes to float64
    _enhanced_volume_geometry(path)  # a clear error when the frames are not a volume
    try:
        from .dicom_header import dcmread

        vol = hd.Image.from_dataset(dcmread(path), copy=False).get_volume(dtype=np.float64)
    except Exception as e:  # noqa: BLE001 - decoding/geometry errors come in many types
        raise CxsegError(f"Cannot read multi-frame DICOM {path} as a volume: {e}") from e
    data = np.asarray(vol.array)
    if data.ndim != 3:
        raise CxsegError(
            f"Multi-frame DICOM {path} gives an array of shape {data.shape}, not a volume"
        )
    top = float(np.finfo(np.float32).max)
    if data.size and not (np.isfinite(data).all() and float(np.abs(data).max()) <= top):
        raise CxsegError(
            f"Rescaling the frames of {path} gives values that are not finite float32 numbers "
            "(its RescaleSlope/RescaleIntercept or pixel value transformation is damaged)"
        )
    ii = np.iinfo(np.int16)
    if data.size and np.all(np.mod(data, 1) == 0) and ii.min <= data.min() and data.max() <= ii.max:
        disk = data.astype(np.int16)
    else:
        disk = data.astype(np.float32)
    return _image(
        disk,
        np.asarray(vol.affine, float),
        header.dataset,
        [path],
        source,
        _frame_window(header.dataset),
    )


def series_geometry(files: Sequence[str | Path]) -> tuple[Geometry, list[Path]]:
    """Geometry of a series from its headers only (no pixel data), and its files in slice order.

    Used by the DICOM SEG writer to place a label array on its source slices. For one
    enhanced multi-frame file the geometry is that of highdicom's volume of its frames.
    """
    headers, source = _select_headers(list(files), None)
    if len(headers) == 1 and _is_enhanced(headers[0].dataset):
        vg = _enhanced_volume_geometry(headers[0].path)
        lps = np.asarray(vg.affine, float)
        src = {
            "path": source,
            "format": "dicom",
            "role": "image",
            "dicom_files": [str(headers[0].path)],
        }
        geom = held_geometry(
            tuple(vg.spatial_shape), world_from_lps_affine(lps), source_affine=lps, source=src
        )
        return geom, [headers[0].path]
    headers, positions = sort_and_check(headers)
    ds0 = headers[0].dataset
    row_dir, col_dir, ps = slice_frame(ds0, headers[0].path)
    lps = stack_affine(positions, row_dir, col_dir, ps, single_slice_step=_thickness(ds0, headers[0].path))
    shape = (len(headers), int(ds0.Rows), int(ds0.Columns))
    src = {
        "path": source,
        "format": "dicom",
        "role": "image",
        "series_uid": str(ds0.get("SeriesInstanceUID", "")),
        "dicom_files": [str(h.path) for h in headers],
    }
    geom = held_geometry(shape, world_from_lps_affine(lps), source_affine=lps, source=src)
    return geom, [h.path for h in headers]


def dicom_kind(path: str | Path) -> str:
    """What a DICOM file is, for dispatching.

    Returns one of ``"seg"``, ``"radiograph"``, ``"slice"``, ``"volume"``, ``"multiframe"``
    or ``""``.

    ``"radiograph"``: a single-frame image without slice geometry, or a CR/DX/MG/XA/RF/SC
    projection image; ``"slice"``: a CT/MR/PT... slice with ``ImagePositionPatient``;
    ``"volume"``: an enhanced multi-frame CT/MR/PET (read by :func:`read_dicom_series`);
    ``"seg"``: a DICOM Segmentation; ``"multiframe"``: another multi-frame image (not read);
    ``""``: not a DICOM image.
    """
    ds = read_header(path)
    if ds is None or "Rows" not in ds:
        return ""
    if _is_seg(ds):
        return "seg"
    modality = str(ds.get("Modality", ""))
    if _is_enhanced(ds):
        return "volume"
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return "multiframe"
    if modality in {"CR", "DX", "MG", "XA", "RF", "IO", "PX"}:
        return "radiograph"
    has_plane = "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds
    return "slice" if has_plane and "PixelSpacing" in ds else "radiograph"
