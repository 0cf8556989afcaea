"""Choosing the torch device: CUDA, then Apple MPS, then CPU, or what the user asked for."""

from __future__ import annotations

from typing import Any

from .images import CxsegError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
#: ``auto``: float16 autocast on CUDA, full float32 elsewhere (labels equal to a float32 run)
PRECISION_CHOICES = ("auto", "float32", "bfloat16", "float16")


def pick_device(requested: str | Any = "auto") -> Any:
    """The ``torch.device`` to run on.

    Parameters
    ----------
    requested
        ``"auto"`` (CUDA > MPS > CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a
        ``torch.device``.

    Returns
    -------
    torch.device

    Raises
    ------
    CxsegError
        When an accelerator is requested but this torch build or machine does not have it.
    """
    import torch

    if isinstance(requested, torch.device):
        requested = str(requested)
    req = (requested or "auto").strip().lower()
    if req == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if req == "cpu":
        return torch.device("cpu")
    if req.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} torch build, but no GPU is visible"
            raise CxsegError(
                f"device '{requested}' requested but CUDA is not available ({build}, torch {torch.__version__}); "
                "use --device cpu or install a CUDA build of torch"
            )
        dev = torch.device(req)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CxsegError(f"device '{requested}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return dev
    if req == "mps":
        if not _mps_available():
            raise CxsegError(f"device 'mps' requested but Apple MPS is not available (torch {torch.__version__}); use --device cpu")
        return torch.device("mps")
    raise CxsegError(f"unknown device '{requested}' (use one of {', '.join(DEVICE_CHOICES)} or cuda:N)")


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def autocast_dtype(device: Any, precision: str = "auto") -> Any:
    """The dtype the network runs in under ``torch.autocast``, or None for plain float32.

    Parameters
    ----------
    device
        The ``torch.device`` the network runs on.
    precision
        ``"auto"`` (float16 on CUDA, float32 elsewhere), ``"float32"``, ``"bfloat16"`` or
        ``"float16"``. bfloat16 on a CPU pays off where it has AMX or AVX512-BF16 (Intel Xeon
        since Sapphire Rapids): the network is about 2x faster and labels differ in a few
        boundary voxels (the benchmark reports the Dice against float32).

    Returns
    -------
    torch.dtype or None

    Raises
    ------
    CxsegError
        For an unknown precision.
    """
    import torch

    req = (precision or "auto").strip().lower()
    if req not in PRECISION_CHOICES:
        raise CxsegError(f"unknown precision '{precision}' (use one of {', '.join(PRECISION_CHOICES)})")
    kind = torch.device(device).type
    if req == "auto":
        return torch.float16 if kind == "cuda" else None
    return None if req == "float32" else getattr(torch, req)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX512-BF16)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)
