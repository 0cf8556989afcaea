"""Digitally reconstructed radiographs (DRRs): frontal chest radiographs rendered from CT.

A CT in HU is turned into linear attenuation (optionally with extra weight on bone), integrated
along rays through the patient from posterior to anterior (parallel beam or a point source, i.e.
cone beam) onto a detector in front of the chest, and the line integrals are windowed into a
radiograph. Label maps are projected along the same rays: a detector pixel belongs to a class
where the path length through that class exceeds a small threshold. This gives radiographs with
exact lung masks from any labelled CT.

Conventions
-----------
The view is **PA** and displayed as acquired: the viewer faces the patient, image rows run from
head to feet and the patient's right is on the **image's left** (the world L coordinate grows
with the column index). The output :class:`~napari_cxseg.images.Image` has ``frame="image"``
and the detector pixel size in mm as spacing.

Only numpy, scipy and torch are used (no Qt, no napari).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .geometry import Geometry
from .images import Image, LabelClass, LabelMap

#: Linear attenuation of water (1/mm) at a typical chest radiography effective energy (~60 keV).
MU_WATER = 0.0206

#: The radiograph lung classes and the TotalSegmentator CT labels they are made of.
LUNG_CLASSES = {1: LabelClass("right lung", "#1f77b4"), 2: LabelClass("left lung", "#ff7f0e")}
TOTALSEG_LUNGS = {1: (12, 13, 14), 2: (10, 11)}


@dataclass
class Projection:
    """Where the patient is relative to the source and detector.

    Parameters
    ----------
    rotation_deg
        Patient rotation in degrees about the world axes (S, P, L): about S turns the patient
        (left anterior oblique), about P tilts in the coronal plane, about L is lordotic tilt.
    source_distance
        Source-to-detector distance in mm for a cone beam (PA chest: about 1800); ``None`` for a
        parallel beam.
    object_distance
        Source-to-isocentre distance in mm (cone beam only); the isocentre is the volume centre
        shifted by ``offset_mm``. Magnification at the isocentre = source/object distance.
    pixel_spacing
        Detector pixel size in mm (``ImagerPixelSpacing``).
    shape
        Detector ``(rows, cols)``; ``None`` covers the volume's S and L extent.
    offset_mm
        Shift of the detector centre in (S, L) mm from the volume centre, as seen at the
        isocentre (positive = toward the head / the patient's left).
    step_mm
        Sampling step along the rays in mm; ``None``: the P voxel size, at most 1.5 mm.
    """

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    source_distance: float | None = None
    object_distance: float = 1600.0
    pixel_spacing: float = 0.7
    shape: tuple[int, int] | None = None
    offset_mm: tuple[float, float] = (0.0, 0.0)
    step_mm: float | None = None


@dataclass
class Rendering:
    """How line integrals become radiograph grey values.

    Parameters
    ----------
    bone_weight
        Extra attenuation of bone (per 1000 HU above ``bone_hu``, in units of water): 0 is pure
        density scaling, larger values make bone brighter (as a lower beam energy does).
    lower_percentile, upper_percentile
        Window of the line integrals inside the body (percentiles) mapped to [0, 1].
    gamma
        Exponent applied after windowing (> 1 darkens the lungs).
    detail
        Unsharp-mask amount (the local contrast enhancement of clinical radiograph processing).
    detail_sigma_mm
        Scale of that enhancement in mm.
    """

    bone_weight: float = 1.0
    lower_percentile: float = 0.5
    upper_percentile: float = 99.8
    gamma: float = 1.4
    detail: float = 0.6
    detail_sigma_mm: float = 10.0


def hu_to_attenuation(
    hu: np.ndarray, bone_weight: float = 1.0, bone_hu: float = 200.0
) -> np.ndarray:
    """Linear attenuation (1/mm) from HU, with optional extra weight on bone.

    Parameters
    ----------
    hu
        CT values in HU (anything below -1000 counts as air).
    bone_weight
        Extra attenuation per 1000 HU above ``bone_hu``, in units of water's attenuation.
    bone_hu
        Where bone weighting starts.

    Returns
    -------
    numpy.ndarray
        float32 attenuation, never negative.
    """
    hu = np.asarray(hu, np.float32)
    mu = np.clip(1.0 + hu / 1000.0, 0.0, None)
    if bone_weight:
        mu = mu + bone_weight * np.clip((hu - bone_hu) / 1000.0, 0.0, None)
    return (MU_WATER * mu).astype(np.float32)


def _rotation_matrix(deg: Sequence[float]) -> np.ndarray:
    """Rotation about world axes (S, P, L) in degrees, applied in that order."""
    out = np.eye(3)
    for axis, d in enumerate(deg):
        if not d:
            continue
        a = np.deg2rad(d)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i] = r[j, j] = np.cos(a)
        r[i, j] = -np.sin(a)
        r[j, i] = np.sin(a)
        out = r @ out
    return out


def _volume_extent(geometry: Geometry, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """World bounding box (min, max) of a volume's voxel centres."""
    n = np.asarray(shape) - 1
    corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])], float)
    w = (geometry.affine @ np.c_[corners, np.ones(8)].T).T[:, :3]
    return w.min(axis=0), w.max(axis=0)


def project(
    channels: np.ndarray,
    geometry: Geometry,
    projection: Projection | None = None,
    rows_per_chunk: int = 32,
    device: Any = None,
) -> tuple[np.ndarray, Geometry]:
    """Line integrals (mm x value) of volume channels along PA rays onto the detector.

    Parameters
    ----------
    channels
        ``(C, z, y, x)`` float array on the held grid of ``geometry`` (attenuation, masks...).
    geometry
        The volume's geometry (world = S, P, L).
    projection
        Source, detector and patient pose.
    rows_per_chunk
        Detector rows sampled at once (bounds memory).
    device
        Torch device for the sampling (default CPU; a GPU renders many label channels fast).

    Returns
    -------
    tuple
        ``(C, rows, cols)`` float32 line integrals and the detector :class:`Geometry`
        (``frame="image"``; world = (row, column) mm on the detector).
    """
    import torch
    import torch.nn.functional as F

    chan = np.asarray(channels, np.float32)
    if chan.ndim == 3:
        chan = chan[None]
    lo, hi = _volume_extent(geometry, chan.shape[1:])
    projection = projection or Projection()
    centre = 0.5 * (lo + hi)
    p = projection
    ps_det = float(p.pixel_spacing)
    cone = p.source_distance is not None
    mag = float(p.source_distance) / float(p.object_distance) if cone else 1.0
    ps_iso = ps_det / mag
    if p.shape is None:
        rows = int(np.ceil((hi[0] - lo[0]) / ps_iso)) + 1
        cols = int(np.ceil((hi[2] - lo[2]) / ps_iso)) + 1
    else:
        rows, cols = (int(s) for s in p.shape)
    iso = centre + np.array([p.offset_mm[0], 0.0, p.offset_mm[1]])
    # detector pixel -> point in the isocentre plane (row 0 = head, column grows to patient left)
    r_idx = np.arange(rows, dtype=np.float64)
    c_idx = np.arange(cols, dtype=np.float64)
    s_iso = iso[0] + ((rows - 1) / 2.0 - r_idx) * ps_iso
    l_iso = iso[2] + (c_idx - (cols - 1) / 2.0) * ps_iso
    rot = _rotation_matrix(p.rotation_deg)
    # depth range along the (rotated) beam that can meet the volume
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    depth = (corners - iso) @ rot[:, 1]
    t0, t1 = float(depth.min()) - 1.0, float(depth.max()) + 1.0
    step_len = float(p.step_mm or min(geometry.spacing[1], 1.5))
    n_samp = max(8, int(np.ceil((t1 - t0) / step_len)) + 1)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    inv_aff = torch.from_numpy(np.linalg.inv(geometry.affine)[:3].astype(np.float32)).to(dev)
    size = torch.tensor(chan.shape[1:], dtype=torch.float32, device=dev)
    rot_t = torch.from_numpy(rot.astype(np.float32)).to(dev)
    iso_t = torch.from_numpy(iso.astype(np.float32)).to(dev)
    t = torch.linspace(t0, t1, n_samp, device=dev)
    dt = float(t[1] - t[0])
    l_iso = torch.from_numpy(l_iso.astype(np.float32)).to(dev) - iso_t[2]
    vol = torch.from_numpy(chan)[None].to(dev)  # (1, C, z, y, x)
    out = np.zeros((chan.shape[0], rows, cols), np.float32)
    with torch.no_grad():
        for r0 in range(0, rows, rows_per_chunk):
            rs = torch.from_numpy(s_iso[r0 : r0 + rows_per_chunk].astype(np.float32)).to(dev) - iso_t[0]
            S, L, T = torch.meshgrid(rs, l_iso, t, indexing="ij")  # (r, c, n), iso-relative
            if cone:
                # rays from a point source behind the patient through the isocentre-plane point
                frac = (p.object_distance - T) / p.object_distance
                S = S * frac
                L = L * frac
                step = dt * torch.sqrt(1.0 + (S[..., 0] ** 2 + L[..., 0] ** 2) / p.object_distance**2)
            else:
                step = torch.full(S.shape[:2], dt, device=dev)
            pts = torch.stack([S, T, L], dim=-1) @ rot_t.T + iso_t
            idx = pts @ inv_aff[:, :3].T + inv_aff[:, 3]
            # grid_sample wants (x, y, z) = (held axis 2, 1, 0), normalised to [-1, 1]
            norm = 2.0 * idx / torch.clamp(size - 1, min=1) - 1.0
            grid = norm.flip(-1)[None]
            sampled = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            out[:, r0 : r0 + len(rs)] = (sampled[0].sum(dim=-1) * step[None]).cpu().numpy()
    aff = np.eye(3)
    aff[0, 0] = aff[1, 1] = ps_det
    det_geom = Geometry(
        affine=aff,
        frame="image",
        source={
            "format": "drr",
            "view": "PA",
            "magnification": mag,
            "rotation_deg": list(map(float, p.rotation_deg)),
        },
    )
    return out, det_geom


@dataclass
class DRRStack:
    """Projections of one CT pose, before rendering: recombined cheaply into many radiographs.

    Attenuation is linear, so the soft (density) and bone parts are projected separately and
    weighted later; class masks are projected as path lengths in mm.

    Parameters
    ----------
    base
        ``(rows, cols)`` line integral of the density attenuation (dimensionless).
    bone
        ``(rows, cols)`` line integral of the bone excess (multiplied by ``bone_weight``).
    paths
        ``(K, rows, cols)`` path length (mm) of each ray through each class.
    class_ids
        Output class id of each ``paths`` channel.
    classes
        Names and colours of the output classes.
    geometry
        Detector geometry (``frame="image"``, pixel size in mm).
    meta
        Projection parameters and the source path.
    """

    base: np.ndarray
    bone: np.ndarray
    paths: np.ndarray
    class_ids: list[int]
    classes: dict[int, LabelClass]
    geometry: Geometry
    meta: dict = field(default_factory=dict)


def window_radiograph(
    line_integral: np.ndarray,
    rendering: Rendering | None = None,
    pixel_spacing: float = 1.0,
) -> np.ndarray:
    """Grey values in [0, 1] from attenuation line integrals (bright = more attenuation).

    Parameters
    ----------
    line_integral
        ``(rows, cols)`` integrals of attenuation (dimensionless).
    rendering
        Window percentiles, gamma and detail enhancement.
    pixel_spacing
        Pixel size in mm (scales the detail enhancement).

    Returns
    -------
    numpy.ndarray
        float32 radiograph; the window is taken over the patient (pixels above 5 % of the
        maximum integral), so outside air is black.
    """
    from scipy.ndimage import gaussian_filter

    rendering = rendering or Rendering()
    li = np.asarray(line_integral, np.float32)
    body = li > 0.05 * float(li.max() or 1.0)
    vals = li[body] if body.any() else li.ravel()
    lo = float(np.percentile(vals, rendering.lower_percentile))
    hi = float(np.percentile(vals, rendering.upper_percentile))
    img = np.clip((li - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    if rendering.gamma != 1.0:
        img = img ** float(rendering.gamma)
    if rendering.detail:
        blur = gaussian_filter(img, rendering.detail_sigma_mm / max(pixel_spacing, 1e-3))
        img = np.clip(img + rendering.detail * (img - blur), 0.0, 1.0)
    return img.astype(np.float32)


def project_ct(
    ct: Image,
    labels: LabelMap | None = None,
    classes: Mapping[int, Sequence[int]] | None = None,
    class_info: Mapping[int, LabelClass] | None = None,
    projection: Projection | None = None,
    remove_table: bool = True,
    bone_hu: float = 200.0,
    body: np.ndarray | None = None,
    device: Any = None,
) -> DRRStack:
    """Project a CT (and optionally label classes) along PA rays.

    Parameters
    ----------
    ct
        3D CT :class:`Image` in HU.
    labels
        Label map on the CT's grid (optional).
    classes
        ``{output id: (CT label ids, ...)}``; default: every class of ``labels`` as itself.
        Use :data:`TOTALSEG_LUNGS` with a TotalSegmentator map for right/left lungs.
    class_info
        Names/colours of the output classes (default: those of ``labels`` when ``classes`` is
        not given, :data:`LUNG_CLASSES` for :data:`TOTALSEG_LUNGS`).
    projection
        Beam geometry and patient pose.
    remove_table
        Keep only the body (drops the CT table, blankets and outside air).
    bone_hu
        HU where bone weighting starts.
    body
        Body mask on the CT grid (computed when ``remove_table`` and not given).
    device
        Torch device for the projection (see :func:`project`).

    Returns
    -------
    DRRStack
    """
    if ct.geometry.ndim != 3:
        raise ValueError("a DRR needs a 3D CT volume")
    projection = projection or Projection()
    hu = np.asarray(ct.array, np.float32)
    base = hu_to_attenuation(hu, 0.0)
    bone = hu_to_attenuation(hu, 1.0, bone_hu) - base
    if remove_table:
        if body is None:
            from .hu_lungs import body_mask

            body = body_mask(hu, ct.geometry.spacing)
        base *= body
        bone *= body
    chans = [base, bone]
    ids: list[int] = []
    info: dict[int, LabelClass] = {}
    if labels is not None:
        if labels.array.shape != hu.shape:
            raise ValueError("labels must be on the CT's grid")
        arr = np.asarray(labels.array)
        if classes is None:
            classes = {k: (k,) for k in sorted(labels.classes) or sorted(set(np.unique(arr)) - {0})}
        ids = sorted(int(k) for k in classes)
        chans.extend(np.isin(arr, list(classes[k])).astype(np.float32) for k in ids)
        if class_info is not None:
            info = dict(class_info)
        elif {int(k): tuple(v) for k, v in classes.items()} == TOTALSEG_LUNGS:
            info = dict(LUNG_CLASSES)
        else:
            info = {k: labels.classes.get(k) or LabelClass(f"class {k}") for k in ids}
    proj, geom = project(np.stack(chans), ct.geometry, projection, device=device)
    meta = {
        "source_path": ct.meta.get("source_path"),
        "projection": dict(projection.__dict__),
    }
    return DRRStack(proj[0], proj[1], proj[2:], ids, info, geom, meta)


def compose(
    stack: DRRStack, rendering: Rendering | None = None, mask_threshold_mm: float = 2.0
) -> tuple[Image, LabelMap | None]:
    """Render a :class:`DRRStack` into a radiograph and its label map.

    Parameters
    ----------
    stack
        Projections from :func:`project_ct`.
    rendering
        Bone weight, window, gamma, detail.
    mask_threshold_mm
        A pixel belongs to a class where the ray's path through it is longer than this; where
        classes overlap, the longer path wins.

    Returns
    -------
    tuple
        ``(Image, LabelMap or None)``: float32 radiograph in [0, 1], modality ``"DX"``,
        ``frame="image"``, view PA.
    """
    rendering = rendering or Rendering()
    li = stack.base + rendering.bone_weight * stack.bone
    img = window_radiograph(li, rendering, float(stack.geometry.spacing[0]))
    meta = {
        "name": "DRR (PA)",
        "view_position": "PA",
        "source_path": stack.meta.get("source_path"),
        "drr": {**stack.meta, "rendering": dict(rendering.__dict__)},
    }
    image = Image(array=img, geometry=replace(stack.geometry), modality="DX", meta=meta)
    if not stack.class_ids:
        return image, None
    lab = LabelMap(
        array=paths_to_labels(stack.paths, stack.class_ids, mask_threshold_mm),
        geometry=replace(stack.geometry, source=dict(stack.geometry.source)),
        classes=dict(stack.classes),
        meta={"name": "DRR labels", "mask_threshold_mm": mask_threshold_mm},
    )
    return image, lab


def paths_to_labels(
    paths: np.ndarray, class_ids: Sequence[int], threshold_mm: float = 2.0
) -> np.ndarray:
    """Label array from per-class path lengths (longest path wins, background below threshold)."""
    paths = np.asarray(paths)
    arr = np.zeros(paths.shape[1:], np.uint8)
    if not len(class_ids):
        return arr
    best = np.argmax(paths, axis=0)
    hit = paths.max(axis=0) > threshold_mm
    arr[hit] = np.asarray(class_ids, np.uint8)[best[hit]]
    return arr


def render_drr(
    ct: Image,
    labels: LabelMap | None = None,
    classes: Mapping[int, Sequence[int]] | None = None,
    class_info: Mapping[int, LabelClass] | None = None,
    projection: Projection | None = None,
    rendering: Rendering | None = None,
    mask_threshold_mm: float = 2.0,
    body: np.ndarray | None = None,
) -> tuple[Image, LabelMap | None]:
    """Render a PA chest radiograph (and optionally its label map) from a CT.

    See :func:`project_ct` and :func:`compose` for the parameters.

    Returns
    -------
    tuple
        ``(radiograph Image, LabelMap or None)``; the patient's right is on the image's left.
    """
    stack = project_ct(ct, labels, classes, class_info, projection, body=body)
    return compose(stack, rendering, mask_threshold_mm)


# ---------------------------------------------------------------------------- augmentation
def random_projection(rng: np.random.Generator, pixel_spacing: float = 1.6) -> Projection:
    """A random patient pose and beam for training views.

    Rotations (standard deviations) of 4 degrees about the vertical axis, 3 in the coronal plane
    and 8 of lordotic tilt; cone beam (source 1000-2000 mm) or parallel; small shifts.

    Parameters
    ----------
    rng
        Random generator.
    pixel_spacing
        Detector pixel size in mm.

    Returns
    -------
    Projection
    """
    cone = rng.random() < 0.7
    sid = float(rng.uniform(1000.0, 2000.0))
    return Projection(
        rotation_deg=(
            float(rng.normal(0, 4.0)),
            float(rng.normal(0, 3.0)),
            float(rng.normal(0, 8.0)),
        ),
        source_distance=sid if cone else None,
        object_distance=sid - float(rng.uniform(150.0, 300.0)),
        pixel_spacing=pixel_spacing,
        offset_mm=(float(rng.normal(0, 8.0)), float(rng.normal(0, 8.0))),
        step_mm=2.0,
    )


def random_radiograph(
    stack: DRRStack,
    rng: np.random.Generator,
    out_shape: tuple[int, int] = (256, 256),
    mask_threshold_mm: float = 2.0,
    pad_to_square: bool = False,
    return_spacing: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, float]:
    """One augmented training radiograph and its labels from a :class:`DRRStack`.

    2D augmentations: crop/zoom/translation/in-plane rotation, anisotropic scaling (chest
    shape), bone weighting, window, gamma,
    detail enhancement, resolution loss, blur and noise. The crop is resized to ``out_shape``
    without keeping the aspect ratio (the 2D predictor's ``fit: stretch``) or, with
    ``pad_to_square``, centred with its aspect ratio and black around it (``fit: pad``).

    Parameters
    ----------
    stack
        Projections of one pose.
    rng
        Random generator.
    out_shape
        Output ``(rows, cols)``.
    mask_threshold_mm
        See :func:`compose`.
    pad_to_square
        Keep the crop's aspect ratio and pad (see above).
    return_spacing
        Also return the output's pixel size in mm (square pixels only with ``pad_to_square``).

    Returns
    -------
    tuple
        float32 image in [0, 1] and uint8 labels, both ``out_shape``.
    """
    from scipy.ndimage import affine_transform, gaussian_filter, zoom

    rows, cols = stack.base.shape
    # crop box in source pixels: 75-160 % of the extent (zoom in and out), aspect jitter, shifted
    h = rows * rng.uniform(0.75, 1.6)
    w = cols * rng.uniform(0.75, 1.6)
    cy = rows / 2 + rng.normal(0, 0.08) * rows
    cx = cols / 2 + rng.normal(0, 0.06) * cols
    ang = np.deg2rad(rng.normal(0, 3.0))
    oh, ow = out_shape
    sy, sx = h / oh, w / ow
    if pad_to_square:
        sy = sx = max(sy, sx)
    # anatomy of other patients: taller/shorter and wider/narrower chests (sd 10 %)
    sy *= float(np.exp(rng.normal(0, 0.1)))
    sx *= float(np.exp(rng.normal(0, 0.1)))
    c, s_ = np.cos(ang), np.sin(ang)
    mat = np.array([[c * sy, -s_ * sx], [s_ * sy, c * sx]])
    centre_out = np.array([(oh - 1) / 2, (ow - 1) / 2])
    offset = np.array([cy, cx]) - mat @ centre_out

    def warp(a: np.ndarray, order: int = 1) -> np.ndarray:
        return affine_transform(a, mat, offset, output_shape=out_shape, order=order, mode="constant")

    bone_w = float(rng.uniform(0.3, 2.5))
    li = warp(stack.base + bone_w * stack.bone)
    inside = np.ones(out_shape, bool)
    if pad_to_square:  # black outside the crop box, as padding to a square does
        rr, cc = np.mgrid[0 : out_shape[0], 0 : out_shape[1]]
        inside = (np.abs(rr - centre_out[0]) <= 0.5 * h / sy) & (np.abs(cc - centre_out[1]) <= 0.5 * w / sx)
        li = li * inside
    ps = float(stack.geometry.spacing[0]) * max(sy, sx)
    rend = Rendering(
        bone_weight=bone_w,
        lower_percentile=float(rng.uniform(0.0, 5.0)),
        upper_percentile=float(rng.uniform(98.0, 100.0)),
        gamma=float(np.exp(rng.normal(np.log(1.3), 0.3))),
        detail=float(rng.uniform(0.0, 1.5)),
        detail_sigma_mm=float(rng.uniform(5.0, 20.0)),
    )
    img = window_radiograph(li, rend, ps)
    if rng.random() < 0.4:  # lower resolution
        f = rng.uniform(0.35, 0.8)
        small = zoom(img, f, order=1)
        img = zoom(small, (oh / small.shape[0], ow / small.shape[1]), order=1)[:oh, :ow]
    if rng.random() < 0.4:
        img = gaussian_filter(img, rng.uniform(0.3, 1.2))
    if rng.random() < 0.6:
        img = img + rng.normal(0, rng.uniform(0.005, 0.04), img.shape)
    img = np.clip(img, 0.0, 1.0).astype(np.float32) * inside
    paths = np.stack([warp(p) * inside for p in stack.paths]) if stack.class_ids else np.zeros((0, oh, ow))
    lab = paths_to_labels(paths, stack.class_ids, mask_threshold_mm)
    if return_spacing:
        return img, lab, ps
    return img, lab
