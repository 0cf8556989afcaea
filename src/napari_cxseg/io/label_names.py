"""What a file's name says: its stem, and whether the name or folder marks a label file."""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Suffixes removed to form a label file's stem (layer names, legacy sidecars), longest first.
STEM_SUFFIXES = (".nii.gz", ".nii", ".png", ".dcm", ".jpeg", ".jpg")


def label_stem(path: str | os.PathLike) -> str:
    """A label file's stem: its name without ``.nii.gz``/``.nii``/``.png``/``.dcm``/``.jpg``/``.jpeg``.

    Parameters
    ----------
    path
        The label file.

    Returns
    -------
    str
    """
    name = Path(path).name
    low = name.lower()
    for suffix in STEM_SUFFIXES:
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


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
    p = Path(path)
    if p.parent.name.lower() in LABEL_NAME_TOKENS:  # labelsTr/, masks/ ...: the whole folder name
        return True
    return any(t in LABEL_NAME_TOKENS for t in re.split(r"[_\-. ]+", label_stem(p).lower()))
