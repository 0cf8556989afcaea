"""Synthetic DICOM files made in code for the IO tests (pydicom only, no files in the repo).

``write_ct_series`` writes a CT series of single-frame slices with a known geometry;
``write_radiograph`` writes a single-frame CR/DX/SC image. Both fill in the patient, study,
series and equipment attributes that highdicom needs of a SEG's source images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Orientation presets: (row direction, column direction) in LPS.
ORIENTATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1, 0, 0), (0, 1, 0)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
    "sagittal": ((0, 1, 0), (0, 0, -1)),
}

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
SC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def oblique_orientation(angle_deg: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """An axial plane rotated about two axes (a genuinely oblique, orthonormal pair)."""
    a = np.deg2rad(angle_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    b = np.deg2rad(angle_deg * 0.7)
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    rot = rz @ rx
    return rot @ np.array([1.0, 0, 0]), rot @ np.array([0, 1.0, 0])


def _base_dataset(sop_class: str, modality: str, study_uid: str, series_uid: str, patient_id: str):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = "Synthetic^Patient"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "A1"
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "cxseg-tests"
    ds.SeriesNumber = 1
    return ds


def write_ct_series(
    folder: str | Path,
    n_slices: int = 8,
    shape: tuple[int, int] = (32, 32),
    orientation: str | tuple = "axial",
    pixel_spacing: tuple[float, float] = (0.8, 0.7),
    slice_spacing: float = 2.5,
    origin: tuple[float, float, float] = (-12.0, -20.0, 30.0),
    tilt_shift: tuple[float, float, float] | None = None,
    intercept: float = -1024.0,
    slope: float = 1.0,
    reverse_files: bool = False,
    skip: tuple[int, ...] = (),
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_uid: str | None = None,
    description: str = "synthetic CT",
    prefix: str = "ct",
    window: tuple[float, float] | None = (40.0, 400.0),
    seed: int = 0,
    sizes: dict[int, tuple[int, int]] | None = None,
) -> tuple[list[Path], np.ndarray]:
    """Write a CT series, one file per slice.

    Parameters
    ----------
    folder
        Where to write (created).
    orientation
        A key of :data:`ORIENTATIONS`, ``"oblique"``, or a ``(row_dir, col_dir)`` pair.
    pixel_spacing
        ``(between rows, between columns)`` mm.
    tilt_shift
        Extra in-plane shift per slice (LPS mm): a gantry tilt, giving a sheared stack.
    reverse_files
        Number the files in the reverse of the slice order.
    skip
        Slice indices not written (a missing slice).
    sizes
        ``{slice index: (rows, cols)}`` overrides (mixed image sizes).

    Returns
    -------
    files, stored
        The files written in slice order (along the normal) and the stored (pre-rescale) pixel
        values ``(n_slices, rows, cols)`` in that order (skipped slices included).
    """
    from pydicom.uid import generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(orientation, str):
        row_dir, col_dir = (
            oblique_orientation()
            if orientation == "oblique"
            else map(np.asarray, ORIENTATIONS[orientation])
        )
    else:
        row_dir, col_dir = (np.asarray(v, float) for v in orientation)
    row_dir = np.asarray(row_dir, float)
    col_dir = np.asarray(col_dir, float)
    normal = np.cross(row_dir, col_dir)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    rng = np.random.default_rng(seed)
    stored = rng.integers(0, 2000, size=(n_slices, *shape), dtype=np.uint16)
    # a bright marker in a corner of every slice makes flips visible
    stored[:, :3, :2] = 3000 + np.arange(n_slices)[:, None, None]
    files = []
    for k in range(n_slices):
        shift = np.zeros(3) if tilt_shift is None else np.asarray(tilt_shift, float) * k
        pos = np.asarray(origin, float) + normal * slice_spacing * k + shift
        number = n_slices - k if reverse_files else k + 1
        path = folder / f"{prefix}{number:03d}.dcm"
        files.append(path)
        if k in skip:
            continue
        ds = _base_dataset(CT_IMAGE_STORAGE, "CT", study_uid, series_uid, "SYN001")
        ds.SeriesDescription = description
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = number
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [f"{v:.6f}" for v in pixel_spacing]
        ds.SliceThickness = f"{slice_spacing:.6f}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleType = "HU"
        ds.KVP = "120"
        if window is not None:
            ds.WindowCenter = f"{window[0]:g}"
            ds.WindowWidth = f"{window[1]:g}"
        arr = stored[k]
        if sizes and k in sizes:
            arr = np.resize(arr, sizes[k])
        ds.set_pixel_data(np.ascontiguousarray(arr), "MONOCHROME2", 12)
        ds.save_as(path, enforce_file_format=True)
    return files, stored


def write_radiograph(
    path: str | Path,
    stored: np.ndarray,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    spacing_tag: str | None = "ImagerPixelSpacing",
    spacing: tuple[float, float] = (0.15, 0.14),
    modality: str = "DX",
    bits_stored: int = 12,
    intercept: float | None = None,
    slope: float | None = None,
    voi_lut_function: str | None = None,
    patient_orientation: str | None = "L\\F",
    view_position: str | None = "PA",
) -> Path:
    """Write a single-frame radiograph (``stored`` uint16 greyscale, or uint8 RGB ``(r, c, 3)``).

    Parameters
    ----------
    photometric
        ``"MONOCHROME1"``, ``"MONOCHROME2"`` or ``"RGB"``.
    window
        ``(center, width)`` VOI window, if any.
    spacing_tag
        ``"PixelSpacing"``, ``"ImagerPixelSpacing"`` or ``None`` (no spacing).
    patient_orientation
        PatientOrientation (row direction, column direction); the default ``L\\F`` is a PA
        chest in the standard display (patient's right on the image's left, head up);
        ``None`` leaves it out.
    view_position
        ViewPosition, or ``None``.
    """
    from pydicom.uid import generate_uid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sop = {"DX": DX_IMAGE_STORAGE, "CR": CR_IMAGE_STORAGE}.get(modality, SC_IMAGE_STORAGE)
    ds = _base_dataset(sop, modality, generate_uid(), generate_uid(), "SYN002")
    ds.InstanceNumber = 1
    if view_position is not None:
        ds.ViewPosition = view_position
    if patient_orientation is not None:
        ds.PatientOrientation = patient_orientation.split("\\")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    if spacing_tag:
        setattr(ds, spacing_tag, [f"{v:g}" for v in spacing])
    if window is not None:
        ds.WindowCenter = f"{window[0]:g}"
        ds.WindowWidth = f"{window[1]:g}"
    if voi_lut_function:
        ds.VOILUTFunction = voi_lut_function
    if intercept is not None:
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleSlope = f"{1.0 if slope is None else slope:g}"
        ds.RescaleType = "US"
    if photometric == "RGB":
        ds.set_pixel_data(np.ascontiguousarray(stored, dtype=np.uint8), "RGB", 8)
    else:
        ds.set_pixel_data(np.ascontiguousarray(stored), photometric, bits_stored)
    ds.save_as(path, enforce_file_format=True)
    return path
