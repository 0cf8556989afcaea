"""Training checkpoints that load with ``torch.load(weights_only=True)``, and starting weights for fine-tuning."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..images import CxsegError
from ..models.cards import ModelCard


def save_checkpoint(path: Path, net: Any, opt: Any, sched: Any, scaler: Any, state: dict[str, Any],
                    card: ModelCard, config: Any) -> None:
    """Write the resume state atomically (temporary file, then rename)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "napari-cxseg-train-1",
        "card": card.name,
        "network": {"name": card.network.name, "args": card.network.args} if card.network else None,
        "config": config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict(),
        "state": _plain(state),
    }
    tmp = path.with_name(path.name + f".{os.getpid()}.partial")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, net: Any, opt: Any, sched: Any, scaler: Any, card: ModelCard,
                    config: Any) -> dict[str, Any]:
    """Restore network, optimiser, schedule and loop state; returns the loop state.

    Raises
    ------
    CxsegError
        When the checkpoint belongs to another network or cannot be read.
    """
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError, RuntimeError, EOFError
        raise CxsegError(f"cannot resume from {path}: {type(e).__name__}: {e}") from None
    want = {"name": card.network.name, "args": card.network.args} if card.network else None
    if ck.get("network") != _plain(want):
        raise CxsegError(f"cannot resume from {path}: it was written for network {ck.get('network')}, "
                         f"this run trains {want}; use another output folder")
    net.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    if ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    return dict(ck["state"])


def _plain(obj: Any) -> Any:
    """Tuples to lists, numpy scalars to Python: what weights_only loading accepts and compares."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, int) else k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def init_weights(net: Any, source: Any) -> list[str]:
    """Copy weights into ``net`` from a state dict, a weights file, a card or a bundle.

    Keys whose shapes do not match (a new output layer for other classes) are left as they are.

    Returns
    -------
    list of str
        The keys that were not copied.

    Raises
    ------
    CxsegError
        When nothing at all matches (another architecture).
    """
    from ..models.weights import _match_prefixes, load_state_dict

    if isinstance(source, dict):
        sd = source
    elif isinstance(source, str | os.PathLike) and str(source).endswith((".pt", ".pth")) and Path(source).is_file():
        sd = load_state_dict(source)
    else:
        from ..models.cards import find_card
        from ..models.weights import resolve_weights

        card = source if isinstance(source, ModelCard) else find_card(source)
        sd = load_state_dict(resolve_weights(card))
    own = net.state_dict()
    sd = _match_prefixes(sd, set(own))
    fit = {k: v for k, v in sd.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not fit:
        raise CxsegError(f"none of the weights of {source} fit this network (another architecture?)")
    own.update(fit)
    net.load_state_dict(own)
    return sorted(set(own) - set(fit))
