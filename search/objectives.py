"""Objectives to maximize: an honest stand-in for accuracy until trained evidence exists.

- ``params``: parameter count. The literature on training-free NAS for vision transformers finds
  #params a hard baseline to beat; it is the default.
- ``macs``: multiply-accumulates.
- ``dss``: the DSS proxy of TF-TAS (Zhou et al., CVPR 2022, "Training-free Transformer
  Architecture Search"): synaptic diversity of the attention weights (nuclear norm of
  |dL/dW * W|) plus synaptic saliency of the FFN weights (sum of |dL/dW * W|), from one
  forward/backward pass of a seeded random model (eval-mode BN with unit scales, since the
  official init zeroes residual branches) on seeded random images. Built for ViTs, where CNN
  proxies transfer poorly. About 1 s per config on 2 CPU cores.
- ``zico``: ZiCo (Li et al., ICLR 2023, "Zero-Shot NAS via Inverse Coefficient of Variation on
  Gradients"): for every layer, the sum over its weights of mean |gradient| / standard deviation
  of the gradient across batches, summed in log over layers; from a few seeded batches of
  random images and labels, same BN treatment as ``dss``.
- ``accuracy``: validation top-1 after a short training on ``--data`` (``search.accuracy``);
  the only objective that is accuracy. docs/benchmarks.md ranks the proxies against it.

Reports name the objective; only ``accuracy`` is accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

import evit
from evit.config import ModelConfig


@dataclass(frozen=True)
class Objective:
    name: str
    description: str
    evaluate: Callable[[ModelConfig], float]
    unit: str = ""


def _params(config: ModelConfig) -> float:
    return float(evit.model_costs(config).params)


def _macs(config: ModelConfig) -> float:
    return float(evit.model_costs(config).macs)


def _scoring_model(config: ModelConfig, seed: int) -> torch.nn.Module:
    """A seeded random model in eval mode with unit BN scales.

    Eval mode: a batch-statistics BN would make d(sum of logits)/d(features) vanish. Unit
    scales: the official init zeroes the last BN of every residual branch, which would block
    every gradient into attention and FFN weights.
    """
    torch.manual_seed(seed)
    model = evit.create_model(config).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            torch.nn.init.ones_(m.weight)
    return model


def dss_score(config: ModelConfig, seed: int = 0, batch: int = 2) -> float:
    """DSS training-free score (higher is better); deterministic for a given seed."""
    model = _scoring_model(config, seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.in_chans, config.img_size, config.img_size, generator=gen)
    model(x).sum().backward()
    attention = 0.0
    ffn = 0.0
    for name, p in model.named_parameters():
        if p.grad is None or p.dim() < 2:
            continue
        saliency = (p.grad * p).detach().abs()
        if ".attn." in name:
            attention += float(torch.linalg.matrix_norm(saliency.flatten(1), ord="nuc"))
        elif ".pw1." in name or ".pw2." in name:
            ffn += float(saliency.sum())
    return attention + ffn


def zico_score(config: ModelConfig, seed: int = 0, batches: int = 4, batch: int = 4) -> float:
    """ZiCo training-free score (higher is better); deterministic for a given seed."""
    model = _scoring_model(config, seed)
    gen = torch.Generator().manual_seed(seed)
    criterion = torch.nn.CrossEntropyLoss()
    grads: dict[str, list[torch.Tensor]] = {}
    classes = max(config.num_classes, 2)
    for _ in range(batches):
        x = torch.randn(batch, config.in_chans, config.img_size, config.img_size, generator=gen)
        y = torch.randint(0, classes, (batch,), generator=gen)
        model.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        for name, p in model.named_parameters():
            if p.grad is not None and p.dim() >= 2:  # weights of convolutions and linears
                grads.setdefault(name, []).append(p.grad.detach().flatten().clone())
    score = 0.0
    for per_batch in grads.values():
        g = torch.stack(per_batch)
        std = g.std(dim=0)
        keep = std > 0
        if keep.any():
            total = float((g.abs().mean(dim=0)[keep] / std[keep]).sum())
            if total > 0:
                score += math.log(total)
    return score


OBJECTIVES: dict[str, Objective] = {
    "params": Objective("params", "parameter count (a proxy, not accuracy)", _params, "M"),
    "macs": Objective("macs", "multiply-accumulates (a proxy, not accuracy)", _macs, "M"),
    "dss": Objective("dss", "TF-TAS DSS training-free score (a proxy, not accuracy)", dss_score),
    "zico": Objective("zico", "ZiCo training-free score (a proxy, not accuracy)", zico_score),
}
PROXIES = tuple(OBJECTIVES)
ACCURACY = "accuracy"
OBJECTIVE_NAMES = (*PROXIES, ACCURACY)


def _not_a_proxy(config: ModelConfig) -> float:
    raise RuntimeError("the accuracy objective is scored by training (search.accuracy)")


ACCURACY_OBJECTIVE = Objective(
    ACCURACY, "validation top-1 after a short training on --data", _not_a_proxy, "%"
)


def get_objective(name: str) -> Objective:
    if name == ACCURACY:
        return ACCURACY_OBJECTIVE
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVE_NAMES)}")
    return OBJECTIVES[name]
