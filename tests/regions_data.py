"""Radiographs with known structure masks for the region tests.

* :func:`synthetic_structures`: rectangles whose region boxes and CTR are worked out by hand in
  ``test_regions.py``.
* :func:`ct_radiograph_structures`: a PA radiograph rendered from the real public chest CT
  (LIDC-IDRI-0001, ``napari_cxseg.public_data``) with its TotalSegmentator structures projected
  along the same rays, one mask per structure (a pixel belongs to a structure where the ray's
  path through it exceeds 2 mm; structures may overlap, as on a film).
"""

from __future__ import annotations

import functools

import numpy as np

#: structure -> TotalSegmentator ids of the public CT's 118-class map (structures.csv)
CT_STRUCTURES = {
    "right lung": (12, 13, 14), "left lung": (10, 11), "heart": (51,), "aorta": (52,), "trachea": (16,),
    "spine": tuple(range(25, 51)), "right clavicle": (74,), "left clavicle": (73,),
}  # fmt: skip


def rect(shape: tuple[int, int], r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


def synthetic_structures() -> dict[str, np.ndarray]:
    """200 x 200 'film': lungs rows 20-179 / 30-169, heart rows 100-159 cols 85-134 cut out of them,
    clavicles rows 30-39 (right cols 10-79, left cols 120-189)."""
    shape = (200, 200)
    heart = rect(shape, 100, 160, 85, 135)
    right = rect(shape, 20, 180, 20, 90) & ~heart
    left = rect(shape, 30, 170, 110, 180) & ~heart
    return {"right lung": right, "left lung": left, "heart": heart,
            "right clavicle": rect(shape, 30, 40, 10, 80), "left clavicle": rect(shape, 30, 40, 120, 190)}


@functools.lru_cache(maxsize=1)
def ct_radiograph_structures():
    """``(radiograph Image, {structure: bool mask})`` rendered from the public CT (about a minute)."""
    from napari_cxseg import public_data as pd
    from napari_cxseg.drr import Projection, compose, project_ct
    from napari_cxseg.images import LabelClass
    from napari_cxseg.training.datasets import read_volume, remap_labels, resample

    ct = read_volume(pd.ct_nifti())
    labels = read_volume(pd.ct_mask_nifti(), labels=True)
    names = dict(enumerate(CT_STRUCTURES, start=1))
    mapping = {k: CT_STRUCTURES[n] for k, n in names.items()}
    small_labels = resample(remap_labels(labels, mapping, {k: LabelClass(n) for k, n in names.items()}), (3.0, 1.5, 1.5))
    small = resample(ct, (3.0, 1.5, 1.5), cval=-1024.0)
    proj = Projection(source_distance=1800.0, object_distance=1600.0, pixel_spacing=1.5, step_mm=2.0)
    stack = project_ct(small, small_labels, {k: (k,) for k in names}, projection=proj)
    image, _ = compose(stack)
    image.meta["source_path"] = None
    masks = {names[k]: stack.paths[i] > 2.0 for i, k in enumerate(stack.class_ids)}
    return image, masks
