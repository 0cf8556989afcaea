"""Correction tools and interactive segmentation on label arrays (no Qt, no napari).

Every tool is a pure function: numpy arrays in, a new array out, the input untouched.
Distances and sizes are in mm (``spacing`` = ``Geometry.spacing``, one entry per held axis),
and every tool works on 2D radiographs and 3D volumes alike.

=======================  ==================================================================
module                   tools
=======================  ==================================================================
``interpolate``          :func:`interpolate_slices` (fill between drawn slices)
``grow``                 :func:`grow_from_seeds` (random walker / watershed)
``islands``              :func:`keep_largest`, :func:`remove_small`, :func:`split_islands`,
                         :func:`component_sizes`
``smoothing``            :func:`smooth` (median, opening, closing, gaussian)
``margin``               :func:`margin`, :func:`hollow`
``logical``              :func:`union`, :func:`subtract`, :func:`intersect`,
                         :func:`combine_classes`, :func:`threshold_mask`,
                         :func:`paint_in_range`
``classes``              :func:`add_class`, :func:`rename_class`, :func:`recolour_class`,
                         :func:`merge_classes`, :func:`delete_class`, :func:`class_sizes`
``statistics``           :func:`label_statistics`, :func:`statistics_to_csv`,
                         :func:`histogram`
``interactive``          :func:`segment_from_prompts`, :class:`PromptSession`
``recovery``             :class:`RecoveryStore`, :func:`recovery_key`
=======================  ==================================================================
"""

from .classes import (
    add_class,
    class_sizes,
    delete_class,
    merge_classes,
    recolour_class,
    rename_class,
)
from .grow import grow_from_seeds
from .interactive import PromptSession, segment_from_prompts
from .interpolate import interpolate_slices
from .islands import component_sizes, keep_largest, remove_small, split_islands
from .logical import (
    apply_mask,
    combine_classes,
    intersect,
    paint_in_range,
    subtract,
    threshold_mask,
    union,
)
from .margin import hollow, margin
from .recovery import RecoveryStore, recovery_key
from .smoothing import smooth
from .statistics import histogram, label_statistics, statistics_to_csv

__all__ = [
    "PromptSession",
    "RecoveryStore",
    "add_class",
    "apply_mask",
    "class_sizes",
    "combine_classes",
    "component_sizes",
    "delete_class",
    "grow_from_seeds",
    "histogram",
    "hollow",
    "interpolate_slices",
    "intersect",
    "keep_largest",
    "label_statistics",
    "margin",
    "merge_classes",
    "paint_in_range",
    "recolour_class",
    "recovery_key",
    "remove_small",
    "rename_class",
    "segment_from_prompts",
    "smooth",
    "split_islands",
    "statistics_to_csv",
    "subtract",
    "threshold_mask",
    "union",
]
