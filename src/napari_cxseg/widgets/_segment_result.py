"""Where a Segment result goes, whether a Labels layer holds the user's edits, and what the
widget says about a radiograph's orientation.

A result is never dropped and never lands on another grid: it replaces the layer of the same
name only when that is a Labels layer on the result's world grid (asking first when the layer
was edited), and otherwise becomes a new, uniquely named layer.

"Edited" is not a flag that code can clear: the layer's metadata holds a digest of the model
output last written into it, and a layer is edited whenever its data differ from that output
(or when it holds no digest at all). A replacement stamps the digest of what it wrote, so
undoing the replacement brings back the user's data, which are edited again; a cancelled or
failed run, or a result put into a new layer, stamps nothing on the existing layer.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..layers import META_KEY, grid_differences, layer_grid_shape, layer_world_affine

if TYPE_CHECKING:
    import napari

    from ..images import LabelMap

#: metadata key (under ``metadata["cxseg"]``) of the digest of the model output in a layer
OUTPUT_DIGEST = "model_output_sha1"
#: metadata key (under ``metadata["cxseg"]``) of the model output itself, zlib-compressed
OUTPUT_COPY = "model_output"

ASSUMED_ORIENTATION = (
    "Orientation not recorded in the file: assumed as acquired "
    "(patient's right on the image's left)"
)

_SIDE_WORD = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def output_digest(array: Any) -> str:
    """SHA-1 of a label array's shape, dtype and bytes."""
    arr = np.ascontiguousarray(np.asarray(array))
    h = hashlib.sha1(f"{arr.shape}|{arr.dtype.str}|".encode())
    h.update(arr.view(np.uint8).reshape(-1))
    return h.hexdigest()


def is_edited(layer: Any) -> bool:
    """Whether a Labels layer holds anything but the model output last written into it.

    A layer without a digest (painted by hand, read from a file, restored) counts as edited.
    """
    stored = (layer.metadata.get(META_KEY) or {}).get(OUTPUT_DIGEST)
    return stored is None or stored != output_digest(layer.data)


def stamp_output(layer: Any, model: str) -> None:
    """Record that ``layer`` now holds exactly the output of ``model`` (call after writing).

    The output itself is kept too (zlib-compressed, :data:`OUTPUT_COPY`): the Train widget
    counts the voxels the user changed since (:func:`stored_output`).
    """
    arr = np.ascontiguousarray(np.asarray(layer.data))
    md = dict(layer.metadata.get(META_KEY) or {})
    md[OUTPUT_DIGEST] = output_digest(arr)
    md["model"] = model
    md[OUTPUT_COPY] = {"shape": list(arr.shape), "dtype": arr.dtype.str, "zlib": zlib.compress(arr.tobytes(), 1)}
    layer.metadata = {**layer.metadata, META_KEY: md}


def stored_output(layer: Any) -> np.ndarray | None:
    """The model output last stamped into a layer (None when there is none or it is unreadable)."""
    rec = (layer.metadata.get(META_KEY) or {}).get(OUTPUT_COPY)
    try:
        arr = np.frombuffer(zlib.decompress(rec["zlib"]), dtype=np.dtype(rec["dtype"]))
        return arr.reshape(tuple(rec["shape"]))
    except (TypeError, KeyError, ValueError, zlib.error):
        return None


def unique_name(viewer: napari.Viewer, name: str) -> str:
    """``name``, or ``name (2)``, ``name (3)`` ... whichever no layer has."""
    if name not in viewer.layers:
        return name
    i = 2
    while f"{name} ({i})" in viewer.layers:
        i += 1
    return f"{name} ({i})"


@dataclass
class Placement:
    """Where one result goes.

    ``layer`` is the existing Labels layer to write into (``None``: a new layer called
    ``name``); ``ask`` says whether that layer holds edits (ask before replacing);
    ``reason`` says why the result could not go into the layer of its name.
    """

    layer: Any
    name: str
    ask: bool = False
    reason: str = ""


def plan_result(viewer: napari.Viewer, name: str, label_map: LabelMap) -> Placement:
    """Decide where a result called ``name`` goes (nothing is changed here)."""
    from napari.layers import Labels

    existing = viewer.layers[name] if name in viewer.layers else None
    if existing is None:
        return Placement(None, name)
    if not isinstance(existing, Labels):
        return Placement(None, unique_name(viewer, name), reason=f"'{name}' is not a Labels layer")
    differences = grid_differences(
        label_map.array.shape,
        label_map.geometry.affine,
        layer_grid_shape(existing),
        layer_world_affine(existing),
    )
    if differences:
        return Placement(
            None,
            unique_name(viewer, name),
            reason=f"'{name}' is on another grid ({'; '.join(differences)})",
        )
    dtype = np.asarray(existing.data).dtype
    top = int(np.max(label_map.array, initial=0))
    if np.issubdtype(dtype, np.integer) and top > np.iinfo(dtype).max:
        return Placement(
            None, unique_name(viewer, name), reason=f"'{name}' ({dtype}) cannot hold class {top}"
        )
    return Placement(existing, name, ask=is_edited(existing))


# ---------------------------------------------------------------------- orientation


def orientation_line(layer: Any) -> tuple[str, bool]:
    """What the widget says about a radiograph layer's orientation: ``(text, unknown)``.

    Radiographs are 2D image layers. Their readers record ``metadata["orientation"]`` (``known``,
    ``source``, ``stored``, ``applied``, ``note``); an orientation the file does not record (or a
    2D layer from elsewhere, without the key) is assumed as acquired, and the line says so.
    Volumes, and no layer, give ``("", False)``.
    """
    if layer is None or int(getattr(layer, "ndim", 0)) != 2:
        return "", False
    info = (getattr(layer, "metadata", None) or {}).get("orientation")
    if not isinstance(info, dict) or not info.get("known", False):
        note = info.get("note") if isinstance(info, dict) else None
        return (f"{ASSUMED_ORIENTATION}. {note}" if note else ASSUMED_ORIENTATION), True
    source = info.get("source") or "the file"
    note = info.get("note")
    return (f"Orientation from {source}: {note}" if note else f"Orientation from {source}"), False


def names_sides(classes: dict) -> bool:
    """Whether a model's class names say left or right (e.g. "right lung")."""
    return any(_SIDE_WORD.search(str(getattr(c, "name", c))) for c in classes.values())
