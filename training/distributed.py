"""DistributedDataParallel plumbing: joining and leaving the process group, the device of
this process, and the few collective calls `training.trainer.fit` makes.

Under ``torchrun`` (``WORLD_SIZE > 1``) every process trains on its share of each epoch
(gloo on CPU, nccl on GPU); only rank 0 evaluates and writes. Started plainly, everything
here is a no-op and `DistInfo` describes a world of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .errors import TrainingError

__all__ = ["DistInfo", "init_distributed", "resolve_device", "unwrap", "broadcast_flag",
           "barrier", "shutdown"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the training world (a world of one without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Whether this process evaluates, logs and writes the run folder."""
        return self.rank == 0


def init_distributed(device_name: str) -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return DistInfo(rank=rank, world=world, local_rank=local_rank)


def resolve_device(name: str, ddp: DistInfo) -> torch.device:
    """The device of a config's ``device`` (``auto`` picks CUDA when present).

    Raises:
        TrainingError: ``cuda`` asked for on a machine without CUDA.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("device=cuda but no CUDA device is available; use device=cpu")
        return torch.device("cuda", ddp.local_rank)
    return torch.device(name)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def broadcast_flag(value: bool, ddp: DistInfo, device: torch.device) -> bool:
    """Rank 0's ``value`` on every rank (e.g. early stopping decided by the evaluating rank)."""
    if not ddp.enabled:
        return value
    flag = torch.tensor([1 if value else 0], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def barrier(ddp: DistInfo) -> None:
    """Wait for every rank (no-op in a world of one)."""
    if ddp.enabled:
        dist.barrier()


def shutdown(ddp: DistInfo) -> None:
    """Wait for every rank, then leave the process group (no-op in a world of one)."""
    if ddp.enabled:
        dist.barrier()
        dist.destroy_process_group()
