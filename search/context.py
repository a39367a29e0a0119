"""A run's settled facts, made once: the budget, the space, the target, the study.

:func:`make_context` checks the options and resolves everything a run decides at start-up (the
space and its classes, the target, ``--target auto``'s path, ``--budget-ms m0``'s measured
budget, the output folder); :func:`open_study` opens or joins the Optuna study and returns the
context as the study fixes it (a study joined keeps the budget its first worker measured). The
phases read the frozen :class:`RunContext`; nothing changes it afterwards.

:class:`Seams` are what a run is wired to and a test replaces: the clock, the wait, the
training function and the target class.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from search import keys
from search.accuracy import TrainBudget, check_init, estimate_training, train_candidate
from search.autotarget import choose_cpu_target
from search.objectives import ACCURACY, Objective, get_objective
from search.options import SearchOptions
from search.space import ACCURACY_SPACE, SearchSpace, load_space, reference_configs
from search.storage import WorkerPresence, make_storage, reap_dead_workers, redact_url
from search.targets import TRIAL_BUILD_LEVEL, Target, reference_budget, resolve_target


@dataclass(frozen=True)
class Seams:
    """What a run is wired to; tests pass their own.

    Attributes:
        clock: seconds, for ``--time-limit``.
        sleep: waits between drifted re-measurements.
        train: trains one candidate (``search.accuracy.train_candidate``'s signature).
        estimate_training: the seconds such a training would take, before any has run
            (``search.accuracy.estimate_training``).
        target: the target class (``search.targets.Target`` or a subclass).
    """

    clock: Callable[[], float] = time.perf_counter
    sleep: Callable[[float], None] = time.sleep
    train: Callable[..., Any] = train_candidate
    estimate_training: Callable[..., float] = estimate_training
    target: type[Target] = Target


@dataclass(frozen=True)
class RunContext:
    """A run's settled facts (see the module docstring).

    Attributes:
        budget_ms: the budget applied (``--budget-ms m0``: measured, or the study's).
        classes: the accuracy objective's class names (empty for a proxy).
        started: the clock's reading when the run started (``--time-limit`` counts from it).
        auto_choice: ``--target auto`` on a CPU: the line saying what was measured and chosen.
        budget_choice: ``--budget-ms m0``: the line saying what the budget is.
    """

    opts: SearchOptions
    budget_ms: float
    objective: Objective
    space: SearchSpace
    classes: tuple[str, ...]
    target: Target
    out: Path
    study_name: str
    storage_url: str
    started: float
    auto_choice: str | None = None
    budget_choice: str | None = None

    @property
    def train(self) -> TrainBudget | None:
        return self.opts.train

    @property
    def budget_reference(self) -> str | None:
        return self.opts.budget_reference


def default_study_name(
    target: str, opts: SearchOptions, threads: int | None, precision: str = "fp32"
) -> str:
    budget = (
        opts.budget_reference.removeprefix("efficientvit_")
        if opts.budget_reference
        else f"{opts.budget_ms:g}".replace(".", "p") + "ms"
    )
    suffix = "" if precision == "fp32" else f"-{precision}"
    if opts.weight_sharing:  # scored by another method: a study of its own
        suffix += "-supernet"
    return f"{target}-b{opts.batch}-t{threads or 'gpu'}-{budget}-{opts.objective}{suffix}"


def _space_and_classes(opts: SearchOptions) -> tuple[SearchSpace, tuple[str, ...]]:
    budget = opts.train
    space = load_space(opts.space if opts.space or budget is None else ACCURACY_SPACE)
    if budget is None:
        return space, ()
    classes = budget.check()
    space = dataclasses.replace(space, num_classes=len(classes))
    budget.check_sizes(space.img_size)
    check_init(budget, [space.smallest(), space.largest()], len(classes))
    return space, tuple(classes)


def _check_writable(out: Path) -> None:
    """Create ``out`` (or find it writable) now, not after minutes of searching."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write there ({e.strerror or e})") from None


def make_context(opts: SearchOptions, seams: Seams) -> RunContext:
    """Check ``opts`` and settle the run's facts (measuring the auto target and a reference
    budget when asked); one-line ValueErrors for bad input, before anything slow."""
    opts.check()
    started = seams.clock()
    space, classes = _space_and_classes(opts)
    name = resolve_target(opts.target)
    auto_cpu = opts.target == "auto" and name != "trt"  # the fastest CPU path, measured below
    calib = Path(opts.train.data) / "train" if opts.train is not None else None
    target = seams.target(
        name,
        batch=opts.batch,
        threads=opts.threads,
        max_seconds=opts.measure_seconds,
        precision=None if auto_cpu else opts.precision,
        calib=calib,
        build_level=TRIAL_BUILD_LEVEL if name == "trt" else None,
    )
    study_name = opts.study or default_study_name(
        "auto" if auto_cpu else name,
        opts,
        target.threads,
        (opts.precision or "fp32") if auto_cpu else target.precision or "fp32",
    )
    out = Path(opts.out) if opts.out else Path("runs") / study_name
    if opts.storage is not None:
        make_storage(opts.storage)  # a bad URL fails before anything is written
    _check_writable(out)
    target.workdir = out / "tmp"
    if name == "trt":  # one timing cache for every trial and worker of the study
        target.timing_cache = out / "trt-timing.cache"
    auto_choice = budget_choice = None
    if auto_cpu:
        target, auto_choice = choose_cpu_target(
            out,
            batch=opts.batch,
            threads=opts.threads,
            precision=opts.precision,
            max_seconds=opts.measure_seconds,
            workdir=out / "tmp",
            calib=calib,
            budget=opts.budget_reference or opts.budget_ms,
            smallest=space.smallest(),
            target_class=seams.target,
        )
        print(auto_choice, file=sys.stderr, flush=True)
    budget_ms = opts.budget_ms
    if opts.budget_reference is not None:
        budget_ms, budget_choice = reference_budget(
            out, target, opts.budget_reference, space.num_classes
        )
        print(budget_choice, file=sys.stderr, flush=True)
    return RunContext(
        opts=opts,
        budget_ms=budget_ms,
        objective=get_objective(opts.objective),
        space=space,
        classes=classes,
        target=target,
        out=out,
        study_name=study_name,
        storage_url=opts.storage or f"sqlite:///{out / 'study.db'}",
        started=started,
        auto_choice=auto_choice,
        budget_choice=budget_choice,
    )


def study_settings(ctx: RunContext) -> dict[str, Any]:
    """What a study is created with; a worker joining it must bring the same."""
    opts, target = ctx.opts, ctx.target
    training = {"training": opts.train.settings()} if opts.train is not None else {}
    # inherited and short-training scores do not mix in one study (absent when off, so studies
    # made before the key existed still resume)
    scorer = {"scorer": "supernet"} if opts.weight_sharing else {}
    return {
        **training,
        **scorer,
        "budget_ms": ctx.budget_ms,
        "target": target.name,
        "batch": target.batch,
        "threads": target.threads,
        "objective": opts.objective,
        # a changed space would give the same parameter names other choices mid-study
        "space": hashlib.sha256(repr(ctx.space).encode()).hexdigest()[:12],
        # latencies from two devices are not comparable: the device is part of the study
        "device": target.description,
        "device_fingerprint": target.fingerprint,
    }


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, constant_liar=True, n_startup_trials=12
        )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=24)
    return optuna.samplers.RandomSampler(seed=seed)


def _joined(ctx: RunContext, previous: dict[str, Any]) -> RunContext:
    """``--budget-ms m0`` joining a study another worker started: the budget is the one that
    worker measured (two readings of M0 never agree exactly)."""
    budget_ms = previous.get("budget_ms")
    if ctx.budget_reference is None or budget_ms is None or budget_ms == ctx.budget_ms:
        return ctx
    return dataclasses.replace(
        ctx,
        budget_ms=budget_ms,
        budget_choice=f"{ctx.budget_choice}; this study's budget is {budget_ms:.3f} ms, "
        "measured by the worker that started it",
    )


def _check_same_study(ctx: RunContext, previous: dict[str, Any], settings: dict) -> None:
    if previous.get("device") != settings["device"] and previous.get("device_fingerprint") not in (
        None,
        settings["device_fingerprint"],
    ):
        raise ValueError(
            f"study {ctx.study_name!r} measures on {previous.get('device')}, this worker on "
            f"{settings['device']}: a study's latencies come from one device; run this "
            "worker on that device or pass another --study"
        )
    if previous != settings:
        changed = ", ".join(
            f"{k} {previous.get(k)!r} -> {v!r}" for k, v in settings.items() if previous.get(k) != v
        )
        raise ValueError(
            f"study {ctx.study_name!r} in {redact_url(ctx.storage_url)} was created with "
            f"other settings ({changed}); pass another --study or --out"
        )


def open_study(ctx: RunContext) -> tuple[optuna.Study, RunContext, WorkerPresence]:
    """Open (or join) the study, check it was made with this run's settings, reap trials of
    dead workers and queue M0-M5; returns the study, the context as the study fixes it, and
    this worker's presence (held while it runs)."""
    study = optuna.create_study(
        study_name=ctx.study_name,
        storage=make_storage(ctx.storage_url),
        directions=["maximize", "minimize"],
        sampler=make_sampler(ctx.opts.sampler, ctx.opts.seed),
        load_if_exists=True,
    )
    previous = study.user_attrs.get(keys.SETTINGS)
    if previous is not None:
        ctx = _joined(ctx, previous)
        _check_same_study(ctx, previous, study_settings(ctx))
    else:
        study.set_user_attr(keys.SETTINGS, study_settings(ctx))
        study.set_metric_names([ctx.objective.name, "latency_ms"])  # named in the dashboard
    presence = WorkerPresence.acquire(ctx.out / ".workers")
    # an unsigned trial is only microseconds old when its worker is alive, so the rule is
    # applied to RDB studies too (their heartbeats need the grace period first)
    reap_dead_workers(study, presence)
    for name, config in reference_configs().items():
        params = ctx.space.params_of(config.replace(num_classes=ctx.space.num_classes))
        if params is not None:
            study.enqueue_trial(params, user_attrs={keys.REFERENCE: name}, skip_if_exists=True)
    return study, ctx, presence


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards ``--trials``: finished, except configs the shape rules
    rejected before anything was computed."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if keys.REJECTED not in t.user_attrs
    )


def trains(ctx: RunContext) -> bool:
    """The run trains its candidates (the accuracy objective)."""
    return ctx.opts.objective == ACCURACY
