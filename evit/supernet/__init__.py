"""Supernet: one set of EfficientViT weights shared by every config of a search space.

Once-for-all (Cai et al., ICLR 2020) and BigNAS (Yu et al., ECCV 2020) train one network whose
sub-networks are searched afterwards without retraining; this is that network for EfficientViT.

Design:
- The space is plain data: the supernet takes its largest :class:`~evit.config.ModelConfig`
  and accepts any config *contained* in it (:func:`check_contained`: per stage no more blocks,
  heads, channels per head, key channels, FFN channels, window, or per-head Q kernel; any input
  size). ``evit`` imports no sibling, so ``search`` turns its space into a largest config, e.g.
  ``enclosing_config([space.largest(), ...])``; :func:`enclosing_config` takes per-head kernel
  maxima, which a space's ``largest()`` (one of its listed kernel tuples) may not.
- One implementation: a sub-network is the ordinary :class:`~evit.model.EfficientViT` of its
  config, built on the ``meta`` device and run with ``torch.func.functional_call`` on slices
  and gathers of the shared tensors (:mod:`evit.supernet.network`), so gradients reach the
  shared parameters and :meth:`Supernet.extract` gives a standalone model that computes the
  same logits.
- Which entries a sub-network keeps follows :mod:`evit.inherit`: the first blocks of a stage;
  of a stage's embedding, the leading channels of each of the first heads' chunks (every head
  keeps the channels it was trained on, and the cascade's value-into-next-chunk sum stays
  aligned); the leading Q, K and V channels of each head; the centre of a larger Q kernel
  (as once-for-all); the attention-bias entries of the offsets a smaller window has.
  Hidden layers (stem, FFN, patch merging, squeeze-excite) keep their first k channels
  rather than inheritance's BN-scale ranking, which would move with every step;
  :func:`sort_channels` reorders them by importance so the first k are the strongest.
- Training: :func:`sandwich_step` (largest on labels, others distilled from it in place) and
  :func:`recalibrate_bn` before evaluating a sub-network (:func:`evaluate_subnet` does both on
  an extracted copy); :func:`train_supernet` (``python -m evit supernet train``) is the whole
  run on a search space's YAML (:func:`read_space`, torch-free), with the recipe, EMA, exact
  resume and ``torchrun`` of ``evit train``, into a checkpoint :func:`load_supernet` reads.

Example:
    >>> import torch
    >>> from evit.config import load_config
    >>> from evit.supernet import Supernet, enclosing_config
    >>> supernet = Supernet(enclosing_config([load_config("m0"), load_config("m1")]))
    >>> m0 = load_config("m0").at_img_size(64)
    >>> supernet.subnet(m0).eval()(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 1000])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# names are imported on first use (PEP 562), so that ``evit.supernet.space`` and
# ``evit.supernet.contain`` (configs only) do not import PyTorch
_EXPORTS = {
    "sort_channels": "evit.supernet.channels",
    "check_contained": "evit.supernet.contain",
    "enclosing_config": "evit.supernet.contain",
    "full_window_img_size": "evit.supernet.contain",
    "Cut": "evit.supernet.network",
    "SubNetwork": "evit.supernet.network",
    "Supernet": "evit.supernet.network",
    "SandwichLosses": "evit.supernet.training",
    "recalibrate_bn": "evit.supernet.training",
    "sandwich_step": "evit.supernet.training",
    "soft_cross_entropy": "evit.supernet.training",
    "SupernetSpace": "evit.supernet.space",
    "read_space": "evit.supernet.space",
    "evaluate_subnet": "evit.supernet.evaluate",
    "load_supernet": "evit.supernet.checkpoint",
    "save_supernet": "evit.supernet.checkpoint",
    "SupernetOptions": "evit.supernet.loop",
    "train_supernet": "evit.supernet.loop",
}

__all__ = [
    "Cut",
    "SandwichLosses",
    "SubNetwork",
    "Supernet",
    "SupernetOptions",
    "SupernetSpace",
    "check_contained",
    "enclosing_config",
    "evaluate_subnet",
    "full_window_img_size",
    "load_supernet",
    "read_space",
    "recalibrate_bn",
    "sandwich_step",
    "save_supernet",
    "soft_cross_entropy",
    "sort_channels",
    "train_supernet",
]

if TYPE_CHECKING:
    from evit.supernet.channels import sort_channels
    from evit.supernet.checkpoint import load_supernet, save_supernet
    from evit.supernet.contain import check_contained, enclosing_config, full_window_img_size
    from evit.supernet.evaluate import evaluate_subnet
    from evit.supernet.loop import SupernetOptions, train_supernet
    from evit.supernet.network import Cut, SubNetwork, Supernet
    from evit.supernet.space import SupernetSpace, read_space
    from evit.supernet.training import (
        SandwichLosses,
        recalibrate_bn,
        sandwich_step,
        soft_cross_entropy,
    )


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'evit.supernet' has no attribute {name!r}")
