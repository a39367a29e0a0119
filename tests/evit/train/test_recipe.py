"""The recipe a run gets: auto's choice for small/large data and short/long runs, the paper's
recipe unchanged, and the "did not learn" warning."""

from __future__ import annotations

import logging
import math

import pytest

from evit.cli import main
from evit.train.recipe import (
    PAPER,
    SHORT_EMA_HORIZON_SHARE,
    SHORT_LR,
    choose_recipe,
    learning_warning,
    short_recipe,
)
from evit.weights import read_checkpoint_meta
from tests.evit.train.conftest import train_argv

# the official recipe as `evit train` resolved it before --recipe existed (no flags given)
OFFICIAL = {
    "epochs": 300,
    "batch_size": 256,
    "base_lr": 1e-3,
    "lr": None,
    "weight_decay": 0.025,
    "warmup_epochs": 5.0,
    "warmup_lr": 1e-6,
    "min_lr": 1e-5,
    "label_smoothing": 0.1,
    "aug": "auto",
    "rand_augment": "rand-m9-mstd0.5-inc1",
    "mixup": 0.8,
    "cutmix": 1.0,
    "random_erasing": 0.25,
    "ema_decay": 0.99996,
    "clip_grad": 0.02,
    "clip_mode": "agc",
    "drop_path": 0.0,
    "img_size": None,
    "seed": 0,
}


def test_recipe_paper_is_the_official_recipe_unchanged():
    for train_images in (500, 1_281_167):
        recipe, why = choose_recipe(
            "paper", epochs=None, train_images=train_images, batch_size=None
        )
        assert {k: v for k, v in recipe.to_dict().items() if k != "name"} == OFFICIAL
        assert recipe.name == "paper" and "recipe paper" in why
        assert recipe.scaled_lr(256) == pytest.approx(5e-4)  # linear: 1e-3 x 256 / 512
    # the flags a user gives on top still replace single settings
    recipe, _ = choose_recipe("paper", epochs=10, train_images=500, batch_size=64)
    assert (recipe.epochs, recipe.batch_size, recipe.lr) == (10, 64, None)


@pytest.mark.parametrize(
    ("epochs", "images", "expected"),
    [
        (300, 1_281_167, "paper"),  # ImageNet, the paper's run
        (100, 60_000, "paper"),
        (30, 1_281_167, "short"),  # a short run on big data
        (300, 3_000, "short"),  # a long run on small data
        (10, 1_300, "short"),
    ],
)
def test_auto_takes_the_paper_recipe_only_for_long_runs_on_big_data(epochs, images, expected):
    recipe, why = choose_recipe("auto", epochs=epochs, train_images=images, batch_size=None)
    assert recipe.name == expected and f"auto -> {expected}" in why
    finetune, _ = choose_recipe(
        "auto", epochs=epochs, train_images=images, batch_size=None, finetune=True
    )
    assert finetune.name == ("finetune" if expected == "paper" else "short")
    assert finetune.weight_decay == 1e-8


def test_the_short_recipe_follows_the_run_length_and_the_batch():
    assert short_recipe(epochs=3, train_images=3_000).lr == pytest.approx(SHORT_LR)  # a search's
    assert short_recipe(epochs=5, train_images=3_000).lr == pytest.approx(SHORT_LR)
    assert short_recipe(epochs=7, train_images=3_000).lr == pytest.approx(1.4 * SHORT_LR)
    assert short_recipe(epochs=60, train_images=3_000).lr == pytest.approx(2 * SHORT_LR)
    small = short_recipe(epochs=10, train_images=1_300, batch_size=64)
    assert small.lr == pytest.approx(2 * SHORT_LR)
    assert small.warmup_epochs == pytest.approx(0.5)  # 5 % of the run
    assert small.min_lr == pytest.approx(small.lr / 100)
    steps = 10 * math.ceil(1_300 / 64)  # 210
    assert small.ema_decay == pytest.approx(1 - 1 / (SHORT_EMA_HORIZON_SHARE * steps), abs=1e-6)
    long = short_recipe(epochs=60, train_images=30_000, batch_size=64)
    assert long.ema_decay > small.ema_decay and long.warmup_epochs == pytest.approx(3.0)
    assert short_recipe(10, 1_300, batch_size=256).lr == pytest.approx(4 * SHORT_LR)  # sqrt(4)
    # the paper's recipe at batch 64 takes a 32x smaller step than the short one
    assert PAPER.scaled_lr(64) == pytest.approx(small.lr / 32)
    with pytest.raises(ValueError, match="--recipe fast: choose one of auto, paper"):
        choose_recipe("fast", epochs=1, train_images=10, batch_size=None)


def test_the_cli_says_which_recipe_it_chose_and_the_checkpoint_keeps_it(
    shapes, tiny_yaml, tmp_path, caplog
):
    out = tmp_path / "run"
    argv = train_argv(tiny_yaml, shapes, out, "--epochs", "1")
    argv.remove("--lr")
    argv.remove("2e-3")  # the recipe's own learning rate
    with caplog.at_level(logging.INFO):
        assert main(argv) == 0
    chose = [r.getMessage() for r in caplog.records if r.getMessage().startswith("recipe auto")]
    assert chose and "auto -> short" in chose[0], chose
    recipe = read_checkpoint_meta(out / "best.pth")["extra"]["recipe"]
    assert recipe["name"] == "short" and recipe["lr"] == pytest.approx(SHORT_LR / 2)  # batch 16
    # (1 epoch: the few-epoch rate; sqrt(16 / 64) = 1/2)
    paper = tmp_path / "paper"
    assert main([*train_argv(tiny_yaml, shapes, paper, "--epochs", "1"), "--recipe", "paper"]) == 0
    recipe = read_checkpoint_meta(paper / "best.pth")["extra"]["recipe"]
    assert recipe["name"] == "paper" and recipe["lr"] == 2e-3  # the flag on top
    assert recipe["ema_decay"] == OFFICIAL["ema_decay"]


def _epochs(*pairs: tuple[float, float]) -> list[dict]:
    return [{"train_loss": loss, "val_top1": top1} for loss, top1 in pairs]


def test_a_run_that_did_not_learn_gets_one_warning_line():
    chance = _epochs((2.30, 10.0), (2.29, 12.0), (2.28, 11.0))  # 10 classes
    line = learning_warning(chance, num_classes=10)
    assert "near chance (10.0 %)" in line and "fell only 1%" in line
    assert "--lr" in line and "--epochs" in line and "\n" not in line
    flat_loss = _epochs((2.30, 30.0), (2.20, 40.0))  # learned something, loss barely moved
    assert "near chance" not in learning_warning(flat_loss, 10)
    assert learning_warning(_epochs((2.30, 10.0), (1.50, 45.0)), 10) is None
    assert learning_warning([], 10) is None


def test_training_that_barely_learns_warns_at_the_end(shapes, tiny_yaml, tmp_path, caplog):
    out = tmp_path / "slow"
    argv = train_argv(tiny_yaml, shapes, out, "--epochs", "1", "--recipe", "paper")
    argv[argv.index("--lr") + 1] = "1e-7"
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    warned = [r.getMessage() for r in caplog.records if "barely learned" in r.getMessage()]
    assert len(warned) == 1
