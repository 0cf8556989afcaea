"""Network runtimes: ONNX Runtime vs eager PyTorch vs TorchScript, same network and input, one process.

For the shipped ``cxr-lungs`` card's 2D network on its input size (the bundled sample
radiograph moved into model space by :meth:`~napari_cxseg.inference.Predictor.prepare`: one
1 x C x 256 x 256 tensor) and the ``ct-organs-demo`` card's 3D network on one sliding-window
batch (the sample CT at 4 mm, padded as the Predictor pads it, the card's ``roi_size`` and
``sw_batch_size``), both built with the project's loader
(:func:`napari_cxseg.models.networks.load_network`, as ``Predictor.network`` does), it measures
the warm median latency of the network call alone, the runtimes alternated call by call so
that drifts in machine load hit all alike:

* eager PyTorch under ``torch.inference_mode`` (the reference of every row);
* eager channels-last (3D only, as ``Predictor`` runs 3D networks, ``inference._channels_last``);
* TorchScript, ``torch.jit.freeze(torch.jit.trace(...))``;
* ``torch.compile`` (inductor; needs a C++ compiler), compile time in the note;
* eager under ``torch.autocast("cpu", dtype=torch.bfloat16)``, only where the CPU computes
  bfloat16 natively (:func:`napari_cxseg.device.cpu_has_fast_bf16`; 3D channels-last as
  ``Predictor(precision="bfloat16")``); elsewhere the row says why not;
* ONNX Runtime, as ``Predictor(runtime="onnx")`` runs it
  (:func:`napari_cxseg.models.onnx_runtime.onnx_network`: exported with a dynamic batch,
  ``onnx.checker``, checked against PyTorch, ``CPUExecutionProvider`` with torch's thread count and
  spinning off) into a temporary folder under ``cfg.out``. Without ``onnx`` / ``onnxruntime`` (the
  ``[onnx]`` extra) or when the export fails, the row has no value and a note giving the reason.

Every output is checked against eager: max abs difference of the logits, fraction of voxels
with the same argmax and the mean Dice of the argmax labels (the row's agreement). CPU only
(the question is which CPU runtime to ship). With ``cfg.tiny``: tiny seeded-random MONAI UNets
(2D 32 x 32, 3D 16^3) on random inputs.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import Config, Row, dice_agreement

PART = "runtimes"
REFERENCE = "eager PyTorch (inference_mode)"
CASES = (("cxr-lungs", "chest_xray"), ("ct-organs-demo", "chest_ct"))


@dataclass
class Case:
    """One network and the input it is timed on."""

    name: str
    net: Any  # torch.nn.Module, eval mode, CPU
    x: Any  # torch.Tensor, float32, N x C x spatial
    source: str  # what the weights and the input are


@dataclass
class Runner:
    """One runtime of a case: ``fn`` returns the logits as float32 numpy, or None with the reason."""

    label: str
    fn: Callable[[], np.ndarray] | None
    note: str = ""


# ---------------------------------------------------------------------------- cases
def _windows(x: Any, roi: tuple[int, ...], overlap: float, k: int) -> Any:
    """The first ``k`` sliding windows of ``x`` (1 x C x spatial), padded as ``Predictor`` pads."""
    import torch
    import torch.nn.functional as F
    from monai.data.utils import dense_patch_slices

    nd = x.ndim - 2
    size0 = tuple(int(s) for s in x.shape[2:])
    pad: list[int] = []
    for i in range(nd - 1, -1, -1):
        diff = max(roi[i] - size0[i], 0)
        pad += [diff // 2, diff - diff // 2]
    if any(pad):
        x = F.pad(x, pad=pad, mode="constant", value=0.0)
    size = tuple(int(s) for s in x.shape[2:])
    interval = tuple(roi[i] if roi[i] == size[i] else max(int(roi[i] * (1 - overlap)), 1) for i in range(nd))
    slices = dense_patch_slices(size, roi, interval, return_slice=True)[:k]
    return torch.cat([x[(slice(None), slice(None), *s)] for s in slices]).contiguous()


def cases(cfg: Config) -> list[Case]:
    """The 2D and the 3D case: the shipped cards' networks, or tiny random UNets with ``cfg.tiny``.

    Parameters
    ----------
    cfg
        The suite's settings (``tiny`` picks the random networks).

    Returns
    -------
    list of Case
        ``cxr-lungs`` (2D, one window) and ``ct-organs-demo`` (3D, one window batch).
    """
    import torch
    from monai.networks.nets import UNet

    if cfg.tiny:
        torch.manual_seed(0)
        return [Case("tiny 2D UNet", UNet(2, 1, 2, (4, 8), (2,)).eval(), torch.rand(1, 1, 32, 32),
                     "seeded-random weights, random input"),
                Case("tiny 3D UNet", UNet(3, 1, 2, (4, 8), (2,)).eval(), torch.rand(1, 1, 16, 16, 16),
                     "seeded-random weights, random input")]
    from napari_cxseg.inference import Predictor
    from napari_cxseg.io import read
    from napari_cxseg.models.cards import find_card
    from napari_cxseg.models.networks import load_network
    from napari_cxseg.sample_data_files import sample_paths

    out = []
    for name, sample in CASES:
        card = find_card(name)
        net = load_network(card).to("cpu").eval()
        image = read(sample_paths(sample)[0])[0]
        data = Predictor(card, device="cpu").prepare(image).data["image"]
        x = torch.as_tensor(data.as_tensor() if hasattr(data, "as_tensor") else data).float()[None]
        win = card.inference
        roi = tuple(int(r) for r in (win.roi_size or card.input.size))
        out.append(Case(name, net, _windows(x, roi, float(win.overlap), int(win.sw_batch_size)),
                        f"shipped weights; sample '{sample}' in model space, {int(win.sw_batch_size)} window(s) "
                        f"of {'x'.join(map(str, roi))}"))
    return out


# ---------------------------------------------------------------------------- runtimes
def _np(t: Any) -> np.ndarray:
    if isinstance(t, list | tuple):
        t = t[0]
    return t.detach().float().cpu().numpy()


def _eager(net: Any, x: Any, bf16: bool = False) -> Callable[[], np.ndarray]:
    import torch

    def call() -> np.ndarray:
        with torch.inference_mode():
            if bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return _np(net(x))
            return _np(net(x))

    return call


def _channels_last(net: Any, x: Any) -> tuple[Any, Any]:
    """A channels-last copy of a 3D network and its input, as ``Predictor`` lays them out."""
    import torch

    from napari_cxseg.inference import _channels_last as layout_of

    net = copy.deepcopy(net)
    layout = layout_of(net, x.ndim - 2) or torch.channels_last_3d
    return net, x.contiguous(memory_format=layout)


def _torchscript(net: Any, x: Any) -> Runner:
    import torch

    label = "TorchScript traced+frozen"
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            ts = torch.jit.freeze(torch.jit.trace(copy.deepcopy(net).eval(), x).eval())
    except Exception as e:  # noqa: BLE001 - the row must say why, not the part fail
        return Runner(label, None, f"not measured: trace/freeze failed ({type(e).__name__}: {str(e)[:200]})")
    return Runner(label, _eager(ts, x))


def _compiled(net: Any, x: Any) -> Runner:
    """``torch.compile`` (inductor); its compile time, paid once per process and shape, in the note."""
    import torch

    label = "torch.compile (inductor)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn = torch.compile(copy.deepcopy(net).eval())
            t = time.perf_counter()
            with torch.inference_mode():
                fn(x)
            took = time.perf_counter() - t
    except Exception as e:  # noqa: BLE001 - the row must say why, not the part fail
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return Runner(label, None, f"not measured: compile failed ({type(e).__name__}: {first})")
    return Runner(label, _eager(fn, x), f"compile and first call {took:.1f} s, paid again in every process")


def _onnxruntime(net: Any, x: Any, folder: Path) -> Runner:
    """What ``Predictor(runtime="onnx")`` runs (:func:`napari_cxseg.models.onnx_runtime.onnx_network`)."""
    import torch

    from napari_cxseg.models.onnx_runtime import OPSET, onnx_available, onnx_network

    label = "ONNX Runtime (CPUExecutionProvider)"
    if not onnx_available():
        return Runner(label, None, "not measured: onnx/onnxruntime not importable (pip install 'napari-cxseg[onnx]')")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix="onnx.") as tmp:
            t = time.perf_counter()
            runner = onnx_network(copy.deepcopy(net).eval(), tuple(int(s) for s in x.shape[1:]), "bench", Path(tmp))
            took = time.perf_counter() - t
    except Exception as e:  # noqa: BLE001 - the row must say why, not the part fail
        return Runner(label, None, f"not measured: {type(e).__name__}: {str(e)[:300]}")
    import onnxruntime as ort

    return Runner(label, lambda: runner(x).numpy(),
                  f"onnxruntime {ort.__version__}, opset {OPSET}, {torch.get_num_threads()} threads, no spinning; "
                  f"export and check {took:.1f} s, once per model (cached)")


def runners(case: Case, folder: Path) -> list[Runner]:
    """Every runtime of ``case``; the first is the eager reference.

    Parameters
    ----------
    case
        The network and its input.
    folder
        Where the temporary ONNX file is written (and removed once the session holds it).

    Returns
    -------
    list of Runner
        Eager, eager channels-last (3D), TorchScript, torch.compile, bfloat16 autocast, ONNX Runtime; a runtime
        that cannot run here has ``fn`` None and the reason in ``note``.
    """
    from napari_cxseg.device import cpu_has_fast_bf16

    nd = case.x.ndim - 2
    out = [Runner(REFERENCE, _eager(case.net, case.x))]
    cl_net, cl_x = _channels_last(case.net, case.x) if nd == 3 else (case.net, case.x)
    if nd == 3:
        out.append(Runner("eager channels-last (as Predictor)", _eager(cl_net, cl_x)))
    out.append(_torchscript(case.net, case.x))
    out.append(_compiled(case.net, case.x))
    bf16 = "eager bfloat16 autocast" + (" channels-last" if nd == 3 else "")
    if cpu_has_fast_bf16():
        out.append(Runner(bf16, _eager(cl_net, cl_x, bf16=True)))
    else:
        out.append(Runner(bf16, None, "not measured: this CPU has no native bfloat16 (no AMX / AVX512-BF16); "
                                      "autocast would emulate it, slower than float32, as Predictor's 'auto' avoids"))
    out.append(_onnxruntime(case.net, case.x, folder))
    return out


# ---------------------------------------------------------------------------- measuring
def agreement(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Logits of a runtime against eager's: max abs difference, argmax equal fraction, argmax Dice.

    Parameters
    ----------
    ref, out
        N x C x spatial logits of the reference and of the runtime.

    Returns
    -------
    dict
        ``max_abs_diff``, ``argmax_equal`` (fraction of voxels) and ``dice`` (mean over classes).
    """
    if ref.shape != out.shape:
        raise ValueError(f"output of shape {out.shape}, eager's is {ref.shape}")
    a, b = ref.argmax(1), out.argmax(1)
    return {"max_abs_diff": float(np.abs(ref.astype(np.float64) - out).max()),
            "argmax_equal": float((a == b).mean()), "dice": dice_agreement(a, b)}


def measure_case(case: Case, cfg: Config) -> tuple[list[Row], dict[str, Any]]:
    """Time every runtime of ``case`` alternated call by call; one row per runtime but eager."""
    run = runners(case, cfg.out / PART)
    live = [r for r in run if r.fn is not None]
    warm, rounds = (1, 1) if cfg.tiny else (3, max(5, 3 * cfg.repeats))
    outs: dict[str, np.ndarray] = {}
    for r in live:
        for _ in range(warm):
            outs[r.label] = r.fn()
    times: dict[str, list[float]] = {r.label: [] for r in live}
    for _ in range(rounds):
        for r in live:
            t = time.perf_counter()
            r.fn()
            times[r.label].append(time.perf_counter() - t)
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    ref_ms = ms[REFERENCE]
    shape = "x".join(map(str, case.x.shape))
    rows, raw = [], {"input": shape, "source": case.source, "rounds": rounds, "ms": ms, "runtimes": {}}
    for r in run:
        entry: dict[str, Any] = {"note": r.note}
        if r.fn is None:
            cfg.log(f"[{PART}] {case.name}: {r.label} {r.note}")
        else:
            entry["times_ms"] = [1000 * t for t in times[r.label]]
            if r.label != REFERENCE:
                entry.update(agreement(outs[REFERENCE], outs[r.label]))
        raw["runtimes"][r.label] = entry
        if r.label == REFERENCE:
            continue
        note = r.note
        if "dice" in entry:
            note = (f"max|diff| {entry['max_abs_diff']:.2e}, argmax equal {100 * entry['argmax_equal']:.3f} %"
                    + (f"; {note}" if note else ""))
        rows.append(Row(PART, f"{case.name} network {shape} warm latency", r.label,
                        ms.get(r.label), REFERENCE, ref_ms, "ms", entry.get("dice"), note=note,
                        extra={k: v for k, v in entry.items() if k != "times_ms"}))
        cfg.log(f"[{PART}] {case.name}: {r.label} "
                + (f"{ms[r.label]:.1f} ms vs eager {ref_ms:.1f} ms; {note}" if r.label in ms else "-"))
    return rows, raw


def run(cfg: Config) -> tuple[list[Row], dict[str, Any]]:
    """The runtimes part: ONNX Runtime, TorchScript, channels-last, bfloat16 against eager.

    Parameters
    ----------
    cfg
        The suite's settings (``threads`` sets torch's threads for the part, ``tiny`` the inputs).

    Returns
    -------
    rows, raw
        One row per case and runtime (reference: eager), and per case the median and all
        times, agreements and notes.
    """
    import torch

    threads0 = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.device != "cpu":
        cfg.log(f"[{PART}] measures CPU runtimes only (device {cfg.device} not used)")
    rows: list[Row] = []
    raw: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    try:
        for case in cases(cfg):
            cfg.log(f"[{PART}] {case.name} {tuple(case.x.shape)}: eager, TorchScript, bf16, ONNX Runtime")
            r, data = measure_case(case, cfg)
            rows += r
            raw[case.name] = data
    finally:
        torch.set_num_threads(threads0)
    return rows, raw
