"""The training loop: one CPU, one GPU, or many processes under ``torchrun``.

Built from timm's pieces (AdamW with its no-decay groups, cosine schedule with warm-up, mixup /
cutmix, soft-target loss, EMA, adaptive gradient clipping) around this project's model, data and
checkpoint format.

Outputs in ``out``: ``last.pth`` (every epoch: weights, optimizer, EMA, scaler and history, to
resume), ``best.pth`` (the best validation top-1 of the model or its EMA, loadable by
``evit.create_model``, ``edge export`` and the app), ``metrics.jsonl``, ``curves.png`` and, for a
split folder, ``split.json``. Every file is written to a temp name and renamed.

Exact resume: every random draw is seeded from ``(seed, epoch, sample or step)`` rather than
carried from one step to the next, and the learning rate is a function of the step count, so a
run resumed from the checkpoint of epoch k repeats epochs k+1... exactly as an uninterrupted run
computes them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from evit.config import ModelConfig, load_config
from evit.files import atomic_path, atomic_write_text
from evit.model import EfficientViT
from evit.train.data import (
    DECODED,
    BadImageCounter,
    DataError,
    DecodedImages,
    ImageDataset,
    Sample,
    collate,
    resolve_data,
    sample_seed,
    train_transform,
)
from evit.train.distributed import DistInfo, all_reduce_sum, barrier, setup, teardown
from evit.train.evaluate import EvalResult, eval_loader, evaluate
from evit.train.recipe import Recipe, learning_warning
from evit.weights import save_checkpoint

log = logging.getLogger(__name__)

LAST = "last.pth"
BEST = "best.pth"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
SPLIT = "split.json"
BN_RECALIBRATION_BATCHES = 20


class TrainError(ValueError):
    """The run cannot start or go on as asked (bad combination, resume mismatch, OOM)."""


@dataclass(frozen=True)
class TrainOptions:
    """What to train on what, and where the results go.

    Attributes:
        model: variant name, YAML config (e.g. a search's ``best.yaml``) or config object.
        data: ImageFolder root (``train/`` + ``val/``, or class folders to split).
        out: output folder.
        recipe: hyper-parameters (see :class:`~evit.train.recipe.Recipe`).
        val: validation root when not ``data/val``.
        val_fraction: share held out when ``data`` is one folder of classes.
        init: checkpoint to inherit weights from (any config; see ``evit.inherit``).
        resume: continue the run in ``out``.
        workers: DataLoader worker processes (decode and augment off the training process).
        device: ``cpu``/``cuda``/``cuda:N``; default CUDA when available.
        amp: fp16 autocast with loss scaling (CUDA only).
        compile: ``torch.compile`` the training model.
        sync_bn: synchronized BatchNorm across processes (CUDA only).
        threads: CPU threads for PyTorch (default: its own choice).
        max_bad_images: unreadable images tolerated (skipped and counted) before stopping.
        progress: progress bars on the main process.
        curves: redraw ``curves.png`` after every epoch (off for many short runs).
        keep_decoded: keep decoded images in memory for the next run in this process
            (``evit.train.data.DECODED``, up to 2 GiB; for many short runs on one small
            dataset, as a search's trials are; only with ``workers=0``).
    """

    model: str | os.PathLike | ModelConfig
    data: str | os.PathLike
    out: str | os.PathLike
    recipe: Recipe = field(default_factory=Recipe)
    val: str | os.PathLike | None = None
    val_fraction: float = 0.1
    init: str | os.PathLike | None = None
    resume: bool = False
    workers: int = 0
    device: str | None = None
    amp: bool = False
    compile: bool = False
    sync_bn: bool = False
    threads: int | None = None
    max_bad_images: int = 100
    progress: bool = True
    curves: bool = True
    keep_decoded: bool = False


@dataclass
class TrainResult:
    out: Path
    best_top1: float
    best_epoch: int
    history: list[dict[str, Any]]
    checkpoint: Path
    warning: str | None = None  # the run barely learned (evit.train.recipe.learning_warning)


EpochCallback = Callable[[int, dict[str, Any]], None]


def train(options: TrainOptions, on_epoch_end: EpochCallback | None = None) -> TrainResult:
    """Train a model as ``options`` say; see the module docstring for the outputs.

    Args:
        options: the run.
        on_epoch_end: called with ``(epoch, metrics)`` after each epoch's checkpoint is written.

    Raises:
        TrainError, DataError, ValueError: bad input, with a one-line message.
    """
    info = setup(options.device)
    try:
        return _Run(options, info).run(on_epoch_end)
    finally:
        teardown(info)


def estimate_seconds(options: TrainOptions, steps: int = 3) -> float:
    """What the training ``options`` describe would take here: ``steps`` optimizer steps
    timed (after one untimed) and one evaluation, scaled to the run's epochs and steps, plus
    the set-up; run in a temporary folder (``options.out`` is not touched, nothing inherited).

    For a time limit that must plan trainings before any has run (``search --weight-sharing``
    reserves its final phase's fine-tunings before the supernet trains)."""
    if steps < 1:
        raise ValueError(f"steps {steps} must be >= 1")
    import dataclasses
    import tempfile

    began = time.perf_counter()
    info = setup(options.device)
    try:
        with tempfile.TemporaryDirectory(prefix="evit-train-timing-") as tmp:
            probe = dataclasses.replace(
                options, out=tmp, init=None, resume=False, progress=False, curves=False
            )
            run = _Run(probe, info)
            set_up = time.perf_counter() - began
            run.net.train()
            took, last = [], time.perf_counter()
            for _, batch in zip(range(steps + 1), run.train_loader, strict=False):
                run._step(batch.images, batch.targets)  # the batch's loading counted too
                now = time.perf_counter()
                took.append(now - last)
                last = now
            start = time.perf_counter()
            evaluate(run.model, run.val_loader, run.data.classes, info)
            validate = (time.perf_counter() - start) * (2 if run.ema is not None else 1)
    finally:
        teardown(info)
    step = float(np.median(took[1:] or took))
    return set_up + run.recipe.epochs * (run.steps_per_epoch * step + validate)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Run:
    """State of one training run, set up in ``__init__``, advanced by ``run``."""

    def __init__(self, options: TrainOptions, info: DistInfo) -> None:
        self.options, self.info = options, info
        self.out = Path(options.out)
        if options.threads:
            torch.set_num_threads(options.threads)
        last = self._read_last()  # the checkpoint to resume from, read once
        seed, fraction = options.recipe.seed, options.val_fraction
        if last is not None:  # the split of the run resumed
            saved = last.get("extra") or {}
            seed = saved.get("recipe", {}).get("seed", seed)
            fraction = saved.get("data", {}).get("val_fraction", fraction)
        self.data = resolve_data(options.data, options.val, fraction, seed)
        resumed = self._check_resume(last) if last is not None else None
        recipe = resumed["recipe"] if resumed else options.recipe.validate()
        self.recipe = recipe
        self._check_options()
        self.config = self._config()
        self.aug = recipe.resolved_aug(len(self.data.train))
        if self.aug != recipe.aug:
            log.info("augmentation: %s (%d training images)", self.aug, len(self.data.train))

        seed_everything(recipe.seed)
        self.model = EfficientViT(self.config, drop_path_rate=recipe.drop_path)
        self.model.to(info.device)
        # kept in this process only: DataLoader workers would each decode into a copy
        self.images = DECODED if options.keep_decoded and options.workers == 0 else None
        self.train_loader = self._train_loader()
        if options.init and not resumed:
            self._inherit(options.init)
        self.val_loader = eval_loader(
            self.data.val,
            self.config.img_size,
            recipe.batch_size,
            options.workers,
            info,
            pin_memory=info.device.type == "cuda",
            images=self.images,
        )
        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = recipe.epochs * self.steps_per_epoch
        self._build_optimization()
        self.bad_images = BadImageCounter(options.max_bad_images)
        self.history: list[dict[str, Any]] = []
        self.best = {"top1": -1.0, "epoch": -1, "weights": "model"}
        self.start_epoch = 0
        if resumed:
            self._restore(resumed)
        elif info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if "val_files" in self.data.description:
                atomic_write_text(self.out / SPLIT, json.dumps(self.data.description, indent=1))

    # --- set-up ------------------------------------------------------------------------------

    def _check_options(self) -> None:
        o, device = self.options, self.info.device
        if o.amp and device.type != "cuda":
            raise TrainError("--amp needs a CUDA device (mixed precision on the CPU is not used)")
        if o.sync_bn and device.type != "cuda":
            raise TrainError(
                "--sync-bn needs CUDA (PyTorch's SyncBatchNorm does not run on the CPU)"
            )
        if o.resume and o.init:
            raise TrainError("--resume continues a run; --init starts one: give only one")
        check_global_batch(len(self.data.train), self.recipe.batch_size, self.info.world_size)

    def _inherit(self, checkpoint: str | os.PathLike) -> None:
        """Weights from another config, then BN statistics re-estimated on training images."""
        import itertools

        from evit.inherit import inherit_weights, recalibrate_batchnorm

        report = inherit_weights(self.model, checkpoint)
        log.info("init from %s: %s", checkpoint, report.summary())
        if report.sliced or report.resized or report.initialized:
            batches = itertools.islice(self.train_loader, BN_RECALIBRATION_BATCHES)
            images = recalibrate_batchnorm(
                self.model, (b.images.to(self.info.device) for b in batches if len(b.targets))
            )
            log.info("BatchNorm statistics re-estimated on %d training images", images)

    def _config(self) -> ModelConfig:
        config = load_config(self.options.model).replace(num_classes=len(self.data.classes))
        size = self.recipe.img_size
        if size is not None and size != config.img_size:
            resized = config.at_img_size(size)
            clipped = [
                f"stage {i}: {a.window_size} -> {b.window_size}"
                for i, (a, b) in enumerate(zip(config.stages, resized.stages))
                if a.window_size != b.window_size
            ]
            if clipped:
                log.info(
                    "img_size %d: windows clipped to the stage resolutions (%s)",
                    size,
                    "; ".join(clipped),
                )
            config = resized
        return config.validate()

    def _train_loader(self) -> DataLoader:
        self.train_set, self.sampler, loader = make_train_loader(
            self.data.train,
            self.config.img_size,
            self.aug,
            self.recipe,
            self.info,
            self.options.workers,
            self.images,
        )
        return loader

    def _build_optimization(self) -> None:
        from timm.utils import ModelEmaV3

        r, info = self.recipe, self.info
        self.lr, self.optimizer, self.scheduler = make_optimization(
            self.model, r, r.batch_size * info.world_size, self.steps_per_epoch
        )
        self.ema = (
            ModelEmaV3(self.model, decay=r.ema_decay, use_warmup=True) if r.ema_decay else None
        )
        self.mixup, self.criterion = make_loss(r, self.aug, self.config.num_classes)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.options.amp)
        net: nn.Module = self.model
        if self.options.sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        if info.enabled:
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[info.device.index] if info.device.type == "cuda" else None
            )
        self.net = torch.compile(net) if self.options.compile else net
        self.global_step = 0

    # --- resume ------------------------------------------------------------------------------

    def _read_last(self) -> dict[str, Any] | None:
        return read_last(self.out, self.options.resume)

    def _check_resume(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The saved run must be of this architecture and these classes."""
        last = self.out / LAST
        saved = ModelConfig.from_dict(obj.get("config"), source=str(last)).validate()
        wanted = load_config(self.options.model).replace(num_classes=len(self.data.classes))
        recipe = Recipe.from_dict(obj["extra"]["recipe"])
        if recipe.img_size is not None and recipe.img_size != wanted.img_size:
            wanted = wanted.at_img_size(recipe.img_size)
        if saved.architecture_hash() != wanted.architecture_hash():
            raise TrainError(
                f"--resume: {last} is a run of {saved.name!r} with another architecture than "
                f"--model {self.options.model}; use that model or another --out"
            )
        if obj.get("class_names") != self.data.classes:
            raise TrainError(
                f"--resume: {last} was trained on other classes than {self.options.data}"
            )
        return {"recipe": recipe, "obj": obj}

    def _restore(self, resumed: dict[str, Any]) -> None:
        obj = resumed["obj"]
        state = obj["extra"]["train_state"]
        self.model.load_state_dict(obj["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.global_step = state["global_step"]
        self.scheduler.step_update(self.global_step)
        self.history = list(state["history"])
        self.best = dict(state["best"])
        self.start_epoch = obj["extra"]["epoch"] + 1
        log.info("resumed %s at epoch %d of %d", self.out, self.start_epoch, self.recipe.epochs)

    # --- the loop ----------------------------------------------------------------------------

    def run(self, on_epoch_end: EpochCallback | None) -> TrainResult:
        for epoch in range(self.start_epoch, self.recipe.epochs):
            start = time.perf_counter()
            train_loss, images = self._train_epoch(epoch)
            seconds = time.perf_counter() - start
            record = self._validate(epoch, train_loss, images / seconds, seconds)
            self.history.append(record)
            self._save(epoch, record)
            barrier(self.info)
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
        warning = learning_warning(self.history, len(self.data.classes))
        if warning and self.info.is_main:
            log.warning("%s", warning)
        return TrainResult(
            self.out, self.best["top1"], self.best["epoch"], self.history, self.out / BEST, warning
        )

    def _train_epoch(self, epoch: int) -> tuple[float, int]:
        self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self.net.train()
        bar = self._progress(epoch)
        loss_sum = torch.zeros(2, dtype=torch.float64, device=self.info.device)
        start, seen = time.perf_counter(), 0
        for step, batch in enumerate(self.train_loader):
            self.bad_images.add(batch.bad)
            if not len(batch.targets):
                if self.info.enabled:
                    raise DataError("a whole batch was unreadable; remove the broken images")
                continue
            seed_everything(sample_seed(self.recipe.seed, epoch, -1 - step))
            loss = self._step(batch.images, batch.targets)
            loss_sum[0] += loss.detach().double() * len(batch.targets)
            loss_sum[1] += len(batch.targets)
            seen += len(batch.targets)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0 or step == self.steps_per_epoch - 1:
                    rate = seen * self.info.world_size / (time.perf_counter() - start)
                    bar.set_postfix(
                        loss=f"{loss.item():.3f}",
                        lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                        img_s=f"{rate:.0f}",
                    )
        if bar is not None:
            bar.close()
        all_reduce_sum(loss_sum, self.info)
        return loss_sum[0].item() / max(loss_sum[1].item(), 1.0), int(loss_sum[1].item())

    def _step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        device, r = self.info.device, self.recipe
        x = images.to(device, non_blocking=True)
        y = targets.to(device, non_blocking=True)
        if self.mixup is not None:
            if len(y) % 2:  # mixup pairs images; a batch shortened by skipped files may be odd
                x, y = x[:-1], y[:-1]
            x, y = self.mixup(x, y)
        try:
            loss = optimization_step(
                self.net,
                self.model.parameters(),
                x,
                y,
                self.optimizer,
                self.criterion,
                self.scaler,
                r.clip_grad,
                r.clip_mode,
            )
        except torch.cuda.OutOfMemoryError:
            raise TrainError(
                f"out of GPU memory at --batch-size {r.batch_size}; try "
                f"--batch-size {max(r.batch_size // 2, 1)}"
                + ("" if self.options.amp else " or --amp")
            ) from None
        if not math.isfinite(loss.item()):
            raise TrainError(
                f"loss is {loss.item()} at step {self.global_step}; lower --lr or keep "
                "gradient clipping on"
            )
        self.global_step += 1
        self.scheduler.step_update(self.global_step)
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)
        return loss

    def _progress(self, epoch: int) -> Any:
        if not (self.options.progress and self.info.is_main):
            return None
        return progress_bar(self.steps_per_epoch, f"epoch {epoch + 1}/{self.recipe.epochs}")

    def _validate(
        self, epoch: int, train_loss: float, images_per_s: float, seconds: float
    ) -> dict[str, Any]:
        if self.info.enabled:  # each process updated BN statistics on its own batches
            from timm.utils import distribute_bn

            distribute_bn(self.model, self.info.world_size, reduce=True)
        names = self.data.classes
        result = evaluate(self.model, self.val_loader, names, self.info, self.bad_images)
        ema: EvalResult | None = None
        if self.ema is not None:
            ema = evaluate(self.ema.module, self.val_loader, names, self.info)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": train_loss,
            "train_images_per_s": images_per_s,
            "epoch_seconds": seconds,
            "val_top1": result.top1,
            "val_top5": result.top5,
            "val_loss": result.loss,
            "val_per_class": result.per_class,
        }
        if ema is not None:
            record.update(ema_top1=ema.top1, ema_top5=ema.top5, ema_loss=ema.loss)
        log.info(
            "epoch %d/%d: train loss %.4f, val top-1 %.2f %%%s, %.0f img/s",
            epoch + 1,
            self.recipe.epochs,
            train_loss,
            result.top1,
            f" (EMA {ema.top1:.2f} %)" if ema is not None else "",
            images_per_s,
        )
        return record

    # --- outputs -----------------------------------------------------------------------------

    def _save(self, epoch: int, record: dict[str, Any]) -> None:
        use_ema = self.ema is not None and record["ema_top1"] > record["val_top1"]
        top1 = record["ema_top1"] if use_ema else record["val_top1"]
        improved = top1 > self.best["top1"]
        if improved:
            self.best = {"top1": top1, "epoch": epoch + 1, "weights": "ema" if use_ema else "model"}
        if not self.info.is_main:
            return
        common = {
            "epoch": epoch,
            "metrics": {k: v for k, v in record.items() if k != "val_per_class"},
            "recipe": self.recipe.to_dict(),
            "data": {k: v for k, v in self.data.description.items() if k != "val_files"},
        }
        if improved:
            weights = self.ema.module.state_dict() if use_ema else self.model.state_dict()
            save_checkpoint(
                self.model,
                self.out / BEST,
                {**common, "weights": self.best["weights"]},
                class_names=self.data.classes,
                state_dict=weights,
            )
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "global_step": self.global_step,
            "history": self.history,
            "best": self.best,
        }
        save_checkpoint(
            self.model,
            self.out / LAST,
            {**common, "train_state": state},
            class_names=self.data.classes,
        )
        atomic_write_text(self.out / METRICS, "".join(json.dumps(h) + "\n" for h in self.history))
        if self.options.curves:
            write_curves(self.history, self.out / CURVES, self.config.name)


# --- pieces shared with other training loops (evit.supernet.loop) -------------------------------


def check_global_batch(train_images: int, batch_size: int, world_size: int) -> None:
    """Refuse a global batch larger than the training set (no full step would run)."""
    global_batch = batch_size * world_size
    if train_images < global_batch:
        raise TrainError(
            f"{train_images} training images are fewer than the global batch "
            f"{global_batch} (--batch-size {batch_size} x {world_size} process(es)); "
            "lower --batch-size"
        )


def read_last(out: Path, resume: bool, name: str = LAST) -> dict[str, Any] | None:
    """The checkpoint ``out/name`` when resuming; refuse to overwrite a run without resume.

    Raises:
        TrainError: a run is there and ``resume`` is False; or ``resume`` and there is no
            readable checkpoint.
    """
    last = out / name
    if not resume:
        if last.exists():
            raise TrainError(
                f"{out} already holds a run ({name}); pass --resume to continue it "
                "or choose another --out"
            )
        return None
    if not last.exists():
        raise TrainError(f"--resume: no {name} in {out} to continue from")
    try:
        return torch.load(last, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise TrainError(f"--resume: cannot read {last} ({type(e).__name__})") from None


def make_train_loader(
    samples: list[Sample],
    img_size: int,
    aug: str,
    recipe: Recipe,
    info: DistInfo,
    workers: int,
    images: DecodedImages | None = None,
) -> tuple[ImageDataset, DistributedSampler, DataLoader]:
    """The training set (augmented per sample from the recipe's seed), its sampler and loader.

    One ``DistributedSampler`` in every case, so that 1 and N processes draw the same
    permutation; full batches only.
    """
    dataset = ImageDataset(
        samples,
        train_transform(img_size, aug, recipe.rand_augment, recipe.random_erasing),
        seed=recipe.seed,
        images=images,
    )
    sampler = DistributedSampler(
        dataset,
        num_replicas=info.world_size,
        rank=info.rank,
        shuffle=True,
        seed=recipe.seed,
        drop_last=True,
    )
    loader = DataLoader(
        dataset,
        batch_size=recipe.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=info.device.type == "cuda",
        drop_last=True,
    )
    return dataset, sampler, loader


def make_optimization(
    model: nn.Module, recipe: Recipe, global_batch: int, steps_per_epoch: int
) -> tuple[float, torch.optim.Optimizer, Any]:
    """AdamW (no decay on norms, biases and ``model.no_weight_decay()``) and the cosine
    schedule with warm-up (capped at a fifth of the run), stepped once per optimizer step.

    Returns:
        The peak learning rate, the optimizer and the scheduler (``step_update(step)``).
    """
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    r = recipe
    lr = r.scaled_lr(global_batch)
    optimizer = create_optimizer_v2(model, "adamw", lr=lr, weight_decay=r.weight_decay)
    total_steps = r.epochs * steps_per_epoch
    warmup = round(r.warmup_epochs * steps_per_epoch)
    if warmup > total_steps // 5:
        log.info(
            "warm-up capped at a fifth of the run: %d of %d steps", total_steps // 5, total_steps
        )
        warmup = total_steps // 5
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=total_steps,
        lr_min=r.min_lr,
        warmup_t=warmup,
        warmup_lr_init=r.warmup_lr,
        t_in_epochs=False,
    )
    return lr, optimizer, scheduler


def make_loss(recipe: Recipe, aug: str, num_classes: int) -> tuple[Any, nn.Module]:
    """timm's mixup/cutmix (``paper`` augmentation with an alpha > 0, else None) and the
    matching loss: soft-target cross entropy after mixing, else label-smoothed cross entropy.
    """
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    r = recipe
    if aug == "paper" and (r.mixup > 0 or r.cutmix > 0):
        mixup = Mixup(
            mixup_alpha=r.mixup,
            cutmix_alpha=r.cutmix,
            label_smoothing=r.label_smoothing,
            num_classes=num_classes,
        )
        return mixup, SoftTargetCrossEntropy()
    return None, nn.CrossEntropyLoss(label_smoothing=r.label_smoothing)


def progress_bar(total: int, desc: str) -> Any:
    """A tqdm bar of ``total`` steps that disappears when closed."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)


def optimization_step(
    net: nn.Module,
    parameters: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    scaler: torch.amp.GradScaler,
    clip_grad: float,
    clip_mode: str,
) -> torch.Tensor:
    """Forward, loss, backward, clipping and the optimizer update of one batch.

    Shared by the training loop and ``benchmarks/bench_train.py``, so that a throughput figure
    measures exactly the step the loop runs. Autocast follows ``scaler.is_enabled()``.
    """
    from timm.utils import dispatch_clip_grad

    with torch.autocast(x.device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
        loss = criterion(net(x), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_grad > 0:
        scaler.unscale_(optimizer)
        dispatch_clip_grad(parameters, clip_grad, mode=clip_mode)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def write_curves(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Loss and top-1 per epoch as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [h["val_top1"] for h in history], "o-", label="model")
    if "ema_top1" in history[0]:
        ax_acc.plot(epochs, [h["ema_top1"] for h in history], "o-", label="EMA")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="validation top-1")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
