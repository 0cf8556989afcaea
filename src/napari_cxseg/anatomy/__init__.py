"""Chest radiograph anatomy: Chest ImaGenome region names, scene graphs, sequential exams.

Nothing heavy is imported here: :mod:`.imagenome` holds the constants and the plain scene-graph
data model (``json`` and ``dataclasses`` only), so widgets, the CLI and other modules can import
the region names without pulling in numpy, SimpleITK or a model.
"""

from __future__ import annotations

from .imagenome import (
    ATTRIBUTE_CATEGORIES,
    COMPARISON_VALUES,
    REGION_NAMES,
    Attribute,
    RegionFindings,
    Relationship,
    SceneGraph,
    SceneObject,
    read_scene_graph,
    write_scene_graph,
)

__all__ = [
    "ATTRIBUTE_CATEGORIES",
    "COMPARISON_VALUES",
    "REGION_NAMES",
    "Attribute",
    "Relationship",
    "RegionFindings",
    "SceneGraph",
    "SceneObject",
    "read_scene_graph",
    "write_scene_graph",
]
