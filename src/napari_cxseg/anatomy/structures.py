"""Anatomical structures of a frontal chest radiograph as binary masks, from models or mask files.

The region rules (:mod:`.regions`) need a few structures by name (:data:`STRUCTURE_NAMES`):
``right lung``, ``left lung``, ``heart``, ``right clavicle``, ``left clavicle`` and, when a model
gives them, ``trachea``, ``spine``, ``aorta``, ``right hilum``, ``left hilum``, ``mediastinum``
and ``diaphragm``. Class names of cards and label files are matched to them through
:data:`SYNONYMS` (TorchXRayVision's ``Weasand`` is the trachea, ``Hilus Pulmonis`` the hilum,
``Facies Diaphragmatica`` the diaphragm).

Models run through :class:`~napari_cxseg.inference.Predictor`. By default the lungs come from
``cxr-lungs`` and the heart and clavicles from ``cxr-anatomy-demo``; ``cxr-anatomy``
(TorchXRayVision's PSPNet) replaces both when its weights are present. When several models give
the same structure, the first model listed wins.

A label map holds one class per pixel, so where a model's structures overlap (a clavicle or a
hilum over the lung) the lung loses those pixels. :func:`restore_covered` gives them back: pixels
of the covering structure that lie between lung pixels above and below in the same column. A
mediastinum mask gets the trachea and aorta pixels back (they lie inside it).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..images import CxsegError, Image, LabelMap

#: Structures the region rules know.
STRUCTURE_NAMES: tuple[str, ...] = (
    "right lung", "left lung", "heart", "right clavicle", "left clavicle", "trachea", "spine",
    "aorta", "right hilum", "left hilum", "mediastinum", "diaphragm",
)  # fmt: skip

#: Class names (lower case, spaces) -> structure name.
SYNONYMS: dict[str, str] = {
    **{n: n for n in STRUCTURE_NAMES},
    "right lung field": "right lung", "left lung field": "left lung",
    "cardiac silhouette": "heart",
    "weasand": "trachea",
    "right hilus pulmonis": "right hilum", "left hilus pulmonis": "left hilum",
    "right hilar structures": "right hilum", "left hilar structures": "left hilum",
    "facies diaphragmatica": "diaphragm",
    "vertebrae": "spine", "thoracic spine": "spine",
}  # fmt: skip

#: Default models: lungs first, then heart and clavicles.
DEFAULT_MODELS: tuple[str, ...] = ("cxr-lungs", "cxr-anatomy-demo")
#: Used instead of :data:`DEFAULT_MODELS` when its weights are present.
PREFERRED_MODEL = "cxr-anatomy"


def structure_of(class_name: str) -> str | None:
    """The structure a class name stands for (None when the rules do not use it)."""
    key = " ".join(str(class_name).strip().lower().replace("_", " ").split())
    return SYNONYMS.get(key)


def masks_from_label_map(label_map: LabelMap) -> dict[str, np.ndarray]:
    """``{structure: bool mask}`` for the classes of a label map the rules use.

    Lung pixels covered by a clavicle class in the same map are given back to the lung
    (:func:`restore_covered`).
    """
    arr = np.asarray(label_map.array)
    out: dict[str, np.ndarray] = {}
    for cid, cls in sorted(label_map.classes.items()):
        s = structure_of(cls.name)
        if s is None:
            continue
        m = arr == cid
        out[s] = out[s] | m if s in out else m
    for side in ("right", "left"):
        for cover in (f"{side} clavicle", f"{side} hilum"):
            lung, c = out.get(f"{side} lung"), out.get(cover)
            if lung is not None and c is not None:
                out[f"{side} lung"] = restore_covered(lung, c)
    if "mediastinum" in out:  # the trachea and the aorta lie in the mediastinum
        for inside in ("trachea", "aorta"):
            if inside in out:
                out["mediastinum"] = out["mediastinum"] | out[inside]
    return {k: v for k, v in out.items() if v.any()}


def merge_structures(*sets: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Structures from several sources; the first source that has a structure wins."""
    out: dict[str, np.ndarray] = {}
    for s in sets:
        for name, m in s.items():
            if name not in out and np.any(m):
                out[name] = np.asarray(m, bool)
    return out


def restore_covered(mask: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """``mask`` plus the ``cover`` pixels that lie between ``mask`` pixels in their column.

    Parameters
    ----------
    mask, cover
        Boolean arrays (rows, columns) of one radiograph.

    Returns
    -------
    numpy.ndarray
        The restored mask (a new array).
    """
    m = np.asarray(mask, bool)
    c = np.asarray(cover, bool) & ~m
    if not c.any() or not m.any():
        return m.copy()
    above = np.maximum.accumulate(m, axis=0)
    below = np.maximum.accumulate(m[::-1], axis=0)[::-1]
    return m | (c & above & below)


def masks_from_files(paths: Mapping[str, Any], image: Image) -> dict[str, np.ndarray]:
    """Structures from mask files (manual masks) on a radiograph's held grid.

    Masks are read as datasets draw them, on the *stored* pixels of the radiograph
    (:func:`napari_cxseg.training.targets.read_mask`: lossy JPEG thresholded at half its maximum,
    resized to the image, then put through the image's display reorientation).

    Parameters
    ----------
    paths
        ``{structure or folder kind: path}``. Keys ``lungs`` (1 right, 2 left), ``lung`` /
        ``lungs_combined`` (both lungs in one class, split by anatomy), ``heart`` and
        ``clavicles`` (1 right, 2 left) follow the layouts of :mod:`napari_cxseg.training.sources`;
        a structure name (``right lung`` ...) takes the mask's non-zero pixels.
    image
        The radiograph the masks belong to.

    Raises
    ------
    CxsegError
        When a file cannot be read or does not fit the image (names it), or a kind is unknown.
    """
    from ..training.targets import read_mask, split_lungs

    out: dict[str, np.ndarray] = {}
    for kind, p in paths.items():
        if kind not in ("lung", "lungs_combined", "lungs", "clavicles", "heart") and not structure_of(kind):
            raise CxsegError(f"mask {p}: unknown structure '{kind}' (known: lungs, lung, heart, clavicles, "
                             f"{', '.join(STRUCTURE_NAMES)})")
        try:
            a = read_mask(Path(p), image)
        except CxsegError:
            raise
        except Exception as e:  # a reader error becomes a message naming the file
            raise CxsegError(f"cannot read mask {p}: {e}") from None
        if kind in ("lung", "lungs_combined"):
            a = split_lungs(a > 0)
            kind = "lungs"
        if kind == "lungs":
            out["right lung"], out["left lung"] = a == 1, a == 2
        elif kind == "clavicles":
            out["right clavicle"], out["left clavicle"] = a == 1, a == 2
        elif kind == "heart":
            out["heart"] = a > 0
        else:
            out[str(structure_of(kind))] = a > 0
    return {k: v for k, v in out.items() if v.any()}


def default_models() -> list[str]:
    """The models to run: ``cxr-anatomy`` when its weights are here, else the demo cards present."""
    from ..models.cards import list_cards
    from ..models.weights import weights_status

    cards = {c.name: c for c in list_cards([])}
    pref = cards.get(PREFERRED_MODEL)
    if pref is not None and weights_status(pref)[0]:
        return [PREFERRED_MODEL]
    have = [m for m in DEFAULT_MODELS if m in cards]
    if not have:
        raise CxsegError(f"no model for the regions: none of the cards {', '.join(DEFAULT_MODELS)} exists "
                         f"and {PREFERRED_MODEL} has no weights here (see `napari-cxseg models`)")
    return have


def segment_structures(
    image: Image, models: Sequence[str] | None = None, device: str = "auto", trust: bool = False,
    cancel: Any = None,
) -> Generator[tuple[int, int, str], None, tuple[dict[str, np.ndarray], list[LabelMap]]]:
    """Run the models on a radiograph and collect their structures (a generator).

    Yields ``(model index, number of models + 1, model name)`` before each model runs (the last
    step is the regions' own); returns
    ``(structures, label maps)``.

    Raises
    ------
    CxsegError
        When a model cannot run, or when no model gives both lungs.
    """
    from ..inference import Predictor

    names = list(models) if models else default_models()
    maps: list[LabelMap] = []
    for i, name in enumerate(names):
        yield i, len(names) + 1, name
        pred = Predictor(name, device=device, trust=trust)
        maps.append(pred.predict(image, cancel=cancel))
    found = merge_structures(*(masks_from_label_map(m) for m in maps))
    if "right lung" not in found or "left lung" not in found:
        src = image.meta.get("source_path") or image.meta.get("name") or "the radiograph"
        raise CxsegError(f"{src}: the models ({', '.join(names)}) found "
                         f"{'no lungs' if not any('lung' in k for k in found) else 'only one lung'}; "
                         "the regions need both lungs")
    return found, maps
