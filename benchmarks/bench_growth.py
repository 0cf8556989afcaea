"""Growth: seconds and peak memory against volume size and against the number of radiographs.

Volumes: the real CT of the 3D part resampled (linear) to each size with the same field of view
(finer voxels, as a thinner-slice scan of the same chest), from 128^3 to 512 x 512 x 600, each
through ``napari-cxseg predict`` and ``python -m monai.bundle run`` with the same bundle (MONAI
only up to ``monai_max_voxels``: beyond it its full-resolution probabilities need more memory
than a small machine has; the JSON says where it stopped). Radiographs: ``napari-cxseg predict``
with ``cxr-lungs`` over folders of 1 to 1000 films (about 500 px). Each point is a fresh
measured process; the figure is written as PNG next to the JSON.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import bench_2d
import bench_3d
import numpy as np
from _common import Config, Row, measure, python_env

VOLUMES = [(128, 128, 128), (256, 256, 128), (512, 512, 130), (512, 512, 300), (512, 512, 600)]
VOLUMES_QUICK = [(128, 128, 128), (256, 256, 128), (512, 512, 130)]
BATCHES = [1, 10, 100, 1000]
BATCHES_QUICK = [1, 10, 40]


def resized_ct(src: Path, shape: tuple[int, int, int], folder: Path) -> Path:
    """``src`` resampled to ``shape`` (x, y, z) over the same field of view, as int16 NIfTI."""
    import nibabel as nib
    from scipy import ndimage as ndi

    path = folder / f"ct_{'x'.join(map(str, shape))}.nii.gz"
    if path.exists():
        return path
    img = nib.load(str(src))
    data = np.asarray(img.dataobj, dtype=np.float32)
    zoom = [n / o for n, o in zip(shape, data.shape, strict=True)]
    out = ndi.zoom(data, zoom, order=1, mode="nearest", grid_mode=True)
    affine = img.affine.copy()
    affine[:3, :3] = img.affine[:3, :3] / np.asarray(zoom)
    # keep the field of view: the first voxel centre moves by half the change of voxel size
    affine[:3, 3] = img.affine[:3, 3] + img.affine[:3, :3] @ (0.5 / np.asarray(zoom) - 0.5)
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.round(out).astype(np.int16), affine), str(path))
    return path


def volume_growth(cfg: Config, bundle: Path, ct: Path, monai_max_voxels: int) -> list[dict[str, Any]]:
    """One point per size: ours (CLI) and MONAI's seconds and peak RSS."""
    sizes = [(40, 40, 20)] if cfg.tiny else VOLUMES_QUICK if cfg.quick else VOLUMES
    env = python_env(cfg.threads)
    points = []
    for shape in sizes:
        path = resized_ct(ct, shape, cfg.out / "inputs" / "growth")
        work = cfg.out / "growth" / path.name.split(".")[0]
        work.mkdir(parents=True, exist_ok=True)
        cfg.log(f"[growth] volume {'x'.join(map(str, shape))}")
        p: dict[str, Any] = {"shape": list(shape), "voxels": math.prod(shape)}
        m = measure(bench_3d.cli_cmd(bundle, path, work / "ours.nii.gz", cfg.device), env=env, cwd=work)
        p["ours"] = {"seconds": m["seconds"], "peak_rss_mb": m["peak_rss_mb"]}
        if p["voxels"] <= monai_max_voxels:
            ref = work / "monai"
            if ref.exists():
                shutil.rmtree(ref)
            m = measure(bench_3d.monai_cmd(bundle, path, ref, cfg.device), env=env, cwd=work)
            p["monai"] = {"seconds": m["seconds"], "peak_rss_mb": m["peak_rss_mb"]}
        else:
            p["monai"] = None
        points.append(p)
    return points


def batch_growth(cfg: Config) -> list[dict[str, Any]]:
    """One point per batch size: ``napari-cxseg predict`` over a folder of N radiographs."""
    counts = [1, 2] if cfg.tiny else BATCHES_QUICK if cfg.quick else BATCHES
    films = bench_2d.radiograph_folder(cfg.out / "inputs" / f"growth_films_{max(counts)}", max(counts),
                                       (48, 64) if cfg.tiny else (450, 550), seed=1)
    all_files = sorted(films.glob("*.png"))
    env = python_env(cfg.threads)
    points = []
    for n in counts:
        folder = cfg.out / "inputs" / "growth_batches" / f"n{n}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for f in all_files[:n]:
            (folder / f.name).symlink_to(f)
        out = cfg.out / "growth" / f"batch_{n}"
        if out.exists():
            shutil.rmtree(out)
        cfg.log(f"[growth] batch of {n} radiographs")
        m = measure(bench_2d.cli_batch_cmd(folder, out, cfg.device), env=env)
        points.append({"n": n, "seconds": m["seconds"], "peak_rss_mb": m["peak_rss_mb"],
                       "images_per_s": n / m["seconds"]})
    return points


def plot(volumes: list[dict[str, Any]], batches: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Four panels: seconds and peak RSS against voxels (ours, MONAI) and against radiographs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    mv = [v["voxels"] / 1e6 for v in volumes]
    for key, label, style in (("ours", "napari-cxseg predict", "o-"), ("monai", "python -m monai.bundle run", "s--")):
        pts = [(x, v[key]) for x, v in zip(mv, volumes, strict=True) if v.get(key)]
        if pts:
            ax[0, 0].plot([x for x, _ in pts], [r["seconds"] for _, r in pts], style, label=label)
            ax[1, 0].plot([x for x, _ in pts], [r["peak_rss_mb"] / 1024 for _, r in pts], style, label=label)
    ax[0, 0].set(title="CT volume: time", xlabel="voxels (millions)", ylabel="seconds (process start to labels)")
    ax[1, 0].set(title="CT volume: peak memory", xlabel="voxels (millions)", ylabel="peak RSS (GB)")
    n = [b["n"] for b in batches]
    ax[0, 1].loglog(n, [b["seconds"] for b in batches], "o-", label="napari-cxseg predict (folder)")
    ax[0, 1].set(title="radiographs: time", xlabel="radiographs in the batch", ylabel="seconds")
    ax[1, 1].semilogx(n, [b["peak_rss_mb"] / 1024 for b in batches], "o-", label="napari-cxseg predict (folder)")
    ax[1, 1].set(title="radiographs: peak memory", xlabel="radiographs in the batch", ylabel="peak RSS (GB)")
    for a in ax.ravel():
        a.grid(True, alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(cfg: Config, monai_max_voxels: int = 512 * 512 * 300) -> tuple[list[Row], dict[str, Any]]:
    """The growth part: curves, the PNG, and one row per point."""
    bundle, note = bench_3d.prepare_bundle(cfg)
    ct = Path(cfg.ct) if cfg.ct else (None if cfg.tiny else bench_3d.default_ct())
    if ct is None:
        ct = bench_3d.tiny_ct(cfg.out / "inputs")
    volumes = volume_growth(cfg, bundle, ct, monai_max_voxels)
    batches = batch_growth(cfg)
    png = plot(volumes, batches, cfg.out / "growth.png", f"{bundle.name} bundle on {ct.name} resampled; cxr-lungs films")
    rows = []
    for v in volumes:
        m = v["monai"]
        shape = "x".join(map(str, v["shape"]))
        rows.append(Row("growth", f"CT {shape} seconds", "napari-cxseg predict", v["ours"]["seconds"],
                        "python -m monai.bundle run" if m else "(monai not run: memory)",
                        m["seconds"] if m else None))
        rows.append(Row("growth", f"CT {shape} peak RSS", "napari-cxseg predict", v["ours"]["peak_rss_mb"],
                        "python -m monai.bundle run" if m else "", m["peak_rss_mb"] if m else None, "MB"))
    for b in batches:
        rows.append(Row("growth", f"{b['n']} radiographs", "napari-cxseg predict (folder)", b["seconds"],
                        unit="s", note=f"{b['images_per_s']:.2f} images/s, peak RSS {b['peak_rss_mb']:.0f} MB"))
    return rows, {"volumes": volumes, "batches": batches, "plot": str(png), "bundle_note": note,
                  "monai_max_voxels": monai_max_voxels}
