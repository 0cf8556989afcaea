"""Augmentation for training in model space (MONAI dictionary transforms).

Radiographs (:func:`radiograph_augmentation`): affine (rotation, zoom, shift, shear), elastic
deformation, field-of-view cropping, gamma, contrast curves, CLAHE-like local equalisation,
noise, blur and sharpening, burned-in text and markers. Never a left-right flip: the models
name the patient's sides. Volumes (:func:`volume_augmentation`): patch sampling around the
classes, affine, intensity scale/shift, gamma, noise, blur; again no flips (kidneys, lungs and
clavicles have sides).

Images arrive scaled by the card's intensity transform (about [0, 1] for radiographs).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import MapTransform, RandomizableTransform

_MARKERS = ("R", "L", "AP", "PA", "PORTABLE", "ERECT", "SUPINE", "1", "2", "LAT")


class RandBurnInd(RandomizableTransform, MapTransform):
    """Burn text and markers into a radiograph, as scanners and technologists do.

    Draws one to four white or black labels ("R", "L", "AP", "PORTABLE" ...) and boxes at random
    places, mostly near the borders. Labels are left alone (markers are not anatomy).
    """

    def __init__(self, keys: Sequence[Hashable], prob: float = 0.3) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        import torch
        from PIL import Image, ImageDraw

        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            h, w = img.shape[-2:]
            canvas = Image.new("L", (w, h), 0)
            value = Image.new("L", (w, h), 0)
            draw, vdraw = ImageDraw.Draw(canvas), ImageDraw.Draw(value)
            for _ in range(int(self.R.randint(1, 5))):
                text = _MARKERS[int(self.R.randint(len(_MARKERS)))]
                edge = self.R.random() < 0.8
                x = int(self.R.uniform(0, 0.15) * w if edge and self.R.random() < 0.5 else self.R.uniform(0.05, 0.85) * w)
                y = int(self.R.uniform(0, 0.15) * h if edge and self.R.random() < 0.5 else self.R.uniform(0.05, 0.85) * h)
                bright = 255 if self.R.random() < 0.8 else 1
                if self.R.random() < 0.3:
                    s = int(self.R.uniform(0.02, 0.08) * w)
                    draw.rectangle([x, y, x + s, y + s // 2], fill=255)
                    vdraw.rectangle([x, y, x + s, y + s // 2], fill=bright)
                else:
                    size = max(8, int(self.R.uniform(0.03, 0.07) * h))
                    font = _font(size)
                    draw.text((x, y), text, fill=255, font=font)
                    vdraw.text((x, y), text, fill=bright, font=font)
            mask = torch.as_tensor(np.asarray(canvas) > 0)
            val = torch.as_tensor(np.asarray(value, np.float32) / 255.0)
            top = float(img.max()) if img.numel() else 1.0
            out = img.clone()
            out[..., mask] = (val[mask] * max(top, 1e-6)).to(out.dtype)
            d[key] = out
        return d


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


class RandCLAHEd(RandomizableTransform, MapTransform):
    """Contrast-limited adaptive histogram equalisation (scikit-image), blended with the input.

    Many archives store radiographs processed this way (CXLSeg's companion code applies CLAHE
    before its U-Net), so the model must not depend on the absence of local equalisation.
    """

    def __init__(self, keys: Sequence[Hashable], prob: float = 0.2, clip_limit: tuple[float, float] = (0.005, 0.03)):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.clip_limit = clip_limit

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        import torch
        from skimage.exposure import equalize_adapthist

        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        limit = float(self.R.uniform(*self.clip_limit))
        alpha = float(self.R.uniform(0.5, 1.0))
        for key in self.key_iterator(d):
            img = d[key]
            arr = np.asarray(img.detach().cpu() if hasattr(img, "detach") else img, np.float32)
            lo, hi = float(arr.min()), float(arr.max())
            if hi <= lo:
                continue
            eq = np.stack([equalize_adapthist((c - lo) / (hi - lo), clip_limit=limit) for c in arr])
            mixed = (1 - alpha) * arr + alpha * (eq * (hi - lo) + lo)
            d[key] = img.new_tensor(mixed) if isinstance(img, torch.Tensor) else mixed.astype(np.float32)
        return d


class RandFieldOfViewd(RandomizableTransform, MapTransform):
    """Crop a random part of the film (a tighter or shifted field of view) and resize it back.

    Image keys are resized bilinearly, label keys with nearest neighbour.
    """

    def __init__(self, keys: Sequence[Hashable], label_keys: Sequence[Hashable] = (), prob: float = 0.3,
                 min_scale: float = 0.75) -> None:
        MapTransform.__init__(self, [*keys, *label_keys])
        RandomizableTransform.__init__(self, prob)
        self.label_keys = set(label_keys)
        self.min_scale = float(min_scale)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        import torch.nn.functional as F

        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        h, w = d[keys[0]].shape[-2:]
        sh, sw = (self.R.uniform(self.min_scale, 1.0) for _ in range(2))
        ch, cw = max(8, int(h * sh)), max(8, int(w * sw))
        y0, x0 = int(self.R.randint(0, h - ch + 1)), int(self.R.randint(0, w - cw + 1))
        for key in keys:
            t = d[key]
            crop = t[..., y0:y0 + ch, x0:x0 + cw].float()[None]
            mode = "nearest" if key in self.label_keys else "bilinear"
            kw = {} if mode == "nearest" else {"align_corners": False}
            out = F.interpolate(crop, size=(h, w), mode=mode, **kw)[0]
            d[key] = out.to(t.dtype) if key in self.label_keys else out
        return d


def radiograph_augmentation(seed: int = 0, label_key: str = "label", strength: float = 1.0) -> Any:
    """Random transforms for radiograph training samples (model space, ``image`` + ``label``).

    Parameters
    ----------
    seed
        Seed of every random transform.
    label_key
        The target's key (class ids or binary channels: both resampled with nearest).
    strength
        Scales the geometric ranges (1.0: rotation +-12 deg, zoom 0.8-1.2, shift 8 %, shear 0.05).
    """
    from monai.transforms import (
        Compose,
        Rand2DElasticd,
        RandAdjustContrastd,
        RandAffined,
        RandGaussianNoised,
        RandGaussianSharpend,
        RandGaussianSmoothd,
        RandHistogramShiftd,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = ["image", label_key]
    s = float(strength)
    t = Compose([
        RandFieldOfViewd(keys=["image"], label_keys=[label_key], prob=0.25, min_scale=0.75),
        RandAffined(keys=keys, prob=0.8, rotate_range=(0.21 * s,), scale_range=(0.2 * s, 0.2 * s),
                    translate_range=(20 * s, 20 * s), shear_range=(0.05 * s, 0.05 * s),
                    mode=("bilinear", "nearest"), padding_mode="zeros"),
        Rand2DElasticd(keys=keys, prob=0.15, spacing=(48, 48), magnitude_range=(1.0, 2.5),
                       mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandAdjustContrastd(keys="image", prob=0.5, gamma=(0.6, 1.6)),
        RandHistogramShiftd(keys="image", prob=0.25, num_control_points=(5, 10)),
        RandCLAHEd(keys=["image"], prob=0.2),
        RandScaleIntensityd(keys="image", prob=0.3, factors=0.15),
        RandShiftIntensityd(keys="image", prob=0.3, offsets=0.08),
        RandGaussianSmoothd(keys="image", prob=0.15, sigma_x=(0.4, 1.5), sigma_y=(0.4, 1.5)),
        RandGaussianSharpend(keys="image", prob=0.1),
        RandGaussianNoised(keys="image", prob=0.3, std=0.03),
        RandBurnInd(keys=["image"], prob=0.3),
    ])
    t.set_random_state(seed)
    return t


def volume_augmentation(patch: Sequence[int], num_classes: int, seed: int = 0, label_key: str = "label",
                        samples: int = 2, multi_label: bool = False) -> Any:
    """Random patch sampling and augmentation for 3D training samples in model space.

    Parameters
    ----------
    patch
        Patch size in model voxels.
    num_classes
        Classes including background (for class-balanced patch centres).
    seed
        Seed of every random transform.
    samples
        Patches drawn per volume and step.
    multi_label
        Binary channels instead of class ids (patch centres then by foreground / background).
    """
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandCropByLabelClassesd,
        RandCropByPosNegLabeld,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )

    keys = ["image", label_key]
    patch = [int(p) for p in patch]
    if multi_label or num_classes <= 2:
        crop = RandCropByPosNegLabeld(keys=keys, label_key=label_key, spatial_size=patch, pos=2, neg=1,
                                      num_samples=samples, allow_smaller=True)
    else:
        crop = RandCropByLabelClassesd(keys=keys, label_key=label_key, spatial_size=patch, num_classes=num_classes,
                                       ratios=[0.5 * (num_classes - 1)] + [1.0] * (num_classes - 1),
                                       num_samples=samples, warn=False, allow_smaller=True)
    t = Compose([
        SpatialPadd(keys=keys, spatial_size=patch),
        crop,
        RandAffined(keys=keys, prob=0.5, rotate_range=(0.15, 0.15, 0.15), scale_range=(0.12, 0.12, 0.12),
                    mode=("bilinear", "nearest"), padding_mode="zeros", spatial_size=patch),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
        RandAdjustContrastd(keys="image", gamma=(0.8, 1.25), prob=0.3),
        RandGaussianSmoothd(keys="image", prob=0.1),
        RandGaussianNoised(keys="image", std=0.02, prob=0.3),
    ])
    t.set_random_state(seed)
    return t
