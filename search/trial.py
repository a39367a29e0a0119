"""One trial: sample a config, bound or measure its latency, score it; report what it did.

:class:`TrialRunner` is the Optuna objective's body. It records the trial's attributes
(``search.keys``) and returns the two objective values with a :class:`TrialReport` of what it
did (measured, took a cached reading, was bounded by the pre-filter, trained, stopped early);
the loop (``search.loop``) sums the reports into the run's :class:`Tally`. A trial that ends
without values raises an ``optuna.TrialPruned`` that carries its report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import optuna

import evit
from edge.devicelock import device_lock
from evit.config import ModelConfig
from search import keys
from search.context import RunContext
from search.measure import Measurement, Measurer, attention_blocks
from search.storage import worker_id
from search.trainer import INHERITED, STOPPED, TRAINED, Score, Scorer, Stopped


@dataclass(frozen=True)
class TrialReport:
    """What one trial did.

    Attributes:
        latency_source: ``keys.MEASURED``, ``keys.CACHE``, ``keys.PREFILTER_BOUND``, or None
            (rejected by a shape rule before anything ran).
        score: the accuracy objective's score (None for a proxy or without a latency).
        confirmations: slow readings the pre-filter measured again.
        timings: the steps of a new measurement.
    """

    latency_source: str | None
    score: Score | None = None
    confirmations: int = 0
    timings: dict[str, float] = field(default_factory=dict)


class Pruned(optuna.TrialPruned):
    """A trial without values (a shape rule, an early stop), with its report."""

    def __init__(self, message: str, report: TrialReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class Tally:
    """This run's trials, counted from their reports."""

    measured: int = 0
    cache: int = 0
    prefiltered: int = 0
    rejected: int = 0
    failed: int = 0
    confirmations: int = 0
    trained: int = 0
    early_stopped: int = 0
    train_seconds: float = 0.0
    early_saved_s: float = 0.0
    inherited: int = 0  # --weight-sharing: scores read from the supernet
    inherit_seconds: float = 0.0
    timings: list[dict[str, float]] = field(default_factory=list)

    def add(self, report: TrialReport) -> None:
        source = report.latency_source
        if source is None:
            self.rejected += 1
        elif source == keys.PREFILTER_BOUND:
            self.prefiltered += 1
        elif source == keys.MEASURED:
            self.measured += 1
            self.timings.append(report.timings)
        else:
            self.cache += 1
        self.confirmations += report.confirmations
        score = report.score
        if score is not None and score.kind == INHERITED:
            self.inherited += 1
            self.inherit_seconds += score.seconds
        if score is not None and score.kind in (TRAINED, STOPPED):
            self.trained += score.kind == TRAINED
            self.early_stopped += score.kind == STOPPED
            self.train_seconds += score.seconds
            self.early_saved_s += score.saved_s

    def as_dict(self, trains: bool, inherits: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: getattr(self, k)
            for k in ("measured", "cache", "prefiltered", "failed", "rejected", "confirmations")
        }
        if trains:
            out.update(
                trained=self.trained,
                early_stopped=self.early_stopped,
                train_seconds=self.train_seconds,
                early_saved_s=self.early_saved_s,
            )
        if inherits:
            out.update(inherited=self.inherited, inherit_seconds=self.inherit_seconds)
        return out


def _record_latency(trial: optuna.Trial, m: Measurement) -> None:
    r = m.result
    for key, value in {
        keys.LATENCY_SOURCE: m.source,
        keys.LATENCY_MEDIAN: r.median_ms,
        keys.LATENCY_CI_LOW: r.ci_low_ms,
        keys.LATENCY_CI_HIGH: r.ci_high_ms,
        keys.LATENCY_P90: r.p90_ms,
        keys.LATENCY_RUNS: r.runs,
        keys.LATENCY_CONVERGED: r.converged,
        keys.LATENCY: r.to_dict(),  # candidates read it from here on any host
        keys.TIMINGS: m.timings,
    }.items():
        trial.set_user_attr(key, value)


class TrialRunner:
    """Runs the trials of one run (see the module docstring)."""

    def __init__(self, ctx: RunContext, measurer: Measurer, trainer: Scorer | None) -> None:
        self.ctx, self.measurer, self.trainer = ctx, measurer, trainer

    def _sample(self, trial: optuna.Trial) -> tuple[ModelConfig, str | None]:
        trial.set_user_attr(keys.WORKER, worker_id())
        config = self.ctx.space.sample(trial)
        reference = trial.user_attrs.get(keys.REFERENCE)  # references are always measured
        broken = None if reference else self.ctx.space.rules.violation(config)
        if broken:  # rejected before anything is computed
            trial.set_user_attr(keys.REJECTED, broken)
            raise Pruned(f"shape rule: {broken}", TrialReport(None))
        arch = config.architecture_hash()
        costs = evit.model_costs(config)
        for key, value in {
            keys.ARCH_HASH: arch,
            keys.PARAMS: costs.params,
            keys.MACS: costs.macs,
            keys.ACTIVATION_BYTES: costs.activation_bytes,
            keys.BLOCKS: attention_blocks(config),
        }.items():
            trial.set_user_attr(key, value)
        return config.replace(name=f"searched_{arch[:8]}"), reference

    def __call__(self, trial: optuna.Trial) -> tuple[tuple[float, float], TrialReport]:
        """The trial's (objective, latency) and its report."""
        ctx = self.ctx
        config, reference = self._sample(trial)
        proxy: float | None = None
        timings: dict[str, float] = {}
        if self.trainer is None:  # a proxy: computed before the measurement, not beside it
            start = time.perf_counter()
            with device_lock(ctx.target.device_key, exclusive=False):  # heavy, not measuring
                proxy = ctx.objective.evaluate(config)
            timings["objective_s"] = time.perf_counter() - start
        bound = None if reference else self.measurer.bound(config)
        if bound is not None:
            trial.set_user_attr(keys.LATENCY_SOURCE, keys.PREFILTER_BOUND)
            trial.set_user_attr(keys.PREFILTER_REASON, bound.reason)
            trial.set_constraint("latency_ms", bound.bound_ms - ctx.budget_ms)
            report = TrialReport(keys.PREFILTER_BOUND, None, bound.confirmations)
            return (proxy or 0.0, bound.bound_ms), report
        m = self.measurer.latency(trial.study, config, trial.number, bool(reference), ctx.budget_ms)
        m.timings.update(timings)
        _record_latency(trial, m)
        trial.set_constraint("latency_ms", m.result.median_ms - ctx.budget_ms)
        if self.trainer is None:
            assert proxy is not None
            return (proxy, m.result.median_ms), TrialReport(m.source, None, 0, m.timings)
        sets_budget = reference is not None and reference == ctx.budget_reference
        try:
            score = self.trainer.score(
                trial, config, m.result, ctx.budget_ms, reference, sets_budget
            )
        except Stopped as e:
            raise Pruned(str(e), TrialReport(m.source, e.score, 0, m.timings)) from None
        report = TrialReport(m.source, score, 0, m.timings)
        return (score.top1, m.result.median_ms), report
