"""``python -m evit train | eval | data``: the command lines of training, evaluation and data.

Examples:
    python -m evit data synthetic data/shapes --classes 10 --per-class 300 --size 64
    python -m evit train --model m0 --data data/shapes --img-size 64 --epochs 10 --out runs/m0
    torchrun --nproc-per-node 2 -m evit train --model m0 --data data/shapes --out runs/ddp
    python -m evit eval --weights runs/m0/best.pth --data data/shapes --json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from evit.clitools import BAD_INPUT, add_command
from evit.train.recipe import PAPER, RECIPES, SHORT_BATCH, SHORT_LR, Recipe, choose_recipe

log = logging.getLogger(__name__)

SUPPRESS = argparse.SUPPRESS


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``train``, ``eval`` and ``data`` on the ``python -m evit`` parser."""
    _add_train(sub)
    _add_eval(sub)
    synthetic = "python -m evit data synthetic data/shapes --classes 10 --per-class 300 --size 64"
    data = add_command(
        sub,
        "data",
        help="make datasets you can run here (nothing is downloaded)",
        examples=synthetic,
    )
    kinds = data.add_subparsers(dest="kind", required=True)
    syn = add_command(
        kinds,
        "synthetic",
        help="procedurally drawn shapes/textures as an ImageFolder (train/ and val/)",
        examples=synthetic,
        done="written",
        bad_input=f"{BAD_INPUT}; a destination that is not empty",
    )
    syn.add_argument("dir", help="destination folder (must not exist, or be empty)")
    syn.add_argument("--classes", type=int, default=10, help="number of classes, 2..40 (10)")
    syn.add_argument("--per-class", type=int, default=300, help="training images per class")
    syn.add_argument(
        "--val-per-class", type=int, default=None, help="validation images per class (per-class/4)"
    )
    syn.add_argument("--size", type=int, default=64, help="image side in pixels (64)")
    syn.add_argument("--seed", type=int, default=0, help="the same seed writes the same files")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "train",
        help="train a config (M0-M5, a YAML, a search's best.yaml) on an image folder",
        description="Train with the recipe --recipe names (auto: the paper's recipe for a long "
        "run on ImageNet-sized data, else settings that follow the run's length and the data's "
        "size). Defaults not given below come from evit/train/recipe.py; every value used is "
        "logged and saved in the checkpoints.",
        examples=[
            "python -m evit train --model m0 --data data/shapes --img-size 64 --epochs 30 "
            "--out runs/m0",
            "python -m evit train --model m0 --data data/shapes --out runs/m0 --resume",
        ],
        done="trained; the best checkpoint is OUT/best.pth",
        interrupted="the last finished epoch is in OUT/last.pth (continue with --resume)",
    )
    p.add_argument("--model", required=True, help="variant (m0..m5), or a YAML config path")
    add_data_flags(p)
    p.add_argument("--out", required=True, help="output folder (checkpoints, metrics, plot)")
    add_recipe_flags(p, img_size_help="input size (default: the config's; windows clip)")
    p.add_argument(
        "--init",
        help="checkpoint to inherit weights from (any config: tensors matched by name and cut "
        "to this config's shapes, the rest left at initialization; fine-tune)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    add_process_flags(p)
    p.add_argument("--amp", action="store_true", help="fp16 mixed precision (CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--sync-bn", action="store_true", help="synchronized BatchNorm (CUDA, DDP)")


def add_data_flags(p: argparse.ArgumentParser) -> None:
    """``--data``, ``--val``, ``--val-fraction``: the image folders of a training run."""
    p.add_argument(
        "--data",
        required=True,
        help="ImageFolder root: DIR/train/<class>/* (+ DIR/val/<class>/*), or DIR/<class>/* "
        "split deterministically",
    )
    p.add_argument("--val", help="validation root (default DIR/val, else a split of DIR)")
    p.add_argument(
        "--val-fraction", type=float, default=0.1, help="held out per class when splitting (0.1)"
    )


def add_recipe_flags(p: argparse.ArgumentParser, img_size_help: str) -> None:
    """``--recipe`` and the flags that change one of its settings (read by
    :func:`recipe_from_args`)."""
    p.add_argument(
        "--recipe",
        choices=RECIPES,
        default="auto",
        help="auto (default): paper (or finetune with --init) for >= 100 epochs on >= 50,000 "
        "images, else short; paper: the official ImageNet recipe exactly; finetune: the "
        "authors' downstream recipe; short: settings from the run's length and data size",
    )
    p.add_argument("--epochs", type=int, help=f"epochs ({PAPER.epochs})")
    p.add_argument(
        "--batch-size",
        type=int,
        help=f"images per process and step (paper {PAPER.batch_size}, short {SHORT_BATCH})",
    )
    p.add_argument(
        "--lr",
        type=float,
        help="absolute learning rate (paper: 1e-3 x global batch / 512; short: "
        f"{SHORT_LR:g} x sqrt(global batch / {SHORT_BATCH}) up to 5 epochs, twice that from 10)",
    )
    p.add_argument(
        "--weight-decay", type=float, help="AdamW weight decay (0.025; 1e-8 with --init)"
    )
    p.add_argument(
        "--warmup-epochs",
        type=float,
        help="warm-up epochs (paper 5, at most 1/5 of the run; short: 5 %% of the run)",
    )
    p.add_argument("--img-size", type=int, help=img_size_help)
    p.add_argument(
        "--aug",
        choices=("auto", "paper", "mild", "none"),
        help="augmentation: paper = RandAugment+mixup/cutmix+erasing; mild = crop+flip; "
        "none = eval preprocessing; auto = paper from 50k images, else mild (auto)",
    )
    p.add_argument("--mixup", type=float, help="mixup alpha with --aug paper (0.8; 0 = off)")
    p.add_argument("--cutmix", type=float, help="cutmix alpha with --aug paper (1.0; 0 = off)")
    p.add_argument("--smoothing", type=float, help="label smoothing (0.1)")
    p.add_argument("--drop-path", type=float, help="stochastic depth of the last block (0)")
    p.add_argument("--ema-decay", type=float, help="EMA decay (0.99996, warm-up ramp; 0 = off)")
    p.add_argument("--clip-grad", type=float, help="adaptive gradient clipping (0.02; 0 = off)")
    p.add_argument("--seed", type=int, help="seed of init, order, augmentation, split (0)")


def add_process_flags(p: argparse.ArgumentParser) -> None:
    """Where and how a training process runs: workers, device, threads, bad images, bars."""
    p.add_argument(
        "--workers", type=int, help="DataLoader workers (default: 0 on the CPU, 8 on CUDA)"
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--threads", type=int, help="PyTorch CPU threads (default: PyTorch's own)")
    p.add_argument(
        "--max-bad-images",
        type=int,
        default=100,
        help="unreadable images skipped before the run stops (100)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "eval",
        help="top-1/top-5, loss, images/s and per-class accuracy of a checkpoint on a folder",
        examples="python -m evit eval --weights runs/m0/best.pth --data data/shapes --json",
    )
    p.add_argument(
        "--model",
        help="variant or YAML (default: the config carried by --weights, for evit checkpoints)",
    )
    p.add_argument("--weights", required=True, help="checkpoint: official, timm or evit format")
    p.add_argument("--data", required=True, help="ImageFolder root, or a dataset root with val/")
    p.add_argument("--img-size", type=int, help="input size (default: the checkpoint's config)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (64)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (0)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--ema", action="store_true", help="official checkpoints: use model_ema")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


# --- handlers ----------------------------------------------------------------------------------


def run_data(args: argparse.Namespace) -> int:
    from evit.train.synthetic import write_synthetic

    counts = write_synthetic(
        args.dir, args.classes, args.per_class, args.size, args.seed, args.val_per_class
    )
    print(
        f"wrote {args.dir}: {counts['train']} training and {counts['val']} validation images, "
        f"{args.classes} classes, {args.size}x{args.size}"
    )
    return 0


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe ``--recipe`` resolves to for this data and run, with the flags given on top
    (those of :func:`add_recipe_flags`); the resolution is logged."""
    from evit.train.data import resolve_data

    split = resolve_data(args.data, args.val, args.val_fraction, args.seed or 0)
    recipe, why = choose_recipe(
        args.recipe,
        epochs=args.epochs,
        train_images=len(split.train),
        batch_size=args.batch_size,
        finetune=bool(getattr(args, "init", None)),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
    )
    log.info("%s", why)
    changes = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "warmup_epochs": args.warmup_epochs,
        "img_size": args.img_size,
        "aug": args.aug,
        "mixup": args.mixup,
        "cutmix": args.cutmix,
        "label_smoothing": args.smoothing,
        "drop_path": args.drop_path,
        "ema_decay": args.ema_decay,
        "clip_grad": args.clip_grad,
        "seed": args.seed,
    }
    return recipe.replace(**{k: v for k, v in changes.items() if v is not None}).validate()


def setup_logging(verbose: bool = False) -> None:
    """Messages of the main process at INFO on stderr (its progress report); the other
    processes' warnings only, or their INFO messages too with ``verbose`` (``-v``)."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 or verbose else logging.WARNING,
        format="%(message)s",
        stream=sys.stderr,
    )


def default_workers(args: argparse.Namespace) -> int:
    """``--workers``, else 0 on the CPU (decoding in the training process) and 8 on CUDA."""
    import torch

    if args.workers is not None:
        return args.workers
    cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    return min(8, os.cpu_count() or 1) if cuda else 0


def run_train(args: argparse.Namespace) -> int:
    from evit.train.loop import TrainOptions, train

    setup_logging(getattr(args, "verbose", False))
    options = TrainOptions(
        model=args.model,
        data=args.data,
        out=args.out,
        recipe=recipe_from_args(args),
        val=args.val,
        val_fraction=args.val_fraction,
        init=args.init,
        resume=args.resume,
        workers=default_workers(args),
        device=args.device,
        amp=args.amp,
        compile=args.compile,
        sync_bn=args.sync_bn,
        threads=args.threads,
        max_bad_images=args.max_bad_images,
        progress=not args.no_progress,
    )
    result = train(options)
    if int(os.environ.get("RANK", "0")) == 0:
        last = result.history[-1] if result.history else {}
        print(
            f"best validation top-1 {result.best_top1:.2f} % at epoch {result.best_epoch} "
            f"-> {result.checkpoint}"
        )
        if last:
            print(
                f"last epoch: train loss {last['train_loss']:.4f}, "
                f"{last['train_images_per_s']:.0f} img/s; outputs in {Path(args.out)}"
            )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from evit.train.data import DataError, find_classes, scan_images
    from evit.train.distributed import setup
    from evit.train.evaluate import eval_loader, evaluate
    from evit.weights import create_model, is_checkpoint_path, read_checkpoint_meta

    meta = read_checkpoint_meta(args.weights)
    if args.model is None and meta["config"] is None:
        raise ValueError(
            f"{args.weights} carries no config (official or timm format): pass --model m0..m5"
        )
    root = Path(args.data)
    root = root / "val" if (root / "val").is_dir() else root
    classes = find_classes(root)
    saved_names = meta["class_names"]
    if saved_names is not None and saved_names != classes:
        raise DataError(
            f"{root}: class folders differ from the {len(saved_names)} classes "
            f"{args.weights} was trained on (first: {', '.join(saved_names[:3])})"
        )
    spec = args.model if args.model is not None else meta["config"]
    weights = None if is_checkpoint_path(spec) else args.weights
    file_classes = _class_count(args.weights, args.ema)
    if file_classes is not None and file_classes != len(classes):
        raise DataError(
            f"{args.weights} has {file_classes} classes but {root} has {len(classes)} class folders"
        )
    model = create_model(spec, weights=weights, ema=args.ema, num_classes=file_classes)
    img_size = args.img_size or model.config.img_size
    if img_size != model.config.img_size:
        from evit.inherit import inherit_state_dict
        from evit.model import EfficientViT

        resized = EfficientViT(model.config.at_img_size(img_size))
        inherit_state_dict(resized, model.state_dict(), model.config)  # bias tables follow
        model = resized
    info = setup(args.device)
    model.to(info.device)
    loader = eval_loader(scan_images(root, classes), img_size, args.batch_size, args.workers)
    result = evaluate(model, loader, saved_names or classes, info, amp=False)
    if args.json:
        print(json.dumps({"model": model.config.name, "img_size": img_size, **result.to_dict()}))
        return 0
    print(
        f"{model.config.name} at {img_size}px on {root}: top-1 {result.top1:.2f} %, "
        f"top-5 {result.top5:.2f} %, loss {result.loss:.4f}, {result.images} images "
        f"({result.images_per_s:.0f} img/s)"
        + (f", {result.skipped} skipped" if result.skipped else "")
    )
    return 0


def _class_count(weights: str, ema: bool) -> int | None:
    """Outputs of the classifier stored in a checkpoint of any format (None: no classifier)."""
    from evit.weights import load_state_dict_file

    sd, _, _ = load_state_dict_file(weights, ema=ema)
    head = sd.get("head.linear.weight")
    return None if head is None else int(head.shape[0])
