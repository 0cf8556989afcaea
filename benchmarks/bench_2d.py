"""2D: one radiograph through ``cxr-lungs``, warm, and a folder of radiographs through ``predict``.

Latency: :class:`~napari_cxseg.inference.Predictor` with the ``cxr-lungs`` card on the bundled
sample radiograph resized to 2048 x 2500 and 512 x 512 (after one untimed warm-up call), against
a plain eager PyTorch/MONAI loop with the same weights: MONAI array transforms for the card's
intensity, longest-side resize and pad, the network, softmax, crop and bilinear resize back,
argmax, largest component. The labels of both are compared (mean Dice).

Throughput: ``napari-cxseg predict`` over a folder of radiographs (made from the sample
radiograph and the Kermany films in ``tests/data`` by resizing, rotating and changing contrast)
against a naive per-file loop (read, ``Predictor.predict``, write, one after the other, in one
process), both as fresh measured processes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import Config, Row, child_main, dice_agreement, measure, python_env, time_call

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "src" / "napari_cxseg" / "sample_data" / "chest_xray.png",
           *sorted((ROOT / "tests" / "data" / "kermany_cxr").glob("*.png"))]
CARD = "cxr-lungs"


# ---------------------------------------------------------------------------- inputs
def resized_sample(folder: Path, width: int, height: int) -> Path:
    """The bundled sample radiograph resized to ``width`` x ``height`` (16-bit PNG, as DX films are)."""
    from PIL import Image as PILImage

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"cxr_{width}x{height}.png"
    if not path.exists():
        img = PILImage.open(SOURCES[0]).convert("F").resize((width, height), PILImage.BICUBIC)
        arr = np.clip(np.asarray(img) * 16.0, 0, 4095).astype(np.uint16)  # 12-bit range
        PILImage.fromarray(arr).save(path)
    return path


def radiograph_folder(folder: Path, n: int, sizes: tuple[int, int] = (800, 1200), seed: int = 0) -> Path:
    """``n`` radiographs made from the bundled films: resized, rotated a few degrees, contrast changed."""
    from PIL import Image as PILImage

    folder.mkdir(parents=True, exist_ok=True)
    have = sorted(folder.glob("*.png"))
    if len(have) == n:
        return folder
    for p in have:
        p.unlink()
    rng = np.random.default_rng(seed)
    bases = [PILImage.open(p).convert("L") for p in SOURCES]
    for i in range(n):
        base = bases[i % len(bases)]
        w = int(rng.integers(sizes[0], sizes[1] + 1))
        h = int(round(w * base.height / base.width * rng.uniform(0.95, 1.05)))
        img = base.rotate(float(rng.uniform(-5, 5)), resample=PILImage.BILINEAR).resize((w, h), PILImage.BILINEAR)
        arr = np.asarray(img, np.float32) / 255.0
        arr = np.clip(arr ** rng.uniform(0.8, 1.25) * 255.0 + rng.normal(0, 2, arr.shape), 0, 255)
        PILImage.fromarray(arr.astype(np.uint8)).save(folder / f"cxr_{i:04d}.png")
    return folder


# ---------------------------------------------------------------------------- plain reference
class PlainLoop:
    """The card's model as a plain eager PyTorch/MONAI loop would run it (no engine code)."""

    def __init__(self, card_name: str = CARD, device: str = "cpu") -> None:
        import torch

        from napari_cxseg.models.cards import find_card
        from napari_cxseg.models.networks import load_network

        self.card = find_card(card_name)
        self.device = torch.device(device)
        self.net = load_network(self.card).to(self.device).eval()

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F
        from monai.transforms import (
            KeepLargestConnectedComponent,
            Resize,
            ScaleIntensityRangePercentiles,
            SpatialPad,
        )

        card = self.card
        spec = card.input.intensity
        size = tuple(int(s) for s in card.input.size)
        x = torch.as_tensor(np.asarray(arr, np.float32))[None]
        x = ScaleIntensityRangePercentiles(spec["lower"], spec["upper"], spec["b_min"], spec["b_max"],
                                           clip=spec["clip"], channel_wise=True)(x)
        x = Resize(max(size), size_mode="longest", mode="bilinear", anti_aliasing=True)(x)
        inner = tuple(int(s) for s in x.shape[1:])
        x = SpatialPad(size, method="symmetric", mode="constant", value=float(spec["b_min"]))(x)
        with torch.no_grad():
            logits = self.net(torch.as_tensor(x)[None].to(self.device))[0].float().cpu()
        probs = torch.softmax(logits, 0)
        lo = [(s - i) // 2 for s, i in zip(size, inner, strict=True)]
        probs = probs[:, lo[0]:lo[0] + inner[0], lo[1]:lo[1] + inner[1]]
        probs = F.interpolate(probs[None], size=arr.shape, mode="bilinear", align_corners=False)[0]
        labels = torch.argmax(probs, 0, keepdim=True)
        lut = torch.zeros(probs.shape[0], dtype=torch.int64)
        for c, cid in card.channel_label_map(probs.shape[0]).items():
            lut[c] = cid
        labels = lut[labels]
        labels = KeepLargestConnectedComponent(applied_labels=sorted(card.classes), independent=True)(labels)
        return np.asarray(labels[0]).astype(np.uint8)


# ---------------------------------------------------------------------------- latency
def latency(cfg: Config) -> list[Row]:
    """Warm single-radiograph latency of the Predictor and of the plain loop, same run."""
    from napari_cxseg import io as cxio
    from napari_cxseg.inference import Predictor

    sizes = [(64, 80)] if cfg.tiny else [(2048, 2500), (512, 512)]
    predictor = Predictor(CARD, device=cfg.device).load()
    plain = PlainLoop(CARD, cfg.device)
    rows = []
    for w, h in sizes:
        image = cxio.read(resized_sample(cfg.out / "inputs", w, h))[0]
        # blocks of consecutive calls (warm: a user pressing Segment on one film after another),
        # the blocks alternated so that load drift hits both alike; the first call of each block
        # is untimed (the other side's large buffers have just been handed back to the OS)
        t_ours, t_ref = [], []
        block = 2 if cfg.tiny else 5
        for _ in range(max(1, cfg.repeats)):
            t, ours = time_call(lambda image=image: predictor.predict(image), block - 1, 1)
            t_ours += [t]
            t, ref = time_call(lambda image=image: plain(image.array), 2, 1)
            t_ref += [t]
        d = dice_agreement(np.asarray(ours.array), ref)
        ms_ours, ms_ref = 1000 * float(np.median(t_ours)), 1000 * float(np.median(t_ref))
        big = (w, h) == (2048, 2500)
        rows.append(Row("2d", f"cxr-lungs {w}x{h} warm latency", "Predictor", ms_ours,
                        "plain eager PyTorch/MONAI loop", ms_ref, "ms", d,
                        "<= 150 ms" if big else "", (ms_ours <= 150.0) if big else None))
    return rows


# ---------------------------------------------------------------------------- throughput
def naive_cmd(folder: Path, out: Path, device: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "naive", str(folder), str(out), device]


def cli_batch_cmd(folder: Path, out: Path, device: str) -> list[str]:
    exe = Path(sys.executable).with_name("napari-cxseg")
    return [str(exe), "predict", "--model", CARD, "--device", device, "--input", str(folder), "--output", str(out),
            "--overwrite"]


def throughput(cfg: Config, n: int | None = None) -> tuple[list[Row], dict[str, Any]]:
    """Images per second of ``predict`` over a folder and of the naive loop (fresh processes)."""
    import shutil

    n = n or cfg.n_radiographs
    sizes = (64, 96) if cfg.tiny else (800, 1200)
    folder = radiograph_folder(cfg.out / "inputs" / f"radiographs_{n}", n, sizes)
    env = python_env(cfg.threads)
    res: dict[str, Any] = {"n": n}
    for key, make in (("cli", cli_batch_cmd), ("naive", naive_cmd)):
        out = cfg.out / "2d" / f"batch_{key}"
        if out.exists():
            shutil.rmtree(out)
        m = measure(make(folder, out, cfg.device), env=env)
        written = len(list(out.glob("*.png")))
        if written != n:
            raise RuntimeError(f"{key}: wrote {written} of {n} label files")
        res[key] = {"seconds": m["seconds"], "peak_rss_mb": m["peak_rss_mb"], "images_per_s": n / m["seconds"]}
    agree = [dice_agreement(_png(cfg.out / "2d" / "batch_cli" / p.name), _png(p))
             for p in sorted((cfg.out / "2d" / "batch_naive").glob("*.png"))[:20]]
    d = float(np.mean(agree)) if agree else None
    ours, ref = res["cli"]["images_per_s"], res["naive"]["images_per_s"]
    rows = [Row("2d", f"batch of {n} radiographs ({sizes[0]}-{sizes[1]} px wide) throughput", "napari-cxseg predict (folder)", ours,
                "naive per-file loop (read, predict, write)", ref, "images/s", d, ">= 2x", bool(ours / ref >= 2.0),
                "ratio above 1 = faster"),
            Row("2d", f"batch of {n} radiographs peak RSS", "napari-cxseg predict (folder)", res["cli"]["peak_rss_mb"],
                "naive per-file loop", res["naive"]["peak_rss_mb"], "MB")]
    return rows, res


def _png(path: Path) -> np.ndarray:
    from PIL import Image as PILImage

    return np.asarray(PILImage.open(path))


def run(cfg: Config) -> tuple[list[Row], dict[str, Any]]:
    """The 2D part."""
    cfg.log("[2d] cxr-lungs latency (Predictor vs plain loop)")
    rows = latency(cfg)
    n = 3 if cfg.tiny else cfg.n_radiographs
    cfg.log(f"[2d] batch of {n} radiographs: predict vs naive loop")
    more, res = throughput(cfg, n)
    return rows + more, {"throughput": res}


# ---------------------------------------------------------------------------- child
def _child_naive(folder: str, out: str, device: str) -> None:
    """The naive loop: one file after the other, nothing overlapped."""
    from napari_cxseg import io as cxio
    from napari_cxseg.inference import Predictor

    predictor = Predictor(CARD, device=device)
    Path(out).mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for p in sorted(Path(folder).glob("*.png")):
        labels = predictor.predict(cxio.read(p)[0])
        cxio.write_labels(labels, Path(out) / p.name, overwrite=True)
    print(f"naive loop {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    child_main("naive", 3, _child_naive)
