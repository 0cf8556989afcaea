"""In-memory training data: CT volumes, their resampling, DRR pools and augmented samples.

Everything here produces ``(image, label)`` numpy pairs (channel-first float32 image, integer
label) for the Trainer and the tools that render training films from CTs:

* 2D: radiographs rendered from labelled CTs (:mod:`napari_cxseg.drr`), each pose projected
  once into a :class:`~napari_cxseg.drr.DRRStack` and recombined with random 2D augmentation;
  the preprocessing mirrors the 2D :class:`~napari_cxseg.inference.Predictor` (percentile
  scaling, padding to a square, bilinear resize).
* 3D: a CT and its labels in model space (RAS, card spacing), cropped and augmented with MONAI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..drr import DRRStack, project_ct, random_projection, random_radiograph
from ..geometry import Geometry, held_geometry, world_from_ras_affine
from ..images import Image, LabelMap


def read_volume(path: str | Path, labels: bool = False) -> Image | LabelMap:
    """Read a NIfTI volume as a held :class:`Image` (HU as float32) or :class:`LabelMap`.

    Uses :func:`napari_cxseg.io.read` (the one reader of the package).

    Parameters
    ----------
    path
        NIfTI file.
    labels
        Read as a label map.

    Returns
    -------
    Image or LabelMap
    """
    from ..io import read

    obj = read(path, as_labels=labels)[0]
    if not labels and isinstance(obj, Image):
        obj.array = np.asarray(obj.array, np.float32)
    return obj


def resample(
    obj: Image | LabelMap, spacing: Sequence[float], order: int = 1, cval: float = 0.0
) -> Image | LabelMap:
    """Resample an axis-aligned held volume to a new voxel size (same field of view).

    Parameters
    ----------
    obj
        Image or label map (3D, axis-aligned held geometry).
    spacing
        New voxel size along the held axes (z, y, x) in mm.
    order
        Interpolation order (labels: per-class linear interpolation and argmax, whatever
        ``order`` says, so thin structures survive).
    cval
        Value outside the volume.

    Returns
    -------
    Image or LabelMap
        A copy on the new grid; the affine is exact (voxel centres of the new grid).
    """
    from scipy.ndimage import affine_transform

    geom = obj.geometry
    old = geom.spacing
    new = np.asarray(spacing, float)
    shape_old = np.asarray(obj.array.shape[-3:])
    shape_new = np.maximum(1, np.floor((shape_old - 1) * old / new).astype(int) + 1)
    step = new / old
    # centre the new grid in the old field of view
    start = 0.5 * ((shape_old - 1) - (shape_new - 1) * step)
    aff = geom.affine @ np.block([[np.diag(step), start[:, None]], [np.zeros((1, 3)), np.ones((1, 1))]])
    g = Geometry(affine=aff, frame=geom.frame)
    if isinstance(obj, LabelMap):
        arr = np.asarray(obj.array)
        ids = [int(v) for v in np.unique(arr) if v != 0]
        best = np.zeros(tuple(shape_new), np.float32)
        out = np.zeros(tuple(shape_new), arr.dtype)
        for k in ids:
            p = affine_transform((arr == k).astype(np.float32), step, start, output_shape=tuple(shape_new), order=1)
            sel = (p > 0.5) & (p > best)
            out[sel] = k
            best = np.maximum(best, p)
        return LabelMap(array=out, geometry=g, classes=dict(obj.classes), meta=dict(obj.meta))
    arr = affine_transform(
        np.asarray(obj.array, np.float32), step, start, output_shape=tuple(shape_new), order=order, cval=cval
    )
    return Image(array=arr, geometry=g, modality=obj.modality, meta=dict(obj.meta))


def remap_labels(label_map: LabelMap, mapping: Mapping[int, Sequence[int]], classes: Mapping) -> LabelMap:
    """New label map with ``{new id: (old ids, ...)}`` and the new classes."""
    arr = np.asarray(label_map.array)
    out = np.zeros(arr.shape, np.uint8)
    for new_id, old_ids in mapping.items():
        out[np.isin(arr, list(old_ids))] = int(new_id)
    return LabelMap(array=out, geometry=replace(label_map.geometry), classes=dict(classes), meta=dict(label_map.meta))


def nifti_image(path: str | Path) -> Image:
    """A NIfTI file as a held :class:`Image` without the reader's checks (scripts, speed)."""
    import nibabel as nib

    im = nib.load(str(path))
    arr = np.asarray(im.dataobj)
    g = held_geometry(
        arr.shape, world_from_ras_affine(im.affine), source_affine=im.affine,
        source={"format": "nifti", "path": str(path)},
    )
    return Image(g.from_disk(arr).astype(np.float32), g, "CT", meta={"source_path": str(path)})


# ---------------------------------------------------------------------------- 2D (DRR)
def drr_pool(
    ct: Image,
    labels: LabelMap,
    classes: Mapping[int, Sequence[int]],
    n_poses: int,
    seed: int = 0,
    pixel_spacing: float = 1.6,
    progress: bool = False,
) -> list[DRRStack]:
    """Project a labelled CT in ``n_poses`` random poses (see :func:`~napari_cxseg.drr.random_projection`).

    Parameters
    ----------
    ct, labels
        CT in HU and its label map on the same grid.
    classes
        ``{output id: (CT label ids, ...)}`` (e.g. :data:`~napari_cxseg.drr.TOTALSEG_LUNGS`).
    n_poses
        Number of projections.
    seed
        Random seed.
    pixel_spacing
        Detector pixel size in mm.
    progress
        Print one line per pose.

    Returns
    -------
    list of DRRStack
    """
    from ..hu_lungs import body_mask

    rng = np.random.default_rng(seed)
    body = body_mask(ct.array, ct.geometry.spacing)
    out = []
    for i in range(n_poses):
        proj = random_projection(rng, pixel_spacing) if i else replace(
            random_projection(rng, pixel_spacing), rotation_deg=(0.0, 0.0, 0.0), offset_mm=(0.0, 0.0)
        )
        out.append(project_ct(ct, labels, classes, projection=proj, body=body))
        if progress:
            print(f"  pose {i + 1}/{n_poses}: rotation {np.round(proj.rotation_deg, 1).tolist()}", flush=True)
    return out


def percentile_scale(img: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """MONAI ``ScaleIntensityRangePercentiles`` to [0, 1] with clipping (the card's intensity)."""
    lo, hi = np.percentile(img, [lower, upper])
    if hi - lo <= 0:
        return np.zeros_like(img, dtype=np.float32)
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def radiograph_model_input(
    img: np.ndarray, size: tuple[int, int] = (256, 256), lower: float = 0.5, upper: float = 99.5
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Scale, pad to a square and resize a radiograph as the 2D Predictor does (``fit: pad``).

    Parameters
    ----------
    img
        ``(rows, cols)`` radiograph.
    size
        Model input size.
    lower, upper
        Intensity percentiles mapped to [0, 1].

    Returns
    -------
    tuple
        ``(size)`` float32 model input and the padding ``(top, bottom, left, right)``.
    """
    import torch
    import torch.nn.functional as F

    x = percentile_scale(np.asarray(img, np.float32), lower, upper)
    r, c = x.shape
    side = max(r, c)
    # MONAI SpatialPad "symmetric": the smaller half before
    top = (side - r) // 2
    left = (side - c) // 2
    pad = (top, side - r - top, left, side - c - left)
    x = np.pad(x, ((pad[0], pad[1]), (pad[2], pad[3])), constant_values=float(x.min()))
    t = torch.from_numpy(x)[None, None]
    if side > size[0]:  # anti-aliasing as MONAI Resized(anti_aliasing=True)
        from monai.transforms import Resize

        out = Resize(size, mode="bilinear", anti_aliasing=True)(t[0]).numpy()[0]
    else:
        out = F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
    return out.astype(np.float32), pad


class AugmentedDRRDataset:
    """Endless-style torch dataset of augmented radiographs drawn from DRR pools.

    Parameters
    ----------
    stacks
        Projections to draw from.
    length
        Samples per epoch.
    seed
        Base seed (sample ``i`` of epoch ``e`` uses ``seed + e * length + i``).
    size
        Model input size.
    """

    def __init__(self, stacks: Sequence[DRRStack], length: int, seed: int = 0, size: tuple[int, int] = (256, 256)):
        self.stacks = list(stacks)
        self.length = int(length)
        self.seed = int(seed)
        self.size = tuple(size)
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        import torch

        rng = np.random.default_rng(self.seed + self.epoch * self.length + int(i))
        stack = self.stacks[int(rng.integers(len(self.stacks)))]
        img, lab = random_radiograph(stack, rng, self.size, pad_to_square=True)
        img = percentile_scale(img)
        return {
            "image": torch.from_numpy(img[None].copy()),
            "label": torch.from_numpy(lab[None].astype(np.int64)),
        }


def fixed_pairs(dataset: AugmentedDRRDataset, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` deterministic samples of a dataset as ``(image, label)`` numpy pairs (validation)."""
    out = []
    for i in range(n):
        d = dataset[i]
        out.append((d["image"].numpy(), d["label"].numpy()))
    return out


class PairDataset:
    """Torch dataset over in-memory ``(image, label)`` numpy pairs, optional MONAI transform."""

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], transform=None):
        self.pairs = list(pairs)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        import torch

        img, lab = self.pairs[i]
        d = {"image": torch.as_tensor(np.asarray(img, np.float32)), "label": torch.as_tensor(np.asarray(lab).astype(np.int64))}
        if self.transform is not None:
            d = self.transform(d)
            if isinstance(d, list):  # cropping transforms with num_samples=1 give a list
                d = d[0]
        return d


# ---------------------------------------------------------------------------- 3D (CT)
def ras_arrays(image: Image, labels: LabelMap | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Held (S, P, L) arrays as MONAI's RAS (x, y, z) order: flip P and L, reverse axes."""
    def conv(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(a)[:, ::-1, ::-1].transpose(2, 1, 0))

    return conv(image.array), None if labels is None else conv(labels.array)


def ct_augmentation(
    patch: Sequence[int], window: tuple[float, float], seed: int = 0, num_classes: int | None = None
):
    """MONAI dictionary transforms for 3D training crops (rotation, scale, intensity, crop).

    Parameters
    ----------
    patch
        Crop size in voxels.
    window
        HU window ``(a_min, a_max)`` mapped to [0, 1] (the card's intensity).
    seed
        Random seed.
    num_classes
        With a number of classes (background included), crops are centred on a class chosen at
        random (``RandCropByLabelClassesd``): background a third of the time (it holds the
        outside air that looks like lung), each organ equally often otherwise, so small organs
        are seen as often as large ones. Without it, crops are uniform.

    Returns
    -------
    monai.transforms.Compose
    """
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandCropByLabelClassesd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSpatialCropd,
        ScaleIntensityRanged,
        SpatialPadd,
    )

    # crop first (a margin larger than the patch), then rotate/scale only the patch: cheap
    big = [int(round(p * 1.25)) for p in patch]
    crop = (
        RandSpatialCropd(keys=["image", "label"], roi_size=big, random_size=False)
        if num_classes is None
        else RandCropByLabelClassesd(
            keys=["image", "label"], label_key="label", spatial_size=big, num_classes=num_classes,
            ratios=[0.5 * (num_classes - 1)] + [1.0] * (num_classes - 1), num_samples=1, warn=False,
        )
    )
    t = Compose(
        [
            ScaleIntensityRanged(keys="image", a_min=window[0], a_max=window[1], b_min=0.0, b_max=1.0, clip=True),
            SpatialPadd(keys=["image", "label"], spatial_size=big),
            crop,
            RandAffined(
                keys=["image", "label"], prob=0.8, spatial_size=patch, rotate_range=(0.15, 0.15, 0.15),
                scale_range=(0.12, 0.12, 0.12), translate_range=(4, 4, 3), mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            SpatialPadd(keys=["image", "label"], spatial_size=patch),
            RandSpatialCropd(keys=["image", "label"], roi_size=patch, random_size=False),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
            RandAdjustContrastd(keys="image", gamma=(0.8, 1.25), prob=0.3),
            RandGaussianSmoothd(keys="image", prob=0.1),
            RandGaussianNoised(keys="image", std=0.02, prob=0.3),
        ]
    )
    t.set_random_state(seed)
    return t


def lung_pairs_from_hu(ct: Image) -> LabelMap:
    """The HU-threshold lung reference of a CT (see :mod:`napari_cxseg.hu_lungs`)."""
    from ..hu_lungs import lung_label_map

    return lung_label_map(ct)


def images_equal_grid(a: Image | LabelMap, b: Image | LabelMap) -> bool:
    """True when two held volumes share their grid."""
    return a.geometry.same_grid(b.geometry, a.array.shape, b.array.shape)


def ct_radiograph(
    ct: Image,
    lungs: LabelMap | None = None,
    volume_spacing: Sequence[float] = (3.0, 1.5, 1.5),
    pixel_spacing: float = 1.5,
    projection=None,
) -> tuple[Image, LabelMap]:
    """A PA radiograph of a CT and its lung masks, for evaluation on any chest CT.

    Parameters
    ----------
    ct
        CT in HU (3D, held geometry).
    lungs
        Lung label map on the CT's grid (1 right, 2 left); default: the HU-threshold lungs
        of :mod:`napari_cxseg.hu_lungs` (computed on the resampled volume).
    volume_spacing
        The CT is resampled to this voxel size first (speed).
    pixel_spacing
        Detector pixel size in mm.
    projection
        :class:`~napari_cxseg.drr.Projection`; default a PA cone beam (1800 mm, magnification
        1.125) with the given pixel size.

    Returns
    -------
    tuple
        ``(radiograph Image, lungs LabelMap)`` as :func:`napari_cxseg.drr.render_drr` gives.
    """
    from ..drr import LUNG_CLASSES, Projection, render_drr
    from ..hu_lungs import lung_label_map

    small = resample(ct, volume_spacing, cval=-1024.0)
    if lungs is None:
        lungs_small = lung_label_map(small)
    else:
        lungs_small = resample(lungs, volume_spacing)
    proj = projection or Projection(
        source_distance=1800.0, object_distance=1600.0, pixel_spacing=pixel_spacing, step_mm=2.0
    )
    img, lab = render_drr(small, lungs_small, {1: (1,), 2: (2,)}, dict(LUNG_CLASSES), projection=proj)
    img.meta["name"] = f"DRR of {Path(str(ct.meta.get('source_path') or 'CT')).name}"
    return img, lab
