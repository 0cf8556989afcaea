"""A card's preprocessing: the one definition of how an image enters a model's space.

The :class:`~napari_cxseg.inference.Predictor` and the :class:`~napari_cxseg.training.Trainer`
both call :func:`preprocess`, so a model is trained on exactly what it is later run on:

* volumes: a channel-first MetaTensor in (x, y, z) order with its index->RAS affine, then
  MONAI ``Orientationd`` + ``Spacingd`` (labels nearest) + the card's intensity transform;
* radiographs: the intensity transform, then ``Resized`` to the card's size (labels nearest);
  with ``input.fit: pad`` the longest side is resized to the card's size and the other padded
  symmetrically with the darkest value (the border reads as background), keeping the aspect.

The returned MONAI ``Compose`` holds only invertible steps, so ``Invertd`` brings a
prediction back onto the image's grid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .geometry import ras_from_world_affine

if TYPE_CHECKING:
    from .images import Image
    from .models.cards import ModelCard

#: Channel names that mean "an RGB image" (averaged to one grey channel for 1-channel cards).
RGB_NAMES = ({"r", "g", "b"}, {"red", "green", "blue"}, {"r", "g", "b", "a"}, {"red", "green", "blue", "alpha"})


def select_channels(card: ModelCard, image: Image) -> list[int] | str | None:
    """Which image channels feed the card's network, in the card's order.

    Returns None for a single-channel image, ``"rgb"`` for a colour radiograph that a
    one-channel card averages to grey, else the channel indices.

    Raises
    ------
    CxsegError
        Saying which channels the model expects and which the image has.
    """
    from .images import CxsegError

    want = card.input.channels
    src = image.meta.get("source_path") or "the image"
    names = image.channel_names
    if not names:
        if len(want) != 1:
            raise CxsegError(f"model {card.name} expects {len(want)} channels ({', '.join(want)}); {src} has 1")
        return None
    low = [str(n).strip().lower() for n in names]
    if len(want) == 1 and card.spatial_dims == 2 and (set(low) in RGB_NAMES or len(names) in (3, 4)) \
            and want[0].lower() not in low:
        return "rgb"
    pos = [low.index(w.strip().lower()) for w in want if w.strip().lower() in low]
    if len(pos) == len(want):
        return pos
    if len(names) == len(want) and all(_generic_channel_name(n) for n in low):
        return list(range(len(want)))  # unnamed channels (c0, c1 ...) are taken in the card's order
    raise CxsegError(
        f"model {card.name} expects {len(want)} channels ({', '.join(want)}); {src} has "
        f"{len(names)} ({', '.join(map(str, names))})"
    )


def _generic_channel_name(name: str) -> bool:
    """True for reader-made names such as ``c0``, ``0``, ``channel 1``."""
    n = name.replace("channel", "").replace("ch", "").replace("c", "").strip(" _-")
    return n.isdigit()


def input_array(image: Image, chans: list[int] | str | None) -> np.ndarray:
    """The image's channels the network takes, channel-first float32 (``"rgb"``: averaged)."""
    arr = np.asarray(image.array)
    if chans is None:
        arr = arr[None]
    elif chans == "rgb":
        arr = arr[:3].astype(np.float32).mean(axis=0, keepdims=True)
    else:
        arr = arr[list(chans)]
    return arr.astype(np.float32, copy=False)


def to_metatensor(arr: np.ndarray, image: Image, transpose_2d: bool = False) -> Any:
    """A channel-first array on ``image``'s held grid as a MONAI MetaTensor.

    Volumes become (x, y, z) with their index->RAS affine (what MONAI's loaders give);
    radiographs keep (row, col) with an identity affine unless ``transpose_2d`` (MONAI's 2D
    readers give (x, y), which bundles expect).
    """
    import torch
    from monai.data import MetaTensor

    nd = image.geometry.ndim
    meta = {
        "filename_or_obj": str(image.meta.get("source_path") or "image"),
        "original_channel_dim": 0,
        "space": "RAS",
    }
    if nd == 3:
        perm = np.eye(4)[[2, 1, 0, 3]]  # index (x, y, z) -> held index (z, y, x)
        affine = ras_from_world_affine(image.geometry.affine) @ perm
        arr = arr.transpose(0, 3, 2, 1)
    else:
        affine = np.eye(4)
        if transpose_2d:
            arr = arr.transpose(0, 2, 1)
    meta["original_affine"] = affine.copy()
    meta["spatial_shape"] = np.asarray(arr.shape[1:])
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr)), affine=torch.as_tensor(affine), meta=meta)


def intensity_transforms(spec: dict[str, Any], keys: str = "image") -> list[Any]:
    """MONAI dictionary transforms for a card's ``input.intensity``."""
    from monai.transforms import (
        NormalizeIntensityd,
        ScaleIntensityd,
        ScaleIntensityRanged,
        ScaleIntensityRangePercentilesd,
    )

    t = spec.get("type", "none")
    if t == "window":
        return [ScaleIntensityRanged(keys=keys, a_min=spec["a_min"], a_max=spec["a_max"], b_min=spec["b_min"],
                                     b_max=spec["b_max"], clip=spec["clip"])]
    if t == "percentiles":
        return [ScaleIntensityRangePercentilesd(keys=keys, lower=spec["lower"], upper=spec["upper"],
                                                b_min=spec["b_min"], b_max=spec["b_max"], clip=spec["clip"],
                                                channel_wise=True)]
    if t == "zscore":
        return [NormalizeIntensityd(keys=keys, nonzero=spec["nonzero"], channel_wise=True)]
    if t == "minmax":
        return [ScaleIntensityd(keys=keys, minv=spec["b_min"], maxv=spec["b_max"], channel_wise=True)]
    return []


def pad_value(intensity: dict[str, Any], image: Any = None) -> float:
    """The value radiographs are padded with: the darkest value after the intensity transform.

    The transform's ``b_min`` when it has one (a fixed number a bundle config can hold), else the
    image's minimum.
    """
    if intensity.get("type") in ("window", "percentiles", "minmax") and "b_min" in intensity:
        return float(intensity["b_min"])
    return float(image.min()) if image is not None else 0.0


def preprocess(
    card: ModelCard,
    image: Image,
    chans: list[int] | str | None = None,
    label: np.ndarray | None = None,
) -> tuple[dict[str, Any], Any]:
    """Move an image (and optionally its label) into the card's model space.

    Parameters
    ----------
    card
        The model card (``input`` and ``spatial_dims``).
    image
        The image on its held grid.
    chans
        Which channels feed the network (see ``Predictor._channels``); None for one channel.
    label
        Channel-first target on the image's held grid: ``(1, *spatial)`` class ids or
        ``(C, *spatial)`` binary masks (multi-label cards). Resampled with nearest neighbour.

    Returns
    -------
    tuple
        ``(data, compose)``: ``data["image"]`` (and ``data["label"]``) as MetaTensors in model
        space, and the invertible spatial ``Compose`` that ``Invertd`` undoes.
    """
    from monai.transforms import Compose, Orientationd, Resized, Spacingd, SpatialPadd

    x = to_metatensor(input_array(image, chans), image)
    keys = ["image"]
    d: dict[str, Any] = {"image": x}
    if label is not None:
        keys.append("label")
        d["label"] = to_metatensor(np.asarray(label, np.float32), image)
    steps: list[Any] = []
    if card.spatial_dims == 3:
        steps.append(Orientationd(keys=keys, axcodes=card.input.orientation,
                                  labels=(("L", "R"), ("P", "A"), ("I", "S"))))
        if card.input.spacing is not None:
            steps.append(Spacingd(keys=keys, pixdim=card.input.spacing,
                                  mode=["bilinear", "nearest"][: len(keys)]))
        steps += intensity_transforms(card.input.intensity)
    else:
        # intensity first (not invertible), then the invertible pad/resize the result undoes
        d["image"] = Compose(intensity_transforms(card.input.intensity))({"image": x})["image"]
        if card.input.size is not None:
            size = tuple(int(v) for v in card.input.size)
            modes = ["bilinear", "nearest"][: len(keys)]
            aa = [True, False][: len(keys)]
            if card.input.fit == "pad":
                # the longest side to the card size (aspect kept), then a symmetric pad to the square;
                # written as two MONAI transforms so a bundle config can say exactly the same
                steps.append(Resized(keys=keys, spatial_size=max(size), size_mode="longest", mode=modes,
                                     anti_aliasing=aa))
                steps.append(SpatialPadd(keys="image", spatial_size=size, method="symmetric", mode="constant",
                                         value=pad_value(card.input.intensity, d["image"])))
                if label is not None:
                    steps.append(SpatialPadd(keys="label", spatial_size=size, method="symmetric", mode="constant",
                                             value=0.0))
            else:
                steps.append(Resized(keys=keys, spatial_size=size, mode=modes, anti_aliasing=aa))
    compose = Compose(steps)
    return compose(d), compose
