"""Multi-process training with ``torchrun`` (PyTorch DDP, as MONAI's own multi-GPU recipes do).

``torchrun --nproc_per_node N -m napari_cxseg.cli train ...`` (or ``--nnodes``/``--rdzv_endpoint``
for several machines) starts N copies of the same command; each reads the rank from the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). The :class:`Trainer`
then gives each process an equal share of the training cases (MONAI ``partition_dataset``,
padded so every rank takes the same number of steps), wraps the network in
``DistributedDataParallel`` (NCCL on CUDA, one GPU per process; gloo on CPU), averages the
loss it reports over the ranks, and validates, checkpoints and writes only on rank 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Dist:
    """Where this process stands in a run (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: Any = "cpu"

    @property
    def enabled(self) -> bool:
        """True when several processes train together."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """The process that validates, saves and reports."""
        return self.rank == 0


def setup(device: Any) -> tuple[Dist, Any]:
    """Join the process group torchrun describes (no-op without it); returns ``(dist, device)``.

    On CUDA each process takes the GPU of its local rank.
    """
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    import torch.distributed as td

    d = Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(d.local_rank)
        device = torch.device("cuda", d.local_rank)
        d.device = device
    if not td.is_initialized():
        td.init_process_group(backend="nccl" if cuda else "gloo")
    return d, device


def shard(items: Sequence[Any], dist: Dist) -> list[Any]:
    """This rank's equal share of ``items`` (padded by repetition so all shares have one length)."""
    if not dist.enabled:
        return list(items)
    from monai.data import partition_dataset

    parts = partition_dataset(list(items), num_partitions=dist.world, even_divisible=True, shuffle=False)
    return list(parts[dist.rank])


def wrap(net: Any, dist: Dist, device: Any) -> Any:
    """The network in ``DistributedDataParallel`` when distributed, else as it is."""
    if not dist.enabled:
        return net
    import torch

    ids = [device.index] if torch.device(device).type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)


def unwrap(net: Any) -> Any:
    """The plain network inside a DDP wrapper (its state dict has no ``module.`` prefix)."""
    return getattr(net, "module", net)


def mean_over_ranks(value: float, dist: Dist) -> float:
    """The mean of a number over all ranks."""
    if not dist.enabled:
        return value
    import torch
    import torch.distributed as td

    t = torch.tensor([float(value)], dtype=torch.float64, device=dist.device)
    td.all_reduce(t)
    return float(t.item()) / dist.world


def agree(flag: bool, dist: Dist) -> bool:
    """Rank 0's decision (stop now, cancel) for every rank."""
    if not dist.enabled:
        return flag
    import torch
    import torch.distributed as td

    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=dist.device)
    td.broadcast(t, src=0)
    return bool(t.item())


def teardown(dist: Dist) -> None:
    """Leave the process group."""
    if dist.enabled:
        import torch.distributed as td

        if td.is_initialized():
            td.barrier()
            td.destroy_process_group()
