"""Scene-graph JSON <-> :class:`~napari_cxseg.anatomy.imagenome.SceneGraph`, losslessly.

Every field the model does not interpret goes to an ``extra`` dict and comes back in its
original key order; numeric box fields keep their exact original value unless they were edited.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from .imagenome import (
    BOX_FIELDS_224,
    BOX_FIELDS_ORIGINAL,
    SCENE_GRAPH_SUFFIX,
    Attribute,
    RegionFindings,
    Relationship,
    SceneGraph,
    SceneGraphError,
    SceneObject,
)

_GRAPH_KEYS = ("image_id", "patient_id", "study_id", "viewpoint", "objects", "attributes",
               "relationships")  # fmt: skip
_NUMERIC = BOX_FIELDS_224 + BOX_FIELDS_ORIGINAL
_CUE_KINDS = ("severity_cues", "temporal_cues", "comparison_cues", "texture_cues")
_FINDINGS_KEYS = ("bbox_name", "phrases", "attributes", "attributes_ids") + _CUE_KINDS
_RELATION_KEYS = ("bbox_name", "subject_id", "object_id", "relationship_names", "predicate",
                  "phrase")  # fmt: skip


def graph_from_dict(data: Any, source: str | None = None) -> SceneGraph:
    """Parse scene-graph JSON content; raises :class:`SceneGraphError` naming ``source``."""
    label = source or "scene graph"
    if not isinstance(data, dict):
        raise SceneGraphError(f"{label} is not a scene graph: the JSON is not an object")
    if not isinstance(data.get("objects", []), list):
        raise SceneGraphError(f"{label} is not a scene graph: 'objects' is not a list")
    if "objects" not in data and "attributes" not in data:
        raise SceneGraphError(f"{label} is not a scene graph: it has no 'objects' or 'attributes'")
    image_id = data.get("image_id")
    if not image_id and source:
        name = Path(source).name
        image_id = name[: -len(SCENE_GRAPH_SUFFIX)] if name.endswith(SCENE_GRAPH_SUFFIX) else None
    if not image_id:
        raise SceneGraphError(f"{label} has no 'image_id'")
    objects = [_object(o, i, label) for i, o in enumerate(data.get("objects") or [])]
    attributes = [_findings(a, i, label) for i, a in enumerate(_list(data, "attributes", label))]
    relations = [_relation(r, i, label) for i, r in enumerate(_list(data, "relationships", label))]
    return SceneGraph(
        image_id=str(image_id),
        patient_id=data.get("patient_id"),
        study_id=data.get("study_id"),
        viewpoint=data.get("viewpoint"),
        objects=objects,
        attributes=attributes,
        relationships=relations,
        extra={k: v for k, v in data.items() if k not in _GRAPH_KEYS},
        key_order=tuple(data),
        source=source,
    )


def graph_to_dict(sg: SceneGraph) -> dict[str, Any]:
    """The JSON content of ``sg`` (dataset schema, original key order)."""
    known: dict[str, Any] = {"image_id": sg.image_id}
    for key in ("patient_id", "study_id", "viewpoint"):
        value = getattr(sg, key)
        if value is not None or key in sg.key_order:
            known[key] = value
    known["objects"] = [_object_dict(o) for o in sg.objects]
    known["attributes"] = [_findings_dict(f) for f in sg.attributes]
    known["relationships"] = [_relation_dict(r) for r in sg.relationships]
    return _ordered(known, sg.extra, sg.key_order)


def _list(data: dict, key: str, label: str) -> list:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise SceneGraphError(f"{label}: '{key}' is not a list")
    return value


def _object(o: Any, i: int, label: str) -> SceneObject:
    if not isinstance(o, dict) or not o.get("bbox_name"):
        raise SceneGraphError(f"{label}: object {i} has no 'bbox_name'")
    values: dict[str, float] = {}
    for key in _NUMERIC:
        if key in o and o[key] is not None:
            try:
                values[key] = float(o[key])
            except (TypeError, ValueError) as e:
                raise SceneGraphError(
                    f"{label}: object {i} ({o['bbox_name']}) has a non-numeric '{key}': {o[key]!r}"
                ) from e
    known = {"bbox_name", "object_id", *_NUMERIC}
    return SceneObject(
        bbox_name=str(o["bbox_name"]),
        object_id=str(o.get("object_id", "")),
        extra={k: v for k, v in o.items() if k not in known},
        key_order=tuple(o),
        source_values={k: o[k] for k in values},
        **values,
    )


def _object_dict(o: SceneObject) -> dict[str, Any]:
    known: dict[str, Any] = {"bbox_name": o.bbox_name}
    if o.object_id or "object_id" in o.key_order:
        known["object_id"] = o.object_id
    all_ints = all(isinstance(v, int) for v in o.source_values.values())
    for key in _NUMERIC:
        known[key] = _number(getattr(o, key), o.source_values.get(key), all_ints)
    return _ordered(known, o.extra, o.key_order)


def _number(value: float, raw: Any, as_int: bool) -> Any:
    """The original value when unchanged, else an int (dataset convention) or a rounded float."""
    if raw is not None and abs(float(raw) - value) < 1e-9:
        return raw
    if as_int and not isinstance(raw, float):
        return int(round(value))
    return round(value, 3)


def _findings(a: Any, i: int, label: str) -> RegionFindings:
    if not isinstance(a, dict) or not a.get("bbox_name"):
        raise SceneGraphError(f"{label}: attributes entry {i} has no 'bbox_name'")
    raw_attrs = a.get("attributes") or []
    raw_ids = a.get("attributes_ids")
    phrases_attrs: list[list[Attribute]] = []
    for p, phrase in enumerate(raw_attrs):
        items = [phrase] if isinstance(phrase, str) else list(phrase or [])
        ids = _aligned_ids(raw_ids, p, len(items))
        phrases_attrs.append([_attribute(t, ids[k]) for k, t in enumerate(items)])
    return RegionFindings(
        bbox_name=str(a["bbox_name"]),
        phrases=list(a.get("phrases") or []),
        attributes=phrases_attrs,
        extra={k: v for k, v in a.items() if k not in _FINDINGS_KEYS},
        key_order=tuple(a),
        had_ids="attributes_ids" in a,
        **{k: list(a.get(k) or []) for k in _CUE_KINDS},
    )


def _aligned_ids(raw_ids: Any, p: int, n: int) -> list[Any]:
    if isinstance(raw_ids, list) and p < len(raw_ids):
        ids = raw_ids[p]
        ids = [ids] if not isinstance(ids, list) else ids
        if len(ids) == n:
            return list(ids)
    return [None] * n


def _attribute(text: Any, concept_id: Any) -> Attribute:
    try:
        return Attribute.parse(text, concept_id)
    except ValueError:
        return Attribute("", False, str(text), concept_id, raw=str(text))


def _findings_dict(f: RegionFindings) -> dict[str, Any]:
    known: dict[str, Any] = {"bbox_name": f.bbox_name}
    for key in ("phrases", *_CUE_KINDS):
        value = getattr(f, key)
        if value or key in f.key_order:
            known[key] = value
    known["attributes"] = [[str(a) for a in phrase] for phrase in f.attributes]
    if f.had_ids:
        known["attributes_ids"] = [
            [a.concept_id if a.concept_id is not None else "" for a in phrase]
            for phrase in f.attributes
        ]
    return _ordered(known, f.extra, f.key_order)


def _relation(r: Any, i: int, label: str) -> Relationship:
    if not isinstance(r, dict):
        raise SceneGraphError(f"{label}: relationship {i} is not an object")
    bbox_name = r.get("bbox_name") or str(r.get("subject_id", "")).partition("_")[2]
    names = r.get("relationship_names") or []
    return Relationship(
        bbox_name=str(bbox_name),
        subject_id=str(r.get("subject_id", "")),
        object_id=str(r.get("object_id", "")),
        relationship_names=[names] if isinstance(names, str) else list(names),
        predicate=str(r.get("predicate", "")),
        phrase=str(r.get("phrase", "")),
        extra={k: v for k, v in r.items() if k not in _RELATION_KEYS},
        key_order=tuple(r),
    )


def _relation_dict(r: Relationship) -> dict[str, Any]:
    known: dict[str, Any] = {}
    for key in _RELATION_KEYS:
        value = getattr(r, key)
        if value or key in r.key_order:
            known[key] = value
    return _ordered(known, r.extra, r.key_order)


def _ordered(known: dict[str, Any], extra: dict[str, Any], order: tuple[str, ...]) -> dict:
    """Known and extra fields in the original key order; new known fields after them."""
    out: dict[str, Any] = {}
    for key in order:
        if key in known:
            out[key] = known[key]
        elif key in extra:
            out[key] = extra[key]
    for source in (known, extra):
        for key, value in source.items():
            out.setdefault(key, value)
    return out


def split_zip_path(path: str) -> tuple[str | None, str | None]:
    """``("a.zip", "scene_graph/x_SceneGraph.json")`` for a path through a zip, else (None, None).

    A plain ``a.zip`` gives ``("a.zip", None)``.
    """
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if part.lower().endswith(".zip"):
            archive = str(Path(*parts[: i + 1]))
            if zipfile.is_zipfile(archive):
                inner = "/".join(parts[i + 1 :]) or None
                return archive, inner
    return None, None


def read_zip(archive: str, member: str | None) -> SceneGraph:
    try:
        with zipfile.ZipFile(archive) as zf:
            if member is None:
                names = [n for n in zf.namelist() if n.endswith(SCENE_GRAPH_SUFFIX)]
                if len(names) != 1:
                    raise SceneGraphError(
                        f"{archive} holds {len(names)} scene graphs; name the one to open"
                    )
                member = names[0]
            data = zf.read(member)
    except KeyError as e:
        raise SceneGraphError(f"{archive} has no entry {member}") from e
    except (OSError, zipfile.BadZipFile) as e:
        raise SceneGraphError(f"cannot read {archive}: {e}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SceneGraphError(f"{archive}/{member} is not UTF-8 text") from e
    return parse_text(text, f"{archive}/{member}")


def parse_text(text: str, label: str) -> SceneGraph:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SceneGraphError(f"{label} is not valid JSON: {e}") from e
    return SceneGraph.from_dict(data, source=label)


def read_path(path_or_zip_member: Any, member: str | None = None) -> SceneGraph:
    """:func:`~.imagenome.read_scene_graph`: a file, a zip member or a path through a zip."""
    if isinstance(path_or_zip_member, zipfile.Path):
        zpath = path_or_zip_member
        archive = str(getattr(zpath.root, "filename", "") or "archive")
        label = f"{archive}/{zpath.at}"
        try:
            text = zpath.read_text(encoding="utf-8")
        except (OSError, KeyError, UnicodeDecodeError) as e:
            raise SceneGraphError(f"cannot read scene graph {label}: {e}") from e
        return parse_text(text, label)
    path = str(path_or_zip_member)
    archive, inner = split_zip_path(path)
    if archive is not None:
        return read_zip(archive, member or inner)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SceneGraphError(f"cannot read scene graph {path}: {e}") from e
    return parse_text(text, path)
