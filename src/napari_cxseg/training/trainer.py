"""The one Trainer: a card's MONAI network trained on labelled cases, exported as a MONAI bundle.

The CLI (``napari-cxseg train``), the scripts that make the shipped models and the viewer use
:class:`Trainer`. It trains on exactly what the :class:`~napari_cxseg.inference.Predictor` runs
on (the card's own preprocessing, :func:`napari_cxseg.model_space.preprocess`, cached once per
case with MONAI's ``CacheDataset``), augments in model space (:mod:`.augment`), optimises
Dice + cross-entropy (MONAI ``DiceCELoss``; sigmoid cards: Dice + BCE per structure) with
AdamW and a warm-up + cosine schedule, validates with the product's Predictor on the cases'
own grids, keeps the best weights, and writes a checkpoint after every epoch so that a run
resumes where it stopped (:meth:`Trainer.fit` with ``resume=True``). Each epoch re-seeds torch
and every random transform from ``(seed, epoch)``, so a resumed run repeats the uninterrupted
one. On CUDA it uses autocast (bf16 where supported) and cudnn benchmark.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..images import CxsegError
from ..models.cards import ModelCard
from .sources import Case

EpochFn = Callable[[dict[str, Any]], None]
CancelFn = Callable[[], bool]


class TrainingCancelled(Exception):
    """Raised by :meth:`Trainer.fit` when ``cancel()`` returned True (the last epoch's checkpoint stays)."""


@dataclass
class TrainConfig:
    """Settings of a training run (saved in the checkpoint and the bundle docs).

    Parameters
    ----------
    epochs
        Passes over the training cases (the schedule spans them even when a time budget stops early).
    batch_size
        Samples per step (3D: patches; each volume gives ``patches_per_volume``).
    lr, weight_decay
        AdamW settings; the learning rate warms up over ``warmup_epochs`` and decays by cosine.
    patch
        3D patch size in model voxels (default: the card's ``inference.roi_size``).
    patches_per_volume
        3D patches drawn from a volume per visit.
    val_every
        Validate every this many epochs (and after the last).
    seed
        Seeds weights, sampling and augmentation.
    device
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    num_workers
        DataLoader workers (also used to fill the cache).
    amp
        Mixed precision on CUDA.
    augment, augment_strength
        Augmentation on/off and the scale of its geometric ranges.
    max_minutes
        Stop after the epoch that crosses this wall time (resume continues).
    threads
        torch CPU threads (None: torch's default).
    """

    epochs: int = 40
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    patch: tuple[int, ...] | None = None
    patches_per_volume: int = 2
    val_every: int = 1
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    amp: bool = True
    augment: bool = True
    augment_strength: float = 1.0
    max_minutes: float | None = None
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON, checkpoints)."""
        d = asdict(self)
        d["patch"] = list(self.patch) if self.patch else None
        return d


@dataclass
class TrainResult:
    """What a run produced.

    Parameters
    ----------
    best_dice
        Best mean validation Dice over classes and cases.
    best_epoch
        Epoch (1-based) of the best weights.
    per_class
        ``{class name: Dice}`` at the best epoch.
    per_source
        ``{source: {class name: Dice}}`` at the best epoch.
    history
        One record per epoch (``epoch``, ``loss``, ``lr``, ``seconds``, ``dice`` when validated).
    weights
        The best weights (state dict file, ``weights_only`` loadable).
    stopped
        Why the run ended: ``done``, ``time budget``.
    """

    best_dice: float
    best_epoch: int
    per_class: dict[str, float] = field(default_factory=dict)
    per_source: dict[str, dict[str, float]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    weights: Path | None = None
    stopped: str = "done"
    per_case: dict[str, dict[str, float]] = field(default_factory=dict)


class Trainer:
    """Train a card's network on labelled cases.

    Parameters
    ----------
    card
        The model card (network, preprocessing, classes, output activation).
    train_cases, val_cases
        Cases from :func:`~napari_cxseg.training.sources.find_cases` /
        :func:`~napari_cxseg.training.sources.split_cases`; cases whose masks lack a class of
        the card are left out (and reported).
    out_dir
        Where the run writes (``train/last.pt``, ``train/best.pt``, ``train/history.json``,
        ``train/training_curve.png``). Nothing is written elsewhere.
    config
        :class:`TrainConfig`.
    init
        Start from these weights: a state dict, a weights file, or a card / bundle whose
        network has the same architecture (fine-tuning); keys whose shapes differ (a new
        output layer) keep their fresh initialisation.
    progress
        Show a progress bar on stderr.
    """

    def __init__(self, card: ModelCard, train_cases: Sequence[Case], val_cases: Sequence[Case],
                 out_dir: str | Path, config: TrainConfig | None = None, init: Any = None,
                 progress: bool = True) -> None:
        from .targets import covers

        if card.network is None:
            raise CxsegError(f"model {card.name}: the card names no network to train (a bundle card?); "
                             "train from a card with a 'network' section")
        self.card = card
        self.config = config or TrainConfig()
        self.out_dir = Path(out_dir)
        self.init = init
        self.progress = progress
        names = {cid: c.name for cid, c in card.classes.items()}
        self.class_names = names
        self.train_cases = [c for c in train_cases if covers(names, c)]
        self.val_cases = [c for c in val_cases if covers(names, c)]
        self.skipped = [c.key for c in (*train_cases, *val_cases) if not covers(names, c)]
        if not self.train_cases:
            raise CxsegError(f"no training case has masks for every class of {card.name} "
                             f"({', '.join(names.values())})")
        self.multi_label = card.output.activation == "sigmoid"
        self._val_cache: dict[str, tuple[Any, np.ndarray]] = {}

    # ------------------------------------------------------------------ paths
    @property
    def train_dir(self) -> Path:
        """``<out_dir>/train``: checkpoints, history and the curve."""
        return self.out_dir / "train"

    @property
    def last_checkpoint(self) -> Path:
        """The checkpoint written after every epoch (resume)."""
        return self.train_dir / "last.pt"

    @property
    def best_weights(self) -> Path:
        """The best weights so far (a plain state dict)."""
        return self.train_dir / "best.pt"

    # ------------------------------------------------------------------ pieces
    def build(self) -> Any:
        """The card's network, initialised from ``init`` when given."""
        from ..models.networks import build_network
        from .checkpoint import init_weights

        net = build_network(self.card)
        if self.init is not None:
            init_weights(net, self.init)
        return net

    def _dataset(self, cases: Sequence[Case] | None = None, show: bool | None = None) -> Any:
        from monai.data import CacheDataset
        from monai.transforms import Compose

        from .augment import radiograph_augmentation, volume_augmentation
        from .loading import LoadCased

        cfg = self.config
        steps: list[Any] = [LoadCased(self.card, self.class_names, self.multi_label)]
        if self.card.spatial_dims == 3:
            patch = cfg.patch or tuple(self.card.inference.roi_size)
            steps.append(volume_augmentation(patch, len(self.class_names) + 1, cfg.seed, samples=cfg.patches_per_volume,
                                             multi_label=self.multi_label))
        elif cfg.augment:
            steps.append(radiograph_augmentation(cfg.seed, strength=cfg.augment_strength))
        data = [{"case": c} for c in (self.train_cases if cases is None else cases)]
        return CacheDataset(data, Compose(steps), cache_rate=1.0, num_workers=max(1, cfg.num_workers) or None,
                            progress=self.progress if show is None else show)

    def loss_function(self) -> Any:
        """Dice + cross-entropy (softmax cards) or Dice + BCE per structure (sigmoid cards)."""
        from monai.losses import DiceCELoss

        if self.multi_label:
            return DiceCELoss(sigmoid=True)
        return DiceCELoss(to_onehot_y=True, softmax=True)

    # ------------------------------------------------------------------ validation
    def validate(self, network: Any, device: Any = "cpu", cases: Sequence[Case] | None = None) -> dict[str, Any]:
        """Dice per class, per source and per case with the product's Predictor on the cases' grids
        (see :func:`~napari_cxseg.training.validation.validate_cases`)."""
        from .validation import validate_cases

        out = validate_cases(self.card, network, self.val_cases if cases is None else cases, device,
                             self._val_cache)
        network.train()
        return out

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False, on_epoch: EpochFn | None = None, cancel: CancelFn | None = None) -> TrainResult:
        """Train; return the best validation figures and where the best weights are.

        Parameters
        ----------
        resume
            Continue from ``train/last.pt`` when it exists (same card and settings).
        on_epoch
            Called with each epoch's record (the viewer's live plot).
        cancel
            Polled between steps; True stops the run (:class:`TrainingCancelled`), keeping the
            checkpoint of the last finished epoch.
        """
        import torch
        from monai.data import DataLoader

        from ..device import pick_device
        from . import distributed as dd
        from .checkpoint import load_checkpoint, save_checkpoint
        from .curves import plot_history

        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        dist, device = dd.setup(pick_device(cfg.device))
        cuda = device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(cfg.seed)
        net = self.build().to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: _lr_factor(e, cfg.epochs, cfg.warmup_epochs))
        amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg.amp and amp_dtype == torch.float16)
        state = {"epoch": 0, "history": [], "best": -1.0, "best_epoch": 0, "best_eval": {}}
        if resume and self.last_checkpoint.is_file():
            state = load_checkpoint(self.last_checkpoint, net, opt, sched, scaler, self.card, cfg)
        model = dd.wrap(net, dist, device)
        ds = self._dataset(dd.shard(self.train_cases, dist), show=self.progress and dist.main)
        loss_fn = self.loss_function()
        if dist.main:
            self.train_dir.mkdir(parents=True, exist_ok=True)
        t_start = time.time()
        stopped = "done"
        bar = _bar(cfg.epochs, state["epoch"], self.progress and dist.main)
        try:
            for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
                seed = cfg.seed * 7919 + epoch
                torch.manual_seed(seed + 104729 * dist.rank)
                if hasattr(ds.transform, "set_random_state"):
                    ds.transform.set_random_state(seed=(seed + 104729 * dist.rank) % (2**32))
                gen = torch.Generator()
                gen.manual_seed(seed + 104729 * dist.rank)
                loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                                    generator=gen, drop_last=len(ds) > cfg.batch_size)
                model.train()
                t0 = time.time()
                losses = []
                for batch in loader:
                    if dd.agree(cancel is not None and dist.main and bool(cancel()), dist):
                        raise TrainingCancelled(f"training of {self.card.name} cancelled in epoch {epoch}; "
                                                f"resume continues from epoch {epoch - 1}")
                    x = torch.as_tensor(batch["image"]).float().to(device)
                    y = torch.as_tensor(batch["label"]).to(device)
                    y = y.float() if self.multi_label else y.long()
                    opt.zero_grad(set_to_none=True)
                    with torch.autocast("cuda", dtype=amp_dtype, enabled=cuda and cfg.amp):
                        loss = loss_fn(model(x), y)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    losses.append(float(loss.detach()))
                if not losses:
                    raise CxsegError(f"training of {self.card.name}: an epoch of {len(ds)} cases gave no step "
                                     f"(batch {cfg.batch_size})")
                sched.step()
                mean_loss = dd.mean_over_ranks(float(np.mean(losses)) if losses else float("nan"), dist)
                rec: dict[str, Any] = {"epoch": epoch, "loss": mean_loss, "lr": float(opt.param_groups[0]["lr"])}
                over = dd.agree(cfg.max_minutes is not None and time.time() - t_start > 60 * cfg.max_minutes, dist)
                last = epoch == cfg.epochs or over
                if dist.main:
                    self._after_epoch(net, device, epoch, last, rec, state)
                    rec["seconds"] = time.time() - t0
                    state["history"].append(rec)
                    state["epoch"] = epoch
                    save_checkpoint(self.last_checkpoint, net, opt, sched, scaler, state, self.card, cfg)
                    (self.train_dir / "history.json").write_text(json.dumps(state["history"], indent=1))
                    if "dice" in rec or last:
                        plot_history(state["history"], self.train_dir / "training_curve.png", title=self.card.name)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{rec['loss']:.4f}", dice=f"{rec.get('dice', float('nan')):.4f}")
                    if on_epoch is not None:
                        on_epoch(dict(rec))
                else:
                    state["epoch"] = epoch
                if over and epoch < cfg.epochs:
                    stopped = "time budget"
                    break
        finally:
            if bar is not None:
                bar.close()
            dd.teardown(dist)
        best = state.get("best_eval") or {}
        return TrainResult(
            best_dice=float(state["best"]), best_epoch=int(state["best_epoch"]),
            per_class=dict(best.get("per_class", {})), per_source=dict(best.get("per_source", {})),
            history=list(state["history"]), weights=self.best_weights if self.best_weights.is_file() else None,
            stopped=stopped, per_case=dict(best.get("per_case", {})),
        )

    def _after_epoch(self, net: Any, device: Any, epoch: int, last: bool, rec: dict[str, Any],
                     state: dict[str, Any]) -> None:
        """Validate when due and keep the best weights (rank 0)."""
        cfg = self.config
        if self.val_cases and (epoch % cfg.val_every == 0 or last):
            ev = self.validate(net, device)
            rec["dice"] = ev["dice"]
            rec["dice_per_class"] = ev["per_class"]
            if ev["dice"] > state["best"]:
                state.update(best=ev["dice"], best_epoch=epoch, best_eval=ev)
                _save_state_dict(net, self.best_weights)
        elif not self.val_cases:
            _save_state_dict(net, self.best_weights)
            state.update(best_epoch=epoch)


def _lr_factor(epoch: int, epochs: int, warmup: int) -> float:
    """Linear warm-up to 1, then cosine decay to 2 % over the remaining epochs."""
    if warmup > 0 and epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    span = max(1, epochs - warmup)
    t = min(1.0, (epoch - warmup) / span)
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * t))


def _bar(total: int, done: int, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="epochs", file=sys.stderr, dynamic_ncols=True)


def _save_state_dict(net: Any, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.partial")
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp)
    os.replace(tmp, path)
