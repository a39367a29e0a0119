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

Reports name the objective; none of these is accuracy.
"""

from __future__ import annotations

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


def dss_score(config: ModelConfig, seed: int = 0, batch: int = 2) -> float:
    """DSS training-free score (higher is better); deterministic for a given seed."""
    torch.manual_seed(seed)
    # eval mode: a batch-statistics BN would make d(sum of logits)/d(features) vanish
    model = evit.create_model(config).eval()
    # the official init zeroes the last BN of every residual branch, which would block every
    # gradient into attention and FFN weights: score the network with unit BN scales instead
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            torch.nn.init.ones_(m.weight)
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


OBJECTIVES: dict[str, Objective] = {
    "params": Objective("params", "parameter count (a proxy, not accuracy)", _params, "M"),
    "macs": Objective("macs", "multiply-accumulates (a proxy, not accuracy)", _macs, "M"),
    "dss": Objective("dss", "TF-TAS DSS training-free score (a proxy, not accuracy)", dss_score),
}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]
