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

Those recipes are made for ImageNet-sized runs: scaled down linearly to a small batch, the paper's
learning rate (1.25e-4 at batch 64) barely moves a model in a few hundred steps. So the default
recipe is ``auto`` (:func:`choose_recipe`): the paper's recipe for a long run on ImageNet-sized
data, and otherwise :func:`short_recipe`, whose settings follow the run's length and the data's
size (learning rate for the batch, warm-up and EMA horizon as shares of the run). The search's
scoring trainings use the same function, so what a search ranks by is what ``evit train`` gives.
docs/benchmarks.md §16 has the sweep its constants come from.
"""

from __future__ import annotations

import dataclasses
import math
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
        name: the recipe these settings came from (``paper``, ``finetune``, ``short``), with
            any flag given on top.
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
    name: str = "paper"

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
FINETUNE = Recipe(batch_size=256, base_lr=1e-3, weight_decay=1e-8, name="finetune")
RECIPES = ("auto", "paper", "finetune", "short")

# short_recipe's constants (chosen by the sweep of docs/benchmarks.md §16)
# learning rate at a global batch of 64 (scaled by the square root of the batch ratio): SHORT_LR
# for runs of up to SHORT_LR_RAMP_EPOCHS epochs, rising linearly to twice that at twice as many
# epochs and staying there (the sweep's best: 2e-3 at 3 epochs, 4e-3 at 10 and 20, 8e-3 worse)
SHORT_LR = 2e-3
SHORT_LR_RAMP_EPOCHS = 5
SHORT_BATCH = 64
SHORT_WARMUP_SHARE = 0.05  # of the run's epochs
SHORT_MIN_LR_SHARE = 0.01  # the cosine's floor, as a share of the peak
SHORT_EMA_HORIZON_SHARE = 0.1  # the EMA averages over about this share of the run's steps
SHORT_EMA_MIN_HORIZON = 20  # steps
# auto takes the paper's recipe from here on (ImageNet-sized data and a long run)
PAPER_MIN_EPOCHS = 100


def default_recipe(finetune: bool) -> Recipe:
    """The paper's recipe, or the downstream fine-tuning recipe when starting from weights."""
    return FINETUNE if finetune else PAPER


def short_recipe(
    epochs: int, train_images: int, batch_size: int = SHORT_BATCH, finetune: bool = False
) -> Recipe:
    """Settings for a run of ``epochs`` over ``train_images`` at a global ``batch_size``.

    The learning rate is :data:`SHORT_LR` at batch 64 for runs of up to
    :data:`SHORT_LR_RAMP_EPOCHS` epochs and twice that from twice as many (linear between),
    scaled by the square root of the batch (the linear rule is for large batches); the warm-up
    is :data:`SHORT_WARMUP_SHARE` of the run; the cosine ends at :data:`SHORT_MIN_LR_SHARE` of
    the peak; the EMA's decay averages over :data:`SHORT_EMA_HORIZON_SHARE` of the run's steps;
    augmentation follows the data's size (``auto``). Starting from weights (``finetune``) keeps
    the weights' scale (weight decay 1e-8, as the authors fine-tune).
    """
    if epochs < 1 or train_images < 1 or batch_size < 1:
        raise ValueError(
            f"short recipe: epochs {epochs}, images {train_images}, batch {batch_size}: each "
            "must be >= 1"
        )
    longer = min(2.0, max(1.0, epochs / SHORT_LR_RAMP_EPOCHS))
    lr = SHORT_LR * longer * math.sqrt(batch_size / SHORT_BATCH)
    steps = epochs * math.ceil(train_images / batch_size)
    horizon = max(SHORT_EMA_MIN_HORIZON, SHORT_EMA_HORIZON_SHARE * steps)
    return Recipe(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=1e-8 if finetune else PAPER.weight_decay,
        warmup_epochs=SHORT_WARMUP_SHARE * epochs,
        min_lr=SHORT_MIN_LR_SHARE * lr,
        ema_decay=round(1.0 - 1.0 / horizon, 6),
        name="short",
    )


def choose_recipe(
    name: str,
    *,
    epochs: int | None,
    train_images: int,
    batch_size: int | None,
    finetune: bool = False,
    world_size: int = 1,
) -> tuple[Recipe, str]:
    """The recipe ``name`` resolves to for this run, and why, in one line.

    ``auto``: the paper's recipe (or the fine-tuning recipe from weights) for a run of at least
    :data:`PAPER_MIN_EPOCHS` epochs on at least ``PAPER_AUG_MIN_IMAGES`` images, else
    :func:`short_recipe`. ``epochs``/``batch_size`` None: the recipe's own defaults (the
    paper's 300 epochs and batch 256; 64 for ``short``).
    """
    if name not in RECIPES:
        raise ValueError(f"--recipe {name}: choose one of {', '.join(RECIPES)}")
    long_run = (epochs or PAPER.epochs) >= PAPER_MIN_EPOCHS
    big_data = train_images >= PAPER_AUG_MIN_IMAGES
    if name == "auto":
        name = ("finetune" if finetune else "paper") if long_run and big_data else "short"
        why = (
            f"auto -> {name} ({epochs or PAPER.epochs} epochs, {train_images:,} training images"
            f"; the paper's recipe from {PAPER_MIN_EPOCHS} epochs and "
            f"{PAPER_AUG_MIN_IMAGES:,} images)"
        )
    else:
        why = name
    if name in ("paper", "finetune"):
        recipe = PAPER if name == "paper" else FINETUNE
        recipe = recipe.replace(
            **{k: v for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v}
        )
        lr = recipe.scaled_lr(recipe.batch_size * world_size)
        return recipe, f"recipe {why}: lr {lr:.2e} (linear in the batch), the official settings"
    # out-of-range counts are left to Recipe.validate, which names the flag
    batch = max(1, batch_size or SHORT_BATCH)
    run_epochs = max(1, epochs or PAPER.epochs)
    recipe = short_recipe(run_epochs, max(1, train_images), batch * world_size, finetune)
    recipe = recipe.replace(batch_size=batch)
    steps = run_epochs * math.ceil(max(1, train_images) / (batch * world_size))
    return recipe, (
        f"recipe {why}: lr {recipe.lr:.2e} (batch {batch * world_size}), warm-up "
        f"{recipe.warmup_epochs:g} epochs, cosine floor {recipe.min_lr:.1e}, EMA decay "
        f"{recipe.ema_decay} (about {SHORT_EMA_HORIZON_SHARE:.0%} of {steps} steps), weight "
        f"decay {recipe.weight_decay:g}"
    )


# "did not learn": a best top-1 within this many points of chance, or a training loss that fell
# by less than this share from the first epoch to the last
CHANCE_MARGIN_POINTS = 5.0
MIN_LOSS_DROP = 0.1


def learning_warning(history: list[dict[str, Any]], num_classes: int) -> str | None:
    """One line when a finished run barely learned (None when it did)."""
    if not history:
        return None
    chance = 100.0 / num_classes
    best = max(max(h["val_top1"], h.get("ema_top1", 0.0)) for h in history)
    first, last = history[0]["train_loss"], history[-1]["train_loss"]
    drop = (first - last) / first if first > 0 else 0.0
    reasons = []
    if best - chance < CHANCE_MARGIN_POINTS:
        reasons.append(f"best validation top-1 {best:.1f} % is near chance ({chance:.1f} %)")
    if drop < MIN_LOSS_DROP:
        reasons.append(f"the training loss fell only {drop:.0%} ({first:.3f} -> {last:.3f})")
    if not reasons:
        return None
    return (
        f"the model barely learned: {'; '.join(reasons)}; try a higher --lr, more --epochs or "
        "a larger --img-size"
    )
