"""DICOM Segmentation (SEG) objects <-> :class:`~napari_cxseg.images.LabelMap` (highdicom).

Writing needs the source DICOM images: a SEG references them slice by slice, so a label map
must lie on the grid of a DICOM series (or on a sub-block of it, which is padded) or on a
single-frame radiograph. One segment per class, in class-id order; the segment label is the
class name and the recommended display colour is the class colour. Reading gives class ids
1..N in segment-number order and a geometry rebuilt from the SEG's own per-frame positions,
orientation and pixel measures (LPS), so it overlays the referenced series in world space.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import (
    Geometry,
    held_geometry,
    radiograph_geometry,
    world_from_lps_affine,
    world_to_voxel,
)
from ..images import CxsegError, LabelClass, LabelMap, default_colour
from .orientation import from_patient_orientation

#: Segmented property category and type of every segment: a generic anatomical structure
#: (SCT 91723000); the class name says what it is.
CATEGORY = ("91723000", "SCT", "Anatomical Structure")
PROPERTY_TYPE = ("91723000", "SCT", "Anatomical Structure")

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"

#: How far (mm) a label map's grid may be from its source series' grid.
GRID_ATOL = 1e-2


def _code(triplet: tuple[str, str, str]) -> Any:
    from pydicom.sr.coding import Code

    value, scheme, meaning = triplet
    return Code(value, scheme, meaning)


def _lab_colour(colour: str | None, label: int) -> Any:
    """highdicom CIELab colour of a class colour (hex or colour name), default when unparsable."""
    import highdicom as hd

    for c in (colour, default_colour(label)):
        if not c:
            continue
        try:
            return hd.color.CIELabColor.from_string(
                str(c)[:7] if str(c).startswith("#") else str(c)
            )
        except (ValueError, TypeError):
            continue
    return None


def _hex_from_lab(value: Sequence[int]) -> str | None:
    """``#rrggbb`` of a DICOM ``RecommendedDisplayCIELabValue``."""
    import highdicom as hd

    try:
        rgb = hd.color.CIELabColor.from_dicom_value([int(v) for v in value]).to_rgb(clip=True)
    except (ValueError, TypeError):
        return None
    return "#" + "".join(f"{int(round(float(c))):02x}" for c in rgb)


def _source_files(label_map: LabelMap, source_files: Sequence[str | Path] | None) -> list[Path]:
    if source_files is not None:
        files = [Path(f) for f in source_files]
    else:
        files = [Path(f) for f in (label_map.geometry.source or {}).get("dicom_files") or []]
    if not files:
        raise CxsegError(
            "Cannot save these labels as DICOM SEG: they have no DICOM source images (a SEG must "
            "reference the DICOM series it segments). Save as NIfTI (.nii.gz) instead, or give "
            "the DICOM files of the image (source_files=...)."
        )
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise CxsegError(
            f"Cannot save DICOM SEG: source DICOM file {missing[0]} is missing "
            f"({len(missing)} of {len(files)} files); save as NIfTI (.nii.gz) instead"
        )
    return files


def _place_on_grid(label_map: LabelMap, geom: Geometry, shape: tuple[int, ...]) -> np.ndarray:
    """The label array on the held grid ``geom``/``shape``: same grid, or a sub-block padded.

    No resampling: the label grid must share the series grid's axes and spacing and start on
    one of its voxels.
    """
    arr = np.asarray(label_map.array)
    lg = label_map.geometry
    if arr.ndim != len(shape) or lg.ndim != geom.ndim:
        raise CxsegError(
            f"Label map has {arr.ndim} dimensions, its DICOM source series {len(shape)}: "
            "cannot save as DICOM SEG; save as NIfTI (.nii.gz) instead"
        )
    if tuple(arr.shape) == tuple(shape) and np.allclose(lg.affine, geom.affine, atol=GRID_ATOL):
        return arr
    lin_ok = np.allclose(lg.affine[:-1, :-1], geom.affine[:-1, :-1], atol=1e-4, rtol=1e-4)
    start = world_to_voxel(geom, lg.origin)[0]
    start_i = np.round(start).astype(int)
    on_voxel = np.allclose(start, start_i, atol=1e-2)
    fits = np.all(start_i >= 0) and np.all(start_i + np.asarray(arr.shape) <= np.asarray(shape))
    if not (lin_ok and on_voxel and fits):
        raise CxsegError(
            f"Label map grid {arr.shape} does not lie on the grid {tuple(shape)} of its DICOM "
            f"source series ({geom.source.get('path', '?')}): a DICOM SEG can only hold labels on "
            "the source slices. Save as NIfTI (.nii.gz) instead."
        )
    out = np.zeros(shape, dtype=arr.dtype)
    out[tuple(slice(s, s + n) for s, n in zip(start_i, arr.shape, strict=True))] = arr
    return out


def _segment_ids(label_map: LabelMap, values: np.ndarray) -> list[int]:
    present = {int(v) for v in values if int(v) != 0}
    return sorted(present | set(label_map.classes))


def _algorithm(meta: dict[str, Any]) -> tuple[str, Any]:
    """Segment algorithm type and identification from ``meta["algorithm"]`` (str or dict)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algo = meta.get("algorithm")
    if not algo:
        return "MANUAL", None
    if isinstance(algo, dict):
        name, version = str(algo.get("name", "model")), str(algo.get("version", "") or "1")
    else:
        name, version = str(algo), "1"
    ident = hd.AlgorithmIdentificationSequence(
        name=name[:64], family=codes.cid7162.ArtificialIntelligence, version=version[:64]
    )
    return "AUTOMATIC", ident


def write_dicom_seg(
    label_map: LabelMap,
    path: str | Path,
    source_files: Sequence[str | Path] | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Write a label map as a DICOM Segmentation (BINARY, one segment per class).

    Parameters
    ----------
    label_map
        Labels on the grid of a DICOM CT/MR series (or a sub-block of it) or of a single-frame
        radiograph. Class ``k`` becomes segment ``i+1`` where ``i`` is its rank among the class
        ids (ids 1..N stay 1..N). ``meta["algorithm"]`` (a name, or ``{"name", "version"}``)
        marks the segments AUTOMATIC, otherwise MANUAL.
    path
        The ``.dcm`` file to write (atomically: temporary file, then rename).
    source_files
        The source DICOM files; default ``label_map.geometry.source["dicom_files"]``.
    overwrite
        Replace an existing label file at ``path`` (never a source image).

    Returns
    -------
    list of str
        ``[path]``.

    Raises
    ------
    CxsegError
        No DICOM source (save as NIfTI instead), label grid not on the source slices, target is a
        source image or exists without ``overwrite``, unreadable source files.
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    from .atomic import atomic_write, check_target

    target = Path(path)
    files = _source_files(label_map, source_files)
    check_target(target, label_map, overwrite=overwrite)
    if any(_same(target, f) for f in files):
        raise CxsegError(
            f"refusing to write labels over {target}: it is a source image of these labels"
        )

    arr = np.asarray(label_map.array)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            raise CxsegError(f"Label map for {target} holds non-integer values; cannot save as SEG")
        arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise CxsegError(f"Label map for {target} holds negative values; cannot save as SEG")

    pixel_measures = None
    volume_of: tuple[np.ndarray, str] | None = None
    if label_map.geometry.ndim == 2 or arr.ndim == 2:
        if len(files) != 1:
            raise CxsegError(
                f"A 2D label map needs one source radiograph, got {len(files)} files; "
                "save as NIfTI or PNG instead"
            )
        sources = [_read_source(files[0])]
        rows, cols = int(sources[0].Rows), int(sources[0].Columns)
        lg = label_map.geometry
        # back on the radiograph's stored grid (it may have been turned for display)
        stored = lg.to_disk(arr) if lg.ndim == 2 else arr
        if stored.shape != (rows, cols):
            raise CxsegError(
                f"Label map is {arr.shape}, its source radiograph {files[0]} is {(rows, cols)}: "
                "cannot save as DICOM SEG"
            )
        disk = stored[None]
        # keep the (Imager)PixelSpacing the label map was placed with, in stored order;
        # highdicom's reader needs a SliceThickness, which a projection image lacks: 1 mm
        sp = np.linalg.norm(lg.disk_affine()[:-1, :-1], axis=0) if lg.ndim == 2 else lg.spacing
        pixel_measures = hd.PixelMeasuresSequence(
            pixel_spacing=[float(sp[0]), float(sp[1])],
            slice_thickness=float(sources[0].get("SliceThickness") or 1.0),
        )
    else:
        from .dicom_series import series_geometry

        geom, ordered = series_geometry(files)
        held_shape = geom.from_disk(np.empty(geom.disk_shape, dtype=np.uint8)).shape
        disk = geom.to_disk(_place_on_grid(label_map, geom, held_shape))
        sources = [_read_source(f) for f in ordered]
        if int(sources[0].get("NumberOfFrames", 1) or 1) > 1:
            # enhanced multi-frame source: highdicom matches the volume's planes to its frames
            volume_of = (geom.source_affine, sources[0].get("FrameOfReferenceUID"))

    values = np.unique(disk)
    ids = _segment_ids(label_map, values)
    if not ids:
        raise CxsegError(f"Label map for {target} is empty and has no classes: nothing to save")
    dtype = np.uint8 if len(ids) < 256 else np.uint16
    if ids == list(range(1, len(ids) + 1)):
        seg_array = disk.astype(dtype, copy=False)
    else:
        lut = np.zeros(int(max(ids)) + 1, dtype=dtype)
        lut[ids] = np.arange(1, len(ids) + 1, dtype=dtype)
        seg_array = lut[disk]

    pixel_array: Any = seg_array
    if volume_of is not None:
        pixel_array = hd.Volume(
            array=seg_array,
            affine=volume_of[0],
            coordinate_system="PATIENT",
            frame_of_reference_uid=volume_of[1],
        )
    algo_type, algo_id = _algorithm(label_map.meta)
    descriptions = []
    for number, cid in enumerate(ids, start=1):
        cls = label_map.classes.get(cid) or LabelClass(f"label {cid}")
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=(cls.name or f"label {cid}")[:64],
                segmented_property_category=_code(CATEGORY),
                segmented_property_type=_code(PROPERTY_TYPE),
                algorithm_type=algo_type,
                algorithm_identification=algo_id,
                display_color=_lab_colour(cls.colour, cid),
            )
        )

    from .. import __version__ as version

    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixel_array,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(),
            series_number=int(label_map.meta.get("series_number", 300)),
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="napari-cxseg",
            manufacturer_model_name="napari-cxseg",
            software_versions=str(version),
            device_serial_number="0",
            content_label="SEGMENTATION",
            content_description=str(label_map.meta.get("name") or "napari-cxseg labels")[:64],
            omit_empty_frames=True,
            pixel_measures=pixel_measures,
        )
    except (ValueError, TypeError, AttributeError) as e:
        raise CxsegError(
            f"Cannot build a DICOM SEG for {target} from {files[0].parent}: {e}"
        ) from e
    seg.SeriesDescription = str(label_map.meta.get("name") or "Segmentation")[:64]
    if len(sources) == 1 and sources[0].get("PatientOrientation") and "FrameOfReferenceUID" not in seg:
        # a radiograph's SEG (no patient frame) says how its pixels are oriented, as its source
        # does (General Image module, type 2C), so that reading it turns it the same way
        seg.PatientOrientation = sources[0].PatientOrientation
    atomic_write(target, lambda tmp: seg.save_as(tmp))
    return [str(target)]


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _read_source(path: Path) -> Any:
    """A source image's header (highdicom needs attributes, not pixels)."""
    from .dicom_header import dcmread

    try:
        return dcmread(path, stop_before_pixels=True)
    except Exception as e:  # noqa: BLE001 - any read failure is a damaged source
        raise CxsegError(f"Cannot read source DICOM file {path}: {e}") from e


# ---------------------------------------------------------------------------- reading
def _classes(seg: Any) -> dict[int, LabelClass]:
    out = {}
    for number in seg.segment_numbers:
        desc = seg.get_segment_description(number)
        name = str(desc.get("SegmentLabel", "") or f"segment {number}")
        value = desc.get("RecommendedDisplayCIELabValue")
        colour = _hex_from_lab(value) if value is not None else None
        out[int(number)] = LabelClass(name, colour)
    return out


def _combine(seg: Any, get: Any, warnings: list[str]) -> np.ndarray:
    """Segment numbers per pixel from ``get(**kw)`` (a highdicom volume or frame getter)."""
    fractional = str(seg.SegmentationType) == "FRACTIONAL"
    if fractional:
        stack = np.asarray(get(combine_segments=False, rescale_fractional=True))
        numbers = np.asarray(seg.segment_numbers)
        win = np.argmax(stack, axis=-1)
        labels = numbers[win] * (np.take_along_axis(stack, win[..., None], -1)[..., 0] >= 0.5)
        warnings.append("FRACTIONAL segmentation thresholded at 0.5 (highest segment wins)")
        return labels.astype(np.uint16 if numbers.max() > 255 else np.uint8)
    try:
        return np.asarray(get(combine_segments=True, relabel=False))
    except (ValueError, RuntimeError) as e:
        if "overlap" not in str(e).lower():
            raise
        warnings.append("segments overlap: where they do, the higher segment number is kept")
        return np.asarray(get(combine_segments=True, relabel=False, skip_overlap_checks=True))


def _frame_sources(seg: Any) -> list[tuple[str, int]]:
    """``(referenced SOP instance UID, frame number)`` of each SEG frame (empty when unknown)."""
    out = []
    for item in seg.get("PerFrameFunctionalGroupsSequence") or []:
        deriv = item.get("DerivationImageSequence")
        if not deriv or not deriv[0].get("SourceImageSequence"):
            return []
        src = deriv[0].SourceImageSequence[0]
        frame = src.get("ReferencedFrameNumber")
        out.append((str(src.ReferencedSOPInstanceUID), int(frame) if frame else 1))
    return out


def _single_plane(seg: Any) -> bool:
    """True when every frame of the SEG segments the same single source frame."""
    sources = _frame_sources(seg)
    if sources:
        return len(set(sources)) == 1
    refs = seg.get("ReferencedSeriesSequence") or []
    instances = [i for r in refs for i in (r.get("ReferencedInstanceSequence") or [])]
    return len(instances) == 1


def _frame_segment_numbers(seg: Any) -> list[int]:
    """Segment number of each frame (per-frame, else shared functional groups)."""
    shared = (seg.get("SharedFunctionalGroupsSequence") or [None])[0]
    out = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        ident = item.get("SegmentIdentificationSequence")
        if not ident and shared is not None:
            ident = shared.get("SegmentIdentificationSequence")
        if not ident:
            raise ValueError("a frame has no Segment Identification Sequence")
        out.append(int(ident[0].ReferencedSegmentNumber))
    return out


def _frames_2d(
    seg: Any,
    combine_segments: bool = True,
    relabel: bool = False,
    skip_overlap_checks: bool = False,
    rescale_fractional: bool = True,
) -> np.ndarray:
    """Label plane (``combine_segments``) or ``(rows, cols, segments)`` stack of a 2D SEG.

    Mirrors the keywords of highdicom's ``get_volume`` for SEGs without plane positions
    (e.g. of a radiograph), whose frames all segment one source image.
    """
    pix = np.asarray(seg.pixel_array)
    if pix.ndim == 2:
        pix = pix[None]
    frame_numbers = _frame_segment_numbers(seg)
    numbers = list(seg.segment_numbers)
    fractional = str(seg.SegmentationType) == "FRACTIONAL"
    scale = (
        float(seg.get("MaximumFractionalValue", 1) or 1)
        if fractional and rescale_fractional
        else 1.0
    )
    if not combine_segments:
        stack = np.zeros((*pix.shape[1:], len(numbers)), dtype=np.float32)
        for f, n in enumerate(frame_numbers):
            stack[..., numbers.index(n)] = np.maximum(stack[..., numbers.index(n)], pix[f] / scale)
        return stack
    out = np.zeros(pix.shape[1:], dtype=np.uint16 if max(numbers) > 255 else np.uint8)
    for f, n in enumerate(frame_numbers):
        mask = pix[f] > 0
        if not skip_overlap_checks and np.any(out[mask] != 0):
            raise ValueError("Segments overlap")
        out[mask] = n
    return out


def check_seg_geometry(ds: Any, path: Path) -> None:
    """Refuse plane positions, orientations and pixel spacings that are not finite numbers (of
    the right count; spacings positive) before highdicom computes with them.

    Raises
    ------
    CxsegError
        Naming the file, the attribute and, for a frame, its number.
    """
    from .dicom_header import numbers

    checks = (("PlanePositionSequence", "ImagePositionPatient", 3, False),
              ("PlaneOrientationSequence", "ImageOrientationPatient", 6, False),
              ("PixelMeasuresSequence", "PixelSpacing", 2, True))
    groups = [("shared", g) for g in ds.get("SharedFunctionalGroupsSequence") or []]
    groups += [(f"frame {i + 1}", g) for i, g in enumerate(ds.get("PerFrameFunctionalGroupsSequence") or [])]
    for where, group in groups:
        for seq, keyword, count, positive in checks:
            for item in group.get(seq) or []:
                try:
                    numbers(item, keyword, path, count, positive=positive, required=False)
                except CxsegError as e:
                    raise CxsegError(f"{e} ({seq} of {where})") from None


def _pixel_spacing(seg: Any) -> tuple[float, float]:
    """``PixelSpacing`` of the SEG's shared pixel measures, 1 mm when absent."""
    try:
        ps = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        return float(ps[0]), float(ps[1])
    except (AttributeError, IndexError, KeyError, TypeError):
        return 1.0, 1.0


def _working_itemsize(ds: Any) -> int:
    """Bytes per frame pixel the SEG reader needs: float32 for FRACTIONAL SEGs, else 2."""
    return 4 if str(ds.get("SegmentationType", "")) == "FRACTIONAL" else 2


def read_dicom_seg(path: str | Path) -> LabelMap:
    """Read a DICOM Segmentation as a label map.

    Parameters
    ----------
    path
        A DICOM SEG file.

    Returns
    -------
    LabelMap
        Class ids are the segment numbers; names from ``SegmentLabel``, colours from
        ``RecommendedDisplayCIELabValue``. A SEG in patient space gets an LPS geometry built
        from its frames' positions, orientation and pixel spacing (spanning the frames it
        holds); a SEG of a radiograph (no frame of reference) gets ``frame="image"``.
        ``geometry.source`` has ``path``, ``format="dicom-seg"``, ``series_uid``,
        ``study_uid``, ``frame_of_reference_uid``, ``referenced_series_uid``.

    Raises
    ------
    CxsegError
        Not a readable DICOM SEG, or frames that do not form a regular volume.
    """
    import highdicom as hd

    p = Path(path)
    if not p.is_file():
        raise CxsegError(f"No such file: {p}")
    from .dicom_header import dcmread
    from .dicom_limits import check_dicom_pixels, check_volume_budget

    check_dicom_pixels(p, working_itemsize=_working_itemsize)
    try:
        ds = dcmread(p, convert="all")  # bounded by the file (see dicom_header)
    except CxsegError:
        raise
    except Exception as e:  # noqa: BLE001 - pydicom raises many types
        raise CxsegError(f"Not a readable DICOM SEG: {p}: {e}") from e
    check_seg_geometry(ds, p)
    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as e:  # noqa: BLE001 - highdicom raises many types
        raise CxsegError(f"Not a readable DICOM SEG: {p}: {e}") from e
    warnings: list[str] = []
    classes = _classes(seg)
    ref_series = ""
    refs = seg.get("ReferencedSeriesSequence")
    if refs:
        ref_series = str(refs[0].get("SeriesInstanceUID", ""))
    source = {
        "path": str(p),
        "format": "dicom-seg",
        "role": "labels",
        "series_uid": str(seg.get("SeriesInstanceUID", "")),
        "study_uid": str(seg.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(seg.get("FrameOfReferenceUID", "")),
        "referenced_series_uid": ref_series,
        "modality": "SEG",
    }
    try:
        volume_geometry = seg.get_volume_geometry() if "FrameOfReferenceUID" in seg else None
    except (ValueError, RuntimeError, AttributeError):
        volume_geometry = None
    try:
        if volume_geometry is not None:
            affines: list[np.ndarray] = []

            def volume(**kw: Any) -> np.ndarray:
                v = seg.get_volume(**kw)
                affines.append(np.asarray(v.affine, float))
                return v.array

            n_seg = len(seg.segment_numbers) if str(seg.SegmentationType) == "FRACTIONAL" else 1
            check_volume_budget(p, tuple(volume_geometry.spatial_shape), 4 * n_seg)
            labels = _combine(seg, volume, warnings)
            lps = affines[-1]
            geom = held_geometry(
                labels.shape, world_from_lps_affine(lps), source_affine=lps, source=source
            )
            array = geom.from_disk(labels)
        else:
            if not _single_plane(seg):
                raise CxsegError(
                    f"DICOM SEG {p} has neither regular plane positions nor a single source "
                    "image: cannot place its frames"
                )
            stored = _combine(seg, lambda **kw: _frames_2d(seg, **kw), warnings)
            orientation = from_patient_orientation(seg.get("PatientOrientation"))
            source["orientation"] = dict(orientation.info)
            geom = radiograph_geometry(
                stored.shape, _pixel_spacing(seg), orientation.ornt, source=source
            )
            array = np.ascontiguousarray(geom.from_disk(stored))
    except CxsegError:
        raise
    except Exception as e:  # noqa: BLE001 - highdicom geometry errors
        raise CxsegError(f"Cannot build a label volume from DICOM SEG {p}: {e}") from e
    meta: dict[str, Any] = {
        "source_path": str(p),
        "name": str(seg.get("SeriesDescription", "") or p.stem),
    }
    if warnings:
        meta["warnings"] = warnings
    return LabelMap(array=array, geometry=geom, classes=classes, meta=meta)
