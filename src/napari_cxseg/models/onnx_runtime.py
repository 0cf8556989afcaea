"""Running a card's network in ONNX Runtime on CPU: exported once, checked equal, cached.

On CPU, ONNX Runtime computes the shipped UNets in about 0.8x of eager PyTorch's time with the
same float32 results (``benchmarks/bench_runtimes.py``; ``torch.compile`` is as fast for the 2D
network but recompiles in every process and fails on the 3D one). :func:`onnx_network` exports
the network for one window shape (batch dimension dynamic) to
``<cache>/onnx/<key>.onnx``, where the key hashes the weights, the window shape and the torch and
opset versions, so a fine-tuned model gets its own file and a new release re-exports.

Before a file is used it is checked: ``onnx.checker`` and, on a seeded random window, the logits
against the torch network's (max abs difference within ``ATOL`` + ``RTOL`` of the logits' range,
argmax equal in at least ``MIN_ARGMAX_EQUAL`` of the voxels). A passing check is recorded next to
the file (``<key>.ok``); a file without it is re-checked. Files are written to a temporary name
in the same folder and moved into place (``os.replace``), so parallel workers never read half a
file.

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
    """Hash of the weights, the window shape (C x spatial), torch's version and the opset.

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
    import torch

    h = hashlib.sha256()
    h.update(f"{type(net).__module__}.{type(net).__qualname__}|{window}|{torch.__version__}|{OPSET}".encode())
    for name, t in net.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


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


def _export(net: Any, sample: Any, path: Path) -> None:
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (sample,), str(path), dynamo=False, opset_version=OPSET,
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


def onnx_network(net: Any, window: tuple[int, ...], name: str = "network") -> OnnxNetwork:
    """The network exported to ONNX for windows of ``window`` (C x spatial), checked equal.

    Parameters
    ----------
    net
        The torch network (eval mode; moved to CPU for the export).
    window
        One window's shape without the batch dimension, e.g. ``(1, 96, 96, 96)``.
    name
        The model's name, for messages.

    Returns
    -------
    OnnxNetwork

    Raises
    ------
    CxsegError
        Without onnx/onnxruntime, when the export fails, or when ONNX Runtime's logits differ
        from the network's beyond the tolerance (the file is then removed).
    """
    import torch

    if not onnx_available():
        raise CxsegError("runtime 'onnx' needs the onnx and onnxruntime packages: pip install 'napari-cxseg[onnx]'")
    import onnx

    net = net.to("cpu").eval()
    folder = onnx_dir()
    key = export_key(net, tuple(window))
    path, ok = folder / f"{key}.onnx", folder / f"{key}.ok"
    gen = torch.Generator().manual_seed(0)
    sample = torch.rand((1, *window), generator=gen) * 2 - 1
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".onnx")
        os.close(fd)
        try:
            _export(net, sample, Path(tmp))
            onnx.checker.check_model(tmp)
            os.replace(tmp, path)
        except Exception as e:
            Path(tmp).unlink(missing_ok=True)
            raise CxsegError(f"model {name}: export to ONNX failed ({type(e).__name__}: {str(e)[:300]})") from e
    runner = OnnxNetwork(path)
    if not ok.is_file():
        with torch.inference_mode():
            ref = net(torch.cat([sample, -sample])).float().numpy()
        got = runner(torch.cat([sample, -sample])).numpy()
        res = compare(ref, got)
        if res["max_abs_diff"] > res["tolerance"] or res["argmax_equal"] < MIN_ARGMAX_EQUAL:
            path.unlink(missing_ok=True)
            raise CxsegError(f"model {name}: ONNX Runtime's logits differ from PyTorch's (max abs difference "
                             f"{res['max_abs_diff']:.3g}, argmax equal {100 * res['argmax_equal']:.2f} %)")
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".ok")
        with os.fdopen(fd, "w") as f:
            json.dump({"window": list(window), **res}, f)
        os.replace(tmp, ok)
    return runner


def resolve_runtime(runtime: str, device: Any, amp: Any, own_network: bool) -> str:
    """``"onnx"`` or ``"torch"``: what a Predictor asked for ``runtime`` runs its windows with.

    Parameters
    ----------
    runtime
        ``"auto"`` (ONNX Runtime on CPU in float32 when installed, else PyTorch), ``"torch"``
        or ``"onnx"``.
    device
        The ``torch.device`` of the Predictor.
    amp
        Its autocast dtype (None: float32).
    own_network
        False for a network handed in by the caller (training), which stays in PyTorch.

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
    if why is None:
        return "onnx"
    if req == "onnx":
        raise CxsegError(f"runtime 'onnx' cannot be used: {why}")
    return "torch"
