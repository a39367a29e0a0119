"""Training a supernet on a search space: ``python -m evit supernet train``.

Each step follows the sandwich rule (BigNAS): the largest config of the space learns from the
labels (label smoothing, or mixup targets, as ``evit train``), the smallest and ``n`` random
configs of the space learn from the largest's predictions (in-place distillation); all their
gradients accumulate into one optimizer step on the shared weights
(:func:`~evit.supernet.training.sandwich_step`).

Built from ``evit train``'s pieces (:mod:`evit.train.loop`): the recipe (``--recipe auto``:
learning rate, warm-up, cosine, weight decay, label smoothing, augmentation), AdamW without
decay on norms, biases and attention biases, gradient clipping, the EMA of the weights, the
per-sample augmentation seeds, ``torchrun`` (gloo on the CPU, NCCL on CUDA), atomic
checkpoints. With several processes the supernet is not wrapped in
``DistributedDataParallel`` (several backward passes per step, and sub-networks that leave
parameters unused): the gradients are averaged in one all-reduce before the optimizer step,
and every process draws the same configs (the draw is seeded from ``(seed, epoch, step)``
alone, and checked each step).

Exact resume: the configs, the augmentation and every other random draw are seeded from
``(seed, epoch, step or sample)``, and the learning rate is a function of the step, so no
random state is carried from one step to the next: a run resumed from the checkpoint of epoch
k repeats epochs k+1... as an uninterrupted run computes them.

Outputs in ``out``: ``supernet.pth`` (every epoch; see :mod:`evit.supernet.checkpoint`) and
``metrics.jsonl``. After each epoch, the largest and the smallest config (and their EMA) are
evaluated on the whole validation set, each with its BatchNorm statistics re-estimated on the
same fixed training batches (:func:`~evit.supernet.evaluate.evaluate_subnet`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evit.config import ModelConfig
from evit.files import atomic_write_text
from evit.supernet.checkpoint import check_checkpoint_matches, save_supernet
from evit.supernet.evaluate import evaluate_subnet, fixed_training_images
from evit.supernet.memory import memory_shortfall
from evit.supernet.network import SubNetwork, Supernet
from evit.supernet.space import SupernetSpace, read_space
from evit.supernet.training import sandwich_step
from evit.train.data import BadImageCounter, DataError, resolve_data, sample_seed
from evit.train.distributed import (
    DistInfo,
    all_reduce_sum,
    average_gradients,
    barrier,
    same_on_every_process,
    setup,
    teardown,
)
from evit.train.evaluate import eval_loader
from evit.train.loop import (
    BN_RECALIBRATION_BATCHES,
    METRICS,
    TrainError,
    check_global_batch,
    make_loss,
    make_optimization,
    make_train_loader,
    progress_bar,
    read_last,
    seed_everything,
)
from evit.train.recipe import Recipe

log = logging.getLogger(__name__)

CHECKPOINT = "supernet.pth"
# the config draws get a random stream of their own, apart from the augmentation's
_CONFIG_STREAM = 0x5A4D


@dataclass(frozen=True)
class SupernetOptions:
    """What to train on what, and where the results go.

    Attributes:
        space: a search-space YAML (as ``search/*.yaml``) or a space already read.
        data: ImageFolder root (``train/`` + ``val/``, or class folders to split).
        out: output folder.
        recipe: hyper-parameters (``evit.train.recipe``); ``recipe.img_size`` replaces the
            space's input sizes with that one size.
        random_subnets: random configs per step, besides the largest and the smallest.
        bn_batches: training batches on which each evaluated config's BN statistics are
            re-estimated.
        steps_per_epoch: optimizer steps per epoch (None: one pass over the training set);
            fewer train each epoch on another random part of it (what a time limit needs:
            :func:`plan_for`).
        val: validation root when not ``data/val``.
        val_fraction: share held out when ``data`` is one folder of classes.
        resume: continue the run in ``out`` (with its own recipe and settings).
        workers: DataLoader worker processes.
        device: ``cpu``/``cuda``/``cuda:N``; default CUDA when available.
        threads: CPU threads for PyTorch (default: its own choice).
        max_bad_images: unreadable images tolerated (skipped and counted) before stopping.
        progress: progress bars on the main process.
    """

    space: str | os.PathLike | SupernetSpace
    data: str | os.PathLike
    out: str | os.PathLike
    recipe: Recipe = field(default_factory=Recipe)
    random_subnets: int = 2
    bn_batches: int = BN_RECALIBRATION_BATCHES
    steps_per_epoch: int | None = None
    val: str | os.PathLike | None = None
    val_fraction: float = 0.1
    resume: bool = False
    workers: int = 0
    device: str | None = None
    threads: int | None = None
    max_bad_images: int = 100
    progress: bool = True


@dataclass(frozen=True)
class SupernetResult:
    out: Path
    checkpoint: Path
    history: list[dict[str, Any]]
    largest_top1: float  # validation top-1 of the last epoch, BN re-estimated
    smallest_top1: float


EpochCallback = Callable[[int, dict[str, Any]], None]


def train_supernet(
    options: SupernetOptions, on_epoch_end: EpochCallback | None = None
) -> SupernetResult:
    """Train a supernet as ``options`` say; see the module docstring for the outputs.

    Args:
        options: the run.
        on_epoch_end: called with ``(epoch, metrics)`` after each epoch's checkpoint is written.

    Raises:
        TrainError, DataError, ValueError: bad input, with a one-line message, before training.
    """
    info = setup(options.device)
    try:
        return _SupernetRun(options, info).run(on_epoch_end)
    finally:
        teardown(info)


def configs_hash(configs: list[ModelConfig]) -> int:
    """A 60-bit hash of the architectures (the same in every process, unlike ``hash``)."""
    blob = ",".join(c.architecture_hash() for c in configs).encode()
    return int(hashlib.sha256(blob).hexdigest()[:15], 16)


def tensors_hash(tensors: Iterable[torch.Tensor]) -> int:
    """A 60-bit hash of the tensors' bytes."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return int(digest.hexdigest()[:15], 16)


@dataclass(frozen=True)
class _Settings:
    """What the run trains with: the options', or on resume the run's own."""

    recipe: Recipe
    space: SupernetSpace  # at the recipe's input size, when it sets one
    random_subnets: int
    bn_batches: int
    steps_per_epoch: int | None


def _settings(options: SupernetOptions, saved: dict[str, Any] | None) -> _Settings:
    """The run's settings from the options, or from the checkpoint's ``extra`` when resuming
    (a resumed run repeats the original; a flag that differs is logged, not used)."""
    space = options.space if isinstance(options.space, SupernetSpace) else read_space(options.space)
    steps = options.steps_per_epoch
    if saved is None:
        recipe, subnets, bn = options.recipe.validate(), options.random_subnets, options.bn_batches
    else:
        recipe = Recipe.from_dict(saved["recipe"])
        subnets, bn = saved["random_subnets"], saved["bn_batches"]
        steps = saved.get("steps_per_epoch")
        if (subnets, bn, steps) != (
            options.random_subnets,
            options.bn_batches,
            options.steps_per_epoch,
        ):
            log.info(
                "--resume: the run's own --random-subnets %d, --bn-batches %d and steps per "
                "epoch %s",
                subnets,
                bn,
                steps or "all",
            )
    if subnets < 0 or bn < 1:
        raise TrainError(f"--random-subnets {subnets} must be >= 0 and --bn-batches {bn} >= 1")
    if steps is not None and steps < 1:
        raise TrainError(f"steps per epoch {steps} must be >= 1 (None: one pass)")
    if recipe.img_size is not None:
        space = space.with_img_size((recipe.img_size,))
    return _Settings(recipe, space, subnets, bn, steps)


class _SupernetRun:
    """State of one supernet run, set up in ``__init__``, advanced by ``run``."""

    def __init__(self, options: SupernetOptions, info: DistInfo) -> None:
        self.options, self.info = options, info
        self.out = Path(options.out)
        if options.threads:
            torch.set_num_threads(options.threads)
        last = read_last(self.out, options.resume, CHECKPOINT)
        if last is not None:
            check_checkpoint_matches(last, self.out / CHECKPOINT)  # the format, first
        saved = last["extra"] if last is not None else {}
        seed = saved.get("recipe", {}).get("seed", options.recipe.seed)
        fraction = saved.get("data", {}).get("val_fraction", options.val_fraction)
        self.data = resolve_data(options.data, options.val, fraction, seed)
        settings = _settings(options, saved if last is not None else None)
        self.recipe, self.space = settings.recipe, settings.space
        self.random_subnets, self.bn_batches = settings.random_subnets, settings.bn_batches
        self.steps_cap = settings.steps_per_epoch
        num_classes = len(self.data.classes)
        self.max_config = self.space.largest(num_classes)
        self.min_config = self.space.smallest(num_classes)
        if last is not None:
            check_checkpoint_matches(last, self.out / CHECKPOINT, self.space, self.data.classes)
        check_global_batch(len(self.data.train), self.recipe.batch_size, info.world_size)
        shortfall = memory_shortfall(
            self.max_config, self.recipe.batch_size, info.device, info.world_size
        )
        if shortfall:
            raise TrainError(shortfall)
        self.aug = self.recipe.resolved_aug(len(self.data.train))

        r = self.recipe
        seed_everything(r.seed)
        self.supernet = Supernet(self.max_config)
        self.supernet.largest.set_drop_path(r.drop_path)  # sub-networks take it by block
        self.supernet.to(info.device)
        self.train_set, self.sampler, self.train_loader = make_train_loader(
            self.data.train, self.max_config.img_size, self.aug, r, info, options.workers
        )
        self.val_loaders = {
            size: eval_loader(self.data.val, size, r.batch_size, options.workers, info)
            for size in {self.max_config.img_size, self.min_config.img_size}
        }
        self.bn_images = fixed_training_images(
            self.data.train,
            self.max_config.img_size,
            self.bn_batches,
            r.batch_size,
            r.seed,
            info.device,
            options.workers,
        )
        self.steps_per_epoch = min(len(self.train_loader), self.steps_cap or len(self.train_loader))
        self._build_optimization()
        # built once: the two configs every step runs (a build costs about a small forward)
        self.fixed = {c: self.supernet.subnet(c) for c in (self.max_config, self.min_config)}
        self.bad_images = BadImageCounter(options.max_bad_images)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        if last is not None:
            self._restore(last)
        elif info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        log.info(
            "supernet of %s: largest %s, smallest %s; %d random configs per step",
            self.space.source,
            _shape(self.max_config),
            _shape(self.min_config),
            self.random_subnets,
        )

    # --- set-up ------------------------------------------------------------------------------

    def _build_optimization(self) -> None:
        from timm.utils import ModelEmaV3

        r, info = self.recipe, self.info
        self.lr, self.optimizer, self.scheduler = make_optimization(
            self.supernet.largest, r, r.batch_size * info.world_size, self.steps_per_epoch
        )
        self.ema = (
            ModelEmaV3(self.supernet, decay=r.ema_decay, use_warmup=True) if r.ema_decay else None
        )
        self.mixup, self.criterion = make_loss(r, self.aug, self.max_config.num_classes)
        self.global_step = 0

    def _restore(self, obj: dict[str, Any]) -> None:
        state = obj["extra"]["train_state"]
        self.supernet.load_state_dict(obj["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.module.load_state_dict(obj["ema_state_dict"])
        self.global_step = state["global_step"]
        self.scheduler.step_update(self.global_step)
        self.history = list(state["history"])
        self.start_epoch = obj["extra"]["epoch"] + 1
        log.info("resumed %s at epoch %d of %d", self.out, self.start_epoch, self.recipe.epochs)

    # --- the loop ----------------------------------------------------------------------------

    def run(self, on_epoch_end: EpochCallback | None) -> SupernetResult:
        for epoch in range(self.start_epoch, self.recipe.epochs):
            start = time.perf_counter()
            losses, images = self._train_epoch(epoch)
            train_seconds = time.perf_counter() - start
            record = self._validate(epoch, losses, images, train_seconds, start)
            self.history.append(record)
            self._save(epoch, record)
            barrier(self.info)
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
        last = self.history[-1] if self.history else {}
        return SupernetResult(
            self.out,
            self.out / CHECKPOINT,
            self.history,
            last.get("largest_top1", float("nan")),
            last.get("smallest_top1", float("nan")),
        )

    def sample_configs(self, epoch: int, step: int) -> list[ModelConfig]:
        """The smallest config and ``random_subnets`` random ones of a step (seeded from
        ``(seed, epoch, step)`` alone: the same in every process and after a resume)."""
        rng = np.random.default_rng([_CONFIG_STREAM, sample_seed(self.recipe.seed, epoch, step)])
        classes = self.max_config.num_classes
        return [self.min_config] + [
            self.space.sample(rng, classes) for _ in range(self.random_subnets)
        ]

    def _subnet(self, config: ModelConfig) -> SubNetwork:
        fixed = self.fixed.get(config)
        return fixed if fixed is not None else self.supernet.subnet(config)

    def _train_epoch(self, epoch: int) -> tuple[torch.Tensor, int]:
        self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        bar = None
        if self.options.progress and self.info.is_main:
            bar = progress_bar(self.steps_per_epoch, f"epoch {epoch + 1}/{self.recipe.epochs}")
        # per image: the largest's loss, the smallest's (distillation) loss; and the count
        sums = torch.zeros(3, dtype=torch.float64, device=self.info.device)
        # a cap takes the first steps of the epoch's own shuffled order: another part each epoch
        for step, batch in zip(range(self.steps_per_epoch), self.train_loader, strict=False):
            self.bad_images.add(batch.bad)
            if not len(batch.targets):
                if self.info.enabled:
                    raise DataError("a whole batch was unreadable; remove the broken images")
                continue
            seed_everything(sample_seed(self.recipe.seed, epoch, -1 - step))
            configs = self.sample_configs(epoch, step)
            largest, smallest = self._step(batch.images, batch.targets, configs)
            n = len(batch.targets)
            sums += torch.tensor([largest * n, smallest * n, n], dtype=torch.float64).to(sums)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{largest:.3f}", distill=f"{smallest:.3f}")
        if bar is not None:
            bar.close()
        all_reduce_sum(sums, self.info)
        return sums[:2] / max(sums[2].item(), 1.0), int(sums[2].item())

    def _step(
        self, images: torch.Tensor, targets: torch.Tensor, configs: list[ModelConfig]
    ) -> tuple[float, float]:
        device = self.info.device
        x = images.to(device, non_blocking=True)
        y = targets.to(device, non_blocking=True)
        if self.mixup is not None:
            if len(y) % 2:  # mixup pairs images; a batch shortened by skipped files may be odd
                x, y = x[:-1], y[:-1]
            x, y = self.mixup(x, y)
        losses = sandwich_step(
            self.supernet,
            x,
            y,
            self.optimizer,
            configs,
            self.criterion,
            before_step=lambda: self._before_step(configs),
            subnet=self._subnet,
        )
        if not math.isfinite(losses.largest):
            raise TrainError(
                f"loss is {losses.largest} at step {self.global_step}; lower --lr or keep "
                "gradient clipping on"
            )
        self.global_step += 1
        self.scheduler.step_update(self.global_step)
        if self.ema is not None:
            self.ema.update(self.supernet, step=self.global_step)
        return losses.largest, losses.others[0]

    def _before_step(self, configs: list[ModelConfig]) -> None:
        """Average the gradients over processes, then clip them as ``evit train`` does."""
        params = list(self.supernet.parameters())
        if self.info.enabled:
            assert same_on_every_process(configs_hash(configs), self.info), "configs differ"
            average_gradients(params, self.info)
        r = self.recipe
        if r.clip_grad > 0:
            from timm.utils import dispatch_clip_grad

            dispatch_clip_grad(
                [p for p in params if p.grad is not None], r.clip_grad, mode=r.clip_mode
            )

    def _validate(
        self,
        epoch: int,
        losses: torch.Tensor,
        images: int,
        train_seconds: float,
        start: float,
    ) -> dict[str, Any]:
        if self.info.enabled:
            # averaged gradients keep the processes' weights identical, bit for bit
            weights = tensors_hash(self.supernet.parameters())
            assert same_on_every_process(weights, self.info), "the processes' weights differ"
            from timm.utils import distribute_bn

            # each process updated BN statistics on its own batches
            distribute_bn(self.supernet, self.info.world_size, reduce=True)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": losses[0].item(),
            "train_distill_loss_smallest": losses[1].item(),
            "train_images_per_s": images / train_seconds,
        }
        nets = {"": self.supernet, "ema_": self.ema.module if self.ema is not None else None}
        for prefix, supernet in nets.items():
            if supernet is None:
                continue
            for name, config in (("largest", self.max_config), ("smallest", self.min_config)):
                record[f"{prefix}{name}_top1"] = evaluate_subnet(
                    supernet,
                    config,
                    self.bn_images,
                    self.val_loaders[config.img_size],
                    info=self.info,
                )
        record["epoch_seconds"] = time.perf_counter() - start
        ema = (
            f" (EMA {record['ema_largest_top1']:.2f} / {record['ema_smallest_top1']:.2f} %)"
            if self.ema is not None
            else ""
        )
        log.info(
            "epoch %d/%d: val top-1 largest %.2f %%, smallest %.2f %%%s (BN re-estimated), "
            "train loss %.4f, %.1f s",
            epoch + 1,
            self.recipe.epochs,
            record["largest_top1"],
            record["smallest_top1"],
            ema,
            record["train_loss"],
            record["epoch_seconds"],
        )
        return record

    # --- outputs -----------------------------------------------------------------------------

    def _save(self, epoch: int, record: dict[str, Any]) -> None:
        if not self.info.is_main:
            return
        extra = {
            "epoch": epoch,
            "metrics": record,
            "recipe": self.recipe.to_dict(),
            "data": {k: v for k, v in self.data.description.items() if k != "val_files"},
            "random_subnets": self.random_subnets,
            "bn_batches": self.bn_batches,
            "steps_per_epoch": self.steps_cap,
            "smallest_config": self.min_config.to_dict(),
            "train_state": {
                "optimizer": self.optimizer.state_dict(),
                "global_step": self.global_step,
                "history": self.history,
            },
        }
        save_supernet(
            self.out / CHECKPOINT,
            self.supernet,
            self.space,
            self.data.classes,
            ema_state=self.ema.module.state_dict() if self.ema is not None else None,
            extra=extra,
        )
        atomic_write_text(self.out / METRICS, "".join(json.dumps(h) + "\n" for h in self.history))


def _shape(config: ModelConfig) -> str:
    """``widths 64/128/192, depths 1/2/3 at 224 px``."""
    widths = "/".join(str(s.embed_dim) for s in config.stages)
    depths = "/".join(str(s.depth) for s in config.stages)
    return f"widths {widths}, depths {depths} at {config.img_size} px"
