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


def simulate_prompts(gt, rng: np.random.Generator, nd: int) -> list[ClickState]:
    """First clicks, boxes, random negatives and corrupted masks to refine (no network)."""
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
            p = deep_point(g, rng)
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


def corrective_rounds(net, img, gt, states, rng, patch, sigma, coords, amp: bool) -> None:
    """DeepEdit-style: the network predicts and a click goes deep into its largest error."""
    import torch

    rounds = int(rng.integers(1, 4))
    chosen = [i for i in range(len(states)) if rng.random() < 0.5]
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


# ---------------------------------------------------------------------------- training
def train(args: argparse.Namespace) -> None:
    import torch
    from monai.losses import DiceCELoss

    from napari_cxseg.models.guided import build_network, load_spec, working_coordinates

    torch.manual_seed(0)
    rng = np.random.default_rng(args.dims)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = device.type == "cuda"
    if amp:
        torch.backends.cudnn.benchmark = True
    spec = load_spec("ct-clicks" if args.dims == 3 else "cxr-clicks")
    if args.patch:
        spec.patch = (args.patch,) * args.dims
    sampler = CTSampler(Path(args.data), spec, device) if args.dims == 3 else XRSampler(
        Path(args.data), spec, device, args.workers, args.poses)
    net = build_network(spec)
    if args.init:  # continue from earlier weights
        net.load_state_dict({k: v.float() for k, v in torch.load(args.init, map_location="cpu", weights_only=True).items()})
        print(f"[{spec.name}] continuing from {args.init}", flush=True)
    net = net.to(device)
    print(f"[{spec.name}] {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters on {device}", flush=True)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    loss_fn = DiceCELoss(sigmoid=True, squared_pred=True)
    coords = working_coordinates(spec.patch, device)
    budget = args.minutes * 60.0
    t0 = time.time()
    step = 0
    hist: list[float] = []
    while True:
        el = time.time() - t0
        if el > budget or (args.steps and step >= args.steps):
            break
        frac = el / budget
        lr = args.lr * (min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        img, gt = sampler.batch(rng, args.batch)
        states = simulate_prompts(gt, rng, args.dims)
        net.eval()
        corrective_rounds(net, img, gt, states, rng, spec.patch, spec.guidance_sigma, coords, amp)
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
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().half() for k, v in net.state_dict().items()}
    torch.save(state, out_dir / spec.weights)
    (out_dir / f"{spec.name}_train.json").write_text(json.dumps({
        "steps": step, "batch": args.batch, "seconds": round(time.time() - t0, 1), "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "final_loss": float(np.mean(hist[-100:])) if hist else None, "lr": args.lr,
        "patch": list(spec.patch),
    }, indent=1))
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
    t.add_argument("--init", default="", help="weights to continue from")
    e = sub.add_parser("evaluate")
    e.add_argument("--clicks", type=int, default=3)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--cases", default="", help="eval.npz from `prepare` (default: build the cases here)")
    e.add_argument("--backends", nargs="*", default=["network", "classical"])
    e.add_argument("--device", default="auto")
    e.add_argument("--json", default="")
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(Path(a.out))
        if not a.no_eval:
            save_cases(eval_cases(), Path(a.out) / "eval.npz")
    elif a.cmd == "train":
        train(a)
    else:
        evaluate(a)


if __name__ == "__main__":
    main()
