"""NIfTI volumes and label maps (nibabel).

Reading transposes/flips the stored array so its axes follow the world frame (S, P, L), never
resamples, and keeps the file's affine and header fields; writing a label map that came from a
NIfTI file (or from an image read from one) puts back that file's voxel order, affine and
qform/sform codes exactly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import Geometry, held_geometry, world_from_ras_affine
from ..images import CxsegError, Image, LabelMap
from .label_values import (  # noqa: F401 - count_values, default_classes: used through this module
    count_values,
    default_classes,
    integer_valued,
    to_label_array,
)
from .sidecar import (
    classes_from_sidecar,
    find_sidecar,
    has_label_name,
    label_stem,
    note_sidecar,
    read_sidecar,
    sidecar_confirms_labels,
)

#: Without a name hint or sidecar, integer data with at most this many values are labels.
FEW_VALUES = 64
#: With a name hint, integer-valued data with at most this many values are labels.
HINTED_VALUES = 1024

#: Header fields that carry a NIfTI file's geometry (copied verbatim by the writer).
_GEOMETRY_FIELDS = (
    "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
    "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z", "xyzt_units",
)


def is_nifti_path(path: str | os.PathLike) -> bool:
    """True for names ending in ``.nii`` or ``.nii.gz`` (any case).

    Parameters
    ----------
    path
        A file name or path.

    Returns
    -------
    bool
    """
    low = str(path).lower()
    return low.endswith(".nii") or low.endswith(".nii.gz")


# ---------------------------------------------------------------------------------- reading
def _load(path: Path) -> Any:
    import nibabel as nib

    from .limits import input_file_size
    from .nifti_header import check_loaded_header, check_nifti_size

    input_file_size(path, "a NIfTI file")  # missing, a folder, a pipe, empty: named refusals

    check_nifti_size(path)  # before nibabel allocates: a header too large to be true fails here
    try:
        img = nib.load(str(path), mmap=False)
    except Exception as e:  # nibabel raises many kinds for non-NIfTI content
        raise CxsegError(f"cannot read {path} as NIfTI: {e}") from e
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image | nib.Nifti1Pair):
        raise CxsegError(f"cannot read {path} as NIfTI: it is a {type(img).__name__}")
    check_loaded_header(path, img.header)  # the header nibabel parsed is the one it will read by
    return img


def _data(img: Any, path: Path) -> np.ndarray:
    try:
        arr = np.asanyarray(img.dataobj)
    except Exception as e:  # truncated gzip: EOFError, zlib.error, OSError, ValueError ...
        raise CxsegError(f"cannot read the voxels of {path}: the file is truncated or corrupt ({e})") from e
    arr = np.asarray(arr)
    if arr.dtype.kind == "c" or arr.dtype.fields is not None:
        raise CxsegError(f"cannot read {path}: unsupported voxel type {arr.dtype} (RGB or complex NIfTI)")
    if arr.dtype == np.float64 or arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    return arr


def _spatial_and_channels(arr: np.ndarray, path: Path) -> tuple[np.ndarray, bool]:
    """Disk array as (x, y, z) or (x, y, z, c); True when it has channels."""
    if arr.ndim == 2:
        return arr[..., None], False
    if arr.ndim == 3:
        return arr, False
    if arr.ndim == 4:
        if arr.shape[3] == 1:
            return arr[..., 0], False
        return arr, True
    if arr.ndim == 5 and arr.shape[3] == 1:  # NIfTI vector data: (x, y, z, 1, c)
        arr = arr[:, :, :, 0, :]
        return (arr[..., 0], False) if arr.shape[3] == 1 else (arr, True)
    raise CxsegError(f"cannot read {path}: {arr.ndim}D NIfTI of shape {arr.shape} is not supported")


def _fix_non_finite(arr: np.ndarray, path: Path, warnings: list[str]) -> np.ndarray:
    if arr.dtype.kind != "f":
        return arr
    finite = np.isfinite(arr)
    if finite.all():
        return arr
    n_bad = int(finite.size - np.count_nonzero(finite))
    if n_bad == finite.size:
        raise CxsegError(f"cannot use {path}: it holds no finite values (all NaN or infinite)")
    lo = arr[finite].min()
    arr = np.array(arr, copy=True)
    arr[~finite] = lo
    warnings.append(
        f"{path}: {n_bad} NaN/infinite voxels replaced by the minimum finite value {float(lo):g}"
    )
    return arr


def _geometry_fields(header: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in _GEOMETRY_FIELDS:
        v = np.asarray(header[k])
        out[k] = v.tolist() if v.ndim else v.item()
    out["pixdim"] = np.asarray(header["pixdim"]).tolist()
    return out


def decide_labels(
    arr: np.ndarray,
    path: str | os.PathLike,
    as_labels: bool | None = None,
    sidecar: dict[str, Any] | None = None,
    few_values: int = FEW_VALUES,
    hinted_values: int = HINTED_VALUES,
) -> bool:
    """Whether an array read from ``path`` is a label map.

    Parameters
    ----------
    arr
        The voxel data (spatial only).
    path
        Its file (the name may hint at labels: ``labelsTr/``, ``*_seg``, ``*mask*`` ...).
    as_labels
        The caller's decision, which wins.
    sidecar
        The file's matching sidecar (:func:`~.sidecar.read_sidecar`): it confirms a label map
        only when its classes name every value and the data are regions
        (:func:`~.sidecar.sidecar_confirms_labels`); it never turns an image into labels.
    few_values, hinted_values
        Largest number of distinct values of a label map without / with a hint.

    Returns
    -------
    bool
    """
    if as_labels is not None:
        return bool(as_labels)
    hinted = has_label_name(path)
    if hinted or arr.dtype.kind in "iub":
        if integer_valued(arr) and count_values(arr, hinted_values if hinted else few_values) is not None:
            return True
    # a sidecar only confirms data that already look like labels (its classes, in regions)
    return sidecar_confirms_labels(arr, sidecar)


def read_nifti(
    path: str | os.PathLike,
    as_labels: bool | None = None,
    channel_names: list[str] | None = None,
    modality: str = "",
) -> Image | LabelMap:
    """Read a NIfTI file as an :class:`Image` or a :class:`LabelMap`.

    Parameters
    ----------
    path
        ``.nii`` or ``.nii.gz`` file.
    as_labels
        Force (True) or forbid (False) a label map; by default decided from a sidecar, the name
        (``labelsTr/``, ``*label*``, ``*seg*``, ``*mask*``) and integer data with few values.
    channel_names
        Names of the channels of a 4D file (default ``c0``, ``c1`` ...).
    modality
        ``Image.modality`` to record (NIfTI does not say).

    Returns
    -------
    Image or LabelMap
        Held array in world-following axis order (channels first for 4D), ``geometry.source``
        with the path, ``format="nifti"`` and the header's geometry fields, and
        ``meta["nifti_header"]`` with the nibabel header. Non-finite voxels of a partly-NaN image
        are replaced by its minimum (noted in ``meta["warnings"]``).

    Raises
    ------
    CxsegError
        Missing, empty, truncated or non-NIfTI file; no finite voxel; a 4D file opened as
        labels; label data that are not non-negative integers. The message names the file.
    """
    path = Path(path)
    img = _load(path)
    disk, has_channels = _spatial_and_channels(_data(img, path), path)
    warnings: list[str] = []
    disk = _fix_non_finite(disk, path, warnings)
    hdr = img.header
    qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    if qcode == 0 and scode == 0:
        warnings.append(
            f"{path}: the header has neither qform nor sform; orientation follows nibabel's "
            "fallback affine and may be wrong"
        )
    affine = np.asarray(img.affine, dtype=float)
    lookup = find_sidecar(path)
    sidecar = lookup.data
    if has_channels:
        if as_labels:
            raise CxsegError(f"{path} has {disk.shape[3]} channels (4D) and cannot be a label map")
        is_labels = False
    else:
        is_labels = decide_labels(disk, path, as_labels, sidecar)
    source = {
        "path": str(path),
        "format": "nifti",
        "role": "labels" if is_labels else "image",
        "nifti_fields": _geometry_fields(hdr),
        "qform_code": qcode,
        "sform_code": scode,
    }
    try:
        geom = held_geometry(
            disk.shape[:3], world_from_ras_affine(affine), source_affine=affine, source=source
        )
    except ValueError as e:
        raise CxsegError(f"cannot place {path} in the world: {e}") from e
    meta: dict[str, Any] = {
        "source_path": str(path),
        "name": label_stem(path),
        "nifti_header": hdr,
        "warnings": warnings,
    }
    note_sidecar(lookup, meta)
    if is_labels:
        held = np.ascontiguousarray(geom.from_disk(to_label_array(disk, path)))
        classes = classes_from_sidecar(sidecar) or default_classes(held)
        if sidecar and sidecar.get("reference_image"):
            meta["reference_image_path"] = str(sidecar["reference_image"])
        return LabelMap(array=held, geometry=geom, classes=classes, meta=meta)
    if has_channels:
        n = disk.shape[3]
        names = list(channel_names) if channel_names and len(channel_names) == n else None
        if channel_names and names is None:
            warnings.append(
                f"{path}: {len(channel_names)} channel names given for {n} channels; using c0..c{n - 1}"
            )
        held = np.ascontiguousarray(geom.from_disk(np.moveaxis(disk, 3, 0)))
        return Image(
            array=held,
            geometry=geom,
            modality=modality,
            channel_names=names or [f"c{i}" for i in range(n)],
            meta=meta,
        )
    held = np.ascontiguousarray(geom.from_disk(disk))
    return Image(array=held, geometry=geom, modality=modality, meta=meta)


def nifti_holds_labels(path: str | os.PathLike) -> bool:
    """True when an existing NIfTI file holds a label map (used before overwriting it).

    Parameters
    ----------
    path
        A NIfTI file.

    Returns
    -------
    bool
        False for 4D, float-valued, negative or many-valued data, and for unreadable files.
    """
    p = Path(path)
    try:
        img = _load(p)
        disk, has_channels = _spatial_and_channels(_data(img, p), p)
    except CxsegError:
        return False
    if has_channels:
        return False
    return decide_labels(disk, p, None, read_sidecar(p))


# ---------------------------------------------------------------------------------- writing
def _header_for(geom: Geometry, arr: np.ndarray, affine: np.ndarray) -> Any:
    """A fresh header whose geometry fields are the source file's, verbatim, when known."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(arr.shape)
    hdr.set_data_dtype(arr.dtype)
    fields = geom.source.get("nifti_fields") if geom.source.get("format") == "nifti" else None
    if fields:
        for k in _GEOMETRY_FIELDS:
            if k in fields:
                hdr[k] = fields[k]
        pixdim = np.asarray(hdr["pixdim"], dtype=float)
        pixdim[:4] = np.asarray(fields["pixdim"], dtype=float)[:4]
        hdr["pixdim"] = pixdim
        if np.allclose(hdr.get_best_affine(), affine, atol=1e-4):
            return hdr
        hdr = nib.Nifti1Header()
        hdr.set_data_shape(arr.shape)
        hdr.set_data_dtype(arr.dtype)
    hdr.set_xyzt_units("mm")
    hdr.set_sform(affine, code="scanner")
    lin = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    if np.allclose(lin.T @ lin, np.eye(3), atol=1e-5):  # qform cannot hold shears
        hdr.set_qform(affine, code="scanner")
    else:
        hdr.set_qform(affine, code="unknown")
    return hdr


def nifti_label_image(label_map: LabelMap, path: str | os.PathLike = "labels") -> Any:
    """The ``nibabel.Nifti1Image`` that :func:`write_nifti_labels` saves.

    Parameters
    ----------
    label_map
        Integer label map.
    path
        Used in error messages only.

    Returns
    -------
    nibabel.Nifti1Image
    """
    import nibabel as nib

    geom = label_map.geometry
    held = np.asarray(label_map.array)
    if held.ndim != geom.ndim:
        raise CxsegError(
            f"cannot write {path}: the label array is {held.ndim}D but its geometry is {geom.ndim}D"
        )
    held = to_label_array(held, path)
    arr, affine = geom.nifti_array_and_affine(held)
    if (
        geom.source.get("format") == "nifti"
        and geom.disk_shape is not None
        and tuple(arr.shape) != tuple(geom.disk_shape)
    ):
        raise CxsegError(
            f"cannot write {path}: the label array (shape {held.shape}) does not match the grid of "
            f"its source image {geom.source.get('path')} (shape {geom.disk_shape})"
        )
    arr = np.ascontiguousarray(arr)
    hdr = _header_for(geom, arr, np.asarray(affine, float))
    img = nib.Nifti1Image(arr, np.asarray(affine, float), header=hdr)
    img.header["descrip"] = b"napari-cxseg labels"
    return img


def write_nifti_labels(
    label_map: LabelMap, path: str | os.PathLike, overwrite: bool = False
) -> list[str]:
    """Write a label map as NIfTI, in its source file's voxel order and affine when it has one.

    Parameters
    ----------
    label_map
        Integer label map (uint8/uint16 on disk, int32 when ids exceed 65535).
    path
        ``.nii`` or ``.nii.gz`` target.
    overwrite
        Replace an existing label file (never an image: see :func:`~.atomic.check_target`).

    Returns
    -------
    list of str
        The NIfTI path and its ``.labels.json`` sidecar (class names and colours).

    Raises
    ------
    CxsegError
        Unsafe target, a shape that does not fit the source grid, non-integer labels, an
        unwritable folder. Nothing is written then.
    """
    import nibabel as nib

    from .atomic import atomic_write, check_target
    from .sidecar import write_sidecar

    path = Path(path)
    if not is_nifti_path(path):
        raise CxsegError(f"cannot write {path} as NIfTI: the name must end in .nii or .nii.gz")
    check_target(path, label_map, overwrite)
    img = nifti_label_image(label_map, path)
    atomic_write(path, lambda tmp: nib.save(img, tmp))
    sc = write_sidecar(label_map, path, reference_image=_reference_image(label_map, path))
    return [str(path), sc]


def _reference_image(label_map: LabelMap, target: Path) -> str | None:
    """The image the labels belong to: the recorded one, else the geometry's source image."""
    ref = label_map.meta.get("reference_image_path")
    if ref:
        return str(ref)
    src = label_map.geometry.source or {}
    if src.get("role") == "image" and src.get("path") and str(src["path"]) != str(target):
        return str(src["path"])
    return None
