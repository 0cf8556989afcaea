"""Chest ImaGenome scene graphs: region names, attribute categories and a lossless data model.

A scene graph (``<dicom_id>_SceneGraph.json``, Chest ImaGenome v1.0.0) holds, for one frontal
radiograph, the anatomical regions as boxes (``objects``), the report's findings per region
(``attributes``) and the comparison with the previous exam (``relationships``). Boxes carry two
coordinate sets: ``x1..y2``/``width``/``height`` in the dataset's 224x224 space and
``original_x1..original_y2``/``original_width``/``original_height`` in the pixels of the original
MIMIC-CXR image (columns x, rows y).

The data model keeps every field it does not interpret in an ``extra`` dict and remembers the
key order, so ``write_scene_graph(read_scene_graph(p), q)`` writes the same JSON content.
Sources: ../shared/reference/formats.md section 1 (rgrg, MedVQA and the dataset's own utilities).

Only the standard library is imported here (other modules import these names at start-up).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

#: The 29 anatomical regions with boxes (rgrg ``ANATOMICAL_REGIONS``), spelt as ``bbox_name``.
REGION_NAMES: tuple[str, ...] = (
    "right lung", "right upper lung zone", "right mid lung zone", "right lower lung zone",
    "right hilar structures", "right apical zone", "right costophrenic angle",
    "right hemidiaphragm",
    "left lung", "left upper lung zone", "left mid lung zone", "left lower lung zone",
    "left hilar structures", "left apical zone", "left costophrenic angle", "left hemidiaphragm",
    "trachea", "spine", "right clavicle", "left clavicle", "aortic arch", "mediastinum",
    "upper mediastinum", "svc", "cardiac silhouette", "cavoatrial junction", "right atrium",
    "carina", "abdomen",
)  # fmt: skip

#: Further box names found in silver ``objects`` (MedVQA counts 36 box classes in all).
EXTRA_BOX_NAMES: tuple[str, ...] = (
    "right cardiophrenic angle", "left cardiophrenic angle", "left cardiac silhouette",
    "right cardiac silhouette", "descending aorta", "left upper abdomen", "right upper abdomen",
)  # fmt: skip

#: Region names that occur in ``attributes`` without a box.
UNBOXED_REGION_NAMES: tuple[str, ...] = (
    "neck", "left chest wall", "right chest wall", "left shoulder", "right shoulder",
    "left arm", "right arm", "left breast", "right breast",
)  # fmt: skip

#: Regions with gold-standard boxes (MedVQA ``CHEST_IMAGENOME_GOLD_BBOX_NAMES``).
GOLD_BBOX_NAMES: tuple[str, ...] = tuple(
    n for n in REGION_NAMES if n not in ("spine", "mediastinum", "abdomen")
)

#: Attribute categories and their names (MedVQA ``CHEST_IMAGENOME_ATTRIBUTES_DICT``).
ATTRIBUTE_CATEGORIES: dict[str, tuple[str, ...]] = {
    "anatomicalfinding": (
        "lung opacity", "airspace opacity", "consolidation", "infiltration", "atelectasis",
        "linear/patchy atelectasis", "lobar/segmental collapse", "pulmonary edema/hazy opacity",
        "vascular congestion", "vascular redistribution", "increased reticular markings/ild pattern",
        "pleural effusion", "costophrenic angle blunting", "pleural/parenchymal scarring",
        "bronchiectasis", "enlarged cardiac silhouette", "mediastinal displacement",
        "mediastinal widening", "enlarged hilum", "tortuous aorta", "vascular calcification",
        "pneumomediastinum", "pneumothorax", "hydropneumothorax", "lung lesion",
        "mass/nodule (not otherwise specified)", "multiple masses/nodules", "calcified nodule",
        "superior mediastinal mass/enlargement", "rib fracture", "clavicle fracture",
        "spinal fracture", "hyperaeration", "cyst/bullae", "elevated hemidiaphragm",
        "diaphragmatic eventration (benign)", "sub-diaphragmatic air", "subcutaneous air",
        "hernia", "scoliosis", "spinal degenerative changes", "shoulder osteoarthritis",
        "bone lesion",
    ),
    "nlp": ("abnormal", "normal"),
    "disease": (
        "pneumonia", "fluid overload/heart failure", "copd/emphysema", "granulomatous disease",
        "interstitial lung disease", "goiter", "lung cancer", "aspiration", "alveolar hemorrhage",
        "pericardial effusion",
    ),
    "technicalassessment": ("low lung volumes", "rotated", "artifact", "breast/nipple shadows",
                            "skin fold"),
    "tubesandlines": (
        "chest tube", "mediastinal drain", "pigtail catheter", "endotracheal tube",
        "tracheostomy tube", "picc", "ij line", "chest port", "subclavian line",
        "swan-ganz catheter", "intra-aortic balloon pump", "enteric tube",
    ),
    "device": ("sternotomy wires", "cabg grafts", "aortic graft/repair", "prosthetic valve",
               "cardiac pacer and wires"),
    "texture": ("opacity", "alveolar", "interstitial", "calcified", "lucency"),
    "temporal": ("acute", "chronic"),
    "severity": ("hedge", "mild", "moderate", "severe"),
    "laterality": ("left", "right", "bilateral"),
}  # fmt: skip

#: Comparison values (``comparison|yes|<value>``) and the predicate string each is written as.
COMPARISON_VALUES: tuple[str, ...] = ("improved", "worsened", "no change")
COMPARISON_PREDICATES: dict[str, str] = {
    "improved": "Improved", "worsened": "Worsened", "no change": "No status change",
}  # fmt: skip

#: Categories whose ``yes`` attributes make a region abnormal (besides ``nlp|yes|abnormal``).
ABNORMAL_CATEGORIES: frozenset[str] = frozenset({"anatomicalfinding", "disease"})

#: Numeric box fields of an object, in the order the dataset writes them.
BOX_FIELDS_224: tuple[str, ...] = ("x1", "y1", "x2", "y2", "width", "height")
BOX_FIELDS_ORIGINAL: tuple[str, ...] = (
    "original_x1", "original_y1", "original_x2", "original_y2", "original_width",
    "original_height",
)  # fmt: skip

SCENE_GRAPH_SUFFIX = "_SceneGraph.json"


class SceneGraphError(ValueError):
    """A scene graph that cannot be read or written; the message names the file and the cause."""


def mirrored_name(bbox_name: str) -> str:
    """The region on the other side (``right lung`` <-> ``left lung``); central ones unchanged."""
    if bbox_name.startswith("right "):
        return "left " + bbox_name[6:]
    if bbox_name.startswith("left "):
        return "right " + bbox_name[5:]
    return bbox_name


@dataclass
class Attribute:
    """One ``"<category>|<yes|no>|<name>"`` attribute of a report phrase."""

    category: str
    present: bool
    name: str
    concept_id: str | None = None  # the matching ``attributes_ids`` entry, when the file has one
    raw: str | None = None  # text that did not parse; written back as it was

    @classmethod
    def parse(cls, text: str, concept_id: str | None = None) -> Attribute:
        """Parse ``"anatomicalfinding|yes|pleural effusion"``; raises ValueError otherwise."""
        parts = str(text).split("|")
        if len(parts) != 3 or parts[1] not in ("yes", "no"):
            raise ValueError(f"attribute {text!r} is not 'category|yes|name' or 'category|no|name'")
        return cls(parts[0], parts[1] == "yes", parts[2], concept_id)

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        return f"{self.category}|{'yes' if self.present else 'no'}|{self.name}"


@dataclass
class SceneObject:
    """One region box. ``x*``/``y*`` in the 224 space, ``original_*`` in original pixels."""

    bbox_name: str
    object_id: str = ""
    x1: float = 0.0
    y1: float = 0.0
    x2: float = 0.0
    y2: float = 0.0
    width: float = 0.0
    height: float = 0.0
    original_x1: float = 0.0
    original_y1: float = 0.0
    original_x2: float = 0.0
    original_y2: float = 0.0
    original_width: float = 0.0
    original_height: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = ()
    source_values: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def original_box(self) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` in original image pixels."""
        return (self.original_x1, self.original_y1, self.original_x2, self.original_y2)

    @property
    def box_224(self) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` in the 224x224 space."""
        return (self.x1, self.y1, self.x2, self.y2)

    def set_boxes(
        self,
        original: tuple[float, float, float, float],
        box_224: tuple[float, float, float, float] | None = None,
    ) -> None:
        """Set the box in original pixels (and in the 224 space when given); sizes follow."""
        x1, y1, x2, y2 = (float(v) for v in original)
        self.original_x1, self.original_x2 = min(x1, x2), max(x1, x2)
        self.original_y1, self.original_y2 = min(y1, y2), max(y1, y2)
        self.original_width = self.original_x2 - self.original_x1
        self.original_height = self.original_y2 - self.original_y1
        if box_224 is not None:
            a1, b1, a2, b2 = (float(v) for v in box_224)
            self.x1, self.x2, self.y1, self.y2 = min(a1, a2), max(a1, a2), min(b1, b2), max(b1, b2)
            self.width, self.height = self.x2 - self.x1, self.y2 - self.y1


@dataclass
class RegionFindings:
    """The report's findings about one region (one ``attributes`` entry), aligned by phrase."""

    bbox_name: str
    phrases: list[str] = field(default_factory=list)
    attributes: list[list[Attribute]] = field(default_factory=list)
    # cues as the file holds them: per phrase, a list of "category|yes|value" strings (or one)
    severity_cues: list[Any] = field(default_factory=list)
    temporal_cues: list[Any] = field(default_factory=list)
    comparison_cues: list[Any] = field(default_factory=list)
    texture_cues: list[Any] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = ()
    had_ids: bool = False  # the file had ``attributes_ids`` (written back, aligned)

    def cues(self, kind: str, phrase_index: int) -> list[str]:
        """The values of one phrase's cues: ``cues("severity", 0) -> ["mild"]``.

        ``kind`` is ``severity``, ``temporal``, ``comparison`` or ``texture``.
        """
        cues = getattr(self, f"{kind}_cues")
        if phrase_index >= len(cues):
            return []
        entry = cues[phrase_index]
        items = [entry] if isinstance(entry, str) else list(entry or [])
        return [str(c).split("|")[-1] for c in items if str(c).split("|")[1:2] != ["no"]]

    def all_attributes(self) -> list[Attribute]:
        """Every attribute of every phrase, in order."""
        return [a for phrase in self.attributes for a in phrase]

    @property
    def abnormal(self) -> bool:
        """``nlp|yes|abnormal`` on a phrase, or a present anatomical finding or disease."""
        for a in self.all_attributes():
            if a.present and (
                (a.category == "nlp" and a.name == "abnormal") or a.category in ABNORMAL_CATEGORIES
            ):
                return True
        return False


@dataclass
class Relationship:
    """A comparison of one region between the current exam (subject) and the previous (object)."""

    bbox_name: str
    subject_id: str = ""
    object_id: str = ""
    relationship_names: list[str] = field(default_factory=list)
    predicate: str = ""
    phrase: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = ()

    @property
    def comparisons(self) -> list[str]:
        """``improved`` / ``worsened`` / ``no change`` values of this relationship."""
        out = []
        for text in self.relationship_names:
            parts = str(text).split("|")
            if len(parts) == 3 and parts[0] == "comparison" and parts[1] == "yes":
                out.append(parts[2])
        return out

    @property
    def current_image_id(self) -> str:
        return self.subject_id.split("_", 1)[0]

    @property
    def previous_image_id(self) -> str:
        return self.object_id.split("_", 1)[0]


@dataclass
class SceneGraph:
    """One image's scene graph. ``source`` and ``image_size`` are never written to the file.

    ``image_size`` is the original image's ``(rows, columns)`` when known (from the radiograph it
    was computed on or opened with); it lets boxes be converted to the 224 space.
    """

    image_id: str
    patient_id: Any = None
    study_id: Any = None
    viewpoint: str | None = None
    objects: list[SceneObject] = field(default_factory=list)
    attributes: list[RegionFindings] = field(default_factory=list)
    relationships: list[Relationship] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = ()
    source: str | None = None
    image_size: tuple[int, int] | None = None

    @property
    def patient(self) -> Any:
        return self.patient_id

    @property
    def study(self) -> Any:
        return self.study_id

    def object(self, bbox_name: str) -> SceneObject | None:
        """The box of ``bbox_name``, or None."""
        return next((o for o in self.objects if o.bbox_name == bbox_name), None)

    def findings(self, bbox_name: str) -> RegionFindings | None:
        """The findings entry of ``bbox_name``, or None."""
        return next((f for f in self.attributes if f.bbox_name == bbox_name), None)

    def is_abnormal(self, bbox_name: str) -> bool:
        f = self.findings(bbox_name)
        return bool(f and f.abnormal)

    def comparisons(self, bbox_name: str) -> list[str]:
        """Comparison values (improved / worsened / no change) of ``bbox_name`` vs the prior."""
        return [c for r in self.relationships if r.bbox_name == bbox_name for c in r.comparisons]

    def to_dict(self) -> dict[str, Any]:
        """The JSON content (same schema as the dataset)."""
        from .scene_graph_json import graph_to_dict

        return graph_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> SceneGraph:
        """Build from parsed JSON; raises :class:`SceneGraphError` naming ``source``."""
        from .scene_graph_json import graph_from_dict

        return graph_from_dict(data, source)


def read_scene_graph(
    path_or_zip_member: str | os.PathLike | zipfile.Path, member: str | None = None
) -> SceneGraph:
    """Read a ``<dicom_id>_SceneGraph.json`` from a file or from inside a zip archive.

    Parameters
    ----------
    path_or_zip_member
        A JSON file; a :class:`zipfile.Path`; a zip file (with ``member``, or holding exactly one
        scene graph); or ``archive.zip/scene_graph/<id>_SceneGraph.json`` (a path through a zip).
    member
        The archive entry name when ``path_or_zip_member`` is a zip file.

    Returns
    -------
    SceneGraph
        With ``source`` set to the file (``archive.zip/member`` for archive entries).

    Raises
    ------
    SceneGraphError
        Unreadable file, invalid JSON or a content that is not a scene graph (names the file).
    """
    from .scene_graph_json import read_path

    return read_path(path_or_zip_member, member)


def write_scene_graph(sg: SceneGraph, path: str | os.PathLike) -> str:
    """Write ``sg`` as a Chest ImaGenome scene-graph JSON, atomically.

    Fields the model does not interpret are written back unchanged and in their original order;
    box fields that were not edited keep their exact original values.

    Parameters
    ----------
    sg
        The scene graph.
    path
        Target ``.json`` file (its folder must exist). Writing into a zip archive is refused.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    SceneGraphError
        The target is inside an archive or not a ``.json`` file.
    napari_cxseg.images.CxsegError
        The folder is missing or the write fails (names the file).
    """
    from .scene_graph_json import split_zip_path

    target = str(path)
    if split_zip_path(target)[0] is not None or target.lower().endswith(".zip"):
        raise SceneGraphError(
            f"cannot write {target}: scene graphs are written as files, not into archives"
        )
    if not target.lower().endswith(".json"):
        raise SceneGraphError(f"cannot write {target}: a scene graph is a .json file")
    text = json.dumps(sg.to_dict(), indent=None, ensure_ascii=False)

    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    from ..io.atomic import atomic_write

    return atomic_write(target, _write)
