"""napari reader contribution: claims medical image paths and returns layer-data tuples."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .layers import LayerData


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return a reader for ``path`` when napari-cxseg understands it, else ``None``.

    Parameters
    ----------
    path
        A file, a folder (DICOM series, MSD task) or a list of DICOM slice files.
    """
    from .io import detect_format

    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths:
        return None
    if len(paths) == 1 and _is_scene_graph(str(paths[0])):
        return read_scene_graph_layers
    if len(paths) > 1:
        # several files: only DICOM slices of one series are read together
        if all(detect_format(p) in ("dicom", "dicom-series") for p in paths):
            return read_layers
        return None
    return read_layers if detect_format(paths[0]) else None


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Read ``path`` into napari layer-data tuples (images, then label maps).

    Errors are raised as :class:`~napari_cxseg.images.CxsegError` naming the file; napari shows
    them as a notification and the viewer carries on.
    """
    from .images import LabelMap
    from .io import read
    from .layers import image_layer_data, labels_layer_data

    objs = read(path)
    out: list[LayerData] = []
    for obj in objs:
        name = obj.meta.get("name") or _stem(obj.meta.get("source_path") or path)
        if isinstance(obj, LabelMap):
            out.append(labels_layer_data(obj, name=name))
        else:
            out.append(image_layer_data(obj, name=name))
    return out


def _is_scene_graph(path: str) -> bool:
    """A ``*_SceneGraph.json``, a zip of them or a ``scene_graph`` folder (cheap check)."""
    from .anatomy.scene_graph_files import list_scene_graphs

    low = path.lower()
    if not (low.endswith(".json") or ".zip" in low or Path(path).is_dir()):
        return False
    return bool(list_scene_graphs(path))


def read_scene_graph_layers(path: str | list[str]) -> list[LayerData]:
    """Chest ImaGenome scene graph(s) as Shapes layers of named region boxes.

    The boxes are placed on the graph's radiograph: an image layer already open whose name or
    source file is the graph's dicom_id, else ``<dicom_id>.dcm/.jpg/.png`` beside the graph
    (opened with it); without one they are shown in the original pixel space.
    """
    from .anatomy.scene_graph_open import open_scene_graphs

    target = path[0] if isinstance(path, list) else path
    return open_scene_graphs(str(target), _open_radiographs())


def _open_radiographs() -> list:
    """2D image layers of the current viewer, as references boxes can be placed on."""
    try:
        import napari
    except ImportError:  # headless use of the reader function
        return []
    from .anatomy.scene_graph_open import reference_from_layer_state

    viewer = napari.current_viewer()
    if viewer is None:
        return []
    refs = []
    for layer in viewer.layers:
        if layer._type_string == "image" and layer.ndim == 2 and not layer.rgb:
            state = {
                "metadata": layer.metadata,
                "scale": layer.scale,
                "translate": layer.translate,
                "rotate": layer.rotate,
                "affine": layer.affine,
            }
            refs.append(reference_from_layer_state(layer.name, state, layer.data.shape))
    return refs


def _stem(path: str | list[str] | None) -> str:
    if isinstance(path, list):
        path = path[0] if path else None
    if not path:
        return "image"
    p = Path(path)
    name = p.name
    for ext in (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".json"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name
