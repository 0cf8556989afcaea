"""Class names, colours and geometry of a label file, kept beside it in ``<stem>.labels.json``.

Format::

    {"classes": {"1": {"name": "right lung", "colour": "#1f77b4"}},
     "geometry": Geometry.to_dict(),          # PNG: also "spacing": [row_mm, col_mm]
     "reference_image": "/path/of/the/image"}

The stem is the file name without ``.nii.gz``, ``.nii``, ``.png``, ``.dcm`` (and ``.jpg``/``.jpeg``
so that JPEG masks find theirs too).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..images import CxsegError, LabelClass, LabelMap

#: Suffixes removed to form the sidecar stem, longest first.
STEM_SUFFIXES = (".nii.gz", ".nii", ".png", ".dcm", ".jpeg", ".jpg")
SIDECAR_SUFFIX = ".labels.json"


def sidecar_path(path: str | os.PathLike) -> Path:
    """Path of the sidecar that belongs to a label file.

    Parameters
    ----------
    path
        The label file (``.nii.gz``, ``.nii``, ``.png``, ``.dcm`` ...).

    Returns
    -------
    Path
        ``<folder>/<stem>.labels.json``.
    """
    p = Path(path)
    name = p.name
    low = name.lower()
    for suffix in STEM_SUFFIXES:
        if low.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + SIDECAR_SUFFIX)


def label_stem(path: str | os.PathLike) -> str:
    """A label file's stem (the sidecar is ``<stem>.labels.json``).

    Parameters
    ----------
    path
        The label file.

    Returns
    -------
    str
        File name without ``.nii.gz``/``.nii``/``.png``/``.dcm``/``.jpg``/``.jpeg``.
    """
    return sidecar_path(path).name[: -len(SIDECAR_SUFFIX)]


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The parsed sidecar of a label file, or ``None`` when it has none.

    Parameters
    ----------
    path
        The label file (not the sidecar itself).

    Returns
    -------
    dict or None
        The JSON content.

    Raises
    ------
    CxsegError
        When the sidecar exists but is not a JSON object.
    """
    sc = sidecar_path(path)
    if not sc.is_file():
        return None
    try:
        data = json.loads(sc.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CxsegError(f"cannot read the label sidecar {sc}: {e}") from e
    if not isinstance(data, dict):
        raise CxsegError(f"the label sidecar {sc} is not a JSON object")
    return data


def classes_from_sidecar(data: dict[str, Any] | None) -> dict[int, LabelClass]:
    """Class names and colours from a parsed sidecar (``{}`` when it has none).

    Parameters
    ----------
    data
        What :func:`read_sidecar` returned.

    Returns
    -------
    dict
        ``{id: LabelClass}``.
    """
    if not data or not isinstance(data.get("classes"), dict):
        return {}
    try:
        classes = LabelMap.classes_from_dict(data["classes"])
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in classes.items() if k != 0}


def sidecar_dict(
    label_map: LabelMap,
    geometry: dict[str, Any] | None = None,
    reference_image: str | None = None,
) -> dict[str, Any]:
    """The sidecar content for a label map.

    Parameters
    ----------
    label_map
        Gives the classes; its geometry is used when ``geometry`` is not given.
    geometry
        Geometry dict to store (e.g. with an added ``spacing``).
    reference_image
        Path of the image the labels belong to.

    Returns
    -------
    dict
        JSON-ready content.
    """
    geom = geometry if geometry is not None else label_map.geometry.to_dict()
    return {
        "classes": label_map.classes_to_dict(),
        "geometry": geom,
        "reference_image": reference_image,
    }


def write_sidecar(
    label_map: LabelMap,
    path: str | os.PathLike,
    geometry: dict[str, Any] | None = None,
    reference_image: str | None = None,
) -> str:
    """Write the sidecar of the label file ``path`` atomically.

    Parameters
    ----------
    label_map
        The label map written to ``path``.
    path
        The label file (the sidecar goes beside it).
    geometry
        Geometry dict to store instead of ``label_map.geometry.to_dict()``.
    reference_image
        Path of the image the labels belong to.

    Returns
    -------
    str
        The sidecar path.
    """
    from .atomic import atomic_write

    sc = sidecar_path(path)
    text = json.dumps(sidecar_dict(label_map, geometry, reference_image), indent=2)

    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")

    atomic_write(sc, _write)
    return str(sc)


#: File/folder name parts that mark a label file (compared lower-case, split at ``_-. ``).
LABEL_NAME_TOKENS = frozenset(
    {
        "label", "labels", "labelstr", "labelsts", "lbl", "seg", "segs", "segmentation",
        "segmentations", "mask", "masks", "annotation", "annotations", "gt",
    }
)


def has_label_name(path: str | os.PathLike) -> bool:
    """True when a file's name, or its folder's, says it holds labels.

    Parameters
    ----------
    path
        A file path, e.g. ``Task09/labelsTr/spleen_2.nii.gz`` or ``abc-mask.jpg``.

    Returns
    -------
    bool
        Whether a part of the file name (split at ``_-. ``), or the whole folder name, is one of
        :data:`LABEL_NAME_TOKENS`.
    """
    import re

    p = Path(path)
    if p.parent.name.lower() in LABEL_NAME_TOKENS:  # labelsTr/, masks/ ...: the whole folder name
        return True
    return any(t in LABEL_NAME_TOKENS for t in re.split(r"[_\-. ]+", label_stem(p).lower()))
