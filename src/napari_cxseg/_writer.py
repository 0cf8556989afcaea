"""napari writer contributions for Labels layers (NIfTI, PNG, DICOM SEG).

After a successful write the layer's recovery copy (autosave) is deleted: its edits are saved,
so the plugin must not offer to restore them after a restart.
"""

from __future__ import annotations

from typing import Any


def _write(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    from .io import write_labels
    from .layers import layer_to_label_map

    label_map = layer_to_label_map(data, meta)
    # napari's save dialog has already asked about replacing an existing file; writers still
    # refuse to replace a source image or anything that is not a label map
    # write_labels also discards the layer's crash-recovery copy once the file is written
    return write_labels(label_map, path, overwrite=True)


def write_labels_nifti(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a Labels layer as NIfTI with its source image's geometry (and a names sidecar)."""
    return _write(path, data, meta)


def write_labels_png(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a 2D Labels layer as a PNG of class ids (and a names sidecar)."""
    return _write(path, data, meta)


def write_labels_dicom_seg(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a Labels layer over a DICOM source as DICOM SEG with named segments."""
    return _write(path, data, meta)


def write_scene_graph_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a Shapes layer of named region boxes as a Chest ImaGenome scene graph (JSON).

    The layer's scene graph (its metadata) is written back with the boxes as drawn: original
    pixel coordinates from the layer's placement on its radiograph, ``x1..y2`` in the 224
    space; fields the layer did not change are written as they were read.
    """
    from .anatomy.imagenome import SceneGraphError, write_scene_graph
    from .anatomy.scene_graph_layer import scene_graph_from_layer
    from .images import CxsegError

    sg = scene_graph_from_layer(data, meta, path)
    try:
        return [write_scene_graph(sg, path)]
    except SceneGraphError as e:
        raise CxsegError(str(e)) from e
