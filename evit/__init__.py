"""evit: a faithful, fast EfficientViT (M0-M5 and any config) with exact cost counts.

Example:
    >>> import evit
    >>> model = evit.create_model("efficientvit_m0")
    >>> deployed = evit.fuse(model.eval())
    >>> evit.model_costs(model.config).params
    2349436
"""

from __future__ import annotations

from evit.config import ModelConfig, StageConfig, list_variants, load_config, save_yaml
from evit.costs import ModelCosts, model_costs
from evit.fusion import fuse
from evit.model import EfficientViT
from evit.weights import create_model, load_weights, save_checkpoint

__version__ = "0.1.0"

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
