"""Radiographic lung fields of a rendered radiograph (the convention of SCR, CXLSeg and Shenzhen).

A lung projected from CT (:data:`napari_cxseg.drr.TOTALSEG_LUNGS`) is the whole anatomical lung:
it includes the lung behind the heart and the mediastinum and the posterior recesses below the
diaphragm domes. The masks radiologists draw on films (SCR, Montgomery, Shenzhen, CXLSeg) are
radiographic lung fields: the lung seen on the film, without those hidden parts. Here a detector
pixel is lung field where the ray's path through the lung exceeds the threshold **and** its path
through the heart and mediastinal structures and through the organs under the diaphragm stays
below it. The models of the product are trained and measured on this convention.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .drr import LUNG_CLASSES, TOTALSEG_LUNGS, DRRStack
from .images import LabelMap

#: TotalSegmentator ids that hide the lung on a frontal film: heart and mediastinum (heart,
#: aorta, pulmonary vein, brachiocephalic trunk and veins, left atrial appendage, both venae
#: cavae, oesophagus, trachea).
TOTALSEG_MEDIASTINUM = (51, 52, 53, 54, 59, 60, 61, 62, 63, 15, 16)
#: TotalSegmentator ids under the diaphragm domes (liver, spleen, stomach, colon).
TOTALSEG_SUBDIAPHRAGM = (5, 1, 6, 20)

#: Projection groups for :func:`napari_cxseg.drr.project_ct`: lungs 1 and 2, then the occluders.
FIELD_GROUPS = {**TOTALSEG_LUNGS, 3: TOTALSEG_MEDIASTINUM, 4: TOTALSEG_SUBDIAPHRAGM}


def lung_fields(stack: DRRStack, threshold_mm: float = 2.0) -> LabelMap:
    """Right (1) and left (2) radiographic lung fields from a stack projected with :data:`FIELD_GROUPS`.

    Parameters
    ----------
    stack
        Projections of a TotalSegmentator-labelled CT with ``classes=FIELD_GROUPS``.
    threshold_mm
        Path length (mm) above which a ray counts as passing through a structure.

    Returns
    -------
    LabelMap
        On the radiograph's grid, classes ``right lung`` and ``left lung``.
    """
    ids = list(stack.class_ids)
    if sorted(ids) != [1, 2, 3, 4]:
        raise ValueError(f"lung fields need the projection groups of FIELD_GROUPS, got classes {ids}")
    paths = {k: np.asarray(stack.paths[ids.index(k)]) for k in ids}
    hidden = (paths[3] > threshold_mm) | (paths[4] > threshold_mm)
    arr = np.zeros(paths[1].shape, np.uint8)
    right, left = paths[1] > threshold_mm, paths[2] > threshold_mm
    arr[right & ~hidden] = 1
    arr[left & ~hidden & (paths[2] > paths[1])] = 2
    return LabelMap(
        array=arr,
        geometry=replace(stack.geometry, source=dict(stack.geometry.source)),
        classes=dict(LUNG_CLASSES),
        meta={"name": "radiographic lung fields", "mask_threshold_mm": threshold_mm},
    )
