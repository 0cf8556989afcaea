"""Running a card's network in ONNX Runtime on CPU: exported once, checked against PyTorch, cached.

On CPU, ONNX Runtime computes the shipped 2D UNet in about 0.75x of eager PyTorch's time and the
3D ones about as fast as channels-last eager, with more memory (``benchmarks/bench_runtimes.py``;
``torch.compile`` is as fast for the 2D network but recompiles in every process and fails on the 3D
one), so ``auto`` runs 2D networks in it (:data:`AUTO_ONNX_DIMS`) and ``onnx`` any. Its float32 logits are not bit-equal to PyTorch's
(other kernels: differences of about 1e-5 to 1e-3), so a few voxels whose two classes are nearly
tied can take the other label (measured: none of the 5 M pixels of a radiograph, 2 in a million
voxels of a CT); ``runtime="torch"`` gives PyTorch's own labels.

:func:`onnx_network` exports the network for one window shape (batch dimension dynamic) to
``<cache>/onnx/<key>.onnx``; the key hashes the weights, the network's structure (``repr``, and
the code of a TorchScript module), the window shape and the torch, onnx, onnxruntime and opset
versions, so a fine-tuned model or a new version of any of them gets its own file.

Before a file is first used it is checked: ``onnx.checker`` and, on two seeded random windows, the
logits against the torch network's (max abs difference within ``ATOL`` + ``RTOL`` x the logits'
largest magnitude, argmax equal in at least ``MIN_ARGMAX_EQUAL`` of the voxels). A passing check
is recorded next to the file with the file's sha256 (``<key>.ok``); a file whose hash does not
match is checked again. A failing check is recorded too (``<key>.refused``), so every later
process goes straight to PyTorch. Files are written to a temporary name in the same folder and
moved into place (``os.replace``), so parallel workers never read half a file.

``onnx`` and ``onnxruntime`` are optional (``pip install napari-cxseg[onnx]``); without them
:func:`onnx_available` is False and the ``auto`` runtime stays with PyTorch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..images import CxsegError
from .cache import cache_dir
from .downloads import sha256_file

#: What ``Predictor(runtime=...)`` and ``predict --runtime`` accept.
RUNTIME_CHOICES = ("auto", "torch", "onnx")
OPSET = 17
ATOL, RTOL = 1e-3, 1e-4
MIN_ARGMAX_EQUAL = 0.999


def onnx_available() -> bool:
    """Whether ``onnx`` and ``onnxruntime`` can be imported (the ``[onnx]`` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def check_runtime(runtime: str) -> str:
    """``runtime`` in lower case, or a CxsegError naming the choices."""
    req = (runtime or "auto").strip().lower()
    if req not in RUNTIME_CHOICES:
        raise CxsegError(f"unknown runtime '{runtime}' (use one of {', '.join(RUNTIME_CHOICES)})")
    return req


def onnx_dir() -> Path:
    """Folder of exported networks (``<cache>/onnx``)."""
    return cache_dir() / "onnx"


def export_key(net: Any, window: tuple[int, ...]) -> str:
    """Hash of the weights, the structure, the window shape (C x spatial) and the versions.

    Parameters
    ----------
    net
        The torch network.
    window
        One window's shape without the batch dimension.

    Returns
    -------
    str
        32 hexadecimal digits.
    """

    h = hashlib.sha256()
    h.update(f"{type(net).__module__}.{type(net).__qualname__}|{window}|{OPSET}|{_versions()}".encode())
    h.update(repr(net).encode())
    h.update(str(getattr(net, "code", "")).encode())  # a TorchScript module's forward
    for name, t in net.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("torch", "onnx", "onnxruntime"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} -")
    return ", ".join(out)


def first_output(pred: Any) -> Any:
    """The logits of a network's output: itself, the first of a list/tuple or of a dict's values."""
    if isinstance(pred, list | tuple):
        return pred[0]
    if isinstance(pred, dict):
        return next(iter(pred.values()))
    return pred


def _write_json(folder: Path, target: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.stem}.", suffix=target.suffix)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, target)


class OnnxNetwork:
    """An ``InferenceSession`` called like the torch network: float32 tensor in, logits tensor out.

    Parameters
    ----------
    path
        The checked ``.onnx`` file.
    threads
        ``intra_op_num_threads`` (default: torch's thread count).
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort
        import torch

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or torch.get_num_threads())
        so.inter_op_num_threads = 1
        # idle spinning threads would steal the cores torch uses for the rest of the pipeline
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def __call__(self, x: Any) -> Any:
        import torch

        arr = np.ascontiguousarray(torch.as_tensor(x).detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self._input: arr})[0])


def _logits_only(net: Any) -> Any:
    """``net`` wrapped so that the export sees the logits only (for forwards returning a list or dict)."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            return first_output(self.net(x))

    return LogitsOnly().eval()


def export(net: Any, sample: Any, path: Path) -> None:
    """``torch.onnx.export`` of ``net`` (TorchScript-based exporter, opset ``OPSET``, dynamic batch).

    Parameters
    ----------
    net
        The torch network, eval mode, CPU.
    sample
        A 1 x C x spatial input of the window shape.
    path
        The ``.onnx`` file to write.
    """
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_logits_only(net), (sample,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})


def compare(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Max abs difference and argmax agreement of two N x C x spatial logit arrays.

    Parameters
    ----------
    ref, out
        The torch network's and ONNX Runtime's logits.

    Returns
    -------
    dict
        ``max_abs_diff``, ``tolerance`` and ``argmax_equal`` (fraction of voxels).
    """
    if ref.shape != out.shape:
        raise CxsegError(f"ONNX Runtime returned logits of shape {out.shape}, the network {ref.shape}")
    tol = ATOL + RTOL * float(np.abs(ref).max())
    equal = float((ref.argmax(1) == out.argmax(1)).mean()) if ref.shape[1] > 1 else float(
        ((ref > 0) == (out > 0)).mean())
    return {"max_abs_diff": float(np.abs(ref - out).max()), "tolerance": tol, "argmax_equal": equal}


def onnx_network(net: Any, window: tuple[int, ...], name: str = "network",
                 folder: Path | None = None) -> OnnxNetwork:
    """The network exported to ONNX for windows of ``window`` (C x spatial), checked against PyTorch.

    Parameters
    ----------
    net
        The torch network (eval mode; moved to CPU for the export).
    window
        One window's shape without the batch dimension, e.g. ``(1, 96, 96, 96)``.
    name
        The model's name, for messages.
    folder
        Where the export and its check record go (default :func:`onnx_dir`).

    Returns
    -------
    OnnxNetwork

    Raises
    ------
    CxsegError
        Without onnx/onnxruntime, when the export, the check or the session fails, or when ONNX
        Runtime's logits differ from the network's beyond the tolerance (now or in an earlier
        process: the refusal is recorded), naming the model and the file.
    """
    if not onnx_available():
        raise CxsegError("runtime 'onnx' needs the onnx and onnxruntime packages: pip install 'napari-cxseg[onnx]'")
    net = net.to("cpu").eval()
    folder = Path(folder) if folder is not None else onnx_dir()
    key = export_key(net, tuple(window))
    path, ok, refused = folder / f"{key}.onnx", folder / f"{key}.ok", folder / f"{key}.refused"
    if refused.is_file():
        raise CxsegError(f"model {name}: ONNX Runtime was refused for it before ({refused}: "
                         f"{refused.read_text(errors='replace')[:300]}); delete the file to check again")
    try:
        return _checked(net, tuple(window), name, folder, path, ok, refused)
    except CxsegError:
        raise
    except Exception as e:
        raise CxsegError(f"model {name}: ONNX Runtime could not be used ({path}: {type(e).__name__}: "
                         f"{str(e)[:300]})") from e


def _checked(net: Any, window: tuple[int, ...], name: str, folder: Path, path: Path, ok: Path,
             refused: Path) -> OnnxNetwork:
    import torch

    gen = torch.Generator().manual_seed(0)
    sample = torch.rand((1, *window), generator=gen) * 2 - 1
    folder.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        ok.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.stem}.", suffix=".onnx")
        os.close(fd)
        try:
            import onnx  # about 1 s of imports holding the GIL: only when exporting

            export(net, sample, Path(tmp))
            onnx.checker.check_model(tmp)
            os.replace(tmp, path)
        except Exception as e:
            raise CxsegError(f"model {name}: export to ONNX failed ({type(e).__name__}: {str(e)[:300]})") from e
        finally:
            Path(tmp).unlink(missing_ok=True)
    digest = sha256_file(path)
    record = json.loads(ok.read_text()) if ok.is_file() else {}
    runner = OnnxNetwork(path)
    if record.get("sha256") != digest:
        batch = torch.cat([sample, -sample])  # two windows: the batch dimension must stay dynamic
        with torch.inference_mode():
            ref = first_output(net(batch)).float().numpy()
        res = compare(ref, runner(batch).numpy())
        if res["max_abs_diff"] > res["tolerance"] or res["argmax_equal"] < MIN_ARGMAX_EQUAL:
            why = (f"ONNX Runtime's logits differ from PyTorch's (max abs difference {res['max_abs_diff']:.3g}, "
                   f"tolerance {res['tolerance']:.3g}, argmax equal {100 * res['argmax_equal']:.2f} %)")
            _write_json(folder, refused, {"reason": why, "versions": _versions(), **res})
            path.unlink(missing_ok=True)
            raise CxsegError(f"model {name}: {why}")
        _write_json(folder, ok, {"window": list(window), "sha256": digest, "versions": _versions(), **res})
    return runner


def export_state(net: Any, window: tuple[int, ...], folder: Path | None = None) -> str:
    """``"ready"`` (exported and checked), ``"refused"`` (checked and refused before) or ``"missing"``.

    Parameters
    ----------
    net, window, folder
        As for :func:`onnx_network`.

    Returns
    -------
    str
    """
    folder = Path(folder) if folder is not None else onnx_dir()
    key = export_key(net, tuple(window))
    path, ok = folder / f"{key}.onnx", folder / f"{key}.ok"
    if (folder / f"{key}.refused").is_file():
        return "refused"
    if path.is_file() and ok.is_file():
        try:
            if json.loads(ok.read_text()).get("sha256") == sha256_file(path):
                return "ready"
        except (OSError, ValueError):
            pass
    return "missing"


#: key -> the process exporting it in the background (one per key and process)
_BACKGROUND: dict[str, Any] = {}


def start_background_export(net: Any, window: tuple[int, ...], name: str = "network",
                            folder: Path | None = None) -> bool:
    """Export and check the network in a spawned process, so that the caller's GIL stays free.

    The viewer keeps running PyTorch until the export is ready (:func:`export_state`); a refusal
    is recorded by the child as :func:`onnx_network` records it.

    Parameters
    ----------
    net, window, name, folder
        As for :func:`onnx_network`.

    Returns
    -------
    bool
        True when an export is running for it (started now or before), False when the network
        could not be handed to a process (it then stays in PyTorch).
    """
    import multiprocessing

    key = export_key(net, tuple(window))
    proc = _BACKGROUND.get(key)
    if proc is not None and proc.is_alive():
        return True
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding Qt and torch threads
    proc = ctx.Process(target=_export_child, args=(net.to("cpu").eval(), tuple(window), name,
                                                   None if folder is None else str(folder), str(cache_dir())),
                       name=f"cxseg-onnx-export-{key[:8]}", daemon=True)
    try:
        proc.start()
    except Exception as e:  # noqa: BLE001 - e.g. a network that cannot be pickled: stay in PyTorch
        warnings.warn(f"model {name}: ONNX export could not start in the background "
                      f"({type(e).__name__}: {str(e)[:200]}); running the network in PyTorch", stacklevel=2)
        return False
    _BACKGROUND[key] = proc
    return True


def _export_child(net: Any, window: tuple[int, ...], name: str, folder: str | None, cache: str) -> None:
    import torch

    os.environ["CXSEG_CACHE_DIR"] = cache
    torch.set_num_threads(1)  # a background job: leave the other cores to the viewer
    try:
        onnx_network(net, window, name, None if folder is None else Path(folder))
    except CxsegError:
        pass  # recorded (.refused) or nothing written: the viewer stays in PyTorch


#: Spatial dimensionalities ``auto`` runs in ONNX Runtime. 3D networks stay in PyTorch: channels-last
#: eager computed the 3D UNets about as fast (0.95x-1.05x of ONNX Runtime's time), and ONNX Runtime
#: held 170-400 MB more (benchmarks, docs/performance.md).
AUTO_ONNX_DIMS = (2,)


def resolve_runtime(runtime: str, device: Any, amp: Any, own_network: bool, spatial_dims: int = 2) -> str:
    """``"onnx"`` or ``"torch"``: what a Predictor asked for ``runtime`` runs its windows with.

    Parameters
    ----------
    runtime
        ``"auto"`` (ONNX Runtime for 2D networks on CPU in float32 when installed, else
        PyTorch), ``"torch"`` or ``"onnx"``.
    device
        The ``torch.device`` of the Predictor.
    amp
        Its autocast dtype (None: float32).
    own_network
        False for a network handed in by the caller (training), which stays in PyTorch.
    spatial_dims
        The model's spatial dimensionality (``auto`` keeps 3D networks in PyTorch).

    Returns
    -------
    str

    Raises
    ------
    CxsegError
        For an unknown runtime, or ``"onnx"`` where it cannot run (not CPU, reduced precision,
        a caller's network, onnx/onnxruntime missing).
    """
    import torch

    req = check_runtime(runtime)
    if req == "torch":
        return "torch"
    why = None
    if torch.device(device).type != "cpu":
        why = f"it runs on CPU only (device {device})"
    elif amp is not None:
        why = f"it computes in float32 only (precision {str(amp).replace('torch.', '')})"
    elif not own_network:
        why = "a network handed to the Predictor stays in PyTorch"
    elif not onnx_available():
        why = "onnx and onnxruntime are not installed (pip install 'napari-cxseg[onnx]')"
    if why is None and req == "auto" and spatial_dims not in AUTO_ONNX_DIMS:
        return "torch"
    if why is None:
        return "onnx"
    if req == "onnx":
        raise CxsegError(f"runtime 'onnx' cannot be used: {why}")
    return "torch"
