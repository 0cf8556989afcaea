"""Train the click-guided networks shipped for click-to-segment (``cxr-clicks``, ``ct-clicks``).

DeepGrow/DeepEdit-style training on ONE labelled public CT (LIDC-IDRI-0001 with its
TotalSegmentator labels, ~90 structures: organs, vessels, vertebrae, ribs, muscles):

* ``ct-clicks`` (3D): working grids of 96^3 isotropic voxels cut around a structure at random
  sizes (the object whole, cut by the grid, or small inside it: what AutoZoom at inference
  sees), rotated and scaled, with thin- and thick-slice versions of the CT and intensity
  augmentation; target = that one structure.
* ``cxr-clicks`` (2D): radiographs rendered from the CT in random poses (``napari_cxseg.drr``)
  with the same 2D augmentation as ``cxr-lungs``; targets = projected lungs, heart, aorta,
  liver, spleen, stomach, trachea, clavicles, scapulae, humeri, ribs and vertebrae.

Clicks are simulated as DeepEdit does: a first positive click deep inside the object, then,
for part of each batch, 1-3 rounds in which the network (no gradient) predicts and a click is
put deep inside its largest error (positive on a miss, negative on a leak); plus random
negative clicks on the object's surroundings, boxes (with or without clicks) and a corrupted
copy of the object as the "mask to refine" channel. Loss: MONAI ``DiceCELoss``.

Usage::

    python scripts/train_click_models.py prepare --out .clickdata          # here (needs the public data)
    python scripts/train_click_models.py train --dims 3 --data .clickdata --minutes 6 --out DIR
    python scripts/train_click_models.py train --dims 2 --data .clickdata --minutes 6 --out DIR
    python scripts/train_click_models.py evaluate [--png DIR]               # shipped weights, CPU

Training ran on one NVIDIA H100 (see the specs' notes); it also runs on a CPU, slowly.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "napari_cxseg"
ISO_MM = 1.5

#: 2D targets: name -> TotalSegmentator ids (projected path > 2 mm)
XR_OBJECTS: dict[str, tuple[int, ...]] = {
    "right lung": (12, 13, 14), "left lung": (10, 11), "heart": (51,), "aorta": (52,),
    "liver": (5,), "spleen": (1,), "stomach": (6,), "trachea": (16,),
    "left clavicle": (73,), "right clavicle": (74,), "left scapula": (71,), "right scapula": (72,),
    "left humerus": (69,), "right humerus": (70,),
    **{f"left rib {i}": (91 + i,) for i in range(1, 13)},
    **{f"right rib {i}": (103 + i,) for i in range(1, 13)},
    **{f"vertebra T{i}": (44 - i,) for i in range(1, 13)},
    "vertebra L1": (31,), "vertebra L2": (30,),
}
#: how often each 2D target is drawn: the chest's big structures as often as all ribs together
XR_WEIGHTS = np.array([8.0 if n.endswith("lung") else 4.0 if n in ("heart", "aorta", "liver", "trachea") else
                       2.0 if " rib " not in n and not n.startswith("vertebra") else 0.5 for n in XR_OBJECTS])
XR_WEIGHTS = XR_WEIGHTS / XR_WEIGHTS.sum()
#: 3D: every TotalSegmentator structure present, plus these merged ones
CT_MERGED: dict[str, tuple[int, ...]] = {"right lung": (12, 13, 14), "left lung": (10, 11)}


# ---------------------------------------------------------------------------- data
def prepare(out: Path) -> None:
    """Patient A's CT (HU, int16) and labels on a 1.5 mm isotropic held grid -> ``a.npz``."""
    from napari_cxseg import public_data
    from napari_cxseg.training.datasets import nifti_image, resample

    ct = nifti_image(public_data.ct_nifti())
    lab = nifti_image(public_data.ct_mask_nifti())
    from napari_cxseg.images import LabelMap

    labels = LabelMap(np.asarray(lab.array).astype(np.uint8), lab.geometry, {})
    ct_i = resample(ct, (ISO_MM,) * 3, cval=-1024.0)
    lab_i = resample(labels, (ISO_MM,) * 3)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out / "a.npz",
        ct=np.clip(np.rint(ct_i.array), -1024, 3071).astype(np.int16),
        labels=np.asarray(lab_i.array, np.uint8),
        spacing=np.asarray(ct_i.geometry.spacing, np.float32),
        affine=np.asarray(ct_i.geometry.affine, np.float64),
    )
    print(f"wrote {out / 'a.npz'} ({(out / 'a.npz').stat().st_size / 1e6:.1f} MB), shape {ct_i.array.shape}")


# ---------------------------------------------------------------------------- click simulation
def erode(m, times: int = 1):
    """Binary erosion of ``(B, 1, *sp)`` float masks with a 3^n cube (max-pool of the inverse)."""
    import torch.nn.functional as F

    pool = F.max_pool3d if m.ndim == 5 else F.max_pool2d
    for _ in range(times):
        m = 1.0 - pool(1.0 - m, 3, 1, 1)
    return m


def dilate(m, times: int = 1):
    import torch.nn.functional as F

    pool = F.max_pool3d if m.ndim == 5 else F.max_pool2d
    for _ in range(times):
        m = pool(m, 3, 1, 1)
    return m


def deep_point(region, rng: np.random.Generator, max_depth: int = 8):
    """A voxel of ``region`` (``(1, 1, *sp)``) chosen deep inside it (users click interiors)."""
    import torch

    levels = [region]
    cur = region
    for _ in range(max_depth):
        cur = erode(cur)
        if cur.sum() < 1:
            break
        levels.append(cur)
    lvl = levels[int(rng.integers(len(levels) // 2, len(levels)))]
    idx = torch.nonzero(lvl[0, 0] > 0.5)
    if len(idx) == 0:
        return None
    return idx[int(rng.integers(len(idx)))].float()


class ClickState:
    """Prompts of one training sample in working-grid coordinates."""

    def __init__(self, nd: int):
        self.pos: list = []
        self.neg: list = []
        self.box: tuple | None = None
        self.prev = None


def inputs_from_state(img, states: list[ClickState], patch, sigma, coords):
    """Stack the five network channels for a batch."""
    import torch

    from napari_cxseg.models.guided import box_map, click_maps

    batch = []
    for i, st in enumerate(states):
        z = torch.zeros(patch, device=img.device)
        pos = click_maps(torch.stack(st.pos), patch, sigma, coords) if st.pos else z
        neg = click_maps(torch.stack(st.neg), patch, sigma, coords) if st.neg else z
        box = box_map(st.box[0], st.box[1], patch, coords) if st.box is not None else z
        prev = st.prev if st.prev is not None else z
        batch.append(torch.cat([img[i], torch.stack([pos, neg, box, prev])]))
    return torch.stack(batch)


def simulate_prompts(gt, rng: np.random.Generator, nd: int, hints: list | None = None) -> list[ClickState]:
    """First clicks, boxes, random negatives and corrupted masks to refine (no network).

    ``hints``: per sample, a first click in working coordinates (the object's deepest point, as
    simulate_clicks places it) or ``None``; used for 60 % of the plain first clicks.
    """
    import torch

    states = []
    for i in range(gt.shape[0]):
        g = gt[i : i + 1]
        st = ClickState(nd)
        r = rng.random()
        if r < 0.18:  # a box on one slice (3D: axial, i.e. held axis 0) or the image (2D)
            idx = torch.nonzero(g[0, 0] > 0.5)
            if nd == 3:
                z = int(idx[int(rng.integers(len(idx)))][0])
                idx = idx[idx[:, 0] == z]
            lo = idx.min(0).values.float()
            hi = idx.max(0).values.float()
            jit = torch.as_tensor(rng.normal(0, 2.0, (2, nd)), dtype=torch.float32, device=gt.device)
            lo, hi = lo + jit[0], hi + jit[1]
            if nd == 3:
                lo[0] = hi[0] = float(z)
            st.box = (lo, hi)
            if rng.random() < 0.4:  # a box alone: inference puts a positive click at its centre
                st.pos.append((lo + hi) / 2)
            else:
                p = deep_point(g, rng)
                if p is not None:
                    st.pos.append(p)
        elif r < 0.36:  # refine a corrupted copy of the object
            k = int(rng.integers(1, 5))
            prev = dilate(g, k) if rng.random() < 0.5 else erode(g, k)
            if rng.random() < 0.5:  # cut away a half-space
                ax = int(rng.integers(nd))
                sl = [slice(None)] * (nd + 2)
                n = g.shape[2 + ax]
                cut = int(rng.integers(n // 4, 3 * n // 4))
                sl[2 + ax] = slice(cut, None) if rng.random() < 0.5 else slice(None, cut)
                prev = prev.clone()
                prev[tuple(sl)] = 0
            st.prev = prev[0, 0]
            for _ in range(int(rng.integers(0, 3))):
                fn = (g > 0.5) & (prev < 0.5)
                fp = (g < 0.5) & (prev > 0.5)
                use_fn = fn.sum() >= fp.sum()
                p = deep_point((fn if use_fn else fp).float(), rng, 4)
                if p is None:
                    break
                (st.pos if use_fn else st.neg).append(p)
        else:
            hint = hints[i] if hints else None
            p = hint if hint is not None and rng.random() < 0.6 else deep_point(g, rng)
            if p is not None:
                st.pos.append(p)
        if rng.random() < 0.25:  # negatives on the surroundings
            ring = dilate(g, int(rng.integers(2, 10))) - g
            for _ in range(int(rng.integers(1, 3))):
                p = deep_point(ring, rng, 1)
                if p is not None:
                    st.neg.append(p)
        if not st.pos and st.box is None and st.prev is None:
            p = deep_point(g, rng, 0)
            if p is not None:
                st.pos.append(p)
        states.append(st)
    return states


def corrective_rounds(net, img, gt, states, rng, patch, sigma, coords, amp: bool,
                      max_rounds: int = 3, fraction: float = 0.5) -> None:
    """DeepEdit-style: the network predicts and a click goes deep into its largest error
    (1..``max_rounds`` rounds for a ``fraction`` of the batch)."""
    import torch

    if max_rounds < 1:
        return
    rounds = int(rng.integers(1, max_rounds + 1))
    chosen = [i for i in range(len(states)) if rng.random() < fraction]
    if not chosen:
        return
    for _ in range(rounds):
        x = inputs_from_state(img[chosen], [states[i] for i in chosen], patch, sigma, coords)
        with torch.no_grad(), torch.autocast(img.device.type, dtype=torch.bfloat16, enabled=amp):
            pred = (net(x).float() > 0).float()
        for j, i in enumerate(chosen):
            g = gt[i : i + 1]
            pr = pred[j : j + 1]
            fn = ((g > 0.5) & (pr < 0.5)).float()
            fp = ((g < 0.5) & (pr > 0.5)).float()
            use_fn = fn.sum() >= fp.sum()
            if max(float(fn.sum()), float(fp.sum())) < 4:
                continue
            p = deep_point(fn if use_fn else fp, rng, 6)
            if p is not None:
                (states[i].pos if use_fn else states[i].neg).append(p)


# ---------------------------------------------------------------------------- samplers
def random_transform(rng: np.random.Generator, nd: int, rot_deg: float, scale_sd: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    if nd == 3:
        r = Rotation.from_euler("xyz", rng.normal(0, rot_deg, 3), degrees=True).as_matrix()
    else:
        a = np.deg2rad(rng.normal(0, rot_deg))
        r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return r @ np.diag(np.exp(rng.normal(0, scale_sd, nd)))


#: first-pass working-grid sides drawn in training (mm for 3D, fraction of the image for 2D);
#: the shipped specs start larger at inference (400 mm, 0.7), chosen after training by
#: comparing first-click Dice on the evaluation cases
TRAIN_FIRST_SIDE = {3: 160.0, 2: 0.3}


def choose_side(rng: np.random.Generator, extent: float, spec, unit: float = 1.0) -> float:
    """Working-grid side: around the object's size (cut, whole or small), or a first-pass size."""
    if rng.random() < 0.5:
        side = extent * rng.uniform(0.7, 2.6)
    else:
        first = TRAIN_FIRST_SIDE[spec.spatial_dims]
        side = rng.uniform(first, 2.0 * first) * unit
    return float(np.clip(side, spec.small_side_mm * unit, spec.max_side_mm * unit))


class CTSampler:
    """3D training patches (image, object) from patient A on the GPU."""

    def __init__(self, data: Path, spec, device):
        import torch
        from scipy import ndimage as ndi

        d = np.load(data / "a.npz")
        self.spacing = d["spacing"].astype(float)
        hu = d["ct"].astype(np.float32)
        labels = d["labels"]
        # a thick-slice copy (5 mm along S, like the sample CT and many clinical series)
        thick = ndi.zoom(ndi.zoom(hu, (ISO_MM / 5.0, 1, 1), order=1), (hu.shape[0] / round(hu.shape[0] * ISO_MM / 5.0), 1, 1), order=1)
        thick = thick[: hu.shape[0]]
        if thick.shape[0] < hu.shape[0]:
            thick = np.pad(thick, ((0, hu.shape[0] - thick.shape[0]), (0, 0), (0, 0)), mode="edge")
        self.vols = [torch.from_numpy(v + 1024.0)[None].to(device) for v in (hu, thick)]
        self.labels = torch.from_numpy(labels.astype(np.int64)).to(device)
        self.shape = hu.shape
        self.spec = spec
        self.device = device
        objs: dict[str, tuple[int, ...]] = {f"ts{k}": (int(k),) for k in np.unique(labels) if k}
        objs.update(CT_MERGED)
        self.objects = []
        weights: list[float] = []
        for name, ids in objs.items():
            m = np.isin(labels, ids)
            if m.sum() < 30:
                continue
            idx = np.argwhere(m)
            lo, hi = idx.min(0), idx.max(0)
            inner = np.argwhere(ndi.binary_erosion(m, iterations=1)) if m.sum() > 200 else idx
            self.objects.append((name, ids, (hi - lo + 1) * self.spacing, (inner if len(inner) else idx)))
            weights.append(float(m.sum()) ** 0.3)
        self.p = np.asarray(weights) / np.sum(weights)
        print(f"[ct] {len(self.objects)} objects", flush=True)

    def batch(self, rng: np.random.Generator, n: int):
        import torch

        from napari_cxseg.models.guided import roi_grid, sample

        imgs, gts = [], []
        spec = self.spec
        while len(imgs) < n:
            name, ids, ext, inner = self.objects[int(rng.choice(len(self.objects), p=self.p))]
            side = choose_side(rng, float(ext.max()), spec)
            click = inner[int(rng.integers(len(inner)))] * self.spacing
            w = rng.uniform(0.3, 1.0)
            obj_c = (inner.min(0) + inner.max(0)) / 2 * self.spacing
            centre = w * click + (1 - w) * obj_c + rng.normal(0, 0.08 * side, 3)
            tf = random_transform(rng, 3, 8.0, 0.1)
            grid = roi_grid(centre, side, spec.patch, self.spacing, self.shape, tf, self.device)
            vol = self.vols[int(rng.random() < 0.3)]
            hu = sample(vol, grid)[0] - 1024.0
            m = torch.isin(self.labels, torch.tensor(ids, device=self.device)).float()[None]
            gt = (sample(m, grid)[0] > 0.5).float()
            if gt.sum() < 20:
                continue
            # scanner/protocol differences: HU offset and gain, noise, gamma on the window
            hu = hu * float(np.exp(rng.normal(0, 0.05))) + float(rng.normal(0, 25))
            if rng.random() < 0.5:
                hu = hu + torch.randn_like(hu) * float(rng.uniform(0, 30.0))
            x = torch.stack([torch.clamp((hu - a) / (b - a), 0, 1) for a, b in spec.intensity["windows"]])
            imgs.append(x)
            gts.append(gt[None])
        return torch.stack(imgs), torch.stack(gts)


def _xr_worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)


class XRDataset:
    """Augmented radiographs of one projected object (CPU workers), full image at 384^2."""

    def __init__(self, stacks: list, names: list[str], length: int, seed: int):
        self.stacks = stacks
        self.names = names
        self.length = length
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        import torch

        from napari_cxseg.drr import DRRStack, random_radiograph
        from napari_cxseg.models.guided import normalise

        rng = np.random.default_rng(self.seed + 100003 * self.epoch + int(i))
        while True:
            st = self.stacks[int(rng.integers(len(self.stacks)))]
            k = int(rng.choice(len(st.class_ids), p=XR_WEIGHTS))
            if st.paths[k].max() > 2.0:
                break
        one = DRRStack(st.base, st.bone, st.paths[k : k + 1], [1], {}, st.geometry, st.meta)
        img, lab, ps = random_radiograph(one, rng, (384, 384), pad_to_square=True, return_spacing=True)
        img = normalise(img, {"type": "percentiles", "lower": 0.5, "upper": 99.5})
        return torch.from_numpy(img), torch.from_numpy((lab[None] > 0).astype(np.float32)), float(ps)


class XRSampler:
    """2D training patches: working grids cut from augmented radiographs (GPU)."""

    def __init__(self, data: Path, spec, device, workers: int, poses: int = 48):
        import torch

        from napari_cxseg.drr import project_ct, random_projection
        from napari_cxseg.geometry import Geometry
        from napari_cxseg.hu_lungs import body_mask
        from napari_cxseg.images import Image, LabelMap

        d = np.load(data / "a.npz")
        geom = Geometry(affine=d["affine"])
        ct = Image(d["ct"].astype(np.float32), geom, "CT")
        labels = LabelMap(d["labels"], geom, {})
        classes = {i + 1: ids for i, ids in enumerate(XR_OBJECTS.values())}
        body = body_mask(ct.array, ct.geometry.spacing)
        rng = np.random.default_rng(7)
        t = time.time()
        stacks = []
        for _ in range(poses):
            proj = random_projection(rng, pixel_spacing=1.0)
            stacks.append(project_ct(ct, labels, classes, projection=proj, body=body, device=device))
        print(f"[xr] {poses} poses x {len(classes)} objects projected in {time.time() - t:.0f} s", flush=True)
        self.ds = XRDataset(stacks, list(XR_OBJECTS), 10**9, seed=11)
        self.loader = iter(torch.utils.data.DataLoader(
            self.ds, batch_size=1, num_workers=workers, worker_init_fn=_xr_worker_init,
            persistent_workers=workers > 0, prefetch_factor=8 if workers else None))
        self.spec = spec
        self.device = device

    def batch(self, rng: np.random.Generator, n: int):
        import torch

        from napari_cxseg.models.guided import roi_grid, sample

        spec = self.spec
        imgs, gts = [], []
        while len(imgs) < n:
            img, lab, ps = next(self.loader)
            img, lab = img[0].to(self.device), lab[0].to(self.device)
            sp = np.array([float(ps[0])] * 2)
            idx = np.argwhere(lab[0].cpu().numpy() > 0.5)
            if len(idx) < 10:
                continue
            ext = (idx.max(0) - idx.min(0) + 1) * sp
            side = choose_side(rng, float(ext.max()), spec, unit=float(max(img.shape[1:])) * sp[0])
            click = idx[int(rng.integers(len(idx)))] * sp
            w = rng.uniform(0.3, 1.0)
            centre = w * click + (1 - w) * (idx.min(0) + idx.max(0)) / 2 * sp + rng.normal(0, 0.08 * side, 2)
            tf = random_transform(rng, 2, 5.0, 0.08)
            grid = roi_grid(centre, side, spec.patch, sp, tuple(img.shape[1:]), tf, self.device)
            x = sample(img, grid)
            gt = (sample(lab, grid) > 0.5).float()
            if gt.sum() < 20:
                continue
            imgs.append(x)
            gts.append(gt)
        return torch.stack(imgs), torch.stack(gts)


# ---------------------------------------------------------------------------- real films (2D)
#: objects per film source: card-style class names, built by ``training.targets.build_target``
FILM_OBJECTS: dict[str, tuple[str, ...]] = {
    "jsrt_scr": ("right lung", "left lung", "heart", "right clavicle", "left clavicle"),
    "shenzhen": ("right lung", "left lung"),
}
#: how often a sample is drawn from each source, and each object within it
FILM_SOURCE_WEIGHTS = {"jsrt_scr": 0.55, "shenzhen": 0.45}
FILM_OBJECT_WEIGHTS = {"right lung": 1.3, "left lung": 1.3, "heart": 1.3, "right clavicle": 1.0, "left clavicle": 1.0}
#: block-averaged copies of each film kept for sampling (what the segmenter's _source does)
FILM_LEVELS = (1, 2, 4)


def film_cases(data: Path) -> tuple[list, list]:
    """Training and validation films: the patient-level split of the shipped CXR models."""
    from napari_cxseg.training import find_cases, split_cases

    cases = [c for c in find_cases(data) if c.source in FILM_OBJECTS]
    return split_cases(cases, val_fraction=0.2, seed=0)


def film_references(case: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """``(image, {object: bool mask on the image's held grid})`` of a film (lungs split by anatomy)."""
    from napari_cxseg.io import read
    from napari_cxseg.training.targets import build_target

    image = read(case.image)[0]
    names = FILM_OBJECTS[case.source]
    target = build_target({i + 1: n for i, n in enumerate(names)}, case, image, multi_label=True)
    return image, {n: target[i].astype(bool) for i, n in enumerate(names) if target[i].any()}


class FilmSampler:
    """2D training patches from real films with manual masks (CPU, in-process).

    Every film is normalised once with the inference function (:func:`guided.normalise`, whole
    image percentiles) and block-averaged by 2 and 4, so a working grid samples the level the
    segmenter would use for its voxel size (``GuidedSegmenter._source``). Working grids are cut
    as inference cuts them: the first pass (about 0.7 of the film's longest side, centred on the
    deepest point of the object, where simulate_clicks and most users click first), the
    enlarged pass (1.0-1.2 x the film, after a lung touched the first grid), the zoomed-in pass
    around small objects (1.5-2.3 x their extent), and random sizes and centres (objects cut
    by the grid, grids after later clicks); rotated, scaled and sheared. Intensity
    augmentation runs on the patch: window re-normalisation, gamma, monotone curves, blur,
    sharpening, noise, CLAHE and burned-in markers (``training.augment``). No left-right flip:
    the network is class-agnostic, but the heart, aortic knob and gastric bubble tell it where
    the SCR lung field stops behind the heart and above the left dome, and real films are never
    mirrored (a film stored mirrored is reported by the reader's orientation check).
    """

    def __init__(self, cases: list, spec, device):
        import torch
        import torch.nn.functional as F
        from scipy import ndimage as ndi

        from napari_cxseg.models.guided import normalise

        self.spec = spec
        self.device = device
        self.films: list[dict[str, Any]] = []
        t = time.time()
        for case in cases:
            image, refs = film_references(case)
            norm = torch.from_numpy(normalise(np.asarray(image.array, np.float32), spec.intensity))
            levels = {1: norm.half()}
            for f in FILM_LEVELS[1:]:
                levels[f] = F.avg_pool2d(norm[None], f, f, ceil_mode=True)[0].half()
            objs = {}
            for name, m in refs.items():
                if m.sum() < 50:
                    continue
                idx = np.argwhere(m)
                lo, hi = idx.min(0), idx.max(0)
                d = ndi.distance_transform_edt(np.pad(m[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1], 1))  # bbox: faster
                objs[name] = {"mask": torch.from_numpy(m), "lo": lo, "hi": hi,
                              "deep": np.array(np.unravel_index(int(np.argmax(d)), d.shape), float) - 1 + lo,
                              "inner": idx[:: max(1, len(idx) // 4000)]}
            self.films.append({"key": case.key, "source": case.source, "levels": levels, "objects": objs,
                               "shape": tuple(norm.shape[1:])})
        self.by_source = {s: [i for i, f in enumerate(self.films) if f["source"] == s] for s in FILM_OBJECTS}
        self.by_source = {s: v for s, v in self.by_source.items() if v}
        w = np.array([FILM_SOURCE_WEIGHTS[s] for s in self.by_source])
        self.p_source = w / w.sum()
        from napari_cxseg.training.augment import RandBurnInd, RandCLAHEd

        self.burn = RandBurnInd(keys=["image"], prob=1.0)
        self.clahe = RandCLAHEd(keys=["image"], prob=1.0)
        n_obj = sum(len(f["objects"]) for f in self.films)
        print(f"[films] {len(self.films)} films ({', '.join(f'{s} {len(v)}' for s, v in self.by_source.items())}), "
              f"{n_obj} objects, loaded in {time.time() - t:.0f} s", flush=True)

    def _pick(self, rng: np.random.Generator) -> tuple[dict[str, Any], str]:
        src = list(self.by_source)[int(rng.choice(len(self.by_source), p=self.p_source))]
        film = self.films[self.by_source[src][int(rng.integers(len(self.by_source[src])))]]
        names = list(film["objects"])
        w = np.array([FILM_OBJECT_WEIGHTS[n] for n in names])
        return film, names[int(rng.choice(len(names), p=w / w.sum()))]

    def _intensity(self, x, rng: np.random.Generator):
        """Patch-level intensity augmentation (x: ``(1, P, P)`` in [0, 1])."""
        import torch
        import torch.nn.functional as F

        if rng.random() < 0.5:  # another film's percentiles (borders, boxes, collimation)
            lo, hi = rng.uniform(-0.08, 0.08), rng.uniform(0.88, 1.1)
            x = (x - lo) / (hi - lo)
        x = x.clamp(0, 1)
        if rng.random() < 0.5:
            x = x ** float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
        if rng.random() < 0.2:  # a random monotone tone curve
            knots = np.sort(rng.uniform(0, 1, int(rng.integers(3, 7))))
            xs = torch.as_tensor(np.concatenate([[0.0], np.linspace(0, 1, len(knots) + 2)[1:-1], [1.0]]),
                                 dtype=x.dtype)
            ys = torch.as_tensor(np.concatenate([[0.0], knots, [1.0]]), dtype=x.dtype)
            i = torch.clamp(torch.bucketize(x, xs[1:-1]), 0, len(xs) - 2)
            t = (x - xs[i]) / (xs[i + 1] - xs[i])
            x = ys[i] + t * (ys[i + 1] - ys[i])
        if rng.random() < 0.05:
            x = torch.as_tensor(self.clahe({"image": x})["image"], dtype=torch.float32)
        r = rng.random()
        if r < 0.15 or r > 0.9:  # blur, or unsharp masking
            s = float(rng.uniform(0.4, 1.5))
            k = torch.arange(-3, 4, dtype=x.dtype)
            g = torch.exp(-k**2 / (2 * s**2))
            g = g / g.sum()
            b = F.conv2d(F.pad(x[None], (3, 3, 3, 3), mode="replicate"), (g[:, None] * g[None, :])[None, None])[0]
            x = b if r < 0.15 else x + float(rng.uniform(0.3, 1.0)) * (x - b)
        if rng.random() < 0.3:
            x = x + torch.randn_like(x) * float(rng.uniform(0.0, 0.03))
        if rng.random() < 0.15:
            x = self.burn({"image": x.clamp(0, 1)})["image"]
        return x.clamp(0, 1)

    def batch(self, rng: np.random.Generator, n: int):
        """``(images (n, 1, P, P), targets (n, 1, P, P), first clicks: working coords or None)``."""
        import torch

        from napari_cxseg.models.guided import roi_grid, sample

        spec = self.spec
        patch = np.asarray(spec.patch, float)
        imgs, gts, hints = [], [], []
        while len(imgs) < n:
            film, name = self._pick(rng)
            obj = film["objects"][name]
            shape = film["shape"]
            unit = float(max(shape))  # relative working-grid sides (pixel size unknown)
            ext = float((obj["hi"] - obj["lo"] + 1).max())
            r = rng.random()
            if r < 0.3:  # the first pass: 0.7 x the film, centred on the first click
                side = max(unit * rng.uniform(0.64, 0.78), 1.0 * ext)
                centre = obj["deep"] + rng.normal(0, 0.03 * side, 2)
            elif r < 0.45:  # the enlarged pass (1.7 x, at most 1.2 x the film) when the object touched the first
                side = unit * rng.uniform(1.0, 1.2)
                centre = (obj["lo"] + obj["hi"]) / 2 + rng.normal(0, 0.05 * side, 2)
            elif r < 0.65:  # the zoomed-in pass around small objects
                side = ext * rng.uniform(1.5, 2.3)
                centre = (obj["lo"] + obj["hi"]) / 2 + rng.normal(0, 0.05 * side, 2)
            else:  # anything between: cut objects, grids after later clicks
                side = ext * rng.uniform(0.7, 2.6) if rng.random() < 0.5 else unit * rng.uniform(0.3, 1.2)
                click = obj["inner"][int(rng.integers(len(obj["inner"])))].astype(float)
                w = rng.uniform(0.3, 1.0)
                centre = w * click + (1 - w) * (obj["lo"] + obj["hi"]) / 2 + rng.normal(0, 0.08 * side, 2)
            side = float(np.clip(side, spec.small_side_mm * unit, spec.max_side_mm * unit))
            tf = random_transform(rng, 2, 6.0, 0.08)
            tf = tf @ np.array([[1.0, rng.normal(0, 0.04)], [rng.normal(0, 0.04), 1.0]])
            vox = side / patch.max()
            f = int(2 ** max(0, np.floor(np.log2(max(vox, 1.0)))))
            f = max(v for v in FILM_LEVELS if v <= f)
            src = film["levels"][f].float().to(self.device)
            off = (f - 1) / 2.0
            grid = roi_grid(centre - off, side, spec.patch, np.array([f, f], float), tuple(src.shape[1:]), tf,
                            self.device)
            x = sample(src, grid)
            gt_grid = roi_grid(centre, side, spec.patch, np.ones(2), shape, tf, self.device)
            gt = (sample(obj["mask"].float()[None].to(self.device), gt_grid) > 0.5).float()
            if gt.sum() < 20:
                continue
            w_deep = (patch - 1) / 2 + np.linalg.solve(tf, (obj["deep"] - centre) / vox)
            wi = np.rint(w_deep).astype(int)
            ok = bool(np.all(wi >= 0) and np.all(wi < patch) and gt[0, wi[0], wi[1]] > 0.5)
            hints.append(torch.as_tensor(w_deep, dtype=torch.float32, device=self.device) if ok else None)
            imgs.append(self._intensity(x.cpu(), rng).to(self.device))
            gts.append(gt)
        return torch.stack(imgs), torch.stack(gts), hints


# ---------------------------------------------------------------------------- training
def train(args: argparse.Namespace) -> None:
    import torch
    from monai.losses import DiceCELoss

    from napari_cxseg.models.guided import build_network, load_spec, working_coordinates

    if args.threads:
        torch.set_num_threads(args.threads)  # one thread is fastest on a shared, busy CPU
    torch.manual_seed(0)
    rng = np.random.default_rng(args.dims + 10 * bool(args.films))
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = device.type == "cuda"
    if amp:
        torch.backends.cudnn.benchmark = True
    spec = load_spec("ct-clicks" if args.dims == 3 else "cxr-clicks")
    if args.patch:
        spec.patch = (args.patch,) * args.dims
    films: dict[str, list[str]] = {}
    if args.films:
        if args.dims != 2:
            raise SystemExit("--films: real radiographs train the 2D network (--dims 2)")
        train_cases, val_cases = film_cases(Path(args.films))
        films = {"train": [c.key for c in train_cases], "validation": [c.key for c in val_cases]}
        sampler: Any = FilmSampler(train_cases, spec, device)
    elif args.dims == 3:
        sampler = CTSampler(Path(args.data), spec, device)
    else:
        sampler = XRSampler(Path(args.data), spec, device, args.workers, args.poses)
    net = build_network(spec)
    if args.init:  # continue from earlier weights
        init = spec.weights_path if args.init == "package" else Path(args.init)
        net.load_state_dict({k: v.float() for k, v in torch.load(init, map_location="cpu", weights_only=True).items()})
        print(f"[{spec.name}] continuing from {args.init}", flush=True)
    net = net.to(device)
    print(f"[{spec.name}] {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters on {device}", flush=True)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    loss_fn = DiceCELoss(sigmoid=True, squared_pred=True)
    coords = working_coordinates(spec.patch, device)
    budget = args.minutes * 60.0
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    step = 0
    hist: list[float] = []
    next_ckpt = args.ckpt_minutes * 60.0 if args.ckpt_minutes else float("inf")

    def save(path: Path) -> None:
        torch.save({k: v.detach().cpu().half() for k, v in net.state_dict().items()}, path)
        (out_dir / f"{spec.name}_train.json").write_text(json.dumps({
            "steps": step, "batch": args.batch, "seconds": round(time.time() - t0, 1), "device": str(device),
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "threads": torch.get_num_threads(), "init": args.init or None,
            "final_loss": float(np.mean(hist[-100:])) if hist else None, "lr": args.lr,
            "rounds": args.rounds, "corrective": args.corrective, "patch": list(spec.patch),
            "films": films or None, "loss_per_50": [float(np.mean(hist[i:i + 50])) for i in range(0, len(hist), 50)],
        }, indent=1))

    while True:
        el = time.time() - t0
        if el > budget or (args.steps and step >= args.steps):
            break
        frac = el / budget
        lr = args.lr * (min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        img, gt, *rest = sampler.batch(rng, args.batch)
        states = simulate_prompts(gt, rng, args.dims, rest[0] if rest else None)
        net.eval()
        corrective_rounds(net, img, gt, states, rng, spec.patch, spec.guidance_sigma, coords, amp,
                          args.rounds, args.corrective)
        net.train()
        x = inputs_from_state(img, states, spec.patch, spec.guidance_sigma, coords)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = net(x)
        loss = loss_fn(out.float(), gt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist.append(float(loss.detach()))
        step += 1
        if step % 50 == 0:
            print(f"[{spec.name}] step {step} loss {np.mean(hist[-50:]):.4f} lr {lr:.2e} ({time.time() - t0:.0f} s)", flush=True)
        if time.time() - t0 > next_ckpt:
            (out_dir / "checkpoints").mkdir(exist_ok=True)
            save(out_dir / "checkpoints" / f"step{step:06d}.pt")
            print(f"[{spec.name}] checkpoint step {step}", flush=True)
            next_ckpt += args.ckpt_minutes * 60.0
    save(out_dir / spec.weights)
    print(f"[{spec.name}] saved {out_dir / spec.weights} after {step} steps, {time.time() - t0:.0f} s", flush=True)


# ---------------------------------------------------------------------------- evaluation
def eval_cases() -> dict[str, tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """``{case: (image, spacing, {object: reference mask})}``: the bundled samples + held-out lungs.

    * ``sample_cxr``: the bundled sample radiograph (patient A, the TRAINING patient, in a pose
      not drawn in training) with its projected TotalSegmentator lungs.
    * ``sample_ct``: the bundled sample CT (patient A at 2 x 2 x 5 mm) with its organs.
    * ``B_cxr``/``C_cxr``, ``B_ct``/``C_ct``: patients never used for training (LCTSC-Test-S1-101,
      Lung_Dx-A0001) as rendered radiographs and CTs at 3 mm, with HU-threshold lungs.
    """
    from napari_cxseg import public_data
    from napari_cxseg.hu_lungs import lung_label_map
    from napari_cxseg.io import read
    from napari_cxseg.sample_data_files import sample_paths
    from napari_cxseg.training.datasets import ct_radiograph, resample

    cases: dict[str, tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = {}
    img_p, lab_p = sample_paths("chest_xray")
    xr, xl = read(img_p)[0], read(lab_p)[0]
    cases["sample_cxr"] = (np.asarray(xr.array, np.float32), np.asarray(xr.geometry.spacing),
                           {"right lung": np.asarray(xl.array) == 1, "left lung": np.asarray(xl.array) == 2})
    img_p, lab_p = sample_paths("chest_ct")
    ct, cl = read(img_p)[0], read(lab_p)[0]
    names = {c.name: k for k, c in cl.classes.items()}
    cases["sample_ct"] = (np.asarray(ct.array, np.float32), np.asarray(ct.geometry.spacing),
                          {n: np.asarray(cl.array) == names[n] for n in
                           ("liver", "spleen", "right kidney", "left kidney", "heart", "aorta", "right lung", "left lung")})
    for case, letter in (("LCTSC-Test-S1-101", "B"), ("Lung_Dx-A0001", "C")):
        if not public_data.heldout_available(case):
            public_data.fetch_heldout()
        img = read(public_data.heldout_ct(case))[0]
        img.array = np.asarray(img.array, np.float32)
        rad, lungs = ct_radiograph(img)
        cases[f"{letter}_cxr"] = (np.asarray(rad.array, np.float32), np.asarray(rad.geometry.spacing),
                                  {"right lung": lungs.array == 1, "left lung": lungs.array == 2})
        small = resample(img, (3.0, 3.0, 3.0), cval=-1024.0)
        lab = lung_label_map(small)
        cases[f"{letter}_ct"] = (np.asarray(small.array, np.float32), np.asarray(small.geometry.spacing),
                                 {"right lung": lab.array == 1, "left lung": lab.array == 2})
    return cases


def save_cases(cases: dict, path: Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    for case, (img, sp, refs) in cases.items():
        arrays[f"{case}|image"] = img
        arrays[f"{case}|spacing"] = sp
        for name, m in refs.items():
            arrays[f"{case}|ref|{name}"] = np.asarray(m, bool)
    np.savez_compressed(path, **arrays)


def load_cases(path: Path) -> dict:
    d = np.load(path)
    cases: dict[str, Any] = {}
    for key in d.files:
        case, kind, *rest = key.split("|")
        img, sp, refs = cases.get(case, (None, None, {}))
        if kind == "image":
            img = d[key]
        elif kind == "spacing":
            sp = d[key]
        else:
            refs[rest[0]] = d[key]
        cases[case] = (img, sp, refs)
    return cases


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Simulated clicks on every case/object with the network and the classical backend."""
    import torch

    from napari_cxseg.editing.interactive import simulate_clicks

    torch.set_num_threads(args.threads)
    cases = load_cases(Path(args.cases)) if args.cases else eval_cases()
    res: dict[str, Any] = {}
    for case, (img, sp, refs) in cases.items():
        for name, ref in refs.items():
            for backend in args.backends:
                opts = {"device": args.device} if backend == "network" else {}
                if backend == "network":  # load the weights outside the timing
                    from napari_cxseg.models.guided import DEFAULT_NETS, get_segmenter

                    get_segmenter(DEFAULT_NETS[img.ndim], args.device)
                r = simulate_clicks(img, ref, sp, args.clicks, backend, **opts)
                res[f"{case} | {name} | {backend}"] = r
                print(f"{case:10s} {name:13s} {backend:9s} " + "  ".join(f"{d:.3f}/{t:.2f}s" for d, t in r), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


# ---------------------------------------------------------------------------- evaluation on real films
def _film_net(weights: str, out: Path, min_side: float = 0.0) -> str | None:
    """The spec to evaluate: the shipped one (``None``), or a copy with other weights or first side."""
    if not weights and not min_side:
        return None
    import yaml

    from napari_cxseg.models.guided import CLICK_SPECS_DIR

    d = yaml.safe_load((CLICK_SPECS_DIR / "cxr-clicks.yaml").read_text())
    d["weights"] = str(Path(weights).resolve()) if weights else str((PKG / "weights" / d["weights"]).resolve())
    if min_side:
        d["roi"]["min_side"] = float(min_side)
    out.mkdir(parents=True, exist_ok=True)
    p = out / f"cxr-clicks_{Path(weights).stem if weights else 'shipped'}_{min_side or 'spec'}.yaml"
    p.write_text(yaml.safe_dump(d))
    return str(p)


def _click_run(img, ref, sp, n_clicks, backend, opts):
    """simulate_clicks' protocol, keeping the masks and clicks (for overlays)."""
    from napari_cxseg.editing.interactive import iter_simulated_clicks

    return [(c["point"], c["positive"], c["mask"])
            for c in iter_simulated_clicks(img, ref, sp, n_clicks, backend, **dict(opts))]


def _film_overlay(img, ref, runs, path: Path, title: str) -> None:
    """Grey film, reference outline (green), the network's mask after click 1 (left) and the last (right)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw
    from scipy import ndimage as ndi

    g = np.asarray(img, np.float32)
    lo, hi = np.percentile(g, [0.5, 99.5])
    g = (np.clip((g - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    panels = []
    for k in (0, len(runs) - 1):
        rgb = np.stack([g] * 3, -1).astype(float)
        m = runs[k][2]
        rgb[m] = 0.55 * rgb[m] + 0.45 * np.array([255.0, 60, 60])
        edge = ref & ~ndi.binary_erosion(ref, iterations=2)
        rgb[edge] = [0, 255, 0]
        im = PILImage.fromarray(rgb.astype(np.uint8))
        d = ImageDraw.Draw(im)
        r = max(4, g.shape[0] // 120)
        for pt, pos, _ in runs[: k + 1]:
            y, x = pt
            d.ellipse([x - r, y - r, x + r, y + r], fill=(0, 160, 255) if pos else (255, 0, 255))
        dice = 2 * (m & ref).sum() / (m.sum() + ref.sum())
        d.text((6, 6), f"{title}  click {k + 1}: Dice {dice:.3f}", fill=(255, 255, 0))
        panels.append(np.asarray(im))
    path.parent.mkdir(parents=True, exist_ok=True)
    out = PILImage.fromarray(np.concatenate(panels, 1))
    if out.width > 1400:
        out = out.resize((1400, int(out.height * 1400 / out.width)))
    out.save(path)


def evaluate_films(args: argparse.Namespace) -> dict[str, Any]:
    """simulate_clicks on the validation films (network and intensity method), per source and object."""
    import statistics

    import torch

    from napari_cxseg.editing.interactive import simulate_clicks
    from napari_cxseg.models.guided import get_segmenter

    default_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    train_films, val = film_cases(Path(args.films))
    if args.split == "train":  # for choosing inference settings without looking at validation films
        val = train_films
    if args.max_per_source:
        val = [c for s in FILM_OBJECTS for c in [v for v in val if v.source == s][: args.max_per_source]]
    net = _film_net(args.weights, Path(args.out), args.min_side)
    opts = {"device": "cpu", **({"net": net} if net else {})}
    get_segmenter(net or "cxr-clicks", "cpu")  # weights loaded outside the timing
    rows: list[dict[str, Any]] = []
    png = Path(args.png) if args.png else None
    t0 = time.time()
    for i, case in enumerate(val):
        image, refs = film_references(case)
        img = np.asarray(image.array, np.float32)
        sp = np.asarray(image.geometry.spacing, float)
        first = True
        for name, ref in refs.items():
            for backend in args.backends:
                o = opts if backend == "network" else {}
                r = simulate_clicks(img, ref, sp, args.clicks, backend, **o)
                d = [x[0] for x in r] + [r[-1][0]] * (args.clicks - len(r))
                rows.append({"case": case.key, "source": case.source, "object": name, "backend": backend,
                             "dice": d, "seconds": [x[1] for x in r], "first_on_film": first and backend == "network"})
                if backend == "network":
                    first = False
            if png is not None and args.png_films and i % max(1, len(val) // args.png_films) == 0 and name in (
                    "right lung", "left lung", "heart", "left clavicle"):
                runs = _click_run(img, ref, sp, args.clicks, "network", opts)
                _film_overlay(img, ref, runs, png / f"{case.source}_{case.case_id}_{name.replace(' ', '_')}.png",
                              f"{case.key} {name}")
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{len(val)} films ({time.time() - t0:.0f} s)", flush=True)
    summary: dict[str, Any] = {"weights": args.weights or "shipped", "split": args.split,
                               "min_side": args.min_side or None, "films": {}, "dice": {}, "n": {}}
    for s in FILM_OBJECTS:
        summary["films"][s] = sorted({r["case"] for r in rows if r["source"] == s})
    print(f"Dice after clicks 1..{args.clicks} on the {args.split} films (weights: {summary['weights']}"
          + (f", first working grid {args.min_side}" if args.min_side else "") + ")")
    for s in FILM_OBJECTS:
        for name in FILM_OBJECTS[s] + ("lungs",):
            for backend in args.backends:
                sel = [r for r in rows if r["source"] == s and r["backend"] == backend and
                       (r["object"] == name or (name == "lungs" and r["object"].endswith("lung")))]
                if not sel:
                    continue
                mean = [round(float(np.mean([r["dice"][k] for r in sel])), 3) for k in range(args.clicks)]
                key = f"{s} | {name} | {backend}"
                summary["dice"][key] = mean
                summary["n"][key] = len(sel)
                print(f"  {s:9s} {name:14s} {backend:9s} n={len(sel):3d}  " + "  ".join(f"{v:.3f}" for v in mean),
                      flush=True)
    net_rows = [r for r in rows if r["backend"] == "network"]
    if net_rows:
        all_s = [t for r in net_rows for t in r["seconds"]]
        warm = [t for r in net_rows for j, t in enumerate(r["seconds"]) if j or not r["first_on_film"]]
        summary["seconds_per_click"] = {
            "threads": args.threads, "default_threads": default_threads,
            "median": round(statistics.median(all_s), 4), "median_warm": round(statistics.median(warm), 4),
            "p90_warm": round(float(np.percentile(warm, 90)), 4),
            "median_first_on_film": round(statistics.median(
                [r["seconds"][0] for r in net_rows if r["first_on_film"]]), 4),
        }
        print(f"  network s/click ({args.threads} threads): {summary['seconds_per_click']}", flush=True)
    for backend in args.backends:
        if backend != "network":
            t = [x for r in rows if r["backend"] == backend for x in r["seconds"]]
            summary[f"seconds_per_click_{backend}"] = round(statistics.median(t), 4)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return summary


def time_clicks(args: argparse.Namespace) -> None:
    """Warm network seconds per click on a few validation films at several torch thread counts."""
    import statistics

    import torch

    from napari_cxseg.editing.interactive import simulate_clicks
    from napari_cxseg.models.guided import get_segmenter

    default_threads = torch.get_num_threads()
    _, val = film_cases(Path(args.films))
    val = [c for s in FILM_OBJECTS for c in [v for v in val if v.source == s][: args.n_films]]
    net = _film_net(args.weights, Path(args.out))
    opts = {"device": "cpu", **({"net": net} if net else {})}
    films = [film_references(c) for c in val]
    get_segmenter(net or "cxr-clicks", "cpu")
    for threads in [default_threads] + [t for t in args.thread_counts if t != default_threads]:
        torch.set_num_threads(threads)
        per: dict[str, list[float]] = {}
        for image, refs in films:
            img = np.asarray(image.array, np.float32)
            simulate_clicks(img, next(iter(refs.values())), image.geometry.spacing, 1, "network", **opts)  # warm
            for name, ref in refs.items():
                r = simulate_clicks(img, ref, image.geometry.spacing, 3, "network", **opts)
                per.setdefault(name, []).extend(t for _, t in r)
        allt = [t for v in per.values() for t in v]
        tag = " (torch default)" if threads == default_threads else ""
        print(f"threads {threads}{tag}: median {1000 * statistics.median(allt):.0f} ms/click over {len(allt)} clicks; "
              + ", ".join(f"{k} {1000 * statistics.median(v):.0f}" for k, v in per.items()), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", default=".clickdata")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation cases (eval.npz)")
    t = sub.add_parser("train")
    t.add_argument("--dims", type=int, choices=(2, 3), required=True)
    t.add_argument("--data", default=".clickdata")
    t.add_argument("--out", default=str(PKG / "weights"))
    t.add_argument("--minutes", type=float, default=6.0)
    t.add_argument("--steps", type=int, default=0)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--workers", type=int, default=8)
    t.add_argument("--poses", type=int, default=48)
    t.add_argument("--patch", type=int, default=0, help="override the working-grid size (smoke tests)")
    t.add_argument("--device", default="auto")
    t.add_argument("--init", default="", help="weights to continue from ('package': the shipped weights)")
    t.add_argument("--films", default="", help="real films with masks (layout of data/cxr): train --dims 2 on them")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--rounds", type=int, default=3, help="corrective rounds at most (0: none)")
    t.add_argument("--corrective", type=float, default=0.5, help="fraction of a batch given corrective rounds")
    t.add_argument("--ckpt-minutes", type=float, default=0.0, help="save a checkpoint this often")
    e = sub.add_parser("evaluate")
    e.add_argument("--clicks", type=int, default=3)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--cases", default="", help="eval.npz from `prepare` (default: build the cases here)")
    e.add_argument("--backends", nargs="*", default=["network", "classical"])
    e.add_argument("--device", default="auto")
    e.add_argument("--json", default="")
    f = sub.add_parser("evaluate-films", help="simulate_clicks on the validation films of the patient-level split")
    f.add_argument("--films", required=True, help="real films with masks (layout of data/cxr)")
    f.add_argument("--weights", default="", help="cxr-clicks weights to measure (default: the shipped ones)")
    f.add_argument("--out", default="runs/cxr-clicks", help="where a spec for --weights is written")
    f.add_argument("--clicks", type=int, default=3)
    f.add_argument("--threads", type=int, default=2)
    f.add_argument("--max-per-source", type=int, default=0, help="first N validation films per source (0: all)")
    f.add_argument("--backends", nargs="*", default=["network", "classical"])
    f.add_argument("--png", default="", help="folder for overlays of the network's clicks")
    f.add_argument("--png-films", type=int, default=4, help="films with overlays")
    f.add_argument("--json", default="")
    f.add_argument("--split", choices=("validation", "train"), default="validation")
    f.add_argument("--min-side", type=float, default=0.0, help="override roi.min_side (fraction of the film)")
    tm = sub.add_parser("time-films", help="warm network ms per click at several torch thread counts")
    tm.add_argument("--films", required=True)
    tm.add_argument("--weights", default="")
    tm.add_argument("--out", default="runs/cxr-clicks")
    tm.add_argument("--n-films", type=int, default=4, help="validation films per source")
    tm.add_argument("--thread-counts", type=int, nargs="*", default=[2])
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(Path(a.out))
        if not a.no_eval:
            save_cases(eval_cases(), Path(a.out) / "eval.npz")
    elif a.cmd == "train":
        train(a)
    elif a.cmd == "evaluate-films":
        evaluate_films(a)
    elif a.cmd == "time-films":
        time_clicks(a)
    else:
        evaluate(a)


if __name__ == "__main__":
    main()
