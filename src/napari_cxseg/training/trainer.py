"""Supervised training of a card's MONAI network on in-memory data.

:func:`train_segmentation` is the one training loop of the package (the demo models and the
fine-tuning of corrected cases use it): DiceCE loss, Adam, MONAI ``DiceMetric`` on validation
(sliding-window inference with the card's window), the best state dict kept and saved with
``torch.save(state_dict)`` so that the Predictor loads it with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..models.cards import ModelCard


@dataclass
class TrainResult:
    """What a training run produced.

    Parameters
    ----------
    best_dice
        Best mean validation Dice (foreground classes).
    best_epoch
        Epoch (1-based) of the best state.
    per_class
        Validation Dice per class id at the best epoch.
    history
        One dict per epoch (``epoch``, ``loss``, ``dice``, ``seconds``).
    weights
        Where the best state dict was saved (``None`` when not saved).
    state_dict
        The best state dict (CPU tensors).
    """

    best_dice: float
    best_epoch: int
    per_class: dict[int, float]
    history: list[dict[str, float]] = field(default_factory=list)
    weights: Path | None = None
    state_dict: dict[str, Any] | None = None


def build_network(card: ModelCard):
    """The card's ``monai.networks.nets`` network (randomly initialised)."""
    from monai.networks import nets

    if card.network is None:
        raise ValueError(f"card {card.name} has no network to train (a bundle card?)")
    return getattr(nets, card.network.name)(**card.network.args)


def _as_dataset(items: Any):
    """A torch dataset from a dataset object or a list of ``(image, label)`` pairs."""
    from .datasets import PairDataset

    if hasattr(items, "__getitem__") and hasattr(items, "__len__") and not isinstance(items, list | tuple):
        return items
    return PairDataset(items)


def evaluate(
    network: Any,
    card: ModelCard,
    items: Sequence[tuple[np.ndarray, np.ndarray]] | Any,
    device: str = "cpu",
) -> dict[int, float]:
    """Mean Dice per class of ``network`` on ``(image, label)`` pairs (model-space tensors).

    Parameters
    ----------
    network
        The network (put in eval mode here).
    card
        Gives the classes, the sliding window and the activation.
    items
        Pairs of channel-first image and ``(1, ...)`` label arrays, or a dataset of dicts.
    device
        Torch device.

    Returns
    -------
    dict
        ``{class id: Dice}`` over all items (MONAI ``DiceMetric``, mean over images, empty
        reference and prediction counted as 1).
    """
    import torch
    from monai.inferers import sliding_window_inference
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    ds = _as_dataset(items)
    n_out = int(card.network.args.get("out_channels", len(card.classes) + 1))
    metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=False)
    inf = card.inference
    network.eval()
    with torch.no_grad():
        for i in range(len(ds)):
            d = ds[i]
            x = torch.as_tensor(d["image"]).float()[None].to(device)
            y = torch.as_tensor(d["label"]).long()[None].to(device)
            if inf is not None:
                logits = sliding_window_inference(
                    x, tuple(inf.roi_size), inf.sw_batch_size, network, overlap=inf.overlap, mode=inf.mode
                )
            else:
                logits = network(x)
            pred = torch.argmax(logits, dim=1, keepdim=True)
            metric(one_hot(pred, n_out), one_hot(y, n_out))
    vals = metric.aggregate().cpu().numpy()
    metric.reset()
    return {c: float(vals[c - 1]) for c in range(1, n_out)}


def train_segmentation(
    card: ModelCard,
    train_items: Sequence[tuple[np.ndarray, np.ndarray]] | Any,
    val_items: Sequence[tuple[np.ndarray, np.ndarray]] | Any,
    epochs: int,
    batch_size: int = 8,
    lr: float = 2e-3,
    weight_decay: float = 1e-5,
    out_weights: str | Path | None = None,
    init_state: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "cpu",
    num_workers: int = 0,
    max_seconds: float | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    val_every: int = 1,
    stop_epoch: int | None = None,
) -> TrainResult:
    """Train the card's network with DiceCE loss and Adam; keep the best validation state.

    Parameters
    ----------
    card
        Model card: network, classes and sliding-window settings.
    train_items
        ``(image, label)`` pairs in model space (channel-first float image, ``(1, ...)``
        integer label) or a torch dataset giving ``{"image", "label"}`` tensors (e.g.
        :class:`~napari_cxseg.training.datasets.AugmentedDRRDataset`; its ``epoch`` attribute
        is advanced each epoch when present).
    val_items
        Validation pairs or dataset (whole images; sliding window of the card).
    epochs
        Number of passes over ``train_items``.
    batch_size, lr, weight_decay
        Optimiser settings (Adam, cosine learning-rate decay).
    out_weights
        Where to save the best state dict (``torch.save``; load with ``weights_only=True``).
    init_state
        State dict to start from (fine-tuning).
    seed
        Seed of torch's generators (weights, shuffling).
    device
        Torch device.
    num_workers
        DataLoader workers.
    max_seconds
        Stop after the epoch that crosses this wall time.
    on_epoch
        Called with each epoch's record (progress).
    val_every
        Validate every this many epochs (and at the last).
    stop_epoch
        Stop after this epoch while the learning-rate schedule still spans ``epochs`` (to
        reproduce a run that ``max_seconds`` stopped).

    Returns
    -------
    TrainResult
    """
    import torch
    from monai.data import DataLoader
    from monai.losses import DiceCELoss

    torch.manual_seed(seed)
    net = build_network(card).to(device)
    if init_state is not None:
        net.load_state_dict(init_state)
    train_ds = _as_dataset(train_items)
    gen = torch.Generator()
    gen.manual_seed(seed)
    # MONAI's DataLoader re-seeds random transforms in each worker and epoch (torch's does not)
    loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=num_workers, generator=gen)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    best = -1.0
    best_epoch = 0
    best_state: dict[str, Any] | None = None
    per_class: dict[int, float] = {}
    history: list[dict[str, float]] = []
    t_start = time.time()
    for epoch in range(1, epochs + 1):
        if hasattr(train_ds, "epoch"):
            train_ds.epoch = epoch - 1
        net.train()
        t0 = time.time()
        losses = []
        for batch in loader:
            x = batch["image"].float().to(device)
            y = batch["label"].long().to(device)
            opt.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        rec: dict[str, float] = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan")}
        last = (
            epoch == epochs
            or (stop_epoch is not None and epoch >= stop_epoch)
            or (max_seconds is not None and time.time() - t_start > max_seconds)
        )
        if epoch % val_every == 0 or last:
            dice = evaluate(net, card, val_items, device)
            mean = float(np.mean(list(dice.values()))) if dice else 0.0
            rec["dice"] = mean
            if mean > best:
                best, best_epoch, per_class = mean, epoch, dice
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
        rec["seconds"] = time.time() - t0
        history.append(rec)
        if on_epoch is not None:
            on_epoch(rec)
        if last:
            break
    out = None
    if out_weights is not None and best_state is not None:
        out = Path(out_weights)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".partial")
        torch.save(best_state, tmp)
        tmp.replace(out)
    return TrainResult(best, best_epoch, per_class, history, out, best_state)
