"""Class management on a ``{id: LabelClass}`` dict and its label array.

Every function returns new objects (a new dict, a new array) and leaves its inputs untouched,
so a widget can push the old state onto napari's undo history.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from ..images import LabelClass, default_colour
from ._grid import as_spacing, check_label_array, fits_dtype

Classes = dict[int, LabelClass]
_HEX = re.compile(r"^#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")


def normalise_colour(colour: str | Sequence[float]) -> str:
    """``"#rrggbb"`` (or ``"#rrggbbaa"``) from a hex string or an RGB(A) tuple of floats in 0-1.

    Raises
    ------
    ValueError
        For anything else.
    """
    if isinstance(colour, str):
        c = colour.strip()
        if len(c) == 4 and c.startswith("#"):  # "#rgb"
            c = "#" + "".join(ch * 2 for ch in c[1:])
        if not _HEX.match(c):
            raise ValueError(f"colour {colour!r} is not '#rrggbb' or an RGB(A) tuple in 0-1")
        return c.lower()
    vals = [float(v) for v in colour]
    if len(vals) not in (3, 4) or not all(0.0 <= v <= 1.0 for v in vals):
        raise ValueError(f"colour {colour!r} is not '#rrggbb' or an RGB(A) tuple in 0-1")
    return "#" + "".join(f"{round(v * 255):02x}" for v in vals)


def _known(classes: Classes, class_id: int) -> int:
    class_id = int(class_id)
    if class_id not in classes:
        raise KeyError(f"class {class_id} does not exist (classes: {sorted(classes)})")
    return class_id


def next_free_id(classes: Classes, labels: np.ndarray | None = None) -> int:
    """Smallest id above every id in ``classes`` and in ``labels``."""
    top = max([0, *classes])
    if labels is not None and np.size(labels):
        top = max(top, int(np.max(labels)))
    return top + 1


def add_class(
    classes: Classes,
    name: str,
    colour: str | Sequence[float] | None = None,
    class_id: int | None = None,
) -> tuple[Classes, int]:
    """Add a named class.

    Parameters
    ----------
    classes
        Current classes.
    name
        Display name (must not be empty).
    colour
        Hex colour or RGB(A) tuple; the default palette colour of the id when ``None``.
    class_id
        Id to use; one above the largest existing id when ``None``.

    Returns
    -------
    classes : dict
        New dict with the class added.
    class_id : int
        The id given to the class.
    """
    if not str(name).strip():
        raise ValueError("a class needs a name")
    cid = next_free_id(classes) if class_id is None else int(class_id)
    if cid <= 0:
        raise ValueError(f"class ids start at 1 (0 is the background), got {cid}")
    if cid in classes:
        raise ValueError(f"class {cid} already exists ({classes[cid].name!r})")
    col = default_colour(cid) if colour is None else normalise_colour(colour)
    out = dict(classes)
    out[cid] = LabelClass(str(name).strip(), col)
    return dict(sorted(out.items())), cid


def rename_class(classes: Classes, class_id: int, name: str) -> Classes:
    """New dict where class ``class_id`` is called ``name``."""
    cid = _known(classes, class_id)
    if not str(name).strip():
        raise ValueError("a class needs a name")
    out = dict(classes)
    out[cid] = LabelClass(str(name).strip(), classes[cid].colour)
    return out


def recolour_class(classes: Classes, class_id: int, colour: str | Sequence[float]) -> Classes:
    """New dict where class ``class_id`` has ``colour`` (hex or RGB(A) tuple in 0-1)."""
    cid = _known(classes, class_id)
    out = dict(classes)
    out[cid] = LabelClass(classes[cid].name, normalise_colour(colour))
    return out


def merge_classes(
    labels: np.ndarray, classes: Classes, src_ids: Iterable[int], dst_id: int
) -> tuple[np.ndarray, Classes]:
    """Move the voxels of ``src_ids`` into ``dst_id`` and drop the source classes.

    ``dst_id`` must be a known class; sources may be ids that only occur in ``labels``.

    Returns
    -------
    labels : numpy.ndarray
        New array.
    classes : dict
        New dict without the merged source classes.
    """
    arr = check_label_array(labels)
    dst = _known(classes, dst_id)
    src = sorted({int(s) for s in src_ids} - {dst})
    if 0 in src:
        raise ValueError("the background (0) cannot be merged into a class")
    out = arr.astype(fits_dtype(dst, arr.dtype), copy=True)
    out[np.isin(arr, src)] = dst
    return out, {k: v for k, v in classes.items() if k not in src}


def delete_class(labels: np.ndarray, classes: Classes, class_id: int) -> tuple[np.ndarray, Classes]:
    """Erase class ``class_id`` from the array (its voxels become 0) and from the dict.

    The id may be unknown to ``classes`` (stray voxels): its voxels are still erased.
    """
    arr = check_label_array(labels)
    cid = int(class_id)
    if cid == 0:
        raise ValueError("the background (0) cannot be deleted")
    out = arr.copy()
    out[arr == cid] = 0
    return out, {k: v for k, v in classes.items() if k != cid}


def class_sizes(
    labels: np.ndarray, spacing: float | Sequence[float] | None = None
) -> dict[int, tuple[int, float]]:
    """Voxel count and size of every class present.

    Returns
    -------
    dict
        ``{id: (voxels, size)}`` for every non-zero id in ``labels``, where size is in mm³ for
        3D arrays and mm² for 2D arrays (``spacing`` in mm per axis; ``None`` = 1 mm).
    """
    arr = check_label_array(labels)
    unit = float(np.prod(as_spacing(spacing, arr.ndim)))
    ids, counts = np.unique(arr, return_counts=True)
    return {int(i): (int(n), float(n) * unit) for i, n in zip(ids, counts, strict=True) if i != 0}
