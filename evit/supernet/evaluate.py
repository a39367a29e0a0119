"""Accuracy of one sub-network of a supernet, with its BatchNorm statistics re-estimated.

A supernet's running statistics are a mix over all the sub-networks trained, right for none of
them; once-for-all and BigNAS re-estimate them on a few training batches for each sub-network
before evaluating it. Here the sub-network is extracted first (a standalone copy), so the
supernet's own statistics are left alone.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from evit.config import ModelConfig
from evit.model import EfficientViT
from evit.supernet.network import Supernet
from evit.supernet.training import recalibrate_bn, resized
from evit.train.data import ImageDataset, Sample, collate, eval_transform
from evit.train.distributed import DistInfo
from evit.train.evaluate import evaluate


def extract_model(supernet: Supernet, config: ModelConfig) -> EfficientViT:
    """The sub-network of ``config`` as a standalone model on the supernet's device."""
    config, state = supernet.extract(config)
    device = next(supernet.parameters()).device
    model = EfficientViT(config).to(device)
    model.load_state_dict(state)
    return model


def evaluate_subnet(
    supernet: Supernet,
    config: ModelConfig,
    train_batches: Iterable[torch.Tensor],
    val_loader: DataLoader,
    *,
    info: DistInfo | None = None,
) -> float:
    """Validation top-1 (percent) of a sub-network after re-estimating its BN statistics.

    Args:
        supernet: the shared weights (left unchanged).
        config: the sub-network, contained in the supernet.
        train_batches: (B, C, H, W) training images for the statistics, the same fixed set for
            every sub-network; resized (bilinear) to ``config.img_size`` when another size.
        val_loader: the whole validation set, batches of ``evit.train.data.Batch`` (e.g.
            ``evit.train.evaluate.eval_loader`` at ``config.img_size``; other sizes are
            resized bilinearly, which is close to but not the evaluation preprocessing).
        info: with several processes, each evaluates its shard and the counts are summed.
    """
    model = extract_model(supernet, config)
    device = next(model.parameters()).device
    size = config.img_size
    recalibrate_bn(model, (resized(x.to(device), size) for x in train_batches))
    classes = [str(i) for i in range(config.num_classes)]
    return evaluate(_Resizing(model, size), val_loader, classes, info).top1


class _Resizing(nn.Module):
    """``model`` behind a bilinear resize to its input size (a no-op at that size)."""

    def __init__(self, model: nn.Module, size: int) -> None:
        super().__init__()
        self.model = model
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(resized(x, self.size))


class FixedImages:
    """The same training images, in the same batches, each time it is iterated (on ``device``):
    what every evaluated sub-network's BN statistics are re-estimated on.
    ``itertools.islice(images, k)`` gives the first ``k`` batches."""

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for batch in self.loader:
            if len(batch.targets):
                yield batch.images.to(self.device, non_blocking=True)


def fixed_training_images(
    samples: list[Sample],
    img_size: int,
    batches: int,
    batch_size: int,
    seed: int,
    device: torch.device | None = None,
    workers: int = 0,
) -> FixedImages:
    """``batches`` batches of training images chosen once with ``seed`` (the same choice in
    every process), with the evaluation preprocessing at ``img_size`` (no augmentation)."""
    count = min(len(samples), batches * batch_size)
    chosen = sorted(random.Random(seed).sample(range(len(samples)), count))
    dataset = ImageDataset([samples[i] for i in chosen], eval_transform(img_size))
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate
    )
    return FixedImages(loader, device or torch.device("cpu"))
