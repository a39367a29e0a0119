"""Fitting a supernet's training into a time limit: steps per epoch, timing, the plan."""

from __future__ import annotations

import json

import pytest

from evit.supernet.loop import CHECKPOINT, SupernetOptions, train_supernet
from evit.supernet.plan import Plan, StepTimes, plan_for, time_steps
from evit.train.loop import TrainError
from evit.train.recipe import Recipe
from tests.evit.test_supernet_train import shapes, space_yaml  # noqa: F401 (fixtures)

# 4 classes x 32 training images, batch 16: 8 steps per pass
PASS = 8


def _options(space, data, out, **kw) -> SupernetOptions:
    recipe = Recipe(epochs=2, batch_size=16, lr=2e-3, img_size=32, seed=3, ema_decay=0)
    base = dict(space=space, data=data, out=out, recipe=recipe, bn_batches=2, threads=1)
    return SupernetOptions(**{**base, **kw, "progress": False})


def _steps(out) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_the_plan_keeps_every_epoch_that_fits_then_whole_passes_then_steps():
    times = StepTimes(step_seconds=2.0, validate_seconds=10.0, steps_per_pass=50)  # 110 s a pass
    assert plan_for(times, 10, 2000) == Plan(10, None)  # 1,100 s: all of them
    assert plan_for(times, 10, 500) == Plan(4, None)  # 4 whole passes (440 s)
    assert plan_for(times, 10, 60) == Plan(1, 25)  # 60 s - 10 s of evaluation = 25 steps
    assert plan_for(times, 10, 5) == Plan(1, 1)  # never nothing
    assert Plan(1, 25).steps(50) == 25 and Plan(4, None).steps(50) == 200
    with pytest.raises(ValueError, match="epochs 0 must be >= 1"):
        plan_for(times, 0, 100)


class _Cut(Exception):
    pass


def _cut(epoch, record):
    raise _Cut


def test_a_step_cap_trains_that_many_steps_an_epoch_and_a_resume_keeps_it(
    space_yaml,  # noqa: F811
    shapes,  # noqa: F811
    tmp_path,
):
    whole = tmp_path / "whole"
    train_supernet(_options(space_yaml, shapes, whole))
    assert _steps(whole) == [PASS, 2 * PASS]
    out = tmp_path / "capped"
    with pytest.raises(_Cut):  # stopped after the first epoch's checkpoint
        train_supernet(_options(space_yaml, shapes, out, steps_per_epoch=3), _cut)
    assert _steps(out) == [3]
    # resumed with another cap: the run's own is kept
    train_supernet(_options(space_yaml, shapes, out, steps_per_epoch=5, resume=True))
    assert _steps(out) == [3, 6]
    with pytest.raises(TrainError, match="steps per epoch 0 must be >= 1"):
        train_supernet(_options(space_yaml, shapes, tmp_path / "bad", steps_per_epoch=0))


def test_timing_steps_leaves_the_run_folder_alone(space_yaml, shapes, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    times = time_steps(_options(space_yaml, shapes, out), steps=2)
    assert times.steps_per_pass == PASS
    assert 0 < times.step_seconds < 60 and 0 < times.validate_seconds < 60
    assert not (out / CHECKPOINT).exists()
    with pytest.raises(ValueError, match="steps 0 must be >= 1"):
        time_steps(_options(space_yaml, shapes, out), steps=0)
