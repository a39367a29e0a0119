"""Process-group set-up for ``torchrun`` (DistributedDataParallel), and the single-process case.

``torchrun --nproc-per-node N -m evit train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; without them training runs in one process. NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str | None = None) -> DistInfo:
    """Join the process group when launched by torchrun; pick the device.

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N``; default CUDA when available.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine")
        if world_size > 1 or device == "cuda":
            device = f"cuda:{local_rank if world_size > 1 else 0}"
        torch.cuda.set_device(torch.device(device))
    elif device != "cpu":
        raise ValueError(f"--device {device}: choose cpu, cuda or cuda:N")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(rank, world_size, local_rank, torch.device(device))


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum over processes (in place); a no-op in one process."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """True on every process if it is true on any (for errors raised on one rank)."""
    if not info.enabled:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def average_gradients(parameters: Iterable[torch.Tensor], info: DistInfo) -> None:
    """Average the gradients over processes, in one flat all-reduce; a no-op in one process.

    For loops that run several backward passes per step outside ``DistributedDataParallel``
    (the supernet's sandwich rule). Parameters without a gradient are left out, so every
    process must have the same ones (the same sub-networks): the flat buffers would not line
    up otherwise.
    """
    if not info.enabled:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def same_on_every_process(value: int, info: DistInfo) -> bool:
    """Whether an integer (a hash of something every process must agree on) is the same on all."""
    if not info.enabled:
        return True
    t = torch.tensor([value, -value], dtype=torch.int64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t[0]) == value and -int(t[1]) == value
