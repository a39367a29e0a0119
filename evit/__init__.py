"""evit: a faithful, fast EfficientViT (M0-M5 and any config) with exact cost counts.

Example:
    >>> import evit
    >>> model = evit.create_model("efficientvit_m0")
    >>> deployed = evit.fuse(model.eval())
    >>> evit.model_costs(model.config).params
    2349436

Names are imported on first use (PEP 562), so ``import evit.config`` or reading a config does
not import PyTorch: a deployment that only runs exported files stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ModelConfig": "evit.config",
    "StageConfig": "evit.config",
    "list_variants": "evit.config",
    "load_config": "evit.config",
    "save_yaml": "evit.config",
    "ModelCosts": "evit.costs",
    "model_costs": "evit.costs",
    "fuse": "evit.fusion",
    "EfficientViT": "evit.model",
    "create_model": "evit.weights",
    "load_weights": "evit.weights",
    "save_checkpoint": "evit.weights",
}

__all__ = [
    "EfficientViT",
    "ModelConfig",
    "ModelCosts",
    "StageConfig",
    "__version__",
    "create_model",
    "fuse",
    "list_variants",
    "load_config",
    "load_weights",
    "model_costs",
    "save_checkpoint",
    "save_yaml",
]

if TYPE_CHECKING:
    from evit.config import ModelConfig, StageConfig, list_variants, load_config, save_yaml
    from evit.costs import ModelCosts, model_costs
    from evit.fusion import fuse
    from evit.model import EfficientViT
    from evit.weights import create_model, load_weights, save_checkpoint


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in {"config", "costs", "fusion", "model", "weights", "files", "live", "inherit"}:
        return importlib.import_module(f"evit.{name}")
    raise AttributeError(f"module 'evit' has no attribute {name!r}")
