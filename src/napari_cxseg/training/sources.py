"""Training data on disk: which cases a path holds and where their reference masks are.

:func:`find_cases` understands the layouts users have:

* an MSD task folder (``dataset.json`` with a ``training`` list of image/label pairs);
* a CXLSeg-style dataset (``CXLSeg-mask.csv`` + ``CXLSeg-split.csv`` beside the images and
  ``<dicom_id>-mask.jpg`` lung masks, see :mod:`napari_cxseg.training.cxlseg`);
* a *structure* folder: ``images/`` plus ``masks/<structure>/`` sub-folders with one mask per
  image and structure (the layout of the JSRT/SCR and Shenzhen copies: ``masks/lungs``,
  ``masks/heart``, ``masks/clavicles``, ``masks/lungs_combined``);
* a folder of pairs: ``images/`` + ``labels/`` (or ``masks/``) with matching names (an image may be a
  DICOM series folder and its label a DICOM SEG ``<folder name>.dcm``), or files
  ``<name>.<ext>`` next to ``<name>_mask.<ext>`` / ``_label`` / ``_seg`` / ``-mask``;
* a folder whose sub-folders are any of the above (several sources, e.g. ``data/cxr``).

Each :class:`Case` names its masks by *structure*, and :data:`STRUCTURES` says which classes
each structure's values are, so cards pick what they need by class name
(:mod:`napari_cxseg.training.targets`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..images import CxsegError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".nii.gz", ".nii", ".dcm")
_MASK_TAGS = ("_mask", "-mask", "_label", "_labels", "_seg", "-seg")

#: Structure folder name -> {mask value: class name}. "lung" (both lungs in one mask) is split
#: into right and left lung by anatomy when a card asks for the sides.
STRUCTURES: dict[str, dict[int, str]] = {
    "lungs": {1: "right lung", 2: "left lung"},
    "lungs_combined": {1: "lung"},
    "lung": {1: "lung"},
    "heart": {1: "heart"},
    "clavicles": {1: "right clavicle", 2: "left clavicle"},
}


@dataclass
class Case:
    """One training case.

    Parameters
    ----------
    case_id
        Unique within its source (file stem).
    image
        Image file or DICOM series folder.
    masks
        ``{structure: mask path}``; the structure ``"label"`` is a plain label map whose values
        are class ids (named by ``label_names``).
    source
        Dataset the case comes from (``jsrt_scr``, ``shenzhen``, an MSD task name ...).
    patient
        Patient id for patient-level splits (default: the case id).
    label_names
        ``{value: class name}`` of a ``"label"`` mask (MSD ``labels``, a ``.labels.json``).
    options
        Reader options for :func:`napari_cxseg.io.read` (``channel_names``, ``modality`` ...).
    split
        A split the dataset itself assigns (``train``, ``validate``, ``test``), if any.
    """

    case_id: str
    image: Path
    masks: dict[str, Path] = field(default_factory=dict)
    source: str = ""
    patient: str = ""
    label_names: dict[int, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    split: str | None = None

    def __post_init__(self) -> None:
        self.image = Path(self.image)
        self.masks = {k: Path(v) for k, v in self.masks.items()}
        self.patient = self.patient or self.case_id

    @property
    def key(self) -> str:
        """``source/case_id``, unique over a multi-source dataset."""
        return f"{self.source}/{self.case_id}" if self.source else self.case_id

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (bundle docs, resume)."""
        return {"case": self.case_id, "source": self.source, "patient": self.patient, "image": str(self.image),
                "masks": {k: str(v) for k, v in self.masks.items()}}


def _stem(p: Path) -> str:
    name = p.name
    low = name.lower()
    for s in IMAGE_SUFFIXES:
        if low.endswith(s):
            return name[: -len(s)]
    return p.stem


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.name.lower().endswith(IMAGE_SUFFIXES))


def find_cases(path: str | Path, source: str | None = None) -> list[Case]:
    """All labelled cases under ``path`` (see the module docstring for the layouts).

    Parameters
    ----------
    path
        A dataset folder, an MSD ``dataset.json``, or a CXLSeg CSV folder.
    source
        Name for the cases' source (default: the folder name).

    Returns
    -------
    list of Case
        Sorted by source and case id.

    Raises
    ------
    CxsegError
        When nothing in ``path`` looks like labelled data, naming the path and the layouts.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CxsegError(f"training data {p} does not exist")
    if p.is_file() and p.name == "dataset.json":
        p = p.parent
    if p.is_file():
        raise CxsegError(f"training data {p} is a file; give a dataset folder (or an MSD dataset.json)")
    name = source or p.name
    if (p / "dataset.json").is_file():
        return msd_cases(p)
    from ..cxlseg import cxlseg_cases, is_cxlseg

    if is_cxlseg(p):
        return cxlseg_cases(p)
    if (p / "images").is_dir():
        masks = p / "masks"
        if masks.is_dir() and any(d.name in STRUCTURES for d in masks.iterdir() if d.is_dir()):
            return structure_cases(p, name)
        for lab in ("labels", "masks", "labelsTr"):
            if (p / lab).is_dir():
                return pair_cases(p / "images", p / lab, name)
    cases = flat_pair_cases(p, name)
    if cases:
        return cases
    subs = [d for d in sorted(p.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    out: list[Case] = []
    for d in subs:
        try:
            out += find_cases(d)
        except CxsegError:
            continue
    if not out:
        raise CxsegError(
            f"no labelled cases found in {p}: expected an MSD task (dataset.json), a CXLSeg dataset, "
            "images/ + masks/<structure>/, images/ + labels/, or <name>.png beside <name>_mask.png"
        )
    return out


def structure_cases(folder: Path, source: str) -> list[Case]:
    """Cases of an ``images/`` + ``masks/<structure>/`` folder (every structure that has a mask)."""
    mask_dirs = [d for d in sorted((folder / "masks").iterdir()) if d.is_dir() and d.name in STRUCTURES]
    by_struct = {d.name: {_stem(f): f for f in _files(d)} for d in mask_dirs}
    cases = []
    for img in _files(folder / "images"):
        sid = _stem(img)
        masks = {s: files[sid] for s, files in by_struct.items() if sid in files}
        if masks:
            cases.append(Case(sid, img, masks, source=source))
    return cases


def _label_names_beside(mask: Path) -> dict[int, str]:
    """Class names from the sidecar that describes exactly this mask file (none when it does not match)."""
    from ..io.sidecar import classes_from_sidecar, read_sidecar

    try:
        return {int(k): c.name for k, c in classes_from_sidecar(read_sidecar(mask)).items()}
    except Exception:  # a broken sidecar only loses the names, never the case
        return {}


def pair_cases(images: Path, labels: Path, source: str) -> list[Case]:
    """Cases of an images folder and a labels folder with matching names (``_mask``-style tags allowed)."""
    labs = {}
    for f in _files(labels):
        s = _stem(f)
        for tag in _MASK_TAGS:
            if s.lower().endswith(tag):
                s = s[: -len(tag)]
                break
        labs[s] = f
    cases = []
    series = [d for d in sorted(images.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    for img in [*_files(images), *series]:  # image files, and DICOM series folders named as their SEG
        sid = _stem(img) if img.is_file() else img.name
        lab = labs.get(sid) or labs.get(re.sub(r"_0000$", "", sid))
        if lab is not None:
            cases.append(Case(sid, img, {"label": lab}, source=source, label_names=_label_names_beside(lab)))
    return cases


def flat_pair_cases(folder: Path, source: str) -> list[Case]:
    """Cases of ``<name>.<ext>`` files next to ``<name>_mask.<ext>`` (or ``_label``, ``_seg``)."""
    files = _files(folder)
    stems = {_stem(f): f for f in files}
    cases = []
    for s, f in stems.items():
        if any(s.lower().endswith(t) for t in _MASK_TAGS):
            continue
        for tag in _MASK_TAGS:
            lab = stems.get(s + tag)
            if lab is not None:
                cases.append(Case(s, f, {"label": lab}, source=source, label_names=_label_names_beside(lab)))
                break
    return cases


def msd_cases(folder: Path) -> list[Case]:
    """The ``training`` cases of an MSD task (image + label, class names from ``labels``)."""
    from ..io.msd import MSDTask

    task = MSDTask(folder)
    entries = task.properties.get("training") or []
    names = {int(k): v.name for k, v in task.classes.items()}
    opts: dict[str, Any] = {}
    if len(task.channel_names) > 1:
        opts["channel_names"] = list(task.channel_names)
    if task.modality:
        opts["modality"] = task.modality
    cases = []
    for e in entries:
        if not isinstance(e, dict) or "image" not in e or "label" not in e:
            continue
        img = task.root / str(e["image"])
        lab = task.root / str(e["label"])
        if not img.exists() or not lab.exists():
            continue
        cid = _stem(img)
        cases.append(Case(cid, img, {"label": lab}, source=task.name, patient=str(e.get("patient") or cid),
                          label_names=names, options=dict(opts)))
    if not cases:
        raise CxsegError(f"MSD task {folder}: dataset.json lists no training cases whose files exist")
    return cases


def split_cases(
    cases: Sequence[Case], val_fraction: float = 0.2, seed: int = 0, min_val: int = 1
) -> tuple[list[Case], list[Case]]:
    """A patient-level train/validation split, made per source so each source is validated.

    Cases that carry a dataset split (``validate``/``test`` vs ``train``) keep it. Otherwise a
    patient goes to validation when a hash of (seed, source, patient) falls below
    ``val_fraction``: stable when cases are added, and no patient is on both sides.

    Returns
    -------
    tuple
        ``(train, validation)`` lists.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise CxsegError(f"validation fraction must be in [0, 1), got {val_fraction}")
    train: list[Case] = []
    val: list[Case] = []
    by_source: dict[str, list[Case]] = {}
    for c in cases:
        by_source.setdefault(c.source, []).append(c)
    for src, group in by_source.items():
        if any(c.split for c in group):
            val += [c for c in group if c.split in ("validate", "val", "validation", "test")]
            train += [c for c in group if c.split not in ("validate", "val", "validation", "test")]
            continue

        def score(c: Case, src: str = src) -> float:
            h = hashlib.sha256(f"{seed}|{src}|{c.patient}".encode()).digest()
            return int.from_bytes(h[:8], "big") / 2**64

        v = [c for c in group if score(c) < val_fraction]
        if val_fraction > 0 and len(v) < min_val and len(group) > min_val:
            v = sorted(group, key=score)[:min_val]
        vp = {c.patient for c in v}
        val += [c for c in group if c.patient in vp]
        train += [c for c in group if c.patient not in vp]
    return train, val


def case_list(cases: Sequence[Case]) -> list[str]:
    """``source/case`` keys, for cards and bundle docs."""
    return [c.key for c in cases]
