"""Voxel-to-world geometry and the one world frame every layer lives in.

World frame
-----------
Volumes live in patient **LPS** coordinates (the DICOM convention) in millimetres, with the
world axes in napari's order **(z, y, x) = (Superior, Posterior, Left)**.  An axial slice is
then shown with anterior up and the patient's right on the screen's left (radiological display)
without any display trick, and layers from different files of one patient overlay.

2D radiographs live in their own detector plane, ``frame="image"``: world axes (row, column)
in millimetres of (Imager)PixelSpacing, displayed as acquired.

Readers only transpose and flip arrays (never resample) so that held array axes follow world
axes as closely as possible; what they did is kept in :class:`Geometry` so writers can invert it
exactly and write the file's own affine back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: RAS <-> LPS: negate x and y (the matrix is its own inverse).
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Axis names of the world frame, in napari order.
WORLD_AXIS_LABELS = ("S", "P", "L")
IMAGE_AXIS_LABELS = ("row", "column")


def _reverse_xyz(n: int = 3) -> np.ndarray:
    """Homogeneous permutation that turns (x, y, z, 1) into (z, y, x, 1)."""
    p = np.eye(n + 1)
    p[:n, :n] = np.eye(n)[::-1]
    return p


def world_from_lps_affine(affine_lps: np.ndarray) -> np.ndarray:
    """Turn an index->LPS(x, y, z) affine into index->world(z, y, x)."""
    return _reverse_xyz(3) @ np.asarray(affine_lps, dtype=float)


def lps_from_world_affine(affine_world: np.ndarray) -> np.ndarray:
    """Inverse of :func:`world_from_lps_affine`."""
    return _reverse_xyz(3) @ np.asarray(affine_world, dtype=float)


def world_from_ras_affine(affine_ras: np.ndarray) -> np.ndarray:
    """Turn a NIfTI-style index->RAS(x, y, z) affine into index->world(z, y, x)."""
    return world_from_lps_affine(LPS_FROM_RAS @ np.asarray(affine_ras, dtype=float))


def ras_from_world_affine(affine_world: np.ndarray) -> np.ndarray:
    """Inverse of :func:`world_from_ras_affine`."""
    return LPS_FROM_RAS @ lps_from_world_affine(affine_world)


@dataclass
class Geometry:
    """Where an array's voxels are in the world.

    Parameters
    ----------
    affine
        ``(n+1, n+1)`` homogeneous matrix mapping indices of the *held* array to world
        coordinates in mm (napari axis order, see module docstring).
    frame
        ``"LPS"`` for patient space (volumes, CT/MR slices), ``"image"`` for a radiograph's
        detector plane.
    disk_ornt
        nibabel orientation (``(n, 2)`` array) that turned the on-disk array into the held one;
        ``None`` when the held array is the disk array.
    disk_shape
        Shape of the on-disk array (spatial axes only).
    source_affine
        The file's own affine, verbatim (for NIfTI: index->RAS of the on-disk voxel order).
    source
        Free-form facts about the source (path, format, header fields) that writers reuse.
    """

    affine: np.ndarray
    frame: str = "LPS"
    disk_ornt: np.ndarray | None = None
    disk_shape: tuple[int, ...] | None = None
    source_affine: np.ndarray | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=float)
        if self.disk_ornt is not None:
            self.disk_ornt = np.asarray(self.disk_ornt, dtype=float)
        if self.source_affine is not None:
            self.source_affine = np.asarray(self.source_affine, dtype=float)
        if self.disk_shape is not None:
            self.disk_shape = tuple(int(s) for s in self.disk_shape)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions."""
        return self.affine.shape[0] - 1

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along each held array axis, in mm."""
        return np.linalg.norm(self.affine[:-1, :-1], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """World position of voxel index 0."""
        return self.affine[:-1, -1].copy()

    @property
    def axis_labels(self) -> tuple[str, ...]:
        """napari axis labels for this frame."""
        if self.frame == "image":
            return IMAGE_AXIS_LABELS[-self.ndim :]
        return WORLD_AXIS_LABELS[-self.ndim :]

    # ------------------------------------------------------------------ disk <-> held
    def from_disk(self, disk_array: np.ndarray) -> np.ndarray:
        """Transpose/flip an on-disk array (spatial axes last ``ndim``) into held order."""
        if self.disk_ornt is None:
            return np.asarray(disk_array)
        import nibabel.orientations as nio

        arr = np.asarray(disk_array)
        lead = arr.ndim - self.ndim
        if lead:
            # orientation applies to trailing spatial axes: move them first, then back
            moved = np.moveaxis(arr, range(lead), range(self.ndim, arr.ndim))
            out = nio.apply_orientation(moved, self.disk_ornt)
            return np.moveaxis(out, range(self.ndim, arr.ndim), range(lead))
        return nio.apply_orientation(arr, self.disk_ornt)

    def to_disk(self, held_array: np.ndarray) -> np.ndarray:
        """Invert :meth:`from_disk`: give back the on-disk voxel order."""
        if self.disk_ornt is None:
            return np.asarray(held_array)
        import nibabel.orientations as nio

        inv = nio.orientation_inverse(self.disk_ornt) if hasattr(nio, "orientation_inverse") else _ornt_inverse(self.disk_ornt)
        return nio.apply_orientation(np.asarray(held_array), inv)

    def disk_affine(self) -> np.ndarray:
        """Index->world affine of the array as stored (``affine`` when nothing was reoriented)."""
        if self.disk_ornt is None or self.disk_shape is None:
            return self.affine.copy()
        import nibabel.orientations as nio

        return self.affine @ np.linalg.inv(nio.inv_ornt_aff(self.disk_ornt, self.disk_shape))

    # ------------------------------------------------------------------ napari
    def layer_kwargs(self) -> dict[str, Any]:
        """napari layer keyword arguments that place the held array in the world.

        Axis-aligned data get ``scale``/``translate``; oblique data also get a ``rotate``
        matrix; sheared data (e.g. gantry tilt) get the full ``affine``.
        """
        n = self.ndim
        lin = self.affine[:n, :n]
        scale = np.linalg.norm(lin, axis=0)
        rot = lin / scale
        kw: dict[str, Any] = {
            "axis_labels": self.axis_labels,
            "units": ("mm",) * n,
        }
        if np.allclose(rot, np.eye(n), atol=1e-6):
            kw["scale"] = tuple(float(s) for s in scale)
            kw["translate"] = tuple(float(t) for t in self.affine[:n, n])
        elif np.allclose(rot.T @ rot, np.eye(n), atol=1e-5) and np.linalg.det(rot) > 0:
            kw["scale"] = tuple(float(s) for s in scale)
            kw["rotate"] = rot
            kw["translate"] = tuple(float(t) for t in self.affine[:n, n])
        else:
            kw["affine"] = self.affine.copy()
        return kw

    @classmethod
    def from_layer_transform(
        cls,
        ndim: int,
        scale=None,
        translate=None,
        rotate=None,
        affine=None,
        frame: str = "LPS",
    ) -> Geometry:
        """Rebuild the world mapping of a napari layer from its transform attributes."""
        n = ndim
        s = np.ones(n) if scale is None else np.asarray(scale, float)[-n:]
        t = np.zeros(n) if translate is None else np.asarray(translate, float)[-n:]
        r = np.eye(n) if rotate is None else np.asarray(rotate, float)
        if r.shape != (n, n):
            r = r[-n:, -n:]
        m = np.eye(n + 1)
        m[:n, :n] = r @ np.diag(s)
        m[:n, n] = t
        if affine is not None:
            a = np.asarray(affine, float)
            if a.shape[0] > n + 1:  # layer with extra leading dims: keep trailing spatial block
                keep = list(range(a.shape[0] - 1 - n, a.shape[0]))
                a = a[np.ix_(keep, keep)]
            m = a @ m
        return cls(affine=m, frame=frame)

    # ------------------------------------------------------------------ NIfTI
    def nifti_array_and_affine(self, held_array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Array and index->RAS affine to write the held array as NIfTI.

        A geometry that came from a NIfTI file gives back that file's voxel order and its
        affine verbatim; otherwise the held (z, y, x) array is written as (x, y, z).
        """
        if self.source_affine is not None and self.source.get("format") == "nifti":
            return self.to_disk(held_array), self.source_affine.copy()
        if self.frame == "image" or self.ndim == 2:
            # a radiograph plane, on the file's own pixel grid: x = column, y = row, unit z
            arr = np.asarray(self.to_disk(held_array)).T[..., None]
            d = self.disk_affine()
            aff = np.eye(4)
            aff[:2, :2] = d[:2, :2][::-1, ::-1]
            aff[:2, 3] = d[:2, 2][::-1]
            return arr, aff
        arr = np.asarray(held_array).transpose(2, 1, 0)
        perm = np.eye(4)[[2, 1, 0, 3]]  # index (x,y,z) -> held index (z,y,x)
        return arr, ras_from_world_affine(self.affine) @ perm

    # ------------------------------------------------------------------ metadata
    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (sidecars, recovery files)."""
        return {
            "affine": self.affine.tolist(),
            "frame": self.frame,
            "disk_ornt": None if self.disk_ornt is None else self.disk_ornt.tolist(),
            "disk_shape": None if self.disk_shape is None else list(self.disk_shape),
            "source_affine": None if self.source_affine is None else self.source_affine.tolist(),
            "source": {k: v for k, v in self.source.items() if _jsonable(v)},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        """Inverse of :meth:`to_dict`."""
        return cls(
            affine=np.asarray(d["affine"], float),
            frame=d.get("frame", "LPS"),
            disk_ornt=None if d.get("disk_ornt") is None else np.asarray(d["disk_ornt"], float),
            disk_shape=None if d.get("disk_shape") is None else tuple(d["disk_shape"]),
            source_affine=None
            if d.get("source_affine") is None
            else np.asarray(d["source_affine"], float),
            source=dict(d.get("source", {})),
        )

    def same_grid(self, other: Geometry, shape_a, shape_b, atol: float = 1e-3) -> bool:
        """True when two arrays of these shapes occupy the same voxels in the world."""
        return tuple(shape_a[-self.ndim :]) == tuple(shape_b[-other.ndim :]) and np.allclose(
            self.affine, other.affine, atol=atol
        )


def _jsonable(v: Any) -> bool:
    import json

    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


def _ornt_inverse(ornt: np.ndarray) -> np.ndarray:
    """Orientation that undoes ``ornt`` (for nibabel versions without ``orientation_inverse``)."""
    ornt = np.asarray(ornt)
    inv = np.empty_like(ornt)
    for in_ax, (out_ax, flip) in enumerate(ornt):
        inv[int(out_ax)] = (in_ax, flip)
    return inv


def held_geometry(disk_shape: tuple[int, ...], affine_world: np.ndarray, **kw: Any) -> Geometry:
    """Geometry that reorients a disk array to follow the world axes (transpose/flip only).

    Parameters
    ----------
    disk_shape
        Spatial shape of the array as stored.
    affine_world
        Index->world (napari order) affine of the array as stored.
    **kw
        Passed to :class:`Geometry` (``source_affine``, ``source``, ``frame``).

    Returns
    -------
    Geometry
        With ``affine`` for the held array and ``disk_ornt`` recording the reorientation.
    """
    import nibabel.orientations as nio

    affine_world = np.asarray(affine_world, float)
    n = affine_world.shape[0] - 1
    # io_orientation finds, for each disk axis, the closest world axis and its sign
    ornt = nio.io_orientation(affine_world)
    if np.any(np.isnan(ornt)):
        raise ValueError("affine is degenerate: cannot orient the array")
    held_aff = affine_world @ nio.inv_ornt_aff(ornt, disk_shape[:n])
    identity = np.column_stack([np.arange(n), np.ones(n)])
    return Geometry(
        affine=held_aff,
        disk_ornt=None if np.array_equal(ornt, identity) else ornt,
        disk_shape=tuple(disk_shape[:n]),
        **kw,
    )


def radiograph_geometry(
    disk_shape: tuple[int, ...],
    spacing: tuple[float, float] | np.ndarray = (1.0, 1.0),
    ornt: np.ndarray | None = None,
    source: dict[str, Any] | None = None,
    affine: np.ndarray | None = None,
) -> Geometry:
    """Detector-plane geometry of a radiograph held in its standard display.

    Parameters
    ----------
    disk_shape
        ``(rows, columns)`` of the image as stored.
    spacing
        Pixel spacing of the stored image, ``(between rows, between columns)`` in mm.
    ornt
        nibabel orientation (transpose/flip only) from the stored array to the displayed one
        (from DICOM PatientOrientation or EXIF, see ``io.orientation``); ``None`` for none.
    source
        ``Geometry.source``.
    affine
        Held index->world affine to use instead of the one built from ``spacing`` (e.g. kept in
        a label file's sidecar).

    Returns
    -------
    Geometry
        ``frame="image"``; ``affine`` maps held (row, column) indices to world (row, column) mm
        with the origin at the first held pixel, so the same anatomy lands at the same world
        point however the file stored it; ``disk_ornt``/``disk_shape`` let writers put labels
        back on the stored grid.
    """
    shape = tuple(int(s) for s in disk_shape[:2])
    sp = [float(v) for v in spacing]
    o = None if ornt is None else np.asarray(ornt, float)
    if o is not None and np.array_equal(o, [[0, 1], [1, 1]]):
        o = None
    if affine is None:
        held_sp = list(sp)
        if o is not None:
            for axis, (held, _) in enumerate(o):
                held_sp[int(held)] = sp[axis]
        affine = np.diag([held_sp[0], held_sp[1], 1.0])
    return Geometry(
        affine=np.asarray(affine, float),
        frame="image",
        disk_ornt=o,
        disk_shape=shape,
        source=dict(source or {}),
    )


def voxel_to_world(geometry: Geometry, index) -> np.ndarray:
    """World coordinates (napari order) of held-array indices (``(..., n)``)."""
    idx = np.atleast_2d(np.asarray(index, float))
    hom = np.concatenate([idx, np.ones((idx.shape[0], 1))], axis=1)
    return (geometry.affine @ hom.T).T[:, :-1]


def world_to_voxel(geometry: Geometry, world) -> np.ndarray:
    """Inverse of :func:`voxel_to_world`."""
    w = np.atleast_2d(np.asarray(world, float))
    hom = np.concatenate([w, np.ones((w.shape[0], 1))], axis=1)
    return (np.linalg.inv(geometry.affine) @ hom.T).T[:, :-1]
