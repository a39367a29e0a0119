"""How far the default training recipe is from the best of a small sweep, on small data.

    python -m benchmarks.bench_recipe      # datasets a s b c, the default settings (~50 min)
    python -m benchmarks.bench_recipe --datasets d --settings auto today "lr x4" "aug paper"

Generated datasets (``evit.train.synthetic``: shapes x textures on cluttered, noisy canvases),
each trained from scratch with M0 at the data's size, batch 64, 2 threads, one seed:

- ``a``: 64 px, 10 classes, 100 training / 50 validation images per class, 20 epochs;
- ``b``: 64 px, 40 classes (the generator's most), 50 / 25 per class, 10 epochs;
- ``c``: 112 px, 10 classes, 100 / 50 per class, 10 epochs;
- ``d``: 64 px, 10 classes, 500 / 50 per class, 8 epochs;
- ``s``: a search's scoring training: 64 px, 10 classes, 300 / 100 per class, 3 epochs.

Settings: ``today`` (the paper's recipe scaled to batch 64, the default before ``--recipe
auto``), ``auto`` (the default: ``evit.train.recipe.choose_recipe``), and ``auto`` with one knob
changed: learning rate (0.5x, 2x, 4x), warm-up (none, 20 % of the run), EMA (off),
augmentation (none; the paper's, with RandAugment, mixup and cutmix). By default the sweep
runs :data:`DEFAULT_SETTINGS` on :data:`DEFAULT_DATASETS` (the rest on request: two cores). The
score is the best
validation top-1 of the model or its EMA over the epochs, as ``evit train`` reports it. Results
are saved after every training (``benchmarks/results/recipe.json``), so a run that is stopped
keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import RESULTS, save


@dataclass(frozen=True)
class Dataset:
    size: int
    classes: int
    per_class: int
    val_per_class: int
    epochs: int


DATASETS = {
    "a": Dataset(64, 10, 100, 50, 20),
    "b": Dataset(64, 40, 50, 25, 10),
    "c": Dataset(112, 10, 100, 50, 10),
    "d": Dataset(64, 10, 500, 50, 8),
    "s": Dataset(64, 10, 300, 100, 3),
}
DEFAULT_DATASETS = ("a", "s", "b", "c")
SETTINGS = (
    "today",
    "auto",
    "lr x0.5",
    "lr x2",
    "lr x4",
    "warm-up 0",
    "warm-up 20%",
    "EMA off",
    "aug none",
    "aug paper",
)


DEFAULT_SETTINGS = ("today", "auto", "lr x0.5", "lr x2", "warm-up 20%", "EMA off", "aug none")


def recipe_for(setting: str, ds: Dataset, train_images: int):
    """The recipe of one sweep cell."""
    from evit.train.recipe import PAPER, choose_recipe

    common = {"img_size": ds.size, "epochs": ds.epochs, "batch_size": 64}
    if setting == "today":
        return PAPER.replace(**common)
    auto, _ = choose_recipe("auto", epochs=ds.epochs, train_images=train_images, batch_size=64)
    auto = auto.replace(img_size=ds.size)
    if setting.startswith("lr x"):
        lr = auto.lr * float(setting.removeprefix("lr x"))
        return auto.replace(lr=lr, min_lr=auto.min_lr / auto.lr * lr)
    changes = {
        "auto": {},
        "warm-up 0": {"warmup_epochs": 0.0},
        "warm-up 20%": {"warmup_epochs": 0.2 * ds.epochs},
        "EMA off": {"ema_decay": 0.0},
        "aug none": {"aug": "none"},
        "aug paper": {"aug": "paper"},
    }[setting]
    return auto.replace(**changes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS), choices=list(DATASETS))
    p.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), choices=SETTINGS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--label", default="recipe")
    args = p.parse_args(argv)

    from evit.train.data import resolve_data
    from evit.train.loop import TrainOptions, train
    from evit.train.synthetic import write_synthetic

    saved = RESULTS / f"{args.label}.json"
    cells = json.loads(saved.read_text()).get("cells", {}) if saved.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.datasets:
            ds = DATASETS[key]
            data = Path(tmp) / key
            write_synthetic(
                data, ds.classes, ds.per_class, ds.size, seed=0, val_per_class=ds.val_per_class
            )
            images = len(resolve_data(data).train)
            for setting in args.settings:
                name = f"{key}/{setting}"
                if name in cells:
                    continue
                recipe = recipe_for(setting, ds, images)
                start = time.perf_counter()
                result = train(
                    TrainOptions(
                        model="m0",
                        data=data,
                        out=Path(tmp) / "run" / key / setting.replace(" ", "_"),
                        recipe=recipe,
                        threads=args.threads,
                        progress=False,
                        curves=False,
                        keep_decoded=True,
                    )
                )
                cells[name] = {
                    "top1": result.best_top1,
                    "last_top1": result.history[-1]["val_top1"],
                    "seconds": time.perf_counter() - start,
                    "recipe": recipe.to_dict(),
                    "warning": result.warning,
                }
                print(f"{name}: {result.best_top1:.1f} %", flush=True)
                save(
                    args.label,
                    {"datasets": {k: vars(v) for k, v in DATASETS.items()}, "cells": cells},
                )
    print(table(cells))
    return 0


def table(cells: dict) -> str:
    """Markdown: a row per setting, a column per dataset, and each column's best in bold."""
    keys = sorted({name.split("/")[0] for name in cells})
    best = {k: max(c["top1"] for n, c in cells.items() if n.startswith(f"{k}/")) for k in keys}
    lines = ["| setting | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for setting in SETTINGS:
        row = []
        for k in keys:
            cell = cells.get(f"{k}/{setting}")
            if cell is None:
                row.append("-")
                continue
            text = f"{cell['top1']:.1f}"
            row.append(f"**{text}**" if cell["top1"] == best[k] else text)
        lines.append(f"| {setting} | " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
