"""The small data types that carry images and label maps through the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .geometry import Geometry

#: Distinct, colour-blind-friendly defaults for classes without a colour of their own.
DEFAULT_COLOURS = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
    "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000",
    "#aaffc3", "#808000", "#ffd8b1", "#000075", "#808080", "#ffe119",
)


def default_colour(label: int) -> str:
    """Colour for class ``label`` when none is given."""
    return DEFAULT_COLOURS[(int(label) - 1) % len(DEFAULT_COLOURS)]


@dataclass
class LabelClass:
    """One class of a label map."""

    name: str
    colour: str | None = None

    def __post_init__(self) -> None:
        self.name = str(self.name)


@dataclass
class Image:
    """An image array with its geometry.

    Parameters
    ----------
    array
        Spatial axes last (``(z, y, x)`` or ``(row, col)``); a leading channel axis when
        ``channel_names`` is given.
    geometry
        Where the voxels are (:class:`~napari_cxseg.geometry.Geometry`).
    modality
        ``"CT"``, ``"MR"``, ``"CR"``, ``"DX"``, ``"XR"`` (PNG/JPEG radiographs) ...
    channel_names
        Names of the leading channel axis, if any.
    meta
        Anything else worth keeping (source path, header fields, display window).
    """

    array: np.ndarray
    geometry: Geometry
    modality: str = ""
    channel_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape without the channel axis."""
        return tuple(self.array.shape[-self.geometry.ndim :])


@dataclass
class LabelMap:
    """An integer label array with its geometry and named, coloured classes."""

    array: np.ndarray
    geometry: Geometry
    classes: dict[int, LabelClass] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.array, np.ndarray) and not self.array.flags.writeable:
            # label maps are edited in place (napari painting): never hand out read-only arrays
            self.array = np.array(self.array, copy=True)
        self.classes = {
            int(k): (v if isinstance(v, LabelClass) else LabelClass(str(v)))
            for k, v in self.classes.items()
            if int(k) != 0
        }

    def colour_of(self, label: int) -> str:
        """The class colour, or the default for that id."""
        c = self.classes.get(int(label))
        return c.colour if c is not None and c.colour else default_colour(label)

    def classes_to_dict(self) -> dict[str, dict[str, str]]:
        """JSON-friendly ``{id: {"name", "colour"}}`` (sidecar format)."""
        return {
            str(k): {"name": c.name, "colour": self.colour_of(k)} for k, c in sorted(self.classes.items())
        }

    @staticmethod
    def classes_from_dict(d: dict) -> dict[int, LabelClass]:
        """Inverse of :meth:`classes_to_dict`; also accepts ``{id: name}``."""
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out[int(k)] = LabelClass(v.get("name", str(k)), v.get("colour") or v.get("color"))
            else:
                out[int(k)] = LabelClass(str(v))
        return out


class CxsegError(Exception):
    """An error a user can act on: the message names the cause and the file."""


def finite_array(array: Any) -> tuple[np.ndarray, int]:
    """The array with its non-finite values (NaN, +Inf, -Inf) replaced, and how many there were.

    NaN and -Inf become the smallest finite value, +Inf the largest (an image without any
    finite value becomes zeros). Integer and boolean arrays are always finite and come back
    as they are; so does a float array without NaN/Inf (no copy is made then).

    Parameters
    ----------
    array
        Any array-like (an image of any dimension, channels included).

    Returns
    -------
    array : numpy.ndarray
        The input when nothing was replaced, else a copy (same dtype) with finite values only.
    n_replaced : int
        Number of values that were replaced.
    """
    arr = np.asarray(array)
    if arr.dtype.kind not in "fc":
        return arr, 0
    bad = ~np.isfinite(arr)
    n = int(np.count_nonzero(bad))
    if n == 0:
        return arr, 0
    out = np.array(arr, copy=True)
    if n == arr.size:
        out[...] = 0
        return out, n
    if arr.dtype.kind == "c":  # complex: no order, use zero
        out[bad] = 0
        return out, n
    good = ~bad
    low = np.min(arr, where=good, initial=np.inf)
    high = np.max(arr, where=good, initial=-np.inf)
    out[np.isnan(arr) | np.isneginf(arr)] = low
    out[np.isposinf(arr)] = high
    return out, n
