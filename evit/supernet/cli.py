"""``python -m evit supernet train``: a weight-sharing supernet over a search space.

Examples:
    python -m evit supernet train --space search/accuracy_space.yaml --data data/shapes \\
        --img-size 64 --epochs 10 --out runs/supernet
    torchrun --nproc-per-node 2 -m evit supernet train --space search/accuracy_space.yaml \\
        --data data/shapes --img-size 64 --out runs/supernet-ddp
"""

from __future__ import annotations

import argparse
import os

from evit.clitools import BAD_INPUT, add_command
from evit.train.cli import (
    add_data_flags,
    add_process_flags,
    add_recipe_flags,
    default_workers,
    recipe_from_args,
    setup_logging,
)
from evit.train.loop import BN_RECALIBRATION_BATCHES


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``supernet train`` on the ``python -m evit`` parser."""
    example = (
        "python -m evit supernet train --space search/accuracy_space.yaml --data data/shapes "
        "--img-size 64 --epochs 10 --out runs/supernet"
    )
    supernet = add_command(
        sub,
        "supernet",
        help="a weight-sharing supernet over a search space (train)",
        examples=example,
    )
    commands = supernet.add_subparsers(dest="supernet_command", required=True)
    p = add_command(
        commands,
        "train",
        help="train a supernet on an image folder by the sandwich rule",
        examples=example,
        done="trained; the supernet is OUT/supernet.pth",
        bad_input=f"{BAD_INPUT}; a largest config that does not fit in memory at the batch "
        "size, a checkpoint of another space or class count",
        interrupted="the last finished epoch is in OUT/supernet.pth (continue with --resume)",
        description="Train one set of weights for every config of a search space: each step "
        "trains the space's largest config on the labels and its smallest plus "
        "--random-subnets random configs on the largest's predictions (in-place "
        "distillation), with evit train's recipe (--recipe auto), EMA, exact --resume and "
        "torchrun. After each epoch the largest and smallest configs are evaluated with their "
        "BatchNorm statistics re-estimated. Outputs: OUT/supernet.pth (weights, EMA, space, "
        "classes, training state) and OUT/metrics.jsonl.",
    )
    p.add_argument(
        "--space",
        required=True,
        help="search-space YAML (the format of search/accuracy_space.yaml); the class count "
        "comes from --data",
    )
    add_data_flags(p)
    p.add_argument("--out", required=True, help="output folder (supernet.pth, metrics.jsonl)")
    add_recipe_flags(
        p,
        img_size_help="train and evaluate every config at this input size instead of the "
        "space's img_size choices (windows clip to the stage resolutions)",
    )
    p.add_argument(
        "--random-subnets",
        type=int,
        default=2,
        help="random configs per step besides the largest and the smallest (2)",
    )
    p.add_argument(
        "--bn-batches",
        type=int,
        default=BN_RECALIBRATION_BATCHES,
        help="training batches that re-estimate each evaluated config's BatchNorm statistics "
        f"({BN_RECALIBRATION_BATCHES})",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    add_process_flags(p)


def run(args: argparse.Namespace) -> int:
    """Run ``supernet train`` (the only supernet command so far)."""
    from evit.supernet.loop import SupernetOptions, train_supernet
    from evit.supernet.space import read_space

    setup_logging(getattr(args, "verbose", False))
    space = read_space(args.space)  # a bad space is refused before the data is scanned
    options = SupernetOptions(
        space=space,
        data=args.data,
        out=args.out,
        recipe=recipe_from_args(args),
        random_subnets=args.random_subnets,
        bn_batches=args.bn_batches,
        val=args.val,
        val_fraction=args.val_fraction,
        resume=args.resume,
        workers=default_workers(args),
        device=args.device,
        threads=args.threads,
        max_bad_images=args.max_bad_images,
        progress=not args.no_progress,
    )
    result = train_supernet(options)
    if int(os.environ.get("RANK", "0")) == 0:
        epochs = len(result.history)
        print(
            f"supernet after {epochs} epochs: validation top-1 largest "
            f"{result.largest_top1:.2f} %, smallest {result.smallest_top1:.2f} % (BN "
            f"re-estimated) -> {result.checkpoint}"
        )
    return 0
