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
    return MetaTensor(contiguous_tensor(arr), affine=torch.as_tensor(affine), meta=meta)


def contiguous_tensor(arr: np.ndarray) -> Any:
    """A C-contiguous CPU tensor with ``arr``'s values (a copy only when ``arr`` is a strided view).

    torch copies a transposed view in tiles on all threads: about twice as fast as
    ``np.ascontiguousarray`` for the axis reversal between held (z, y, x) and MONAI's (x, y, z)
    (0.44 vs 0.82 s for 512 x 512 x 130 float32 on two cores).
    """
    import torch

    if arr.flags.c_contiguous or not arr.flags.writeable or any(s < 0 for s in arr.strides):
        return torch.from_numpy(np.ascontiguousarray(arr))  # torch takes no negative strides
    return torch.from_numpy(arr).contiguous()


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
        tr = ScaleIntensityRangePercentilesd(keys=keys, lower=spec["lower"], upper=spec["upper"],
                                             b_min=spec["b_min"], b_max=spec["b_max"], clip=spec["clip"],
                                             channel_wise=True)
        tr.scaler.__class__ = _percentiles_in_one_pass()
        return [tr]
    if t == "zscore":
        return [NormalizeIntensityd(keys=keys, nonzero=spec["nonzero"], channel_wise=True)]
    if t == "minmax":
        return [ScaleIntensityd(keys=keys, minv=spec["b_min"], maxv=spec["b_max"], channel_wise=True)]
    return []


def _percentiles_in_one_pass() -> type:
    """MONAI's ``ScaleIntensityRangePercentiles`` with both percentiles from one call (same values).

    MONAI asks for the lower and the upper percentile separately: two copies and two partitions
    of a 5-megapixel radiograph; :func:`~napari_cxseg.percentiles.percentiles` gives numpy's
    values for both from two small brackets, and the scaling runs in place (the same operations).
    """
    global _PERCENTILES
    if _PERCENTILES is None:
        import torch
        from monai.transforms import ScaleIntensityRange, ScaleIntensityRangePercentiles
        from monai.transforms.utils_pytorch_numpy_unification import percentile
        from monai.utils import convert_to_tensor

        from .percentiles import percentiles, torch_quantiles

        class _OnePass(ScaleIntensityRangePercentiles):
            def _normalize(self, img: Any) -> Any:
                if self.relative:
                    return super()._normalize(img)
                q = np.array([self.lower, self.upper])
                # MONAI's percentile is np.percentile above a million elements, torch.quantile below:
                # the same values of each from brackets
                exact = isinstance(img, torch.Tensor) and img.dtype == torch.float32 and img.device.type == "cpu"
                if exact and img.numel() > 1_000_000:
                    vals = np.float32(percentiles(img, q))
                elif exact:
                    vals = torch_quantiles(img, q)
                else:
                    vals = percentile(img, q)
                a_min, a_max = (float(v) for v in vals)
                if isinstance(img, torch.Tensor) and img.dtype == torch.float32 and self.dtype in (np.float32, None) \
                        and a_max != a_min and self.b_min is not None and self.b_max is not None:
                    # ScaleIntensityRange's own operations in its order, in place (the same floats)
                    out = (img - a_min).div_(a_max - a_min).mul_(self.b_max - self.b_min).add_(self.b_min)
                    return out.clamp_(self.b_min, self.b_max) if self.clip else out
                scalar = ScaleIntensityRange(a_min=a_min, a_max=a_max, b_min=self.b_min, b_max=self.b_max,
                                             clip=self.clip, dtype=self.dtype)
                return convert_to_tensor(scalar(img), track_meta=False)

        _PERCENTILES = _OnePass
    return _PERCENTILES


_PERCENTILES: type | None = None


def pad_value(intensity: dict[str, Any], image: Any = None) -> float:
    """The value radiographs are padded with: the darkest value after the intensity transform.

    The transform's ``b_min`` when it has one (a fixed number a bundle config can hold), else the
    image's minimum.
    """
    if intensity.get("type") in ("window", "percentiles", "minmax") and "b_min" in intensity:
        return float(intensity["b_min"])
    return float(image.min()) if image is not None else 0.0


def _sampled(n_in: int, n_out: int) -> np.ndarray:
    """Input indices bilinear ``interpolate`` (``align_corners=False``) reads for ``n_out`` outputs.

    Computed in float32 as torch does; indices whose source coordinate is within 1e-4 of an
    integer take both neighbours, so rounding cannot leave one out.
    """
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0.0)
    idx = np.concatenate([np.floor(src - 1e-4), np.floor(src + 1e-4)]).astype(np.int64)
    idx = np.concatenate([idx, idx + 1])
    return np.unique(np.clip(idx, 0, n_in - 1))


def smoothed_where_sampled(x: Any, out_size: tuple[int, ...]) -> Any | None:
    """MONAI ``Resize``'s anti-aliasing Gaussian, computed only where the resize then samples.

    ``Resize(anti_aliasing=True)`` smooths the whole image (a 37-tap kernel per axis for a
    2048 x 2500 radiograph going to 256) and then reads about one row and column in ten.
    This gives a tensor that holds the same smoothed values (MONAI's kernel, zero padding) at
    every row/column bilinear interpolation to ``out_size`` reads and zeros elsewhere, so a
    resize *without* anti-aliasing of it equals MONAI's resize with anti-aliasing.

    Parameters
    ----------
    x
        ``(C, H, W)`` float tensor.
    out_size
        The resize's output size.

    Returns
    -------
    torch.Tensor or None
        None when MONAI would not smooth (no axis gets smaller).
    """
    import torch
    from monai.networks.layers.convutils import gaussian_1d

    shape = tuple(int(v) for v in x.shape[1:])
    if len(shape) != 2 or not any(o < i for o, i in zip(out_size, shape, strict=True)):
        return None
    factors = torch.div(torch.Tensor(list(shape)), torch.Tensor(list(out_size)))
    sigmas = torch.maximum(torch.zeros(factors.shape), (factors - 1) / 2).tolist()
    keep = [_sampled(shape[a], int(out_size[a])) for a in range(2)]
    # per axis a sparse (kept x size) matrix: the zero-padded Gaussian rows at the kept indices
    mats = [_band(keep[a], shape[a], gaussian_1d(torch.as_tensor(sigmas[a]), truncated=4.0, approx="erf"))
            for a in range(2)]
    t = torch.as_tensor(x).float()
    out = torch.zeros((int(t.shape[0]), *shape), dtype=torch.float32)
    rows, cols = torch.from_numpy(keep[0]), torch.from_numpy(keep[1])
    for c in range(int(t.shape[0])):
        part = mats[0] @ t[c]  # (kept rows, W)
        part = (mats[1] @ part.T.contiguous()).T  # (kept rows, kept cols)
        out[c, rows[:, None], cols[None, :]] = part
    return out


def _band(keep: np.ndarray, size: int, kernel: Any) -> Any:
    """Sparse CSR matrix whose row i is ``kernel`` centred on ``keep[i]`` (zero padding)."""
    import warnings

    import torch

    k = kernel.numel()
    half = (k - 1) // 2
    cols = keep[:, None] + np.arange(k)[None, :] - half
    vals = np.broadcast_to(kernel.numpy().astype(np.float32), cols.shape)
    rows = np.broadcast_to(np.arange(len(keep))[:, None], cols.shape)
    ok = (cols >= 0) & (cols < size)
    idx = torch.from_numpy(np.stack([rows[ok], cols[ok]]).astype(np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: sparse CSR is "beta"
        return torch.sparse_coo_tensor(idx, torch.from_numpy(np.ascontiguousarray(vals[ok])),
                                       (len(keep), size)).coalesce().to_sparse_csr()


def _resize_size(shape: tuple[int, ...], size: int | tuple[int, ...], longest: bool) -> tuple[int, ...]:
    """The output size MONAI's ``Resize`` computes (``size_mode="longest"`` or ``"all"``)."""
    if longest:
        scale = int(size) / max(shape)
        return tuple(int(round(s * scale)) for s in shape)
    return tuple(int(v) for v in size)


def _presmooth(img: Any, size: int | tuple[int, ...], longest: bool) -> tuple[Any, bool]:
    """``(image, anti_aliasing)`` for the image's ``Resized``: pre-smoothed where sampled, or as is."""
    from monai.data import MetaTensor

    out = smoothed_where_sampled(img, _resize_size(tuple(img.shape[1:]), size, longest))
    if out is None:
        return img, True
    new = MetaTensor(out, affine=img.affine, meta={k: v for k, v in img.meta.items() if k != "affine"})
    new.applied_operations = list(getattr(img, "applied_operations", []))
    return new, False


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
            longest = card.input.fit == "pad"
            pad = pad_value(card.input.intensity, d["image"])  # of the image, before the smoothing below
            # the anti-aliasing Gaussian only where the resize reads (same values, a tenth of the work)
            d["image"], aa[0] = _presmooth(d["image"], max(size) if longest else size, longest)
            if longest:
                # the longest side to the card size (aspect kept), then a symmetric pad to the square;
                # written as two MONAI transforms so a bundle config can say exactly the same
                steps.append(Resized(keys=keys, spatial_size=max(size), size_mode="longest", mode=modes,
                                     anti_aliasing=aa))
                steps.append(SpatialPadd(keys="image", spatial_size=size, method="symmetric", mode="constant",
                                         value=pad))
                if label is not None:
                    steps.append(SpatialPadd(keys="label", spatial_size=size, method="symmetric", mode="constant",
                                             value=0.0))
            else:
                steps.append(Resized(keys=keys, spatial_size=size, mode=modes, anti_aliasing=aa))
    compose = Compose(steps)
    return compose(d), compose
