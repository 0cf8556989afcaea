"""Classical (threshold-based) body and lung masks of chest CT in Hounsfield units.

These masks are reference segmentations for CTs that come without lung labels: air below
-320 HU inside the body, minus the air outside the patient and the trachea and main bronchi,
the largest two components split into the patient's right and left lung, vessels filled in.
They are what the demo models are measured against on patients never used for training.

All functions take the *held* array of a volume (axes ``(z, y, x)`` = (S, P, L), see
:mod:`napari_cxseg.geometry`) and its voxel size in mm, so the patient's right is at small ``x``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .geometry import Geometry
from .images import Image, LabelClass, LabelMap

#: Class ids of :func:`lung_label_map`.
LUNG_CLASSES = {1: LabelClass("right lung", "#1f77b4"), 2: LabelClass("left lung", "#ff7f0e")}


def _disk(radius_vox: tuple[float, float]) -> np.ndarray:
    """2D elliptic structuring element with the given radii (in voxels)."""
    ry, rx = (max(1, int(round(r))) for r in radius_vox)
    yy, xx = np.mgrid[-ry : ry + 1, -rx : rx + 1]
    return (yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0


def _ball(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """3D ellipsoid structuring element of ``radius_mm`` on an anisotropic grid."""
    r = np.maximum(1, np.round(radius_mm / np.asarray(spacing, float))).astype(int)
    zz, yy, xx = np.mgrid[-r[0] : r[0] + 1, -r[1] : r[1] + 1, -r[2] : r[2] + 1]
    return (zz / r[0]) ** 2 + (yy / r[1]) ** 2 + (xx / r[2]) ** 2 <= 1.0


def _largest_components(mask: np.ndarray, n: int = 1) -> list[np.ndarray]:
    """The ``n`` largest connected components of ``mask``, largest first."""
    lab, count = ndi.label(mask)
    if count == 0:
        return []
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    order = np.argsort(sizes)[::-1][:n]
    return [lab == i for i in order if sizes[i] > 0]


def _fill_holes_axial(mask: np.ndarray) -> np.ndarray:
    """Fill holes slice by slice in the axial plane."""
    out = np.empty_like(mask)
    for k in range(mask.shape[0]):
        out[k] = ndi.binary_fill_holes(mask[k])
    return out


def body_mask(hu: np.ndarray, spacing, threshold: float = -500.0) -> np.ndarray:
    """The patient's body: tissue above ``threshold`` HU, largest component, holes filled.

    Parameters
    ----------
    hu
        Held CT array ``(z, y, x)`` in HU.
    spacing
        Voxel size in mm along the three axes.
    threshold
        HU above which a voxel counts as tissue.

    Returns
    -------
    numpy.ndarray
        Boolean mask, lungs and airways included (filled), table and outside air excluded.
    """
    sp = np.asarray(spacing, float)
    tissue = hu > threshold
    # a 3 mm opening in the axial plane detaches the table and blankets from the skin
    disk = _disk((3.0 / sp[1], 3.0 / sp[2]))
    opened = np.empty_like(tissue)
    for k in range(tissue.shape[0]):
        opened[k] = ndi.binary_opening(tissue[k], structure=disk)
    comps = _largest_components(opened, 1)
    if not comps:
        return np.zeros_like(tissue)
    return _fill_holes_axial(comps[0])


def airway_mask(
    hu: np.ndarray,
    spacing,
    body: np.ndarray | None = None,
    air_threshold: float = -600.0,
    max_branch_area_mm2: float = 700.0,
) -> np.ndarray:
    """Trachea and main bronchi, tracked from the top slice down until they enter the lungs.

    The trachea is the roundish air region near the body's left-right centre in the top slices
    (area 40-700 mm²).  Going down, every air component of the next slice that overlaps the
    tracked airway is added while it stays small; one that is large is lung, and stops that
    branch.

    Parameters
    ----------
    hu
        Held CT array ``(z, y, x)`` in HU.
    spacing
        Voxel size in mm.
    body
        Body mask (computed when not given).
    air_threshold
        HU below which a voxel is airway air.
    max_branch_area_mm2
        Largest cross-section (mm²) of one airway component in an axial slice.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the extrapulmonary airways (empty when no trachea is found).
    """
    sp = np.asarray(spacing, float)
    if body is None:
        body = body_mask(hu, sp)
    px_area = sp[1] * sp[2]
    air = (hu < air_threshold) & body
    out = np.zeros_like(air)
    nz = air.shape[0]
    start = None
    # find the trachea in the top quarter of the volume
    for k in range(nz - 1, int(nz * 0.6), -1):
        if not body[k].any():
            continue
        xs = np.nonzero(body[k].any(axis=0))[0]
        ys = np.nonzero(body[k].any(axis=1))[0]
        cx, width = 0.5 * (xs[0] + xs[-1]), xs[-1] - xs[0] + 1
        lab, n = ndi.label(air[k])
        best, best_d = None, np.inf
        for i in range(1, n + 1):
            comp = lab == i
            area = comp.sum() * px_area
            if not 40.0 <= area <= max_branch_area_mm2:
                continue
            yy, xx = np.nonzero(comp)
            d = abs(xx.mean() - cx)
            # central (within 15 % of the body width) and in the anterior two thirds
            if d < 0.15 * width and yy.mean() < ys[0] + 0.67 * (ys[-1] - ys[0]) and d < best_d:
                best, best_d = comp, d
        if best is not None:
            start = k
            out[k] = best
            break
    if start is None:
        return out
    grow = _disk((3.0 / sp[1], 3.0 / sp[2]))
    for k in range(start - 1, -1, -1):
        prev = ndi.binary_dilation(out[k + 1], structure=grow)
        lab, n = ndi.label(air[k])
        if n == 0:
            break
        hit = np.unique(lab[prev & (lab > 0)])
        added = False
        for i in hit:
            comp = lab == i
            if comp.sum() * px_area <= max_branch_area_mm2:
                out[k] |= comp
                added = True
        if not added:
            break
    return out


def lung_masks(
    hu: np.ndarray,
    spacing,
    threshold: float = -320.0,
    min_lung_ml: float = 50.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Right and left lung masks of a chest CT by thresholding.

    Parameters
    ----------
    hu
        Held CT array ``(z, y, x)`` in HU (axis 2 increases toward the patient's left).
    spacing
        Voxel size in mm.
    threshold
        HU below which a voxel inside the body is air.
    min_lung_ml
        Components smaller than this (ml) are not lungs.

    Returns
    -------
    tuple of numpy.ndarray
        ``(right, left)`` boolean masks; vessels and other holes inside each lung are filled.
    """
    sp = np.asarray(spacing, float)
    hu = np.asarray(hu)
    body = body_mask(hu, sp)
    airway = airway_mask(hu, sp, body)
    air = (hu < threshold) & body
    air &= ~ndi.binary_dilation(airway, structure=_ball(2.0, sp))
    # drop speckle (noise, bowel gas bubbles) before picking components
    air = ndi.binary_opening(air, structure=_ball(1.5, sp))
    vox_ml = float(np.prod(sp)) / 1000.0
    comps = [c for c in _largest_components(air, 3) if c.sum() * vox_ml >= min_lung_ml]
    xs = np.nonzero(body.any(axis=(0, 1)))[0]
    mid = 0.5 * (xs[0] + xs[-1]) if xs.size else hu.shape[2] / 2
    right = np.zeros_like(air)
    left = np.zeros_like(air)
    big = comps[:2]
    # the second component is a lung only if it lies mostly on the other side of the midline
    if len(big) == 2:
        c0 = np.nonzero(big[0].any(axis=(0, 1)))[0].mean()
        c1 = np.nonzero(big[1].any(axis=(0, 1)))[0].mean()
        if (c0 - mid) * (c1 - mid) > 0 or big[1].sum() < 0.2 * big[0].sum():
            big = big[:1]
    if len(big) == 2:
        a, b = big
        ca = np.nonzero(a)[2].mean()
        cb = np.nonzero(b)[2].mean()
        right, left = (a, b) if ca < cb else (b, a)
    elif len(big) == 1:
        # both lungs joined (anterior junction): split at the body midline
        xx = np.arange(hu.shape[2])[None, None, :]
        right = big[0] & (xx < mid)
        left = big[0] & (xx >= mid)
    closing = _ball(4.0, sp)
    out = []
    for m in (right, left):
        if m.any():
            m = ndi.binary_closing(np.pad(m, 6), structure=closing)[6:-6, 6:-6, 6:-6]
            m = _fill_holes_axial(m) & body
        out.append(m)
    right, left = out
    left &= ~right
    return right, left


def lung_label_map(image: Image) -> LabelMap:
    """Lung label map (1 right lung, 2 left lung) of a CT :class:`Image` in HU.

    Parameters
    ----------
    image
        A 3D CT in HU with an axis-aligned held geometry (as every reader gives).

    Returns
    -------
    LabelMap
        On the image's grid, ``meta["method"]`` names the method.
    """
    geom = image.geometry
    if geom.ndim != 3:
        raise ValueError("lung_label_map needs a 3D CT volume")
    right, left = lung_masks(np.asarray(image.array, np.float32), geom.spacing)
    arr = np.zeros(right.shape, np.uint8)
    arr[right] = 1
    arr[left] = 2
    return LabelMap(
        array=arr,
        geometry=Geometry(affine=geom.affine.copy(), frame=geom.frame),
        classes=dict(LUNG_CLASSES),
        meta={"method": "HU threshold -320, body/airway exclusion, midline split", "name": "lungs (HU)"},
    )
