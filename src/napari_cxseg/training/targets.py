"""Reference masks of a :class:`~napari_cxseg.training.sources.Case` as a card's training target.

Masks are read with the package's readers and put on the *image's* held grid: radiograph masks
through the stored pixel grid (datasets draw masks on the stored pixels; when a reader
reorients the image for display, the mask follows through ``Geometry.from_disk``), resized when a
dataset stores them at another resolution (CXLSeg's 224 px JPEG masks) and thresholded at half
their maximum when stored lossy (JPEG); volumes through world coordinates (a DICOM SEG spanning
some slices of its series lands on those slices). Classes
are matched to the card by name; a mask that holds both lungs in one class is split into the
right and the left lung by anatomy (:func:`split_lungs`) when the card names the sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..images import CxsegError, Image
from .sources import STRUCTURES, Case

#: Class names that mean "both lungs" in a card or a mask.
BOTH_LUNGS = ("lung", "lungs")


def _norm(name: str) -> str:
    return " ".join(str(name).strip().lower().replace("_", " ").split())


def read_mask(path: Path, image: Image) -> np.ndarray:
    """A mask file as an integer array on ``image``'s held grid.

    JPEG masks (lossy) are thresholded at half their maximum; masks of another size than the
    image are resized with nearest neighbour (2D).

    Raises
    ------
    CxsegError
        When the mask cannot be read or its grid does not fit the image.
    """
    from ..io import read

    lab = read(path, as_labels=True)[0]
    if image.geometry.ndim == 3:
        return _on_image_grid(lab, image, path)
    disk = lab.geometry.to_disk(np.asarray(lab.array))
    if str(path).lower().endswith((".jpg", ".jpeg")):
        top = int(disk.max(initial=0))
        disk = (disk > top / 2.0).astype(np.uint8) if top > 0 else np.zeros_like(disk, np.uint8)
    want = tuple(image.geometry.disk_shape) if image.geometry.disk_shape is not None else image.spatial_shape
    if disk.shape != want:
        if disk.ndim != 2 or len(want) != 2:
            raise CxsegError(f"mask {path} has shape {disk.shape}, its image {image.meta.get('source_path')} {want}")
        from PIL import Image as PILImage

        disk = np.asarray(PILImage.fromarray(disk.astype(np.uint8)).resize((want[1], want[0]), PILImage.NEAREST))
    return np.asarray(image.geometry.from_disk(disk)).astype(np.int64)


def _on_image_grid(lab: Any, image: Image, path: Path) -> np.ndarray:
    """A 3D label map placed on the image's voxels through world coordinates (nearest neighbour).

    A mask on the image's own grid comes back as it is; a DICOM SEG that spans only some slices,
    or a label file on another grid of the same patient, is resampled without interpolation.
    """
    arr = np.asarray(lab.array)
    if lab.geometry.same_grid(image.geometry, arr.shape, image.spatial_shape):
        return arr.astype(np.int64)
    from scipy.ndimage import affine_transform

    m = np.linalg.inv(lab.geometry.affine) @ image.geometry.affine
    out = affine_transform(arr, m[:3, :3], m[:3, 3], output_shape=image.spatial_shape, order=0, cval=0)
    if arr.any() and not out.any():
        raise CxsegError(f"mask {path} does not overlap its image {image.meta.get('source_path')} in world space")
    return out.astype(np.int64)


def split_lungs(mask: np.ndarray) -> np.ndarray:
    """Both lungs in one binary mask -> 1 right lung, 2 left lung, by anatomy.

    The mask lies on a held radiograph grid, displayed as a PA view (the patient's right on the
    image's left). The two largest connected parts are the lungs; when the lungs touch, they are
    cut at the least filled column of the middle third. Other parts go to the side of the
    midline they lie on.
    """
    from scipy import ndimage

    m = np.asarray(mask) > 0
    out = np.zeros(m.shape, np.uint8)
    if not m.any():
        return out
    comp, n = ndimage.label(m)
    sizes = ndimage.sum(m, comp, index=np.arange(1, n + 1))
    order = np.argsort(sizes)[::-1] + 1
    cols = np.arange(m.shape[1])
    if n >= 2 and sizes[order[1] - 1] > 0.15 * sizes[order[0] - 1]:
        c1 = ndimage.center_of_mass(m, comp, order[0])[1]
        c2 = ndimage.center_of_mass(m, comp, order[1])[1]
        a, b = (order[0], order[1]) if c1 < c2 else (order[1], order[0])
        ra = cols[(comp == a).any(axis=0)].max()
        lb = cols[(comp == b).any(axis=0)].min()
        mid = 0.5 * (ra + lb)
    else:
        lo, hi = m.shape[1] // 3, 2 * m.shape[1] // 3
        fill = m[:, lo:hi].sum(axis=0)
        mid = lo + int(np.argmin(fill))
    left_of_mid = cols[None, :] < mid
    out[m & left_of_mid] = 1
    out[m & ~left_of_mid] = 2
    return out


def case_classes(case: Case) -> dict[str, list[tuple[str, int]]]:
    """``{class name: [(structure, mask value), ...]}`` that a case's masks provide."""
    out: dict[str, list[tuple[str, int]]] = {}
    for struct in case.masks:
        values = case.label_names if struct == "label" else STRUCTURES.get(struct, {})
        for v, name in values.items():
            out.setdefault(_norm(name), []).append((struct, int(v)))
    return out


def covers(card_classes: Mapping[int, str], case: Case) -> bool:
    """Whether a case's masks give every class a card needs (both lungs count for the sides)."""
    have = case_classes(case)
    if "label" in case.masks and not case.label_names:
        return True  # an unnamed label map: its values are taken as the card's class ids
    for name in card_classes.values():
        n = _norm(name)
        if n in have:
            continue
        if n in ("right lung", "left lung") and any(b in have for b in BOTH_LUNGS):
            continue
        return False
    return True


def build_target(card_classes: Mapping[int, str], case: Case, image: Image, multi_label: bool,
                 channel_of: Mapping[int, int] | None = None) -> np.ndarray:
    """The training target of a case on the image's held grid, channel first.

    Parameters
    ----------
    card_classes
        ``{class id: name}`` of the card.
    case
        The case (its masks).
    image
        Its image (held grid).
    multi_label
        Sigmoid cards: one binary channel per class (structures may overlap). Otherwise one
        channel of class ids, smaller structures painted over larger ones.
    channel_of
        Sigmoid cards: ``{class id: output channel}`` (default: id - 1).

    Returns
    -------
    numpy.ndarray
        ``(1, *spatial)`` int64 class ids, or ``(C, *spatial)`` uint8 masks.
    """
    masks = {s: read_mask(p, image) for s, p in case.masks.items()}
    have = case_classes(case)
    per_class: dict[int, np.ndarray] = {}
    split: np.ndarray | None = None
    unnamed = "label" in masks and not case.label_names
    for cid, name in card_classes.items():
        n = _norm(name)
        if unnamed:
            per_class[cid] = masks["label"] == cid
        elif n in have:
            per_class[cid] = np.any([masks[s] == v for s, v in have[n]], axis=0)
        elif n in ("right lung", "left lung") and any(b in have for b in BOTH_LUNGS):
            if split is None:
                both = np.any([masks[s] == v for b in BOTH_LUNGS for s, v in have.get(b, [])], axis=0)
                split = split_lungs(both)
            per_class[cid] = split == (1 if n == "right lung" else 2)
        else:
            raise CxsegError(f"case {case.key}: its masks ({', '.join(case.masks)}) give no '{name}'")
    shape = image.spatial_shape
    if multi_label:
        chan = channel_of or {c: c - 1 for c in card_classes}
        out = np.zeros((max(chan.values()) + 1, *shape), np.uint8)
        for cid, m in per_class.items():
            out[chan[cid]] |= m.astype(np.uint8)
        return out
    out = np.zeros((1, *shape), np.int64)
    for cid in sorted(per_class, key=lambda c: -int(per_class[c].sum())):
        out[0][per_class[cid]] = cid
    return out
