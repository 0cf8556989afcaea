"""What a click-guided segmenter remembers between clicks, and when it must forget it.

Besides the normalised image (and its block averages), a :class:`~.guided.GuidedSegmenter`
keeps two things that do not depend on the next click:

- the image channels sampled on a working grid (:class:`GridCache`, keyed by the grid's
  centre, side, spacing and source level; a few grids): a pass on a grid already sampled, e.g.
  the first pass of a later click on the grid where the previous one ended, reuses them;
- the previous call's prompts and where its AutoZoom ended (:class:`LastCall`): a later call
  on the same image, spacing, box and mask to refine whose clicks include all the previous ones
  (clicks were added) and whose prompts all lie inside that final grid starts there, instead of
  redoing every zoom pass from the first, chest-sized grid (nnInteractive's AutoZoom does the
  same for a refined object). A different image, spacing, box or mask to refine, a removed
  click, or a click outside that grid starts afresh.

No Qt or napari import; torch is not imported here.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np


def mask_digest(mask: np.ndarray | None) -> bytes | None:
    """A short digest of a boolean mask's shape and content (``None`` for no mask)."""
    if mask is None:
        return None
    a = np.ascontiguousarray(mask, dtype=bool)
    h = hashlib.blake2b(repr(a.shape).encode(), digest_size=16)
    h.update(a.view(np.uint8).data)
    return h.digest()


def weak(obj: Any) -> Any:
    """A weak reference to ``obj``, or ``None`` when it cannot have one."""
    try:
        return weakref.ref(obj)
    except TypeError:
        return None


def _includes(old: np.ndarray, new: np.ndarray) -> bool:
    """Whether every row of ``old`` is also a row of ``new`` (same coordinates, any order)."""
    have = {tuple(r) for r in np.asarray(new, float).tolist()}
    return all(tuple(r) in have for r in np.asarray(old, float).tolist())


class GridCache:
    """The last few ``(key -> tensor)`` entries, least recently used dropped first.

    Parameters
    ----------
    size
        Entries kept.
    """

    def __init__(self, size: int = 4):
        self.size = int(size)
        self._items: OrderedDict[tuple, Any] = OrderedDict()

    def get(self, key: tuple) -> Any:
        """The entry for ``key`` (now the most recent) or ``None``."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: tuple, value: Any) -> None:
        """Store ``value`` under ``key``, dropping the oldest entry beyond :attr:`size`."""
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry."""
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class LastCall:
    """The prompts of one call and the working grid its AutoZoom ended on.

    Parameters
    ----------
    image
        Weak reference to the image array.
    spacing
        Voxel size per axis.
    positive, negative
        ``(k, ndim)`` index coordinates of the clicks.
    box
        ``(2, ndim)`` box corners or ``None``.
    existing
        :func:`mask_digest` of the mask to refine (``None``: none).
    centre, side
        Final working grid (mm).
    zoomed_in
        Whether the AutoZoom had already zoomed in on the object.
    """

    image: Any
    spacing: tuple[float, ...]
    positive: np.ndarray
    negative: np.ndarray
    box: np.ndarray | None
    existing: bytes | None
    centre: np.ndarray
    side: float
    zoomed_in: bool

    def start_for(
        self,
        image: np.ndarray,
        spacing: np.ndarray,
        positive: np.ndarray,
        negative: np.ndarray,
        box: np.ndarray | None,
        existing: bytes | None,
        anchors_mm: np.ndarray,
    ) -> tuple[np.ndarray, float, bool] | None:
        """``(centre, side, zoomed_in)`` to start a call from, or ``None`` to start afresh.

        A call continues this one when it is on the same image (the same array object, as for
        the normalised image), spacing, box and mask to refine, its clicks include all of this
        call's, and its prompt anchors (mm) lie inside this call's final grid with the margin
        the AutoZoom keeps (0.45 of the side from the centre).
        """
        if self.image is None or self.image() is not image:
            return None
        if tuple(float(s) for s in spacing) != self.spacing or existing != self.existing:
            return None
        if (box is None) != (self.box is None) or (box is not None and not np.array_equal(box, self.box)):
            return None
        if not (_includes(self.positive, positive) and _includes(self.negative, negative)):
            return None
        if np.any(np.abs(np.asarray(anchors_mm, float) - self.centre) > 0.45 * self.side):
            return None
        return self.centre.copy(), float(self.side), bool(self.zoomed_in)
