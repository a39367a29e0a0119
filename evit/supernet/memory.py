"""Will a supernet's training step fit? An estimate from the config, checked before training.

A sandwich step runs the largest network first and frees its graph before the smaller ones, so
its peak is the largest network's training step: the activations autograd keeps for the
backward pass, the gradient buffers of the backward pass, and the per-parameter state.

The activations are estimated from :func:`evit.costs.model_costs`'s ``activation_bytes`` (the
fp32 traffic of the deployed graph at the batch): one training step of M0, M3 and M5 at 128-224
px measured a peak resident-memory growth of 0.6-0.75 times that figure on the CPU (PyTorch
2.14), so :data:`ACTIVATION_FACTOR` 1.0 leaves a margin. The parameters count
:data:`STATE_COPIES` times (weights, gradients, AdamW's two moments, the EMA, the checkpoint's
copy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from evit.config import ModelConfig
from evit.costs import model_costs

ACTIVATION_FACTOR = 1.0
STATE_COPIES = 6
BYTES = 4  # fp32
GIB = 1 << 30


@dataclass(frozen=True)
class StepMemory:
    """The estimated peak of one training step, in bytes."""

    activations: int
    state: int

    @property
    def total(self) -> int:
        return self.activations + self.state


def training_step_memory(config: ModelConfig, batch: int) -> StepMemory:
    """Estimated peak memory of a training step of ``config`` at ``batch`` images."""
    costs = model_costs(config, batch=batch)
    return StepMemory(
        activations=round(ACTIVATION_FACTOR * costs.activation_bytes),
        state=STATE_COPIES * BYTES * costs.params,
    )


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new allocation on ``device``: the GPU's free memory, or the machine's
    available RAM (``MemAvailable`` of /proc/meminfo, else psutil's); None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def processes_sharing_memory(device: torch.device, world_size: int) -> int:
    """Training processes that share this memory: all local ones on the CPU, one per GPU."""
    if device.type == "cuda":
        return 1
    return int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))


def memory_shortfall(
    config: ModelConfig, batch: int, device: torch.device, world_size: int = 1
) -> str | None:
    """Why a training step of ``config`` at ``batch`` images does not fit, in one line, or
    None when it fits (or the free memory is unknown)."""
    free = available_memory(device)
    if free is None:
        return None
    need = training_step_memory(config, batch)
    processes = processes_sharing_memory(device, world_size)
    if need.total * processes <= free:
        return None
    where = "GPU memory" if device.type == "cuda" else "RAM"
    each = f" in each of {processes} processes" if processes > 1 else ""
    return (
        f"the largest config needs about {need.total / GIB:.2f} GiB for a training step at "
        f"--batch-size {batch} and {config.img_size} px{each} (activations "
        f"{need.activations / GIB:.2f} GiB, weights and optimizer {need.state / GIB:.2f} GiB); "
        f"{free / GIB:.2f} GiB of {where} is available: lower --batch-size or --img-size"
    )
