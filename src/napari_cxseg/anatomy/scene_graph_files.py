"""Finding scene graphs (files, zips, ``scene_graph/`` folders) and the radiograph beside them.

Layouts (../shared/reference/formats.md 1.2): ``<dicom_id>_SceneGraph.json`` on its own; a zip
whose entries are ``scene_graph/<dicom_id>_SceneGraph.json``; an unzipped
``silver_dataset/scene_graph/`` folder, sometimes with a second nested ``scene_graph/``.
The radiograph of a scene graph is the file named by its dicom_id (``<dicom_id>.dcm``,
``.jpg``, ``.jpeg`` or ``.png``) in the scene graph's folder or one of the two above it.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from .imagenome import SCENE_GRAPH_SUFFIX
from .scene_graph_json import split_zip_path

#: Opening more scene graphs than this at once is refused (a silver zip holds 242,072).
MAX_OPEN = 8
RADIOGRAPH_SUFFIXES = (".dcm", ".jpg", ".jpeg", ".png")


def is_scene_graph_name(name: str) -> bool:
    return name.endswith(SCENE_GRAPH_SUFFIX)


def scene_graph_folder(path: Path) -> Path | None:
    """The folder holding the scene-graph files of ``path`` (itself, ``scene_graph/``, nested)."""
    for folder in (path, path / "scene_graph", path / "scene_graph" / "scene_graph"):
        if folder.is_dir() and any(is_scene_graph_name(p.name) for p in _entries(folder)):
            return folder
    return None


def _entries(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return [Path(e.path) for e in it if e.is_file()]
    except OSError:
        return []


def list_scene_graphs(path: str | os.PathLike) -> list[str]:
    """The scene graphs ``path`` names: one file, the entries of a zip, or a folder's files.

    Zip entries come back as ``archive.zip/<entry>`` (what ``read_scene_graph`` reads). An
    empty list when ``path`` holds none. Never raises.
    """
    p = Path(path)
    try:
        if p.is_file() and is_scene_graph_name(p.name):
            return [str(p)]
        if p.is_dir():
            folder = scene_graph_folder(p)
            if folder is None:
                return []
            return sorted(str(f) for f in _entries(folder) if is_scene_graph_name(f.name))
        archive, inner = split_zip_path(str(p))
        if archive is None:
            return []
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if is_scene_graph_name(n)]
        if inner is not None:
            names = [n for n in names if n == inner or n.startswith(inner.rstrip("/") + "/")]
        return [f"{archive}/{n}" for n in names]
    except (OSError, zipfile.BadZipFile, ValueError):
        return []


def image_id_of(path: str) -> str:
    """The dicom_id of a scene-graph path (its file name without ``_SceneGraph.json``)."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name[: -len(SCENE_GRAPH_SUFFIX)] if is_scene_graph_name(name) else name


def find_radiograph(scene_graph_path: str, image_id: str) -> str | None:
    """The radiograph file of ``image_id`` beside a scene graph (or up to two folders above)."""
    archive, _ = split_zip_path(scene_graph_path)
    start = Path(archive).parent if archive else Path(scene_graph_path).parent
    folders = [start, start.parent, start.parent.parent]
    for folder in dict.fromkeys(folders):
        for f in _entries(folder):
            if f.stem == image_id and f.suffix.lower() in RADIOGRAPH_SUFFIXES:
                return str(f)
    return None
