"""A training set built in the viewer: corrected cases in MSD layout, with their provenance.

Layout (:func:`~napari_cxseg.training.sources.find_cases` reads it back as an MSD task)::

    <root>/dataset.json             name, modality, labels, tensorImageSize, training: [...]
    <root>/imagesTr/<case>.<ext>    the image
    <root>/labelsTr/<case>.png      radiograph labels (class ids) + .labels.json sidecar
    <root>/labelsTr/<case>.nii.gz   volume labels + .labels.json sidecar
    <root>/.thumbnails/<case>.png   radiograph thumbnails for the Train widget

Images keep their geometry exactly. A file the image was read from is copied byte for byte
(NIfTI volumes; PNG, JPEG or DICOM radiographs: pixel values, bit depth, EXIF / DICOM
orientation and pixel spacing stay as they were). An image without such a file (a DICOM series,
an image made in the viewer) is written: volumes as NIfTI from the held array and its geometry
(:meth:`~napari_cxseg.geometry.Geometry.nifti_array_and_affine`, the same mapping the label
writer uses), radiographs as lossless 8/16-bit PNG (what CXR datasets and MONAI's PNG loader
use; the pixel spacing is kept in the labels' sidecar). Labels go through
:func:`napari_cxseg.io.write_labels` with the image's geometry, so they lie on the image's
stored grid.

Every ``training`` entry of ``dataset.json`` has, besides ``image`` and ``label``, a ``cxseg``
record: the source identity (``key``: the resolved source path, plus the DICOM series; a
digest of the pixels when there is no file), the source path, the model that made the first
version, how many voxels the user changed since that model's output, the classes, and when
it was added. The same image added again replaces its entry.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..images import CxsegError, Image, LabelClass, LabelMap

#: Marks a dataset.json written here (other MSD tasks are never modified).
MARKER = "napari-cxseg training set"


@dataclass
class Entry:
    """One case of a training set.

    Parameters
    ----------
    case
        Case name (file stem in ``imagesTr``/``labelsTr``).
    image, label
        The files.
    key
        Source identity (the same image added twice has the same key).
    source
        Where the image came from (path, or a note when it had no file).
    model
        Model that made the first version of the labels (None: drawn by hand or read from a file).
    changed_voxels
        Voxels that differ from that model's output (None when the output is unknown).
    labelled_voxels
        Non-zero voxels of the labels.
    classes
        ``{id: name}`` of the labels.
    spatial_dims
        2 (radiograph) or 3 (volume).
    added
        ISO time of the last add.
    """

    case: str
    image: Path
    label: Path
    key: str
    source: str = ""
    model: str | None = None
    changed_voxels: int | None = None
    labelled_voxels: int = 0
    classes: dict[int, str] = field(default_factory=dict)
    spatial_dims: int = 2
    added: str = ""

    @property
    def note(self) -> str:
        """One line of provenance for the widget."""
        if self.model is None:
            return f"labels drawn or read by hand ({self.labelled_voxels} labelled voxels)"
        if self.changed_voxels is None:
            return f"first version by {self.model}; changes since then unknown"
        return f"first version by {self.model}; {self.changed_voxels} voxels changed by the user"


def source_key(image: Image) -> str:
    """The identity of an image's source: its resolved file (and DICOM series), else its pixels."""
    src = image.geometry.source or {}
    path = image.meta.get("source_path") or src.get("path")
    if path:
        key = f"file:{Path(path).expanduser().resolve()}"
        uid = src.get("series_uid")
        return f"{key}#series={uid}" if uid else key
    arr = np.ascontiguousarray(np.asarray(image.array))
    h = hashlib.sha1(f"{arr.shape}|{arr.dtype.str}|".encode())
    h.update(arr.view(np.uint8).reshape(-1))
    return f"pixels:{h.hexdigest()}"


def changed_voxels(labels: np.ndarray, model_output: np.ndarray | None) -> int | None:
    """How many voxels differ from the model's output (None when it is unknown or another shape)."""
    if model_output is None or np.shape(model_output) != np.shape(labels):
        return None
    return int(np.count_nonzero(np.asarray(labels) != np.asarray(model_output)))


class TrainingSet:
    """A training-set folder (see the module docstring).

    Parameters
    ----------
    root
        The folder; created on the first :meth:`add`.

    Raises
    ------
    CxsegError
        When ``root`` holds a ``dataset.json`` that this package did not write (an MSD task is
        never modified).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self._meta = self._load()

    # ------------------------------------------------------------------ reading
    @property
    def dataset_json(self) -> Path:
        """``<root>/dataset.json``."""
        return self.root / "dataset.json"

    def _load(self) -> dict[str, Any]:
        if not self.dataset_json.is_file():
            return {}
        try:
            meta = json.loads(self.dataset_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CxsegError(f"cannot read training set {self.dataset_json}: {e}") from None
        if not isinstance(meta, dict) or meta.get("description") != MARKER:
            raise CxsegError(f"{self.dataset_json} belongs to a dataset this package did not make; choose an "
                             "empty folder (or a napari-cxseg training set) for the training set")
        return meta

    def entries(self) -> list[Entry]:
        """The cases, in the order they were first added."""
        out = []
        for e in self._meta.get("training", []):
            rec = e.get("cxseg") or {}
            out.append(Entry(
                case=str(rec.get("case") or Path(e["image"]).name), image=self.root / e["image"],
                label=self.root / e["label"], key=str(rec.get("key", "")), source=str(rec.get("source", "")),
                model=rec.get("model"), changed_voxels=rec.get("changed_voxels"),
                labelled_voxels=int(rec.get("labelled_voxels", 0)),
                classes={int(k): str(v) for k, v in (rec.get("classes") or {}).items()},
                spatial_dims=int(rec.get("spatial_dims", 2)), added=str(rec.get("added", "")),
            ))
        return out

    def __len__(self) -> int:
        return len(self._meta.get("training", []))

    @property
    def spatial_dims(self) -> int | None:
        """2 (radiographs), 3 (volumes) or None (empty)."""
        es = self.entries()
        return es[0].spatial_dims if es else None

    def find(self, key: str) -> Entry | None:
        """The entry of a source identity (:func:`source_key`), if any."""
        return next((e for e in self.entries() if e.key == key), None)

    def cases(self) -> list[Any]:
        """The set as training cases (:func:`~napari_cxseg.training.sources.find_cases`)."""
        from .sources import find_cases

        if not len(self):
            raise CxsegError(f"training set {self.root} is empty: add corrected cases first")
        return find_cases(self.root)

    def thumbnail_path(self, entry: Entry) -> Path:
        """Where a radiograph entry's thumbnail is (made by :meth:`add`, :func:`.trainset_files.write_thumbnail`)."""
        return self.root / ".thumbnails" / f"{entry.case}.png"

    # ------------------------------------------------------------------ writing
    def add(self, image: Image, labels: LabelMap, model: str | None = None,
            model_output: np.ndarray | None = None) -> Entry:
        """Write an image and its corrected labels into the set (replacing the entry of the same image).

        Parameters
        ----------
        image
            The image (held array + geometry, ``meta["source_path"]`` when read from a file).
        labels
            The labels on the image's held grid (their classes name the values).
        model
            The model that made the first version of the labels.
        model_output
            That model's output (counts the voxels the user changed).

        Returns
        -------
        Entry

        Raises
        ------
        CxsegError
            Labels on another grid, a 2D image in a set of volumes (or the reverse), class ids
            named differently from the set's, non-integer labels.
        """
        arr = np.asarray(labels.array)
        shape = tuple(image.spatial_shape)
        name = image.meta.get("source_path") or image.meta.get("name") or "the image"
        if arr.shape != shape:
            raise CxsegError(f"labels of shape {arr.shape} do not lie on the grid of {name} {shape}")
        dims = image.geometry.ndim
        if self.spatial_dims not in (None, dims):
            kinds = {2: "radiographs", 3: "volumes"}
            raise CxsegError(f"training set {self.root} holds {kinds[self.spatial_dims]}; {name} is {dims}D: "
                             "choose another training-set folder")
        present = {int(v) for v in np.unique(arr) if v}
        classes = {k: (labels.classes[k].name if k in labels.classes else f"class {k}") for k in sorted(present)}
        classes.update({int(k): c.name for k, c in labels.classes.items()})
        self._check_classes(classes, name)
        key = self._key(image)
        old = self.find(key)
        case = old.case if old else case_name(image, key)
        from .trainset_files import write_image, write_thumbnail

        for sub in ("imagesTr", "labelsTr"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        img_path, geom = write_image(image, self.root / "imagesTr", case)
        lab_path = self.root / "labelsTr" / (f"{case}.png" if dims == 2 else f"{case}.nii.gz")
        from ..io import write_labels

        lm = LabelMap(array=np.ascontiguousarray(arr), geometry=geom,
                      classes={k: LabelClass(n, getattr(labels.classes.get(k), "colour", None)) for k, n in
                               classes.items()},
                      meta={"reference_image_path": str(img_path), "name": case})
        write_labels(lm, lab_path, overwrite=True)
        entry = Entry(case=case, image=img_path, label=lab_path, key=key, source=str(image.meta.get("source_path")
                      or "(no file: written from the viewer)"), model=model,
                      changed_voxels=changed_voxels(arr, model_output) if model else None,
                      labelled_voxels=int(np.count_nonzero(arr)), classes=classes, spatial_dims=dims,
                      added=time.strftime("%Y-%m-%dT%H:%M:%S"))
        if old is not None and old.image != img_path:  # the source's format changed: drop the old copy
            old.image.unlink(missing_ok=True)
        entries = [e for e in self.entries() if e.key != key and e.case != case]
        pos = next((i for i, e in enumerate(self.entries()) if e.key == key), len(entries))
        entries.insert(min(pos, len(entries)), entry)
        self._save(entries, image.modality, image.channel_names)
        if dims == 2:
            try:
                write_thumbnail(self, entry)
            except Exception:  # a thumbnail is a convenience; the case is written
                pass
        return entry

    def remove(self, case: str) -> None:
        """Delete a case's files and entry.

        Raises
        ------
        CxsegError
            When the set has no such case.
        """
        entries = self.entries()
        hit = next((e for e in entries if e.case == case), None)
        if hit is None:
            raise CxsegError(f"training set {self.root} has no case {case!r}")
        self._save([e for e in entries if e.case != case], self._meta.get("modality_name", ""),
                   self._meta.get("channels"))
        self._remove_files(hit)

    # ------------------------------------------------------------------ internals
    def _key(self, image: Image) -> str:
        """The source identity; an image opened from this set's imagesTr is that entry's source."""
        key = source_key(image)
        src = image.meta.get("source_path")
        if src:
            p = Path(src).expanduser().resolve()
            for e in self.entries():
                if e.image.resolve() == p:
                    return e.key
        return key

    def _check_classes(self, classes: dict[int, str], name: str) -> None:
        have = {int(k): str(v) for k, v in (self._meta.get("labels") or {}).items() if int(k) != 0}
        for k, n in classes.items():
            if k in have and have[k].strip().lower() != n.strip().lower():
                raise CxsegError(f"class {k} of {name} is '{n}', but the training set {self.root} calls "
                                 f"class {k} '{have[k]}'; rename the class (Correct widget) or use another set")

    def _remove_files(self, e: Entry) -> None:
        from ..io.sidecar import sidecar_path

        for f in (e.image, e.label, sidecar_path(e.label), self.thumbnail_path(e)):
            Path(f).unlink(missing_ok=True)

    def _save(self, entries: list[Entry], modality: str, channels: list[str] | None) -> None:
        labels: dict[int, str] = {}
        for e in entries:
            for k, n in e.classes.items():
                labels.setdefault(int(k), n)
        dims = entries[0].spatial_dims if entries else None
        chans = list(channels or self._meta.get("channels") or [])
        mod = modality or self._meta.get("modality_name") or ("XR" if dims == 2 else "")
        modality_map = {str(i): c for i, c in enumerate(chans)} if len(chans) > 1 else {"0": mod or "image"}
        meta = {
            "name": self.root.name, "description": MARKER, "reference": "napari-cxseg Train widget",
            "licence": "as the source images", "tensorImageSize": "" if dims is None else f"{dims}D",
            "modality": modality_map, "modality_name": mod, "channels": chans,
            "labels": {"0": "background", **{str(k): v for k, v in sorted(labels.items())}},
            "numTraining": len(entries), "numTest": 0, "test": [],
            "training": [{
                "image": f"./{e.image.relative_to(self.root).as_posix()}",
                "label": f"./{e.label.relative_to(self.root).as_posix()}",
                "cxseg": {"case": e.case, "key": e.key, "source": e.source, "model": e.model,
                          "changed_voxels": e.changed_voxels, "labelled_voxels": e.labelled_voxels,
                          "classes": {str(k): v for k, v in e.classes.items()}, "spatial_dims": e.spatial_dims,
                          "added": e.added},
            } for e in entries],
        }
        from ..io.atomic import atomic_write

        self.root.mkdir(parents=True, exist_ok=True)
        text = json.dumps(meta, indent=1) + "\n"
        atomic_write(self.dataset_json, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        self._meta = meta


def case_name(image: Image, key: str) -> str:
    """``<source stem>_<8 hex of the key>`` (``case_<hex>`` when the stem reads as a label file name)."""
    from ..io.label_names import has_label_name, label_stem

    src = image.meta.get("source_path")
    stem = label_stem(src) if src else str(image.meta.get("name") or "case")
    stem = re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_")[:40] or "case"
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    if has_label_name(Path("imagesTr") / f"{stem}.png"):
        stem = "case"
    return f"{stem}_{digest}"
