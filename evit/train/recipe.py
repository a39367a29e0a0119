"""Training recipes as data: the paper's ImageNet recipe and the authors' fine-tuning recipe.

Defaults follow the official training script (microsoft/Cream, EfficientViT ``main.py``):
AdamW, lr 1e-3 per 512 images scaled linearly with the global batch, weight decay 0.025 (none on
norms, biases and attention-bias tables), 5 warm-up epochs from 1e-6, cosine to 1e-5, label
smoothing 0.1, RandAugment ``rand-m9-mstd0.5-inc1``, mixup 0.8 / cutmix 1.0, random erasing
0.25, EMA of weights (decay 0.99996), adaptive gradient clipping 0.02. Fine-tuning on a
downstream dataset (``--init``), as the authors advise: batch 256, lr 1e-3, weight decay 1e-8,
the rest unchanged.

Deviations for short runs, each logged when it applies: the warm-up is capped at a fifth of the
run; the EMA decay ramps up with the step count (timm's EMA warm-up), so an EMA of a 10-epoch
run is not stuck near the initial weights; ``aug="auto"`` picks ``mild`` augmentation below
50,000 training images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from evit.train.data import AUGMENTATIONS

PAPER_AUG_MIN_IMAGES = 50_000


@dataclass(frozen=True)
class Recipe:
    """Every hyper-parameter of a run; saved in each checkpoint.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per process and step (the global batch is this x processes).
        base_lr: learning rate per 512 images of global batch (the official scaling rule).
        lr: absolute learning rate; overrides ``base_lr`` scaling when set.
        weight_decay: AdamW decoupled weight decay (not on norms, biases, attention biases).
        warmup_epochs: linear warm-up from ``warmup_lr``.
        warmup_lr: learning rate at step 0.
        min_lr: floor of the cosine schedule.
        label_smoothing: applied to the targets (also when mixed).
        aug: ``auto``, ``paper``, ``mild`` or ``none`` (see ``evit.train.data``).
        rand_augment: timm RandAugment spec used by ``paper``.
        mixup: mixup alpha (``paper`` only; 0 turns it off).
        cutmix: cutmix alpha (``paper`` only; 0 turns it off).
        random_erasing: probability (``paper`` only).
        ema_decay: EMA decay; 0 turns the EMA off.
        clip_grad: gradient clipping threshold; 0 turns it off.
        clip_mode: ``agc`` (adaptive, the official choice), ``norm`` or ``value``.
        drop_path: stochastic depth of the last block.
        img_size: training and evaluation input size; ``None`` keeps the config's.
        seed: seed of the initialization, data order, augmentation and split.
    """

    epochs: int = 300
    batch_size: int = 256
    base_lr: float = 1e-3
    lr: float | None = None
    weight_decay: float = 0.025
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    aug: str = "auto"
    rand_augment: str = "rand-m9-mstd0.5-inc1"
    mixup: float = 0.8
    cutmix: float = 1.0
    random_erasing: float = 0.25
    ema_decay: float = 0.99996
    clip_grad: float = 0.02
    clip_mode: str = "agc"
    drop_path: float = 0.0
    img_size: int | None = None
    seed: int = 0

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown recipe field(s) {', '.join(unknown)}")
        return cls(**data)

    def validate(self) -> Recipe:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: {rule}")

        need(self.epochs >= 1, "epochs", "must be >= 1")
        need(self.batch_size >= 1, "batch_size", "must be >= 1")
        need(self.base_lr > 0 and (self.lr is None or self.lr > 0), "base_lr", "must be > 0")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(self.warmup_epochs >= 0, "warmup_epochs", "must be >= 0")
        need(0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
        need(
            self.aug in ("auto", *AUGMENTATIONS), "aug", f"choose auto, {', '.join(AUGMENTATIONS)}"
        )
        need(self.mixup >= 0 and self.cutmix >= 0, "mixup", "alphas must be >= 0")
        need(0 <= self.random_erasing <= 1, "random_erasing", "must be in [0, 1]")
        need(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1) (0 = off)")
        need(self.clip_grad >= 0, "clip_grad", "must be >= 0 (0 = off)")
        need(self.clip_mode in ("agc", "norm", "value"), "clip_mode", "choose agc, norm, value")
        need(0 <= self.drop_path < 1, "drop_path", "must be in [0, 1)")
        need(self.img_size is None or self.img_size >= 16, "img_size", "must be >= 16")
        return self

    def resolved_aug(self, train_images: int) -> str:
        """``auto`` -> ``paper`` for ImageNet-sized data, ``mild`` for small data."""
        if self.aug != "auto":
            return self.aug
        return "paper" if train_images >= PAPER_AUG_MIN_IMAGES else "mild"

    def scaled_lr(self, global_batch: int) -> float:
        """The learning rate for a global batch (``lr`` when given, else linear scaling)."""
        return self.lr if self.lr is not None else self.base_lr * global_batch / 512


PAPER = Recipe()
FINETUNE = Recipe(batch_size=256, base_lr=1e-3, weight_decay=1e-8)


def default_recipe(finetune: bool) -> Recipe:
    """The paper's recipe, or the downstream fine-tuning recipe when starting from weights."""
    return FINETUNE if finetune else PAPER
