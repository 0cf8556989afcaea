"""Where scene-graph boxes are: the 224 space, the original pixels and a radiograph's world frame.

Coordinates: ``original_x*``/``original_y*`` are continuous pixel coordinates of the original
image (columns x, rows y; pixel ``i`` covers ``[i, i + 1)``), napari data coordinates put the
centre of pixel ``i`` at ``i``, so an edge ``c`` is at index ``c - 0.5``. A radiograph opened by
this package holds its pixels in the standard display (a mirrored film is flipped) and places
them in a world frame of (row, column) mm; ``Geometry.disk_affine()`` maps the *stored* pixel
indices to that world, so a box given in stored pixels lands on the same anatomy however the
film was displayed. A radiograph at another resolution than the original (a 224 px JPEG, a
down-sampled PNG) is the original rescaled per axis: ``c_shown = c_original * shown / original``.

The original image size is not a field of the scene graph; it follows from the two coordinate
sets of its boxes: ``x224 = s_x * x_original + p_x`` (the same per axis for a letter-boxed
square, a stretch or a centre crop), so ``width = (224 - 2 p_x) / s_x``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .imagenome import SceneGraph

SPACE_224 = 224.0


@dataclass(frozen=True)
class Space224:
    """Per-axis linear map from original pixels to the 224 space: ``v224 = scale * v + offset``."""

    scale_x: float
    offset_x: float
    scale_y: float
    offset_y: float
    residual: float = 0.0  # RMS misfit in 224 units (0 for a map built from an image size)

    @classmethod
    def letterbox(cls, rows: int, cols: int) -> Space224:
        """Aspect-preserving resize into 224 x 224 with symmetric padding (``resize_pad``)."""
        s = SPACE_224 / max(rows, cols)
        return cls(s, (SPACE_224 - cols * s) / 2.0, s, (SPACE_224 - rows * s) / 2.0)

    @property
    def original_size(self) -> tuple[float, float]:
        """``(rows, columns)`` of the original image implied by a symmetric map."""
        return (
            (SPACE_224 - 2.0 * self.offset_y) / self.scale_y,
            (SPACE_224 - 2.0 * self.offset_x) / self.scale_x,
        )

    def to_224(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` in original pixels -> the 224 space."""
        x1, y1, x2, y2 = box
        return (
            self.scale_x * x1 + self.offset_x,
            self.scale_y * y1 + self.offset_y,
            self.scale_x * x2 + self.offset_x,
            self.scale_y * y2 + self.offset_y,
        )


def fit_space_224(sg: SceneGraph, max_residual: float = 1.5) -> Space224 | None:
    """Fit the original -> 224 map from the boxes that carry both coordinate sets.

    Parameters
    ----------
    sg
        The scene graph.
    max_residual
        Largest RMS misfit (224 units) accepted; the dataset rounds to whole units.

    Returns
    -------
    Space224 or None
        None when fewer than two distinct coordinates per axis exist, or the map does not fit.
    """
    xs, x224, ys, y224 = [], [], [], []
    for o in sg.objects:
        if o.original_x2 <= o.original_x1 or o.original_y2 <= o.original_y1 or o.x2 <= o.x1:
            continue
        xs += [o.original_x1, o.original_x2]
        x224 += [o.x1, o.x2]
        ys += [o.original_y1, o.original_y2]
        y224 += [o.y1, o.y2]
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    (sx, px), rx = _line(xs, x224)
    (sy, py), ry = _line(ys, y224)
    residual = float(np.sqrt((rx + ry) / 2.0))
    if sx <= 0 or sy <= 0 or residual > max_residual:
        return None
    return Space224(sx, px, sy, py, residual)


def _line(a: list[float], b: list[float]) -> tuple[tuple[float, float], float]:
    m = np.column_stack([np.asarray(a, float), np.ones(len(a))])
    coef, *_ = np.linalg.lstsq(m, np.asarray(b, float), rcond=None)
    res = float(np.mean((m @ coef - np.asarray(b, float)) ** 2))
    return (float(coef[0]), float(coef[1])), res


def space_224_for(sg: SceneGraph) -> Space224 | None:
    """The 224 map to write new boxes with: the graph's own when it fits, else from its size."""
    fitted = fit_space_224(sg)
    if fitted is not None:
        return fitted
    if sg.image_size is not None:
        return Space224.letterbox(*sg.image_size)
    return None


@dataclass
class Placement:
    """How a scene graph's original pixels map into the world of the layer it is shown on.

    Parameters
    ----------
    disk_affine
        ``3 x 3`` affine from stored (row, column) indices of the shown radiograph to world.
    pixel_scale
        Shown pixels per original pixel, ``(rows, columns)``.
    original_shape
        The original image's ``(rows, columns)`` when known.
    reference
        What the boxes are placed on (a file path, a layer name, or ``"original pixels"``).
    how
        One line saying how the original size was found (shown to the user).
    """

    disk_affine: np.ndarray = field(default_factory=lambda: np.eye(3))
    pixel_scale: tuple[float, float] = (1.0, 1.0)
    original_shape: tuple[float, float] | None = None
    reference: str = "original pixels"
    how: str = "no radiograph: boxes in the original pixel space"

    def to_world(self, box: tuple[float, float, float, float]) -> np.ndarray:
        """Original ``(x1, y1, x2, y2)`` -> the 4 ``(row, col)`` world corners of a rectangle."""
        x1, y1, x2, y2 = box
        sr, sc = self.pixel_scale
        corners = np.array([[y1, x1], [y1, x2], [y2, x2], [y2, x1]], float)
        idx = corners * [sr, sc] - 0.5
        world = (self.disk_affine @ np.column_stack([idx, np.ones(4)]).T).T[:, :2]
        return _rectangle(world)

    def to_original(self, vertices: Any) -> tuple[float, float, float, float]:
        """World vertices of a shape -> its bounding box ``(x1, y1, x2, y2)`` in original pixels."""
        v = np.asarray(vertices, float)[:, -2:]
        idx = (np.linalg.inv(self.disk_affine) @ np.column_stack([v, np.ones(len(v))]).T).T
        orig = (idx[:, :2] + 0.5) / np.asarray(self.pixel_scale, float)
        rows, cols = orig[:, 0], orig[:, 1]
        return (float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "disk_affine": np.asarray(self.disk_affine).tolist(),
            "pixel_scale": list(self.pixel_scale),
            "original_shape": None if self.original_shape is None else list(self.original_shape),
            "reference": self.reference,
            "how": self.how,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Placement:
        shape = d.get("original_shape")
        return cls(
            disk_affine=np.asarray(d.get("disk_affine", np.eye(3)), float),
            pixel_scale=tuple(float(v) for v in d.get("pixel_scale", (1.0, 1.0))),
            original_shape=None if shape is None else (float(shape[0]), float(shape[1])),
            reference=str(d.get("reference", "original pixels")),
            how=str(d.get("how", "")),
        )


def _rectangle(world: np.ndarray) -> np.ndarray:
    """Axis-aligned rectangle corners in napari's order (flips reorder the corners)."""
    r0, c0 = world.min(axis=0)
    r1, c1 = world.max(axis=0)
    return np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float)


def place(
    sg: SceneGraph,
    disk_affine: np.ndarray | None = None,
    disk_shape: tuple[int, int] | None = None,
    *,
    is_original: bool | None = None,
    original_shape: tuple[float, float] | None = None,
    reference: str = "",
) -> Placement:
    """Decide how ``sg``'s boxes map onto a radiograph (or onto the original pixel space).

    Parameters
    ----------
    sg
        The scene graph.
    disk_affine, disk_shape
        The shown radiograph's stored-index -> world affine and stored ``(rows, cols)``; None
        when there is no radiograph.
    is_original
        True when the radiograph is known to be the original (a DICOM, or a MIMIC-CXR-JPG file
        at full size); None: decide from the sizes.
    original_shape
        The original ``(rows, cols)`` when the caller knows it (overrides everything else).
    reference
        Name of what the boxes are placed on.

    Returns
    -------
    Placement
    """
    if disk_affine is None or disk_shape is None:
        return Placement(original_shape=_known_size(sg, original_shape))
    aff = np.asarray(disk_affine, float)
    shape = (float(disk_shape[0]), float(disk_shape[1]))
    size = _known_size(sg, original_shape)
    how = "original size given"
    if size is None:
        fitted = fit_space_224(sg)
        implied = None if fitted is None else tuple(float(round(v)) for v in fitted.original_size)
        if is_original or (is_original is None and implied and _close(implied, shape, 0.02)):
            size, how = shape, "the radiograph is the original image"
        elif implied is not None:
            size, how = implied, "original size from the 224-space and original box coordinates"
        elif _boxes_fit(sg, shape):
            size, how = shape, "original size unknown: the radiograph's size assumed"
        else:
            size = shape
            how = "original size unknown and boxes fall outside the radiograph: check the image"
    elif original_shape is None:
        how = "original size from the scene graph's image"
    scale = (shape[0] / size[0], shape[1] / size[1])
    return Placement(aff, scale, size, reference or "radiograph", how)


def _known_size(sg: SceneGraph, given: tuple[float, float] | None) -> tuple[float, float] | None:
    if given is not None:
        return (float(given[0]), float(given[1]))
    if sg.image_size is not None:
        return (float(sg.image_size[0]), float(sg.image_size[1]))
    return None


def _close(a: tuple[float, float], b: tuple[float, float], rel: float) -> bool:
    return all(abs(x - y) <= rel * max(abs(y), 1.0) for x, y in zip(a, b, strict=True))


def _boxes_fit(sg: SceneGraph, shape: tuple[float, float]) -> bool:
    rows, cols = shape
    return all(o.original_x2 <= cols * 1.01 and o.original_y2 <= rows * 1.01 for o in sg.objects)
