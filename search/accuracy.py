"""The accuracy objective: each trial trains its candidate briefly and scores validation top-1.

A :class:`TrainBudget` is the short training every candidate gets (the same for all, so that
accuracies rank architectures): ``epochs`` over ``DIR/train`` with ``evit train``'s loop (mild
augmentation, warm-up + cosine, EMA), scored on ``DIR/val``. ``img_size`` is a *proxy*
resolution: a candidate for a 224-pixel input trains and validates at ``img_size`` pixels, and a
candidate for another input size at the same fraction of it (rounded to a multiple of 16), so
that a larger input still sees more pixels. Without it, candidates train at their own size.

:class:`EarlyStopRule` ends hopeless trials: at the check epoch, a trial whose validation top-1
is more than ``margin`` points below what an already finished trial of lower or equal latency
reached *at the same epoch* stops there (Optuna's pruners do not support multi-objective
studies). The time it saves is recorded on the trial.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evit.config import PATCH_SIZE, ModelConfig

REFERENCE_IMG_SIZE = 224  # the input size of M0-M5, which --train-img-size stands in for
MIN_TRAIN_IMG_SIZE = 32


class EarlyStopped(Exception):
    """Raised from the epoch callback to end a hopeless trial's training."""

    def __init__(self, epoch: int, top1: float, beaten_by: EarlyRecord) -> None:
        super().__init__(
            f"top-1 {top1:.1f} % after epoch {epoch}, while trial {beaten_by.trial} reached "
            f"{beaten_by.top1:.1f} % there at {beaten_by.latency_ms:.3f} ms"
        )
        self.epoch, self.top1, self.beaten_by = epoch, top1, beaten_by


@dataclass(frozen=True)
class EarlyRecord:
    """A finished trial's validation top-1 at the check epoch, and its latency."""

    trial: int
    latency_ms: float
    top1: float


@dataclass(frozen=True)
class EarlyStopRule:
    """Stop a trial at ``check_epoch`` when a faster finished trial was clearly better there.

    Attributes:
        check_epoch: the epoch (1-based) after which the rule is applied; 0 turns it off.
        margin: points of top-1 a faster trial must lead by (validation noise is a few points
            on small sets).
    """

    check_epoch: int
    margin: float = 2.0

    @classmethod
    def for_budget(cls, epochs: int, fraction: float, margin: float) -> EarlyStopRule:
        if not 0 <= fraction < 1:
            raise ValueError(f"--early-stop {fraction}: must be in [0, 1) (0 turns it off)")
        if margin < 0:
            raise ValueError(f"--early-stop-margin {margin}: must be >= 0 points")
        check = math.ceil(fraction * epochs) if fraction > 0 else 0
        return cls(check if 0 < check < epochs else 0, margin)

    def beaten_by(
        self, latency_ms: float, top1: float, finished: Iterable[EarlyRecord]
    ) -> EarlyRecord | None:
        """The best finished trial at most as slow that leads by more than the margin."""
        better = [r for r in finished if r.latency_ms <= latency_ms and r.top1 > top1 + self.margin]
        return max(better, key=lambda r: r.top1) if better else None


@dataclass(frozen=True)
class TrainBudget:
    """The short training each candidate gets; part of a study's settings.

    Attributes:
        data: ImageFolder root with ``train/`` and ``val/``.
        epochs: passes over ``train``.
        img_size: proxy resolution of a 224-pixel candidate (None: the candidate's own).
        batch_size: images per step.
        lr: learning rate; None: the short recipe's (``evit.train.recipe.short_recipe``, the
            recipe ``evit train`` takes for a short run on small data, so that a search ranks by
            what a user's own training gives).
        init: checkpoint every candidate inherits its weights from (``evit.inherit``).
        early_stop: fraction of the epochs after which :class:`EarlyStopRule` applies.
        early_stop_margin: its margin in points.
        seed: training seed (the same for every candidate).
        threads: CPU threads for training.
        device: training device (default CUDA when available, else the CPU).
        confirm: after the search, the pick's contenders (this many of the most accurate
            within the budget), M0 and the most accurate candidate within M0's latency train
            again with seed + 1 and are ranked by the mean of both seeds (0 turns it off).
    """

    data: Path
    epochs: int = 3
    img_size: int | None = None
    batch_size: int = 64
    lr: float | None = None
    init: Path | None = None
    early_stop: float = 0.5
    early_stop_margin: float = 3.0
    seed: int = 0
    threads: int | None = None
    device: str | None = None
    confirm: int = 2

    def check(self) -> list[str]:
        """Validate flags and data now, not in the first trial; return the class names.

        Raises:
            ValueError: one line naming the flag or folder and what is allowed.
        """
        if self.epochs < 1:
            raise ValueError(f"--train-epochs {self.epochs}: must be >= 1")
        if self.batch_size < 1:
            raise ValueError(f"--train-batch-size {self.batch_size}: must be >= 1")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"--train-lr {self.lr}: must be > 0")
        if self.confirm < 0:
            raise ValueError(f"--confirm {self.confirm}: must be >= 0 (0 turns it off)")
        if self.img_size is not None and (
            self.img_size < MIN_TRAIN_IMG_SIZE or self.img_size % PATCH_SIZE
        ):
            raise ValueError(
                f"--train-img-size {self.img_size}: must be a multiple of {PATCH_SIZE} and "
                f">= {MIN_TRAIN_IMG_SIZE}"
            )
        self.rule()
        root = Path(self.data)
        if not root.is_dir():
            raise ValueError(f"--data {root}: no such folder (expected DIR/train and DIR/val)")
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise ValueError(
                    f"--data {root}: no {split}/ folder; the accuracy objective trains on "
                    "DIR/train and scores on DIR/val (ImageFolder layout: DIR/<split>/<class>/*)"
                )
        from evit.train.data import DataError, resolve_data

        try:
            split = resolve_data(root, None, 0.1, self.seed)
        except DataError as e:
            raise ValueError(f"--data {root}: {e}") from None
        if len(split.train) < self.batch_size:
            raise ValueError(
                f"--data {root}: {len(split.train)} training images are fewer than the batch "
                f"{self.batch_size}; lower --train-batch-size"
            )
        if self.init is not None and not Path(self.init).is_file():
            raise ValueError(f"--init {self.init}: no such file")
        return split.classes

    def rule(self) -> EarlyStopRule:
        return EarlyStopRule.for_budget(self.epochs, self.early_stop, self.early_stop_margin)

    def train_img_size(self, img_size: int) -> int:
        """The training resolution of a candidate whose input is ``img_size``."""
        if self.img_size is None:
            return img_size
        scaled = self.img_size * img_size / REFERENCE_IMG_SIZE
        return max(MIN_TRAIN_IMG_SIZE, PATCH_SIZE * round(scaled / PATCH_SIZE))

    def check_sizes(self, img_sizes: Iterable[int]) -> None:
        """Distinct input sizes must train at distinct sizes, or the smaller one wins unfairly.

        Raises:
            ValueError: two input sizes of the space map to one training size.
        """
        seen: dict[int, int] = {}
        for size in sorted(img_sizes):
            t = self.train_img_size(size)
            if t in seen:
                raise ValueError(
                    f"--train-img-size {self.img_size}: img_size {seen[t]} and {size} of the "
                    f"space would both train at {t} px; give a larger --train-img-size or "
                    "fewer img_size choices"
                )
            seen[t] = size

    def settings(self) -> dict[str, Any]:
        """What makes two accuracies comparable (stored with the study)."""
        return {
            "data": str(Path(self.data).resolve()),
            "epochs": self.epochs,
            "train_img_size": self.img_size,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "init": str(Path(self.init).resolve()) if self.init else None,
            "seed": self.seed,
        }

    def recipe(self, config: ModelConfig) -> Any:
        """``evit train``'s short recipe for this run (``--train-lr`` on top, if given)."""
        from evit.train.recipe import short_recipe

        recipe = short_recipe(
            self.epochs, self.train_images(), self.batch_size, finetune=self.init is not None
        )
        return recipe.replace(
            lr=self.lr if self.lr is not None else recipe.lr,
            min_lr=recipe.min_lr if self.lr is None else recipe.min_lr / recipe.lr * self.lr,
            aug="mild",
            img_size=self.train_img_size(config.img_size),
            seed=self.seed,
        )

    def train_images(self) -> int:
        """How many training images ``data`` holds (the recipe follows the data's size)."""
        from evit.train.data import resolve_data

        return len(resolve_data(self.data).train)


@dataclass
class TrainOutcome:
    top1: float  # best validation top-1 of the model or its EMA over the epochs
    history: list[dict[str, Any]]
    checkpoint: Path
    seconds: float


EpochHook = Callable[[int, dict[str, Any]], None]


def train_candidate(
    config: ModelConfig, budget: TrainBudget, out: str | os.PathLike, on_epoch: EpochHook | None
) -> TrainOutcome:
    """Train ``config`` under ``budget`` into ``out`` (``best.pth``, ``metrics.jsonl``).

    ``on_epoch(epoch, metrics)`` may raise :class:`EarlyStopped` to end the training.
    """
    import time

    from evit.train.loop import train

    start = time.perf_counter()
    result = train(_train_options(config, budget, out), on_epoch)
    return TrainOutcome(
        result.best_top1, result.history, result.checkpoint, time.perf_counter() - start
    )


def estimate_training(config: ModelConfig, budget: TrainBudget) -> float:
    """Seconds :func:`train_candidate` would take for ``config`` here, from a few timed steps
    (``evit.train.loop.estimate_seconds``)."""
    from evit.train.loop import estimate_seconds

    return estimate_seconds(_train_options(config, budget, "unused"))


def _train_options(config: ModelConfig, budget: TrainBudget, out: str | os.PathLike) -> Any:
    from evit.train.loop import TrainOptions

    return TrainOptions(
        model=config,
        data=budget.data,
        out=out,
        recipe=budget.recipe(config),
        init=budget.init,
        threads=budget.threads,
        device=budget.device,
        progress=False,
        curves=False,
        keep_decoded=True,  # every trial trains on the same files
    )


class ConfirmLog:
    """Top-1 of candidates trained again with another seed, one JSON line each, so that a
    resumed or repeated search does not train them again. Lines of other training settings
    (another data folder, epochs, ...) are ignored."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path, self.settings = path, settings
        self.scores: dict[tuple[str, int], float] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                    if row["settings"] == settings:
                        self.scores[(row["arch"], int(row["seed"]))] = float(row["top1"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a crash: that training runs again

    def get(self, arch: str, seed: int) -> float | None:
        return self.scores.get((arch, seed))

    def append(self, arch: str, seed: int, top1: float, seconds: float) -> None:
        row = {"arch": arch, "seed": seed, "top1": top1, "seconds": round(seconds, 2)}
        with open(self.path, "a") as f:
            f.write(json.dumps({**row, "settings": self.settings}) + "\n")
        self.scores[(arch, seed)] = top1


def epoch_top1(record: dict[str, Any]) -> float:
    """An epoch's validation top-1: the better of the model and its EMA (as ``best.pth``)."""
    return max(record["val_top1"], record.get("ema_top1", -1.0))


def check_init(budget: TrainBudget, configs: Iterable[ModelConfig], num_classes: int) -> None:
    """Inherit ``--init`` into the given configs (the space's extremes) before any trial.

    Raises:
        ValueError: one line naming the tensor and both shapes.
    """
    if budget.init is None:
        return
    import evit
    from evit.inherit import inherit_weights

    for config in configs:
        model = evit.create_model(
            config.replace(num_classes=num_classes).at_img_size(
                budget.train_img_size(config.img_size)
            )
        )
        try:
            inherit_weights(model, budget.init)
        except (ValueError, KeyError, RuntimeError) as e:
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise ValueError(
                first if first.startswith("--init") else f"--init {budget.init}: {first}"
            ) from None
