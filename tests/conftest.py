"""Shared fixtures: small deterministic inputs and fully randomized models."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import evit
from evit.config import ModelConfig, StageConfig

VARIANTS = [f"efficientvit_m{i}" for i in range(6)]


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and BN statistic a random value.

    The official init zeroes some BN weights (residual branches start at 0), which would hide
    bugs in those branches from a parity test.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
    return model


def max_rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def tiny_config(**overrides) -> ModelConfig:
    """A two-stage model that builds and runs in milliseconds."""
    stages = (
        StageConfig(
            embed_dim=16, depth=1, num_heads=2, key_dim=4, window_size=3, kernel_sizes=(3, 5)
        ),
        StageConfig(
            embed_dim=24, depth=1, num_heads=3, key_dim=4, window_size=3, kernel_sizes=(3, 3, 3)
        ),
    )
    fields = {"name": "tiny", "stages": stages, "img_size": 64, "num_classes": 10}
    fields.update(overrides)
    return ModelConfig(**fields).validate()


@pytest.fixture
def tiny() -> ModelConfig:
    return tiny_config()


@pytest.fixture
def tiny_model(tiny) -> evit.EfficientViT:
    return randomize(evit.create_model(tiny)).eval()


def random_config(rng: random.Random) -> ModelConfig:
    """A valid config drawn at random: 1-4 stages, padded windows, odd kernels."""
    img = rng.choice([64, 96, 128, 160])
    stages = []
    for i in range(rng.randint(1, 4)):
        heads = rng.randint(1, 4)
        dim = heads * rng.choice([8, 16, 24]) if i else 8 * heads * rng.randint(1, 3)
        stages.append(
            StageConfig(
                embed_dim=dim,
                depth=rng.randint(1, 2),
                num_heads=heads,
                key_dim=rng.choice([4, 8, 16]),
                window_size=rng.randint(1, img // 16),
                kernel_sizes=tuple(
                    rng.choice([1, 3, 5, 7]) for _ in range(heads + rng.randint(0, 1))
                ),
                ffn_ratio=rng.choice([1.0, 1.5, 2.0, 3.0]),
            )
        )
    return ModelConfig(
        "random", tuple(stages), img_size=img, num_classes=rng.choice([0, 10])
    ).validate()
