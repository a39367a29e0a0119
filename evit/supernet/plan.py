"""Fitting a supernet's training into a time limit: time its steps, then plan epochs and steps.

A sandwich step runs the space's largest config, whose cost alone can make one pass over a
small data set take longer than a search's whole time limit on a CPU. So before a time-limited
training (``search --weight-sharing``), :func:`time_steps` times a few steps and one epoch's
evaluation on a throw-away copy of the run, and :func:`plan_for` turns a number of seconds into
epochs and steps per epoch (``SupernetOptions.steps_per_epoch``): full passes while they fit,
else one epoch on the random part of the training set that fits.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch

from evit.supernet.loop import SupernetOptions, _SupernetRun
from evit.train.distributed import setup, teardown


@dataclass(frozen=True)
class StepTimes:
    """What one run's training costs here.

    Attributes:
        step_seconds: one sandwich step (the median of the timed steps).
        validate_seconds: one epoch's evaluation (largest and smallest config, and their EMA).
        steps_per_pass: steps of one pass over the training set.
    """

    step_seconds: float
    validate_seconds: float
    steps_per_pass: int


@dataclass(frozen=True)
class Plan:
    epochs: int
    steps_per_epoch: int | None  # None: whole passes

    def steps(self, steps_per_pass: int) -> int:
        return self.epochs * (self.steps_per_epoch or steps_per_pass)


def time_steps(options: SupernetOptions, steps: int = 3) -> StepTimes:
    """Time ``steps`` sandwich steps (after one untimed) and one epoch's evaluation of the run
    ``options`` describe, in a temporary folder; ``options.out`` is not touched."""
    if steps < 1:
        raise ValueError(f"steps {steps} must be >= 1")
    info = setup(options.device)
    try:
        with tempfile.TemporaryDirectory(prefix="evit-supernet-timing-") as tmp:
            probe = dataclasses.replace(
                options, out=tmp, resume=False, progress=False, steps_per_epoch=None
            )
            run = _SupernetRun(probe, info)
            took, last = [], time.perf_counter()
            for step, batch in zip(range(steps + 1), run.train_loader, strict=False):
                run._step(batch.images, batch.targets, run.sample_configs(0, step))
                now = time.perf_counter()  # the batch's loading counted too
                took.append(now - last)
                last = now
            start = time.perf_counter()
            run._validate(0, torch.zeros(2), 1, 1.0, start)
            validate = time.perf_counter() - start
            return StepTimes(
                step_seconds=statistics.median(took[1:] or took),
                validate_seconds=validate,
                steps_per_pass=len(run.train_loader),
            )
    finally:
        teardown(info)


def plan_for(times: StepTimes, epochs: int, seconds: float) -> Plan:
    """The most of ``epochs`` passes that fits ``seconds``: all of them, else as many whole
    passes as fit, else one epoch of the steps that fit (at least one)."""
    if epochs < 1:
        raise ValueError(f"epochs {epochs} must be >= 1")
    per_pass = times.steps_per_pass * times.step_seconds + times.validate_seconds
    whole = int(seconds // per_pass)
    if whole >= 1:
        return Plan(min(epochs, whole), None)
    steps = int((seconds - times.validate_seconds) // times.step_seconds)
    return Plan(1, max(1, min(times.steps_per_pass, steps)))
