"""Single-frame DICOM radiographs (CR, DX, secondary captures) -> display-ready 2D images.

Pixel data go through the DICOM display pipeline: modality LUT (rescale) -> VOI LUT or window
-> MONOCHROME1 inversion, so that a MONOCHROME1 and a MONOCHROME2 encoding of the same
radiograph give the same array (air dark, bone bright), as models trained on exported PNG/JPEG
radiographs expect. The world frame is the detector plane: ``frame="image"``, world = (row,
column) in mm. PatientOrientation (0020,0020) is honoured: a radiograph stored another way than
the standard display (``L\\F`` for a PA/AP view: the patient's right on the screen's left, head
up) is transposed/flipped into it (see :mod:`.orientation`), and writers put labels back on the
stored grid. The header's pixel size is checked before decoding (:mod:`.dicom_limits`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import radiograph_geometry
from ..images import CxsegError, Image
from .orientation import from_patient_orientation

#: ITU-R BT.601 luma weights for RGB -> grey.
LUMA = np.array([0.299, 0.587, 0.114])

#: Spacing attributes in order of preference (PixelSpacing is calibrated to the patient plane).
SPACING_TAGS = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")


def _stored_range(ds: Any) -> tuple[float, float]:
    """Range of values the stored pixels can take (``BitsStored``, ``PixelRepresentation``)."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _lut_range(item: Any) -> tuple[float, float]:
    data = np.asarray(item.get("LUTData", []), float).ravel()
    if data.size:
        return float(data.min()), float(data.max())
    return 0.0, 2.0 ** int(item.LUTDescriptor[2]) - 1


def _modality_range(ds: Any) -> tuple[float, float]:
    """Output range of the modality LUT stage."""
    seq = ds.get("ModalityLUTSequence")
    if seq:
        return _lut_range(seq[0])
    lo, hi = _stored_range(ds)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    a, b = lo * slope + intercept, hi * slope + intercept
    return min(a, b), max(a, b)


def _window_output_range(ds: Any) -> tuple[float, float]:
    """Output range of pydicom's windowing (same rule as ``pydicom.pixels.apply_windowing``)."""
    seq = ds.get("ModalityLUTSequence")
    if seq:
        lo, hi = 0.0, 2.0 ** int(seq[0].LUTDescriptor[2]) - 1
    else:
        lo, hi = _stored_range(ds)
    if ds.get("RescaleSlope") is not None and ds.get("RescaleIntercept") is not None:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = lo * slope + intercept, hi * slope + intercept
    return min(lo, hi), max(lo, hi)


def display_pipeline(ds: Any, stored: np.ndarray) -> tuple[np.ndarray, tuple[float, float], str]:
    """Modality LUT -> VOI (LUT or window) -> MONOCHROME1 inversion of a greyscale frame.

    Returns
    -------
    array, (low, high), voi
        float32 display values, the display range (the VOI output range, or the data's
        min/max without a VOI), and which VOI step was applied (``"lut"``, ``"window"`` or ``"none"``).
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    arr = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    if ds.get("VOILUTSequence"):
        voi = "lut"
        rng = _lut_range(ds.VOILUTSequence[0])
        arr = np.asarray(apply_voi_lut(arr, ds, prefer_lut=True), dtype=np.float64)
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        voi = "window"
        rng = _window_output_range(ds)
        arr = np.asarray(apply_voi_lut(arr, ds, prefer_lut=False), dtype=np.float64)
    else:
        voi = "none"
        rng = _modality_range(ds)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        # low values are white in MONOCHROME1: mirror within the output range
        arr = (rng[0] + rng[1]) - arr
    if voi == "none" and arr.size:
        # without a VOI the possible range is the whole stored range: show the data's own
        rng = (float(arr.min()), float(arr.max()))
    return arr.astype(np.float32), (float(rng[0]), float(rng[1])), voi


def read_radiograph(path: str | Path) -> Image:
    """Read a single-frame DICOM radiograph (CR, DX, DX-like secondary capture).

    Parameters
    ----------
    path
        A DICOM file.

    Returns
    -------
    Image
        ``(rows, cols)`` float32 display values (modality LUT, VOI LUT/window and MONOCHROME1
        inversion applied; RGB converted to grey), ``frame="image"`` geometry with the spacing
        of ``PixelSpacing``, else ``ImagerPixelSpacing``, else ``NominalScannedPixelSpacing``,
        else 1 mm, held in the standard display when PatientOrientation says how it was stored
        (``geometry.disk_ornt`` records the transpose/flip). ``meta`` has ``source_path``,
        ``window`` (display range), ``spacing_source`` (the attribute used, or ``"default"``),
        ``photometric``, ``voi``, ``orientation`` (see :mod:`.orientation`) and, when something
        is doubtful, ``warnings`` (a list of sentences).

    Raises
    ------
    CxsegError
        Not DICOM, empty, truncated or undecodable pixel data, multi-frame, not an image, or a
        header whose pixel size exceeds the file or the memory budget.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    if not p.is_file():
        raise CxsegError(f"No such file: {p}")
    if p.stat().st_size == 0:
        raise CxsegError(f"Empty file (0 bytes), not a DICOM radiograph: {p}")
    from .dicom_limits import check_dicom_pixels

    check_dicom_pixels(p)  # a header too large to be true fails before the pixels are read
    try:
        ds = pydicom.dcmread(p)
    except InvalidDicomError:
        raise CxsegError(f"Not a DICOM file (no DICM header): {p}") from None
    except Exception as e:  # noqa: BLE001 - truncated headers raise EOFError/ValueError/...
        raise CxsegError(f"Cannot read DICOM file {p} (damaged or truncated?): {e}") from e
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise CxsegError(f"DICOM file holds no pixel data (truncated, or not an image): {p}")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise CxsegError(
            f"Expected a single-frame radiograph, got {frames} frames in {p}; "
            "multi-frame DICOM is not supported"
        )
    try:
        stored = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - decoder errors come in many types
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        hint = f" (transfer syntax {ts.name})" if ts is not None else ""
        raise CxsegError(
            f"Cannot decode the pixel data of {p}{hint}; the file may be truncated or need a "
            f"decoder plugin (pylibjpeg, gdcm): {e}"
        ) from e

    warnings: list[str] = []
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 3 or stored.ndim == 3:
        # pydicom returns RGB (YBR converted); colour has no modality/VOI LUT
        rgb = np.asarray(stored, dtype=np.float64)
        if rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise CxsegError(f"Unexpected colour pixel array of shape {stored.shape} in {p}")
        arr = (rgb @ LUMA).astype(np.float32)
        bits = int(ds.get("BitsStored", 8) or 8)
        window = (0.0, float(2**bits - 1))
        voi = "none"
        warnings.append(f"{photometric} colour image converted to grey")
    elif photometric in ("MONOCHROME1", "MONOCHROME2"):
        arr, window, voi = display_pipeline(ds, stored)
    elif photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = np.asarray(apply_color_lut(stored, ds), dtype=np.float64)
        arr = (rgb @ LUMA).astype(np.float32)
        window = (float(arr.min()), float(arr.max()))
        voi = "none"
        warnings.append("palette colour image converted to grey")
    else:
        raise CxsegError(f"Unsupported PhotometricInterpretation {photometric!r} in {p}")
    if arr.ndim != 2:
        raise CxsegError(f"Expected a 2D radiograph, got pixel array of shape {arr.shape} in {p}")

    spacing, spacing_source = (1.0, 1.0), "default"
    for tag in SPACING_TAGS:
        value = ds.get(tag)
        if value is not None:
            try:
                sp = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                continue
            if len(sp) == 2 and all(v > 0 for v in sp):
                spacing, spacing_source = sp, tag
                break
    if spacing_source == "default":
        warnings.append("no PixelSpacing or ImagerPixelSpacing: 1.0 mm pixels assumed")

    modality = str(ds.get("Modality", "") or "")
    laterality = ds.get("ImageLaterality") or ds.get("Laterality")
    orientation = from_patient_orientation(
        ds.get("PatientOrientation"), str(ds.get("ViewPosition", "") or ""), laterality
    )
    source = {
        "path": str(p),
        "format": "dicom",
        "role": "image",
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "dicom_files": [str(p)],
        "modality": modality,
        "orientation": dict(orientation.info),
    }
    geom = radiograph_geometry(arr.shape, spacing, orientation.ornt, source=source)
    meta: dict[str, Any] = {
        "source_path": str(p),
        "name": p.stem,
        "window": window,
        "spacing_source": spacing_source,
        "photometric": photometric,
        "voi": voi,
        "orientation": orientation.info,
    }
    if ds.get("ViewPosition"):
        meta["view_position"] = str(ds.ViewPosition)
    orient = ds.get("PatientOrientation")
    if orient:
        meta["patient_orientation"] = (
            [orient] if isinstance(orient, str) else [str(v) for v in orient]
        )
    if ds.get("EstimatedRadiographicMagnificationFactor"):
        meta["magnification"] = float(ds.EstimatedRadiographicMagnificationFactor)
    if warnings:
        meta["warnings"] = warnings
    held = np.ascontiguousarray(geom.from_disk(arr))
    return Image(array=held, geometry=geom, modality=modality, meta=meta)
