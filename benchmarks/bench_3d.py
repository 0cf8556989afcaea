"""3D end to end: ``Predictor`` and ``napari-cxseg predict`` against ``python -m monai.bundle run``.

The same MONAI bundle (configs + ``models/model.pt``) and the same CT go through three fresh
processes, alternated ``repeats`` times: a small script around the engine's
:class:`~napari_cxseg.inference.Predictor` (read, predict, write), the ``napari-cxseg predict``
command and MONAI's own ``python -m monai.bundle run`` (``num_workers`` 0: one case, two cores).
Each run is measured from a stdlib parent (``_peak.py``): wall seconds from process start to
labels on disk, and peak RSS. The labels are compared with MONAI's (mean Dice over classes).

The bundle: ``--bundle DIR`` (for example the real ``spleen_ct_segmentation`` configs; a
bundle without ``models/model.pt`` is copied into the output folder with seeded-random weights
for the network its config names, and the table says so), or by default the shipped
``ct-organs-demo`` card exported as a MONAI bundle by the project's own exporter.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    Config,
    Row,
    alternate,
    child_main,
    dice_agreement,
    measure,
    median_of,
    python_env,
)

DEFAULT_CARD = "ct-organs-demo"


# ---------------------------------------------------------------------------- inputs
def prepare_bundle(cfg: Config) -> tuple[Path, str]:
    """The bundle to benchmark and a note saying where its weights came from."""
    if cfg.bundle is None:
        from napari_cxseg.models.cards import find_card
        from napari_cxseg.models.weights import resolve_weights
        from napari_cxseg.training.bundle_export import export_bundle

        card = find_card(DEFAULT_CARD)
        out = export_bundle(card, resolve_weights(card), cfg.out / "bundles" / DEFAULT_CARD)
        return out, f"{DEFAULT_CARD} card exported with napari_cxseg.training.bundle_export (shipped weights)"
    src = Path(cfg.bundle).resolve()
    if (src / "models" / "model.pt").is_file():
        return src, f"{src.name} (its own models/model.pt)"
    import torch
    from monai.bundle import ConfigParser

    dst = cfg.out / "bundles" / src.name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    parser = ConfigParser()
    parser.read_config(str(dst / "configs" / "inference.json"))
    torch.manual_seed(2)  # the seed tests/test_real_bundle_cli.py uses: labels not all one class
    net = parser.get_parsed_content("network_def")
    (dst / "models").mkdir(exist_ok=True)
    torch.save(net.state_dict(), dst / "models" / "model.pt")
    return dst, (f"{src.name} configs with SEEDED-RANDOM weights (torch.manual_seed(2), "
                 f"{type(net).__name__}): no model.pt was given; labels are not anatomy, times are real")


def default_ct() -> Path | None:
    """A real 512 x 512 x N chest CT fetched by ``scripts/fetch_public_data.py``, or None."""
    from napari_cxseg import public_data

    if public_data.heldout_available("LCTSC-Test-S1-101"):
        return public_data.heldout_ct("LCTSC-Test-S1-101")
    if public_data.available():
        return public_data.ct_nifti()
    return None


def tiny_ct(folder: Path, shape: tuple[int, int, int] = (48, 40, 24)) -> Path:
    """A small CT-like NIfTI (body, lungs, a spleen-bright blob) for smoke tests."""
    import nibabel as nib

    z, y, x = np.mgrid[0:shape[2], 0:shape[1], 0:shape[0]].astype(np.float32)
    arr = np.full(shape[::-1], -1000.0, np.float32)
    body = ((x - shape[0] / 2) / (0.45 * shape[0])) ** 2 + ((y - shape[1] / 2) / (0.4 * shape[1])) ** 2 <= 1
    arr[body] = 40.0
    lungs = body & (np.abs(x - shape[0] / 2) > 0.12 * shape[0]) & (np.abs(y - shape[1] / 2) < 0.25 * shape[1])
    arr[lungs] = -800.0
    arr[((x - 0.7 * shape[0]) ** 2 + (y - 0.6 * shape[1]) ** 2 + (z - shape[2] / 2) ** 2) < 16] = 120.0
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny_ct.nii.gz"
    affine = np.diag([4.0, 4.0, 5.0, 1.0])
    nib.save(nib.Nifti1Image(arr.transpose(2, 1, 0).astype(np.int16), affine), str(path))
    return path


# ---------------------------------------------------------------------------- the three runs
def predictor_cmd(bundle: Path, ct: Path, out: Path, device: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "predictor", str(bundle), str(ct), str(out), device]


def cli_cmd(bundle: Path, ct: Path, out: Path, device: str, precision: str = "auto",
            runtime: str = "auto") -> list[str]:
    exe = Path(sys.executable).with_name("napari-cxseg")
    return [str(exe), "predict", "--model", str(bundle), "--trust", "--device", device, "--input", str(ct),
            "--output", str(out), "--overwrite", "--precision", precision, "--runtime", runtime]


def onnx_side(device: str) -> bool:
    """Whether ONNX Runtime can run here (then a '--runtime onnx' side is measured too)."""
    from napari_cxseg.models.onnx_runtime import onnx_available

    return device.startswith("cpu") and onnx_available()


def bf16_run(device: str) -> str | None:
    """Why the bfloat16 CLI run is left out here, or None when it runs (CPU with native bf16)."""
    from napari_cxseg.device import cpu_has_fast_bf16

    if not device.startswith("cpu"):
        return f"device {device}: the default (auto) already runs the network in float16"
    if not cpu_has_fast_bf16():
        return "this CPU has neither AMX nor AVX512-BF16: bfloat16 would be slower than float32"
    return None


def monai_cmd(bundle: Path, ct: Path, out_dir: Path, device: str) -> list[str]:
    dev = "cuda:0" if device.startswith("cuda") else "cpu"
    return [sys.executable, "-m", "monai.bundle", "run",
            "--config_file", str(bundle / "configs" / "inference.json"),
            "--meta_file", str(bundle / "configs" / "metadata.json"),
            "--bundle_root", str(bundle), "--output_dir", str(out_dir),
            "--datalist", f"$[{str(ct)!r}]", "--device", f"$torch.device({dev!r})",
            "--dataloader#num_workers", "0"]


def _monai_output(out_dir: Path) -> Path:
    found = sorted(out_dir.rglob("*.nii*"))
    if not found:
        raise RuntimeError(f"monai.bundle run wrote no NIfTI under {out_dir}")
    return found[0]


def _labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.dataobj).squeeze().round().astype(np.int32), np.asarray(img.affine)


def end_to_end(cfg: Config, bundle: Path, ct: Path, tag: str = "") -> dict[str, Any]:
    """Alternated measured runs of the three; medians, the labels' agreement and geometry checks."""
    work = cfg.out / "3d" / (tag or ct.name.split(".")[0])
    work.mkdir(parents=True, exist_ok=True)
    env = python_env(cfg.threads)
    env["CXSEG_CACHE_DIR"] = str(cfg.out / "cache")  # the ONNX export lands here, not in the user's cache
    ours_p, ours_c, ref_dir = work / "predictor.nii.gz", work / "cli.nii.gz", work / "monai"
    ours_b = work / "cli_bf16.nii.gz"
    skip_bf16 = bf16_run(cfg.device)

    def run_monai() -> dict[str, Any]:
        if ref_dir.exists():
            shutil.rmtree(ref_dir)
        return measure(monai_cmd(bundle, ct, ref_dir, cfg.device), env=env, cwd=work)

    sides = {
        "predictor": lambda: measure(predictor_cmd(bundle, ct, ours_p, cfg.device), env=env, cwd=work),
        "cli": lambda: measure(cli_cmd(bundle, ct, ours_c, cfg.device), env=env, cwd=work),
        "monai": run_monai,
    }
    if onnx_side(cfg.device):
        ours_o = work / "cli_onnx.nii.gz"
        sides["cli_onnx"] = lambda: measure(cli_cmd(bundle, ct, ours_o, cfg.device, runtime="onnx"), env=env,
                                            cwd=work)
        # exported to ONNX and checked once, untimed: like the weights, once per model and machine
        measure(cli_cmd(bundle, ct, ours_o, cfg.device, runtime="onnx"), env=env, cwd=work)
    if skip_bf16 is None:
        sides["cli_bf16"] = lambda: measure(cli_cmd(bundle, ct, ours_b, cfg.device, "bfloat16"), env=env, cwd=work)
    runs = alternate(sides, cfg.repeats)
    ref, ref_aff = _labels(_monai_output(ref_dir))
    src_shape = _labels(ct)[0].shape
    res: dict[str, Any] = {"ct": str(ct), "shape": list(src_shape), "bundle": str(bundle), "runs": runs,
                           "monai_foreground_fraction": float((ref > 0).mean()), "bf16_skipped": skip_bf16}
    for k, path in (("predictor", ours_p), ("cli", ours_c), ("cli_onnx", work / "cli_onnx.nii.gz"),
                    ("cli_bf16", ours_b)):
        if k not in runs:
            continue
        lab, aff = _labels(path)
        res[k] = {"seconds": median_of(runs[k], "seconds"), "peak_rss_mb": median_of(runs[k], "peak_rss_mb"),
                  "dice_vs_monai": dice_agreement(lab, ref) if lab.shape == ref.shape else None,
                  "same_grid_as_input": lab.shape == src_shape and np.allclose(aff, _labels(ct)[1], atol=1e-4)}
    res["monai"] = {"seconds": median_of(runs["monai"], "seconds"),
                    "peak_rss_mb": median_of(runs["monai"], "peak_rss_mb"),
                    "same_grid_as_input": ref.shape == src_shape and np.allclose(ref_aff, _labels(ct)[1], atol=1e-4)}
    inner = [json.loads(r["stdout"].strip().splitlines()[-1]) for r in runs["predictor"]]
    res["predictor"]["inner_seconds"] = {k: float(np.median([i[k] for i in inner])) for k in inner[0]
                                         if k != "runtime"}
    res["predictor"]["runtime"] = inner[0].get("runtime")
    return res


def rows_for(res: dict[str, Any], note: str) -> list[Row]:
    """Table rows: seconds and peak RSS of Predictor and CLI against monai.bundle run."""
    shape = "x".join(map(str, res["shape"]))
    m = res["monai"]
    rows = []
    names = (("predictor", "Predictor (read+predict+write)"), ("cli", "napari-cxseg predict"),
             ("cli_onnx", "napari-cxseg predict --runtime onnx"),
             ("cli_bf16", "napari-cxseg predict --precision bfloat16"))
    for k, name in names:
        if k not in res:
            continue
        o = res[k]
        d = o["dice_vs_monai"]
        ratio_t = o["seconds"] / m["seconds"]
        rows.append(Row("3d", f"CT {shape} seconds", name, o["seconds"], "python -m monai.bundle run", m["seconds"],
                        "s", d, "<= 0.5x, Dice >= 0.98", bool(ratio_t <= 0.5 and d is not None and d >= 0.98),
                        note, {"inner_seconds": o.get("inner_seconds", {})} if k == "predictor" else {}))
        ratio_m = o["peak_rss_mb"] / m["peak_rss_mb"]
        rows.append(Row("3d", f"CT {shape} peak RSS", name, o["peak_rss_mb"], "python -m monai.bundle run",
                        m["peak_rss_mb"], "MB", d, "<= 0.7x", bool(ratio_m <= 0.7)))
    return rows


def run(cfg: Config) -> tuple[list[Row], dict[str, Any]]:
    """The 3D part: rows and raw results."""
    bundle, note = prepare_bundle(cfg)
    ct = Path(cfg.ct) if cfg.ct else (None if cfg.tiny else default_ct())
    if ct is None:
        ct = tiny_ct(cfg.out / "inputs")
        note += "; no public CT fetched (scripts/fetch_public_data.py): a small synthetic CT"
    cfg.log(f"[3d] {bundle.name} on {ct.name}: Predictor, CLI, monai.bundle run x{cfg.repeats} (alternated)")
    res = end_to_end(cfg, bundle, ct)
    note += f"; foreground fraction of MONAI's labels {res['monai_foreground_fraction']:.3f}"
    if res["predictor"].get("runtime"):
        note += f"; Predictor and 'predict' (runtime auto) ran the network in {res['predictor']['runtime']}"
    if "cli_onnx" in res:
        note += "; '--runtime onnx' exported the network once before the timed runs"
    if res.get("bf16_skipped"):
        note += f"; no bfloat16 run: {res['bf16_skipped']}"
    res["note"] = note
    return rows_for(res, note), res


# ---------------------------------------------------------------------------- child
def _child_predictor(bundle: str, ct: str, out: str, device: str) -> None:
    """What the ``predictor`` child does: one case through the engine, timings on stdout as JSON."""
    t0 = time.perf_counter()
    from napari_cxseg import io as cxio
    from napari_cxseg.inference import Predictor

    t1 = time.perf_counter()
    image = cxio.read(ct)[0]
    t2 = time.perf_counter()
    predictor = Predictor(bundle, device=device, trust=True)
    labels = predictor.predict(image)
    t3 = time.perf_counter()
    cxio.write_labels(labels, out, overwrite=True)
    t4 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "read": t2 - t1, "load+predict": t3 - t2, "write": t4 - t3,
                      "runtime": predictor.runtime}))


if __name__ == "__main__":
    child_main("predictor", 4, _child_predictor)
