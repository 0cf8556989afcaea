"""Open scene graphs as layer-data tuples, over their radiograph when one is open or beside them.

Used by the napari reader (``_reader.py``) and the widgets; no napari import.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import Geometry
from ..images import CxsegError
from .imagenome import SceneGraph, SceneGraphError, read_scene_graph
from .scene_graph_files import MAX_OPEN, find_radiograph, image_id_of, list_scene_graphs
from .scene_graph_layer import scene_graph_layer_data
from .scene_graph_space import Placement, place


@dataclass
class RadiographRef:
    """A radiograph boxes can be placed on: its geometry and stored shape.

    ``is_original`` is True for a DICOM (the original MIMIC-CXR image), None when unknown.
    """

    name: str
    geometry: Geometry
    disk_shape: tuple[int, int]
    is_original: bool | None = None
    source_path: str | None = None

    def matches(self, image_id: str) -> bool:
        stem = Path(self.source_path).stem if self.source_path else None
        return image_id in (self.name, stem)


def reference_from_geometry(
    name: str, geometry: Geometry, shape: tuple[int, ...], source_path: str | None = None
) -> RadiographRef:
    """A :class:`RadiographRef` for a held array of ``shape`` with ``geometry``."""
    disk_shape = tuple(geometry.disk_shape or tuple(shape[-2:]))[-2:]
    fmt = (geometry.source or {}).get("format")
    path = source_path or (geometry.source or {}).get("path")
    return RadiographRef(
        name, geometry, (int(disk_shape[0]), int(disk_shape[1])), True if fmt == "dicom" else None, path
    )


def reference_from_layer_state(name: str, state: dict[str, Any], shape: tuple[int, ...]) -> RadiographRef:
    """A :class:`RadiographRef` for a live 2D image layer (``layer.as_layer_data_tuple()[1]``)."""
    from ..layers import META_KEY, geometry_from_layer_meta

    geom = geometry_from_layer_meta(state, 2)
    md = (state.get("metadata") or {}).get(META_KEY) or {}
    return reference_from_geometry(name, geom, shape, md.get("source_path"))


def placement_on(sg: SceneGraph, ref: RadiographRef | None) -> Placement:
    """Where ``sg``'s boxes go on ``ref`` (or in the original pixel space without one)."""
    if ref is None:
        return place(sg)
    return place(
        sg,
        ref.geometry.disk_affine(),
        ref.disk_shape,
        is_original=ref.is_original,
        reference=ref.source_path or ref.name,
    )


def open_scene_graphs(path: str, open_radiographs: list[RadiographRef] = ()) -> list[tuple]:
    """Layer-data tuples for the scene graphs at ``path`` (and radiographs found beside them).

    Parameters
    ----------
    path
        A ``*_SceneGraph.json``, a zip of them, ``archive.zip/<entry>`` or a ``scene_graph``
        folder (at most :data:`MAX_OPEN` graphs at once).
    open_radiographs
        Radiographs already open in the viewer; one named by the graph's dicom_id is used.

    Returns
    -------
    list of tuple
        For each graph: its radiograph's image layer when read from beside it, then the
        Shapes layer of its regions.

    Raises
    ------
    CxsegError
        Nothing to open, too many graphs, or an unreadable graph (names the file).
    """
    paths = list_scene_graphs(path)
    if not paths:
        raise CxsegError(f"no <dicom_id>_SceneGraph.json found in {path}")
    if len(paths) > MAX_OPEN:
        raise CxsegError(
            f"{path} holds {len(paths)} scene graphs; open one of them, e.g. {paths[0]}"
        )
    out: list[tuple] = []
    for p in paths:
        try:
            sg = read_scene_graph(p)
        except SceneGraphError as e:
            raise CxsegError(str(e)) from e
        ref = next((r for r in open_radiographs if r.matches(sg.image_id)), None)
        if ref is None:
            ref, image_layer = _radiograph_beside(p, sg.image_id)
            if image_layer is not None:
                out.append(image_layer)
        placement = placement_on(sg, ref)
        if ref is not None and ref.disk_shape:
            sg.image_size = _int_shape(placement.original_shape)
        out.append(scene_graph_layer_data(sg, placement))
    return out


def _int_shape(shape: tuple[float, float] | None) -> tuple[int, int] | None:
    if shape is None:
        return None
    return (int(round(shape[0])), int(round(shape[1])))


def _radiograph_beside(p: str, image_id: str) -> tuple[RadiographRef | None, tuple | None]:
    file = find_radiograph(p, image_id or image_id_of(p))
    if file is None:
        return None, None
    from ..images import Image
    from ..io import read
    from ..layers import image_layer_data

    try:
        image = next((o for o in read(file) if isinstance(o, Image)), None)
    except CxsegError as e:
        warnings.warn(
            f"the radiograph {file} beside {p} could not be read ({e}); boxes are shown in "
            "the original pixel space",
            stacklevel=2,
        )
        return None, None
    if image is None or np.asarray(image.array).ndim != 2:
        return None, None
    ref = reference_from_geometry(image_id, image.geometry, image.array.shape, file)
    return ref, image_layer_data(image, name=image_id)
