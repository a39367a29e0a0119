"""Validation: top-1/top-5, loss, images/s and per-class accuracy, on one or many processes.

With several processes each evaluates a disjoint strided shard (no padding, so no image is
counted twice) and the sums are all-reduced.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from evit.train.data import (
    BadImageCounter,
    DecodedImages,
    ImageDataset,
    Sample,
    collate,
    eval_transform,
)
from evit.train.distributed import DistInfo, all_reduce_sum


@dataclass(frozen=True)
class EvalResult:
    top1: float  # percent
    top5: float
    loss: float  # mean cross-entropy (no smoothing)
    images: int
    images_per_s: float
    per_class: dict[str, float] = field(default_factory=dict)  # class name -> top-1 percent
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
            "images": self.images,
            "images_per_s": self.images_per_s,
            "per_class": self.per_class,
            "skipped": self.skipped,
        }


def eval_loader(
    samples: list[Sample],
    img_size: int,
    batch_size: int,
    workers: int,
    info: DistInfo | None = None,
    pin_memory: bool = False,
    images: DecodedImages | None = None,
) -> DataLoader:
    """A loader over this process's shard of ``samples`` with the evaluation preprocessing
    (``images``: decoded images kept across runs, see :class:`ImageDataset`)."""
    dataset: Any = ImageDataset(samples, eval_transform(img_size), images=images)
    if info is not None and info.enabled:
        dataset = Subset(dataset, range(info.rank, len(samples), info.world_size))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    class_names: list[str],
    info: DistInfo | None = None,
    bad_images: BadImageCounter | None = None,
    amp: bool = False,
) -> EvalResult:
    """Accuracy of ``model`` (put in eval mode, restored afterwards) over ``loader``."""
    device = info.device if info is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    n = len(class_names)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # correct1, correct5, loss, count
    per_class = torch.zeros(2, n, dtype=torch.float64, device=device)  # correct, count
    skipped = 0
    start = time.perf_counter()
    for batch in loader:
        skipped += len(batch.bad)
        if bad_images is not None:
            bad_images.add(batch.bad)
        if not len(batch.targets):
            continue
        x = batch.images.to(device, non_blocking=True)
        y = batch.targets.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = model(x).float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit1 = top[:, 0] == y
        sums[0] += hit1.sum()
        sums[1] += (top == y[:, None]).any(dim=1).sum()
        sums[2] += F.cross_entropy(logits, y, reduction="sum")
        sums[3] += len(y)
        per_class[0].index_add_(0, y, hit1.double())
        per_class[1].index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
    elapsed = time.perf_counter() - start
    if info is not None:
        all_reduce_sum(sums, info)
        all_reduce_sum(per_class, info)
    model.train(was_training)
    count = max(sums[3].item(), 1.0)
    return EvalResult(
        top1=100 * sums[0].item() / count,
        top5=100 * sums[1].item() / count,
        loss=sums[2].item() / count,
        images=int(sums[3].item()),
        images_per_s=sums[3].item() / max(elapsed, 1e-9),
        per_class={
            name: 100 * per_class[0, i].item() / max(per_class[1, i].item(), 1.0)
            for i, name in enumerate(class_names)
        },
        skipped=skipped,
    )
