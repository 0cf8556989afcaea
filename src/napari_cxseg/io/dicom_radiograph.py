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
from .dicom_header import dcmread, integer, number, numbers
from .orientation import from_patient_orientation

#: ITU-R BT.601 luma weights for RGB -> grey.
LUMA = np.array([0.299, 0.587, 0.114])

#: Spacing attributes in order of preference (PixelSpacing is calibrated to the patient plane).
SPACING_TAGS = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")


def _bits(ds: Any, path: Any = "", default: int = 16) -> int:
    """``BitsStored`` (else ``BitsAllocated``, else ``default``), an integer from 1 to 64."""
    allocated = integer(ds, "BitsAllocated", path, default, lo=0, hi=64) or default
    return integer(ds, "BitsStored", path, allocated, lo=0, hi=64) or allocated


def _stored_range(ds: Any, path: Any = "") -> tuple[float, float]:
    """Range of values the stored pixels can take (``BitsStored``, ``PixelRepresentation``)."""
    bits = _bits(ds, path)
    if integer(ds, "PixelRepresentation", path, 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _lut_bits(item: Any, path: Any) -> int:
    """Bits per entry of a LUT (the third ``LUTDescriptor`` value, 8 to 16 by the standard)."""
    desc = numbers(item, "LUTDescriptor", path, 3)
    if not 1 <= desc[2] <= 16:
        raise CxsegError(f"cannot read {path}: its LUTDescriptor {list(desc)} has {desc[2]:g}-bit entries")
    return int(desc[2])


def _lut_data(item: Any, path: Any) -> np.ndarray:
    """``LUTData`` as numbers (pydicom gives raw bytes when the file stores it as OW)."""
    try:
        value = item.get("LUTData")
    except Exception as e:  # noqa: BLE001 - pydicom converts the nested element only now
        raise CxsegError(f"cannot read {path}: its LUTData is damaged ({e})") from None
    if value is None:
        return np.zeros(0)
    if isinstance(value, bytes | bytearray):
        return np.frombuffer(bytes(value)[: len(value) // 2 * 2], dtype="<u2").astype(float)
    try:
        return np.asarray(value, float).ravel()
    except (TypeError, ValueError):
        raise CxsegError(f"cannot read {path}: its LUTData is not a list of numbers") from None


def _lut_range(item: Any, path: Any = "") -> tuple[float, float]:
    bits = _lut_bits(item, path)
    data = _lut_data(item, path)
    entries = int(numbers(item, "LUTDescriptor", path, 3)[0]) or 65536  # 0 means 2**16
    if data.size != entries:  # pydicom's LUT functions unpack exactly that many
        raise CxsegError(
            f"cannot read {path}: its LUTData holds {data.size} entries, its LUTDescriptor says {entries}"
        )
    if data.size:
        return float(data.min()), float(data.max())
    return 0.0, 2.0**bits - 1


def _modality_range(ds: Any, path: Any = "") -> tuple[float, float]:
    """Output range of the modality LUT stage."""
    seq = ds.get("ModalityLUTSequence")
    if seq:
        return _lut_range(seq[0], path)
    lo, hi = _stored_range(ds, path)
    slope = number(ds, "RescaleSlope", path, 1.0)
    intercept = number(ds, "RescaleIntercept", path, 0.0)
    a, b = lo * slope + intercept, hi * slope + intercept
    return min(a, b), max(a, b)


def _window_output_range(ds: Any, path: Any = "") -> tuple[float, float]:
    """Output range of pydicom's windowing (same rule as ``pydicom.pixels.apply_windowing``)."""
    seq = ds.get("ModalityLUTSequence")
    if seq:
        lo, hi = 0.0, 2.0 ** _lut_bits(seq[0], path) - 1
    else:
        lo, hi = _stored_range(ds, path)
    if ds.get("RescaleSlope") is not None and ds.get("RescaleIntercept") is not None:
        slope, intercept = number(ds, "RescaleSlope", path), number(ds, "RescaleIntercept", path)
        lo, hi = lo * slope + intercept, hi * slope + intercept
    return min(lo, hi), max(lo, hi)


def display_pipeline(
    ds: Any, stored: np.ndarray, path: Any = ""
) -> tuple[np.ndarray, tuple[float, float], str]:
    """Modality LUT -> VOI (LUT or window) -> MONOCHROME1 inversion of a greyscale frame.

    Returns
    -------
    array, (low, high), voi
        float32 display values, the display range (the VOI output range, or the data's
        min/max without a VOI), and which VOI step was applied (``"lut"``, ``"window"`` or ``"none"``).

    Raises
    ------
    CxsegError
        When a LUT, window or rescale of the header is not valid (names ``path``).
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    # the ranges first: they check the header values pydicom's LUT functions would trip on
    modality_rng = _modality_range(ds, path)
    if ds.get("VOILUTSequence"):
        voi, rng = "lut", _lut_range(ds.VOILUTSequence[0], path)
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        voi, rng = "window", _window_output_range(ds, path)
        numbers(ds, "WindowCenter", path)
        numbers(ds, "WindowWidth", path, positive=True)
    else:
        voi, rng = "none", modality_rng
    try:
        with np.errstate(all="ignore"):
            arr = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
            if voi != "none":
                arr = np.asarray(apply_voi_lut(arr, ds, prefer_lut=voi == "lut"), dtype=np.float64)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as e:
        raise CxsegError(f"cannot apply the modality/VOI LUT of {path}: {type(e).__name__}: {e}") from None
    if not np.isfinite(arr).all():
        raise CxsegError(f"cannot read {path}: its rescale or VOI settings give non-finite pixel values")
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
    from pydicom.errors import InvalidDicomError

    from .limits import input_file_size

    p = Path(path)
    if input_file_size(p, "a DICOM radiograph", empty_ok=True) == 0:
        raise CxsegError(f"Empty file (0 bytes), not a DICOM radiograph: {p}")
    from .dicom_limits import check_dicom_pixels

    check_dicom_pixels(p)  # a header too large to be true fails before the pixels are read
    try:
        ds = dcmread(p)
    except CxsegError:
        raise
    except InvalidDicomError:
        raise CxsegError(f"Not a DICOM file (no DICM header): {p}") from None
    except Exception as e:  # noqa: BLE001 - truncated headers raise EOFError/ValueError/...
        raise CxsegError(f"Cannot read DICOM file {p} (damaged or truncated?): {e}") from e
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise CxsegError(f"DICOM file holds no pixel data (truncated, or not an image): {p}")
    frames = integer(ds, "NumberOfFrames", p, 1, lo=1)
    if frames > 1:
        raise CxsegError(
            f"Expected a single-frame radiograph, got {frames} frames in {p}; "
            "multi-frame DICOM is not supported"
        )
    try:
        stored = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - decoder errors come in many types
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        hint = f" (transfer syntax {getattr(ts, 'name', ts)})" if ts is not None else ""
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
        window = (0.0, float(2 ** _bits(ds, p, 8) - 1))
        voi = "none"
        warnings.append(f"{photometric} colour image converted to grey")
    elif photometric in ("MONOCHROME1", "MONOCHROME2"):
        arr, window, voi = display_pipeline(ds, stored, p)
    elif photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            rgb = np.asarray(apply_color_lut(stored, ds), dtype=np.float64)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
            raise CxsegError(f"cannot apply the colour palette of {p}: {type(e).__name__}: {e}") from None
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
        try:
            sp = numbers(ds, tag, p, 2, positive=True, required=False)
        except CxsegError as e:
            warnings.append(f"{tag} ignored: {e}")
            continue
        if sp is not None:
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
        try:
            meta["magnification"] = number(ds, "EstimatedRadiographicMagnificationFactor", p, positive=True)
        except CxsegError as e:
            warnings.append(f"magnification factor ignored: {e}")
    if warnings:
        meta["warnings"] = warnings
    held = np.ascontiguousarray(geom.from_disk(arr))
    return Image(array=held, geometry=geom, modality=modality, meta=meta)
