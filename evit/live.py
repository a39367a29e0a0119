"""Live weights for numeric checks: a fresh EfficientViT computes almost nothing.

The official initialization zeroes the last BatchNorm of every residual branch and the attention
biases, so in eval mode a freshly built model is the identity in every block: an export check,
a parity test or a quantization check on such weights compares only the stem, the patch merging
and the head. :func:`dead_branches` finds the branches that output exactly zero;
:func:`live_copy` returns a copy in which every branch and bias table contributes.

Example:
    >>> import evit
    >>> model = evit.create_model("m0").eval()
    >>> len(dead_branches(model)) > 0, dead_branches(live_copy(model))
    (True, [])
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from evit.config import ModelConfig
from evit.model import CascadedGroupAttention, ConvMlp, ConvNorm, EfficientViT, Residual


def _last_norm(branch: nn.Module) -> nn.BatchNorm2d | None:
    """The BN that ends a residual branch (its output scale), if the branch has one."""
    if isinstance(branch, ConvNorm):
        return branch.bn
    if isinstance(branch, ConvMlp):
        return branch.pw2.bn
    attn = getattr(branch, "attn", None)
    if isinstance(attn, CascadedGroupAttention):
        return attn.proj[1].bn
    return None


def dead_branches(model: EfficientViT) -> list[str]:
    """Names of residual branches whose output is exactly zero in eval mode."""
    dead = []
    for name, module in model.named_modules():
        if isinstance(module, Residual):
            bn = _last_norm(module.branch)
            if bn is not None and not bn.weight.any() and not bn.bias.any():
                dead.append(name)
    return dead


@torch.no_grad()
def live_copy(model: EfficientViT, seed: int = 0, batches: int = 4) -> EfficientViT:
    """A copy in which every branch, head and bias table takes part in the output.

    BN scales and shifts and the attention biases are drawn at random (branch-ending BNs get
    scales of either sign, 0.2-0.5, so that every block changes its input without the
    activations growing through a deep network), then the BN statistics are re-estimated on
    ``batches`` batches of random images, so that activations stay normalized and softmax
    inputs stay in a range where a wrong weight shows. Convolution and linear weights are kept.
    """
    from evit.inherit import recalibrate_batchnorm

    live = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    branch_ends = {
        id(bn)
        for m in live.modules()
        if isinstance(m, Residual) and (bn := _last_norm(m.branch)) is not None
    }

    def uniform(shape: torch.Size, low: float, high: float) -> torch.Tensor:
        return torch.rand(shape, generator=gen) * (high - low) + low

    for m in live.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if id(m) in branch_ends:
                sign = torch.randint(0, 2, m.weight.shape, generator=gen) * 2 - 1
                m.weight.copy_(uniform(m.weight.shape, 0.2, 0.5) * sign)
            else:
                m.weight.copy_(uniform(m.weight.shape, 0.5, 1.5))
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
        elif isinstance(m, CascadedGroupAttention):
            m.attention_biases.copy_(torch.randn(m.attention_biases.shape, generator=gen) * 0.5)
    cfg = live.config
    images = (
        torch.randn(8, cfg.in_chans, cfg.img_size, cfg.img_size, generator=gen)
        for _ in range(batches)
    )
    recalibrate_batchnorm(live, images)
    return live.train(model.training)


def live_model(config: ModelConfig, seed: int = 0) -> EfficientViT:
    """:func:`live_copy` of a model built from ``config`` whose weights are drawn from ``seed``
    too (the initialization uses torch's global generator, left as it was): the same network on
    every run, so that a check made on it reads the same every time. In eval mode."""
    import evit

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = evit.create_model(config).eval()
    return live_copy(model, seed=seed)
