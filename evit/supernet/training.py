"""Training a supernet: the sandwich rule with in-place distillation, and BN re-estimation.

The sandwich rule (Yu and Huang, slimmable networks, ICCV 2019; BigNAS, ECCV 2020) trains in
each step the largest network on the labels and a few sub-networks (typically the smallest and
some random ones) on the largest network's predictions, accumulating all their gradients into
one optimizer step on the shared weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from evit.config import ModelConfig
from evit.inherit import recalibrate_batchnorm
from evit.supernet.network import SubNetwork, Supernet


def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset every BatchNorm's statistics and re-estimate them on ``batches``.

    A train-mode forward without gradients per batch, with a cumulative average (momentum
    None), so the statistics end as the mean over all batches. ``model`` is a
    :class:`~evit.supernet.network.SubNetwork` (``supernet.subnet(config)``) or an extracted
    standalone model. On a sub-network it resets the whole supernet's statistics and
    re-estimates those the sub-network uses: do it right before evaluating that sub-network,
    or extract the sub-network first to leave the supernet's statistics alone.

    Returns:
        The number of images used.
    """
    return recalibrate_batchnorm(model, batches)


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross entropy against a distribution: ``-(p * log_softmax(logits)).sum(-1).mean()``."""
    return -(target_probs * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


@dataclass(frozen=True)
class SandwichLosses:
    """The losses of one sandwich step.

    Attributes:
        largest: the largest network's loss on the labels.
        others: each sampled config's loss, in the order given (against the largest
            network's predictions with distillation, else against the labels).
    """

    largest: float
    others: tuple[float, ...]


def sandwich_step(
    supernet: Supernet,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    sample_configs: Sequence[ModelConfig],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    distill: bool = True,
    *,
    before_step: Callable[[], None] | None = None,
    subnet: Callable[[ModelConfig], SubNetwork] | None = None,
) -> SandwichLosses:
    """One training step of the sandwich rule on the shared weights.

    The largest config (``supernet.max_config``) learns from ``labels`` with ``loss_fn``; then
    each of ``sample_configs`` learns from the largest's softmax output, detached (in-place
    distillation), or from ``labels`` when ``distill`` is False. Each network sees ``images``
    resized to its config's input size (bilinear), so sampled configs may vary the resolution.
    Gradients of all the losses accumulate; the optimizer steps once.

    Args:
        supernet: the shared weights, set to training mode here.
        images: (B, C, H, W) batch.
        labels: what ``loss_fn`` takes as targets for the largest network.
        optimizer: an optimizer over ``supernet.parameters()``.
        sample_configs: the other sub-networks of this step, e.g. the smallest and two random.
        loss_fn: the hard-label loss, ``loss_fn(logits, labels)``.
        distill: sub-networks learn the largest's predictions rather than the labels.
        before_step: called once every gradient is accumulated, before the optimizer steps
            (to average gradients over processes, or clip them).
        subnet: builds the sub-network of a config (default ``supernet.subnet``); a training
            loop passes one that keeps the sub-networks it runs every step (building one costs
            about a forward pass of a small batch).
    """
    build = subnet if subnet is not None else supernet.subnet
    supernet.train()
    optimizer.zero_grad(set_to_none=True)
    largest = build(supernet.max_config).train()
    logits = largest(resized(images, supernet.max_config.img_size))  # (B, num_classes)
    loss = loss_fn(logits, labels)
    loss.backward()
    soft_labels = logits.detach().softmax(dim=-1)
    others = []
    for config in sample_configs:
        sub = build(config).train()
        out = sub(resized(images, config.img_size))
        sub_loss = soft_cross_entropy(out, soft_labels) if distill else loss_fn(out, labels)
        sub_loss.backward()  # accumulates; frees this sub-network's graph before the next
        others.append(sub_loss.item())
    if before_step is not None:
        before_step()
    optimizer.step()
    return SandwichLosses(loss.item(), tuple(others))


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size), bilinear; the same tensor when already that size."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
