"""The search: an Optuna multi-objective study under a measured latency budget.

Directions: maximize the objective (a proxy such as ``params``), minimize measured latency; the
budget is a constraint (``trial.set_constraint``: feasible when latency - budget <= 0). Every
latency comes from the ``edge`` harness on the target; a repeated architecture reuses its earlier
measurement (cache keyed by architecture hash and target fingerprint, persisted in
``measurements.jsonl``, and on each trial). A cheap pre-filter skips configs predicted to exceed
the budget; those trials carry a latency *bound* labelled as such and are never reported as
feasible. Measurements hold the device exclusively (``edge.devicelock``). At the end, the Pareto
candidates and the references M0-M5 are re-measured interleaved in one run, and one rule
(``search.selection``) picks the best and the family.

With ``objective="accuracy"`` (``search.accuracy``) a trial measures latency first; a config
over the budget is never trained; one within it trains briefly on the user's data (under the
device lock in shared mode, so that no measurement runs on the same cores meanwhile) and scores
validation top-1; an early-stop rule ends hopeless trainings; trained weights are kept only for
the current Pareto set (``trials/<number>/best.pth``). After the re-measurement the pick's
contenders, M0 and the best candidate within M0's latency train again with another seed and are
ranked by the mean (``--confirm``): the most accurate of ~20 noisy scores is otherwise mostly
the luckiest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

import evit
from edge.devicelock import device_lock
from edge.latency import InterleavedResult, LatencyResult, measure_interleaved
from evit.config import ModelConfig
from search.accuracy import (
    ConfirmLog,
    EarlyRecord,
    EarlyStopped,
    TrainBudget,
    check_init,
    epoch_top1,
    train_candidate,
)
from search.cache import MeasurementLog
from search.candidates import Candidate
from search.objectives import ACCURACY, Objective, get_objective
from search.prefilter import PreFilter, gemm_peak_macs_per_ms
from search.selection import (
    choose_remeasure,
    fits_budget,
    pick_best,
    pick_family,
    within_reference,
)
from search.space import ACCURACY_SPACE, SearchSpace, load_space, reference_configs
from search.storage import (
    WorkerPresence,
    make_storage,
    reap_dead_workers,
    redact_url,
    worker_id,
)
from search.targets import (
    CPU_TARGETS,
    TRIAL_BUILD_LEVEL,
    Target,
    choose_cpu_target,
    reference_budget,
    resolve_target,
)
from search.timeplan import MEASURED, STOPPED, TRAINED, TrialTimes

log = logging.getLogger(__name__)

TRIALS = "trials"  # trained weights of the accuracy objective's Pareto set: trials/<number>/
CONFIRM = "confirm.jsonl"  # the accuracy objective's second-seed scores (ConfirmLog)
SAMPLERS = ("tpe", "nsga2", "random")


@dataclass
class SearchOptions:
    """Everything a search run needs; the CLI fills it from flags."""

    budget_ms: float  # ignored (measured) when budget_reference is set
    target: str = "auto"
    batch: int = 1
    threads: int | None = None
    trials: int | None = None
    timeout: float | None = None
    objective: str = "params"
    space: str | None = None
    storage: str | None = None
    study: str | None = None
    seed: int = 0
    out: Path | None = None
    family: bool = False
    sampler: str = "tpe"
    measure_seconds: float = 2.0
    remeasure: int = 6
    remeasure_block_seconds: float = 0.12
    # the final re-measurement is repeated this many times when the machine's speed drifted
    # (see drift_warning), after waiting drift_wait_seconds each time
    drift_retries: int = 2
    drift_wait_seconds: float = 60.0
    # the whole run's wall-clock seconds, final phase included (see SearchRun.time_left)
    time_limit: float | None = None
    train: TrainBudget | None = None  # the accuracy objective's training
    precision: str | None = None  # fp32 | fp16 | int8; None: the target's default
    # --budget-ms m0: the budget is this reference's latency on the target, measured at start-up
    budget_reference: str | None = None

    def check(self) -> None:
        if self.budget_reference is not None:
            if self.budget_reference not in reference_configs():
                raise ValueError(
                    f"--budget-ms {self.budget_reference}: not a reference (m0 ... m5)"
                )
        elif not (self.budget_ms > 0 and math.isfinite(self.budget_ms)):
            raise ValueError(f"--budget-ms {self.budget_ms}: must be a positive number")
        if self.batch < 1:
            raise ValueError(f"--batch {self.batch}: must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads {self.threads}: must be >= 1")
        if self.trials is not None and self.trials < 1:
            raise ValueError(f"--trials {self.trials}: must be >= 1")
        if self.drift_retries < 0:
            raise ValueError(f"--drift-retries {self.drift_retries}: must be >= 0")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"--timeout {self.timeout}: must be > 0 seconds")
        if self.time_limit is not None and not (
            self.time_limit > 0 and math.isfinite(self.time_limit)
        ):
            raise ValueError(f"--time-limit {self.time_limit}: must be > 0 seconds")
        if self.sampler not in SAMPLERS:
            raise ValueError(
                f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}"
            )
        if self.objective == ACCURACY and self.train is None:
            raise ValueError(
                "--objective accuracy needs --data DIR (an ImageFolder with train/ and val/) "
                "to train and score each candidate"
            )
        if self.objective != ACCURACY and self.train is not None:
            raise ValueError(
                f"--data trains candidates, which only --objective accuracy does (objective "
                f"{self.objective!r} is a training-free proxy)"
            )


@dataclass
class SearchOutcome:
    out: Path
    study_name: str
    budget_ms: float
    target: Target
    objective: Objective
    best: Candidate | None
    pareto: list[Candidate]
    references: list[Candidate]
    fastest: Candidate | None
    stats: dict[str, Any] = field(default_factory=dict)
    family: list[tuple[Candidate, Candidate]] = field(default_factory=list)
    interrupted: bool = False
    training: dict[str, Any] | None = None  # the accuracy objective's TrainBudget.settings()
    interleaved: InterleavedResult | None = None  # the final re-measurement (paired ratios)
    # accuracy objective: (trained reference, most accurate candidate within its latency)
    iso_latency: list[tuple[Candidate, Candidate]] = field(default_factory=list)
    # not fp32: the pick and the references in fp32 and this precision, side by side
    precision_rows: list[PrecisionRow] = field(default_factory=list)
    auto_choice: str | None = None  # --target auto on a CPU: what it measured and chose
    budget_choice: str | None = None  # --budget-ms m0: the reference's measured latency
    budget_reference: str | None = None  # --budget-ms m0: that reference ("efficientvit_m0")
    # the machine's speed changed between the trials and the final re-measurement (see drift)
    drift_warning: str | None = None


@dataclass
class PrecisionRow:
    """One model in fp32 and in the search's precision, measured in one interleaved run."""

    candidate: Candidate
    fp32: LatencyResult
    this: LatencyResult
    speedup: Any  # edge.latency.Ratio: fp32 time / this precision's time


# --- the study -----------------------------------------------------------------------------


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, constant_liar=True, n_startup_trials=12
        )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=24)
    return optuna.samplers.RandomSampler(seed=seed)


def default_study_name(
    target: str, opts: SearchOptions, threads: int | None, precision: str = "fp32"
) -> str:
    budget = (
        opts.budget_reference.removeprefix("efficientvit_")
        if opts.budget_reference
        else f"{opts.budget_ms:g}".replace(".", "p") + "ms"
    )
    suffix = "" if precision == "fp32" else f"-{precision}"
    return f"{target}-b{opts.batch}-t{threads or 'gpu'}-{budget}-{opts.objective}{suffix}"


def _settings(opts: SearchOptions, target: Target, space: SearchSpace) -> dict[str, Any]:
    training = {"training": opts.train.settings()} if opts.train is not None else {}
    return {
        **training,
        "budget_ms": opts.budget_ms,
        "target": target.name,
        "batch": target.batch,
        "threads": target.threads,
        "objective": opts.objective,
        # a changed space would give the same parameter names other choices mid-study
        "space": hashlib.sha256(repr(space).encode()).hexdigest()[:12],
        # latencies from two devices are not comparable: the device is part of the study
        "device": target.description,
        "device_fingerprint": target.fingerprint,
    }


def _check_writable(out: Path) -> None:
    """Create ``out`` (or find it writable) now, not after minutes of searching."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write there ({e.strerror or e})") from None


class NothingFits(ValueError):
    """Even the smallest configuration of the space is slower than the budget."""


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards ``--trials``: finished, except configs the shape rules
    rejected before anything was computed."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if "rejected" not in t.user_attrs
    )


def _front(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of the trials no other trial beats in both top-1 and latency."""

    def point(t: FrozenTrial) -> tuple[float, float]:
        return t.user_attrs["top1"], t.user_attrs["latency_median_ms"]

    return {
        t.number
        for t in trials
        if not any(
            point(o)[0] >= point(t)[0] and point(o)[1] <= point(t)[1] and point(o) != point(t)
            for o in trials
        )
    }


def _most_accurate(trials: list[FrozenTrial], k: int, budget_ms: float) -> set[int]:
    """Numbers of the ``k`` most accurate trials within the budget, on the front or not (the
    contenders ``--confirm`` trains again: a lucky score may have pushed them off it)."""
    fits = [t for t in trials if t.user_attrs["latency_median_ms"] <= budget_ms]
    return {t.number for t in sorted(fits, key=lambda t: -t.user_attrs["top1"])[:k]}


_clock = time.perf_counter  # the time limit's clock; tests replace it

# the final phase's fixed part: best.onnx (exported and verified), the report and its plots
OUTPUT_SECONDS = 20.0
PREPARE_SECONDS = 2.0  # one model's export for a measurement, before a trial has timed one


def interleave_seconds(models: int) -> float:
    """The time cap of one interleaved run of ``models`` models (the final re-measurement)."""
    return max(30.0, 4.0 * models)


def _blocks(config: ModelConfig) -> int:
    """Attention heads over all blocks: each runs its own small ops, whatever its MACs."""
    return sum(s.depth * s.num_heads for s in config.stages)


class SearchRun:
    """One worker's run of a search (see :func:`run_search`)."""

    def __init__(self, opts: SearchOptions) -> None:
        opts.check()
        self.started = _clock()  # --time-limit counts from here
        self.opts = opts
        self.objective = get_objective(opts.objective)
        self.budget = opts.train
        self.space = load_space(opts.space if opts.space or self.budget is None else ACCURACY_SPACE)
        self.classes: list[str] = []
        if self.budget is not None:
            self.classes = self.budget.check()
            self.space = dataclasses.replace(self.space, num_classes=len(self.classes))
            self.budget.check_sizes(self.space.img_size)
            check_init(
                self.budget, [self.space.smallest(), self.space.largest()], len(self.classes)
            )
        target_name = resolve_target(opts.target)
        # auto without TensorRT: the fastest CPU path, measured once everything else is checked
        auto_cpu = opts.target == "auto" and target_name != "trt"
        # int8 calibrates on the user's images when there are some (else generated frames)
        calib = Path(self.budget.data) / "train" if self.budget is not None else None
        self.target = Target(
            target_name,
            batch=opts.batch,
            threads=opts.threads,
            max_seconds=opts.measure_seconds,
            precision=None if auto_cpu else opts.precision,
            calib=calib,
            build_level=TRIAL_BUILD_LEVEL if target_name == "trt" else None,
        )
        self.study_name = opts.study or default_study_name(
            "auto" if auto_cpu else target_name,
            opts,
            self.target.threads,
            (opts.precision or "fp32") if auto_cpu else self.target.precision or "fp32",
        )
        self.out = Path(opts.out) if opts.out else Path("runs") / self.study_name
        if target_name == "trt":  # one timing cache for every trial and worker of the study
            self.target.timing_cache = self.out / "trt-timing.cache"
        self.storage_url = opts.storage or f"sqlite:///{self.out / 'study.db'}"
        if opts.storage is not None:
            make_storage(opts.storage)  # a bad URL fails before anything is written
        _check_writable(self.out)
        self.target.workdir = self.out / "tmp"
        self.auto_choice: str | None = None
        if auto_cpu:
            self.target, self.auto_choice = choose_cpu_target(
                self.out,
                batch=opts.batch,
                threads=opts.threads,
                precision=opts.precision,
                max_seconds=opts.measure_seconds,
                workdir=self.out / "tmp",
                calib=calib,
            )
            target_name = self.target.name
            print(self.auto_choice, file=sys.stderr, flush=True)
        self.budget_choice: str | None = None
        if opts.budget_reference is not None:
            budget_ms, self.budget_choice = reference_budget(
                self.out, self.target, opts.budget_reference, self.space.num_classes
            )
            self.opts = opts = dataclasses.replace(opts, budget_ms=budget_ms)
            print(self.budget_choice, file=sys.stderr, flush=True)
        self.log = MeasurementLog(self.out / "measurements.jsonl", self.target.fingerprint)
        peak = (  # the MAC floor rests on the fp32 GEMM peak: int8/bf16 kernels can beat it
            gemm_peak_macs_per_ms(self.target.threads)
            if target_name in CPU_TARGETS and self.target.precision == "fp32"
            else None
        )
        self.prefilter = PreFilter(opts.budget_ms, peak)
        self.stats = {"measured": 0, "cache": 0, "prefiltered": 0, "failed": 0, "rejected": 0}
        if self.budget is not None:
            self.stats.update(
                trained=0,
                early_stopped=0,
                train_seconds=0.0,
                early_saved_s=0.0,
                confirmed=0,
                confirm_seconds=0.0,
            )
        self.timings: list[dict[str, float]] = []
        self.train_durations: list[float] = []  # this run's full trainings, in seconds
        # full trainings of the study's earlier runs: estimates for a resumed run's first trials
        self.trial_times = TrialTimes()  # per trial kind; the study's earlier trainings too
        self.current_trial: int | None = None
        self.interleaved: InterleavedResult | None = None  # the final re-measurement

    # study set-up ------------------------------------------------------------------------
    def _adopt_budget(self, budget_ms: float | None, settings: dict[str, Any]) -> None:
        """``--budget-ms m0`` joining a study another worker started: the budget is the one that
        worker measured (two readings of M0 never agree exactly)."""
        if budget_ms is None or budget_ms == self.opts.budget_ms:
            return
        self.opts = dataclasses.replace(self.opts, budget_ms=budget_ms)
        self.prefilter.budget_ms = budget_ms
        settings["budget_ms"] = budget_ms
        self.budget_choice = (
            f"{self.budget_choice}; this study's budget is {budget_ms:.3f} ms, measured by the "
            "worker that started it"
        )

    def open_study(self) -> optuna.Study:
        storage = make_storage(self.storage_url)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            directions=["maximize", "minimize"],
            sampler=make_sampler(self.opts.sampler, self.opts.seed),
            load_if_exists=True,
        )
        settings = _settings(self.opts, self.target, self.space)
        previous = study.user_attrs.get("settings")
        if previous is not None and self.opts.budget_reference is not None:
            self._adopt_budget(previous.get("budget_ms"), settings)
        if previous is None:
            study.set_user_attr("settings", settings)
        elif previous.get("device") != settings["device"] and previous.get(
            "device_fingerprint"
        ) not in (None, settings["device_fingerprint"]):
            raise ValueError(
                f"study {self.study_name!r} measures on {previous.get('device')}, this worker on "
                f"{settings['device']}: a study's latencies come from one device; run this "
                "worker on that device or pass another --study"
            )
        elif previous != settings:
            changed = ", ".join(
                f"{k} {previous.get(k)!r} -> {v!r}"
                for k, v in settings.items()
                if previous.get(k) != v
            )
            raise ValueError(
                f"study {self.study_name!r} in {redact_url(self.storage_url)} was created with "
                f"other settings ({changed}); pass another --study or --out"
            )
        self.presence = WorkerPresence.acquire(self.out / ".workers")
        # an unsigned trial is only microseconds old when its worker is alive, so the rule is
        # applied to RDB studies too (their heartbeats need the grace period first)
        reap_dead_workers(study, self.presence)
        for name, config in reference_configs().items():
            params = self.space.params_of(config.replace(num_classes=self.space.num_classes))
            if params is not None:
                study.enqueue_trial(params, user_attrs={"reference": name}, skip_if_exists=True)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            self._record_for_prefilter(trial)
            if "top1" in trial.user_attrs and "train_seconds" in trial.user_attrs:
                self.trial_times.earlier_trainings.append(trial.user_attrs["train_seconds"])
        return study

    def _record_for_prefilter(self, trial: FrozenTrial) -> None:
        attrs = trial.user_attrs
        if attrs.get("latency_source") in ("measured", "cache"):
            try:
                config = self.space.config_from_params(trial.params)
            except ValueError:
                config = None  # it cannot be measured again, so it never prunes
            self.prefilter.record(
                attrs["macs"],
                attrs["activation_bytes"],
                attrs["blocks"],
                attrs["latency_median_ms"],
                config,
            )

    def _prefilter(self, macs: int, act: int, config: ModelConfig) -> tuple[str, float] | None:
        """The pre-filter's verdict; a dominator seen slow only once is measured again first."""
        blocks = _blocks(config)
        skip = self.prefilter.check(macs, act, blocks)
        while skip is None and (slow := self.prefilter.unconfirmed(macs, act, blocks)):
            with device_lock(self.target.device_key):
                again = self.target.measure(slow.config)
            self.stats["confirmations"] = self.stats.get("confirmations", 0) + 1
            self.prefilter.confirm(slow, again.median_ms)
            skip = self.prefilter.check(macs, act, blocks)
        return skip

    def _measured_before(self, study: optuna.Study, arch: str) -> LatencyResult | None:
        """A measurement of ``arch`` on this device: this folder's log, or any trial's."""
        self.log.refresh()
        cached = self.log.get(arch)
        if cached is not None:
            return cached
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            attrs = t.user_attrs
            if attrs.get("arch_hash") == arch and "latency" in attrs:
                return LatencyResult.from_dict(attrs["latency"])
        return None

    def check_smallest_fits(self) -> None:
        """Measure the space's smallest config first: stop at once if even it cannot fit.

        Raises:
            NothingFits: the lower end of its latency's 95 % CI exceeds the budget.
        """
        smallest = self.space.smallest().replace(name="smallest_in_space")
        arch = smallest.architecture_hash()
        result = self.log.get(arch)
        if result is None:
            with device_lock(self.target.device_key) as held:
                self.log.refresh()  # another worker may have measured it meanwhile
                result = self.log.get(arch)
                if result is None:
                    result = self.target.measure(smallest)
                    self.log.append(
                        arch, result, "search", {"held_from": held.start, "held_to": time.time()}
                    )
        if result.ci_low_ms > self.opts.budget_ms:
            raise NothingFits(
                f"no configuration fits {self.opts.budget_ms:g} ms on {self.target.name}: the "
                f"smallest in the space ({evit.model_costs(smallest).params:,} params) "
                f"measures {result.median_ms:.3f} ms [{result.ci_low_ms:.3f}, "
                f"{result.ci_high_ms:.3f}]"
            )

    # one trial ---------------------------------------------------------------------------
    def evaluate(self, trial: optuna.Trial) -> tuple[float, float]:
        """One trial; a failure is recorded on the trial with its reason, and logged."""
        self.current_trial = trial.number
        began = _clock()
        counts = (self.stats["measured"], *self._trainings())
        try:
            return self._evaluate(trial)
        except optuna.TrialPruned:
            raise
        except Exception as e:
            reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
            trial.set_user_attr("fail_reason", reason)
            log.warning("trial %d failed: %s", trial.number, reason)
            raise
        finally:  # how long a trial that measured (and trained) took, for --time-limit
            full, stopped = (now > before for now, before in zip(self._trainings(), counts[1:]))
            kind = TRAINED if full else STOPPED if stopped else MEASURED
            if full or stopped or self.stats["measured"] > counts[0]:
                self.trial_times.record(_clock() - began, kind)

    def _trainings(self) -> tuple[int, int]:
        """Trainings this run's trials finished, and those stopped early."""
        return self.stats.get("trained", 0), self.stats.get("early_stopped", 0)

    def _evaluate(self, trial: optuna.Trial) -> tuple[float, float]:
        trial.set_user_attr("worker", worker_id())
        config = self.space.sample(trial)
        reference = trial.user_attrs.get("reference")  # references are always measured
        broken = None if reference else self.space.rules.violation(config)
        if broken:  # rejected before anything is computed
            self.stats["rejected"] += 1
            trial.set_user_attr("rejected", broken)
            raise optuna.TrialPruned(f"shape rule: {broken}")
        arch = config.architecture_hash()
        config = config.replace(name=f"searched_{arch[:8]}")
        costs = evit.model_costs(config)
        timings: dict[str, float] = {}
        score: float | None = None  # the accuracy objective scores after the measurement
        if self.budget is None:
            start = time.perf_counter()
            with device_lock(self.target.device_key, exclusive=False):  # heavy, not measuring
                score = self.objective.evaluate(config)
            timings["objective_s"] = time.perf_counter() - start
        for key, value in {
            "arch_hash": arch,
            "params": costs.params,
            "macs": costs.macs,
            "activation_bytes": costs.activation_bytes,
            "blocks": _blocks(config),
        }.items():
            trial.set_user_attr(key, value)
        skip = None if reference else self._prefilter(costs.macs, costs.activation_bytes, config)
        if skip is not None:
            reason, bound = skip
            self.stats["prefiltered"] += 1
            trial.set_user_attr("latency_source", "prefilter-bound")
            trial.set_user_attr("prefilter_reason", reason)
            trial.set_constraint("latency_ms", bound - self.opts.budget_ms)
            return (0.0 if score is None else score), bound
        result, source = self._measured_before(trial.study, arch), "cache"
        if result is None:
            with device_lock(self.target.device_key) as held:  # nothing else runs meanwhile
                # another worker may have measured it while this one waited for the device
                result = self._measured_before(trial.study, arch)
                if result is None:
                    result, source = self.target.measure(config, timings), "measured"
                    if reference and result.median_ms > self.opts.budget_ms:
                        # a reference anchors the comparisons: one reading taken in a slow
                        # moment must not leave it out (untrained, "over the budget")
                        again = self.target.measure(config)
                        result = min(result, again, key=lambda r: r.median_ms)
                    # logged before the lock is released: the next holder sees it
                    self.log.append(
                        arch,
                        result,
                        "search",
                        {"trial": trial.number, "held_from": held.start, "held_to": time.time()},
                    )
                    self.timings.append(timings)
        self.stats[source] += 1
        self.prefilter.record(
            costs.macs, costs.activation_bytes, _blocks(config), result.median_ms, config
        )
        for key, value in {
            "latency_source": source,
            "latency_median_ms": result.median_ms,
            "latency_ci_low_ms": result.ci_low_ms,
            "latency_ci_high_ms": result.ci_high_ms,
            "latency_p90_ms": result.p90_ms,
            "latency_runs": result.runs,
            "latency_converged": result.converged,
            "latency": result.to_dict(),  # candidates read it from here on any host
            "timings": timings,
        }.items():
            trial.set_user_attr(key, value)
        trial.set_constraint("latency_ms", result.median_ms - self.opts.budget_ms)
        if score is None:
            score = self._accuracy(trial, config, arch, result, reference)
        return score, result.median_ms

    # the accuracy objective --------------------------------------------------------------
    def _train_shares_device(self) -> bool:
        """Training holds the device lock (shared) when it runs where latency is measured."""
        gpu_target = self.target.name in ("trt", "torch-cuda")
        device = self.budget.device if self.budget else None
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return gpu_target == device.startswith("cuda")

    def _train_lock(self) -> Any:
        if self._train_shares_device():
            return device_lock(self.target.device_key, exclusive=False)
        return contextlib.nullcontext()

    def _early_records(self, study: optuna.Study) -> list[EarlyRecord]:
        return [
            EarlyRecord(t.number, t.user_attrs["latency_median_ms"], t.user_attrs["early_top1"])
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "early_top1" in t.user_attrs and "latency_median_ms" in t.user_attrs
        ]

    def _trained_before(self, study: optuna.Study, arch: str) -> FrozenTrial | None:
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get("arch_hash") == arch and "top1" in t.user_attrs:
                return t
        return None

    def _accuracy(
        self,
        trial: optuna.Trial,
        config: ModelConfig,
        arch: str,
        latency: LatencyResult,
        reference: str | None,
    ) -> float:
        """Train a config that fits, score validation top-1; over the budget scores 0."""
        budget = self.budget
        assert budget is not None
        # the reference that sets the budget is what the pick is compared with: always trained
        sets_budget = reference is not None and reference == self.opts.budget_reference
        if latency.median_ms > self.opts.budget_ms and not sets_budget:
            trial.set_user_attr("accuracy_source", "not trained: over the budget")
            return 0.0
        same = self._trained_before(trial.study, arch)
        if same is not None:  # the same architecture under the same training: the same score
            for key in ("top1", "early_top1", "curve", "train_img_size"):
                if key in same.user_attrs:
                    trial.set_user_attr(key, same.user_attrs[key])
            trial.set_user_attr("accuracy_source", f"trial {same.number}")
            return float(same.user_attrs["top1"])
        rule = budget.rule()
        folder = self.out / TRIALS / f"{trial.number:05d}"
        curve: list[float] = []

        def on_epoch(epoch: int, record: dict[str, Any]) -> None:
            top1 = epoch_top1(record)
            curve.append(round(top1, 3))
            trial.set_user_attr("curve", curve)
            if epoch + 1 == rule.check_epoch:
                trial.set_user_attr("early_top1", top1)
                beaten = self._early_records(trial.study)
                leader = rule.beaten_by(latency.median_ms, top1, beaten)
                if leader is not None and not reference:
                    raise EarlyStopped(epoch + 1, top1, leader)

        trial.set_user_attr("train_img_size", budget.train_img_size(config.img_size))
        start = time.perf_counter()
        try:
            with self._train_lock():
                outcome = train_candidate(config, budget, folder, on_epoch)
        except EarlyStopped as e:
            elapsed = time.perf_counter() - start
            saved = elapsed / e.epoch * (budget.epochs - e.epoch)
            self.stats["early_stopped"] += 1
            self.stats["train_seconds"] += elapsed
            self.stats["early_saved_s"] += saved
            trial.set_user_attr("early_stopped", str(e))
            trial.set_user_attr("train_seconds", elapsed)
            trial.set_user_attr("early_saved_s", saved)
            shutil.rmtree(folder, ignore_errors=True)
            raise optuna.TrialPruned(f"early stop: {e}") from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        (folder / "last.pth").unlink(missing_ok=True)  # best.pth and metrics.jsonl stay
        self.stats["trained"] += 1
        self.stats["train_seconds"] += outcome.seconds
        self.train_durations.append(outcome.seconds)
        for key, value in {
            "top1": outcome.top1,
            "train_seconds": outcome.seconds,
            "checkpoint": str(folder.relative_to(self.out) / "best.pth"),
            "accuracy_source": "trained",
        }.items():
            trial.set_user_attr(key, value)
        return outcome.top1

    def confirm(
        self, chosen: list[Candidate], references: list[Candidate]
    ) -> list[Candidate] | None:
        """Train the pick's contenders, M0 and M0's rival again with seed + 1.

        Trained again: the ``budget.confirm`` most accurate candidates within the budget, M0
        (when it was trained) and the most accurate candidate within M0's
        latency, so that the headline comparisons (pick vs M0, and at M0's latency) are between
        means of the same two seeds. Each gets ``seeds`` (both scores) and the mean as its
        objective. Returns the contenders for the budget (the pick is made among them), or None
        when nothing was confirmed. Second-seed weights are not kept: ``best.pth`` is seed 0's.
        """
        budget = self.budget
        if budget is None or budget.confirm == 0:
            return None
        ref = self.budget_reference(references)
        fits = [
            c
            for c in chosen
            if c.trained and fits_budget(c, self.opts.budget_ms, ref, self.interleaved)
        ]
        top = sorted(fits, key=lambda c: -c.objective)[: budget.confirm]
        if not top:
            return None
        todo = list(top)
        m0 = next((r for r in references if r.reference == "efficientvit_m0" and r.trained), None)
        if m0 is not None and self.interleaved is not None:
            run = self.interleaved
            under = [c for c in chosen if c.trained and within_reference(c, m0, run)]
            if under:
                todo.append(max(under, key=lambda c: c.objective))
            todo.append(m0)
        seed = budget.seed + 1
        again = dataclasses.replace(budget, seed=seed)
        confirmed = ConfirmLog(self.out / CONFIRM, budget.settings())
        done: set[str] = set()
        for c in todo:
            arch = c.config.architecture_hash()
            if arch in done:
                continue
            done.add(arch)
            top1 = confirmed.get(arch, seed)
            if top1 is None:
                folder = self.out / TRIALS / f"confirm-{arch[:8]}-seed{seed}"
                log.info("confirming %s with seed %d", c.config.name, seed)
                try:
                    with self._train_lock():
                        outcome = train_candidate(c.config, again, folder, None)
                except Exception as e:  # one failed training loses no result
                    log.warning("confirming %s failed: %s; its one seed stands", c.config.name, e)
                    continue
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
                top1 = outcome.top1
                self.train_durations.append(outcome.seconds)
                confirmed.append(arch, seed, top1, outcome.seconds)
                self.stats["confirmed"] += 1
                self.stats["confirm_seconds"] += outcome.seconds
            for same in (o for o in todo if o.config.architecture_hash() == arch):
                if same.seeds is None:
                    same.seeds = [same.objective, top1]
                    same.objective = sum(same.seeds) / len(same.seeds)
        return top

    def budget_reference(self, references: list[Candidate]) -> Candidate | None:
        """The reference whose latency is the budget (``--budget-ms m0``), if it is one."""
        name = self.opts.budget_reference
        return next((r for r in references if name and r.reference == name), None)

    def keep_pareto_checkpoints(self, study: optuna.Study) -> None:
        """Delete the trained weights of finished trials off the (accuracy, latency) front and
        not among ``--confirm``'s contenders."""
        folder = self.out / TRIALS
        if not folder.is_dir():
            return
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        trained = [
            t
            for t in trials.values()
            if t.state == TrialState.COMPLETE and "checkpoint" in t.user_attrs
        ]
        searched = [t for t in trained if "reference" not in t.user_attrs]
        # the selection picks from the searched front; the report compares with references
        keep = _front(searched) | _front(trained)
        if self.budget is not None:
            keep |= _most_accurate(searched, self.budget.confirm, self.opts.budget_ms)
        for d in folder.iterdir():
            t = trials.get(int(d.name)) if d.name.isdigit() else None
            if t is not None and t.state.is_finished() and t.number not in keep:
                shutil.rmtree(d, ignore_errors=True)

    # the loop ----------------------------------------------------------------------------
    def optimize(self, study: optuna.Study, progress: Any | None) -> None:
        callbacks: list[Any] = []
        trials = self.opts.trials

        def enough(study: optuna.Study, trial: FrozenTrial) -> None:
            if trials is not None and counted_trials(study) >= trials:
                study.stop()

        callbacks.append(enough)
        if progress is not None:
            callbacks.append(progress)

        def on_error(study: optuna.Study, trial: FrozenTrial) -> None:
            if trial.state == TrialState.FAIL:
                self.stats["failed"] += 1
            if self.budget is not None:
                self.keep_pareto_checkpoints(study)

        callbacks.append(on_error)

        def in_time(study: optuna.Study, trial: FrozenTrial) -> None:
            if not self.time_for_another_trial(study):
                study.stop()

        callbacks.append(in_time)
        if trials is not None and counted_trials(study) >= trials:
            return
        if not self.time_for_another_trial(study):
            return
        try:
            study.optimize(
                self.evaluate,
                n_trials=None,
                timeout=self.opts.timeout,
                callbacks=callbacks,
                catch=(Exception,),
                gc_after_trial=False,
            )
        except KeyboardInterrupt:
            self.requeue_interrupted(study)
            raise

    # the time limit ----------------------------------------------------------------------
    def time_left(self) -> float | None:
        """Seconds left of ``--time-limit`` (None without one)."""
        if self.opts.time_limit is None:
            return None
        return self.opts.time_limit - (_clock() - self.started)

    def trial_seconds(self) -> float:
        """What the next trial may take (``search.timeplan.TrialTimes.next_trial``)."""
        return self.trial_times.next_trial(trains=self.budget is not None)

    def _training_times(self) -> list[float]:
        return self.train_durations or self.trial_times.earlier_trainings

    def after_remeasure_seconds(self) -> float:
        """The final phase after the re-measurement: ``--confirm``'s trainings (the contenders,
        M0 and its rival, at the upper quartile of this run's training times), the fp32
        comparison of a non-fp32 search, and the outputs."""
        seconds = OUTPUT_SECONDS
        times = self._training_times()
        if self.budget is not None and self.budget.confirm and times:
            # the contenders are the larger models: the upper quartile of training times
            per = float(np.percentile(times, 75))
            seconds += (self.budget.confirm + 2) * per
        if self.target.precision not in (None, "fp32"):  # the pick and M0-M5, twice each
            models = 2 * (len(reference_configs()) + 1)
            seconds += interleave_seconds(models) + models * self.prepare_seconds()
        return seconds

    def prepare_seconds(self) -> float:
        """One model's export (and quantization or engine build) before a measurement: this
        run's mean, or :data:`PREPARE_SECONDS` before the first."""
        keys = ("build_s", "export_s", "quantize_s", "engine_s")
        per = [sum(t.get(k, 0.0) for k in keys) for t in self.timings]
        return float(np.mean(per)) if per else PREPARE_SECONDS

    def final_seconds(self, models: int) -> float:
        """The final phase's expected length when ``models`` models are re-measured."""
        remeasure = interleave_seconds(models) + models * self.prepare_seconds()
        return remeasure + self.after_remeasure_seconds()

    def to_remeasure(self, cands: list[Candidate], references: list[Candidate]) -> list[Candidate]:
        """The candidates the final re-measurement takes besides the references: the best
        within the budget, ``--confirm``'s contenders, and the best under each reference's
        latency (every reference with ``--family``, the trained ones with accuracy)."""
        compared = references if self.opts.family else [r for r in references if r.trained]
        return choose_remeasure(
            cands,
            self.opts.budget_ms,
            self.opts.remeasure,
            [r.latency.median_ms for r in compared] or None,
            self.budget.confirm if self.budget is not None else 0,
        )

    def remeasure_count(self, study: optuna.Study) -> int:
        """How many models the final re-measurement would take if the trials stopped now."""
        cands = self.candidates(study)
        chosen = self.to_remeasure(cands, [c for c in cands if c.reference])
        return len(reference_configs()) + len(chosen)

    def time_for_another_trial(self, study: optuna.Study) -> bool:
        """Whether the time left covers one more trial and then the final phase."""
        left = self.time_left()
        if left is None:
            return True
        # at most this many models are re-measured: every reference, each with 3 candidates
        # under its latency, and the candidates the budget and --confirm add (choose_remeasure)
        refs = len(reference_configs())
        upper = refs * 4 + 2 * self.opts.remeasure + (self.budget.confirm if self.budget else 0)
        trial = self.trial_seconds()
        if left >= trial + self.final_seconds(upper):
            return True
        reserve = self.final_seconds(self.remeasure_count(study))  # exact count, when close
        if left >= trial + reserve:
            return True
        self.stats["time_limit"] = {
            "limit_s": self.opts.time_limit,
            "trials_stopped_at_s": round(self.opts.time_limit - left, 1),
            "final_estimate_s": round(reserve, 1),
            "next_trial_estimate_s": round(trial, 1),
        }
        log.warning(
            "--time-limit %.0f s: stopping the trials with %.0f s left for the final phase "
            "(expected %.0f s)",
            self.opts.time_limit,
            left,
            reserve,
        )
        return False

    def requeue_interrupted(self, study: optuna.Study) -> None:
        """The trial cut by Ctrl-C is failed by Optuna; queue its parameters again."""
        if self.current_trial is None:
            return
        numbered = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        trial = next((t for t in numbered if t.number == self.current_trial), None)
        if trial is None:
            return
        if trial.state == TrialState.FAIL and trial.params:
            study.enqueue_trial(
                trial.params,
                user_attrs={k: v for k, v in trial.user_attrs.items() if k == "reference"},
            )

    # final phase -------------------------------------------------------------------------
    def candidates(self, study: optuna.Study) -> list[Candidate]:
        # re-read the log: other workers may have measured trials since this one started
        self.log = MeasurementLog(self.log.path, self.log.fingerprint)
        out = []
        seen: set[str] = set()
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        for t in sorted(trials, key=lambda t: t.number):
            attrs = t.user_attrs
            if attrs.get("latency_source") not in ("measured", "cache"):
                continue
            try:
                config = self.space.config_from_params(t.params)
            except ValueError as e:
                log.warning("trial %d left out: %s", t.number, e)
                continue
            reference = attrs.get("reference")
            key = attrs["arch_hash"] + (reference or "")
            if key in seen:
                continue
            seen.add(key)
            name = reference or f"searched_{attrs['arch_hash'][:8]}"
            latency = self.log.get(attrs["arch_hash"])
            if latency is None and "latency" in attrs:  # measured by a worker on another host
                latency = LatencyResult.from_dict(attrs["latency"])
            if latency is None:
                log.warning("trial %d has no readable latency; left out", t.number)
                continue
            candidate = Candidate(
                config=config.replace(name=name),
                objective=t.values[0],
                latency=latency,
                params=attrs["params"],
                macs=attrs["macs"],
                trial=t.number,
                reference=reference,
            )
            if self.budget is not None:
                candidate.trained = "top1" in attrs
                candidate.train_img_size = attrs.get("train_img_size")
                path = self.out / attrs["checkpoint"] if "checkpoint" in attrs else None
                candidate.checkpoint = path if path is not None and path.is_file() else None
            out.append(candidate)
        return out

    def remeasure(self, cands: list[Candidate]) -> None:
        """Re-measure candidates interleaved in one run (references included), one session
        open at a time."""
        if len(cands) < 2:
            for c in cands:
                with device_lock(self.target.device_key):
                    c.remeasured = self.target.measure(c.config)
            return
        with device_lock(self.target.device_key, exclusive=False):
            factories = [self.target.prepare(c.config) for c in cands]
        with device_lock(self.target.device_key):
            res = self._interleave(cands, factories)
        self.interleaved = res
        for slot, (c, r, ratio) in enumerate(zip(cands, res.results, [None, *res.ratios])):
            c.remeasured = r
            c.vs_first = ratio
            c.slot = slot
            self.log.append(c.config.architecture_hash(), r, "remeasure", {"name": c.config.name})

    def _interleave(self, cands: list[Candidate], factories: list[Any]) -> Any:
        return measure_interleaved(
            factories,
            labels=[c.config.name for c in cands],
            min_rounds=10,
            max_rounds=40,
            max_seconds=interleave_seconds(len(cands)),
            block_seconds=self.opts.remeasure_block_seconds,
        )

    def compare_fp32(self, cands: list[Candidate]) -> list[PrecisionRow]:
        """Each candidate in fp32 and in the target's precision, all in one interleaved run
        (paired speed-ups; one session open at a time)."""
        fp32 = dataclasses.replace(self.target, precision="fp32", build_level=None)
        factories, labels = [], []
        with device_lock(self.target.device_key, exclusive=False):
            for c in cands:
                factories += [fp32.prepare(c.config), self.target.prepare(c.config)]
                labels += [f"{c.config.name} fp32", f"{c.config.name} {self.target.precision}"]
        with device_lock(self.target.device_key):
            res = measure_interleaved(
                factories,
                labels=labels,
                min_rounds=10,
                max_rounds=40,
                max_seconds=interleave_seconds(len(factories)),
                block_seconds=self.opts.remeasure_block_seconds,
            )
        return [
            PrecisionRow(c, res.results[2 * i], res.results[2 * i + 1], res.ratio(2 * i, 2 * i + 1))
            for i, c in enumerate(cands)
        ]


DRIFT_LIMIT = 1.25  # re-measured / first latency of the references, either way


def reference_drift(references: list[Candidate]) -> tuple[float, Candidate] | None:
    """The median over the references of re-measured / first latency, and the reference whose
    own ratio is closest to it; None without re-measured references."""
    pairs = [
        (r, r.remeasured.median_ms / r.latency.median_ms)
        for r in references
        if r.remeasured is not None and r.latency.median_ms > 0
    ]
    if not pairs:
        return None
    ratio = float(np.median([x for _, x in pairs]))
    return ratio, min(pairs, key=lambda p: abs(p[1] - ratio))[0]


def drifted(ratio: float) -> bool:
    return not 1 / DRIFT_LIMIT <= ratio <= DRIFT_LIMIT


def drift_warning(references: list[Candidate], attempts: int = 1) -> str | None:
    """A one-line warning when the references' re-measured latencies differ from their first
    readings by more than :data:`DRIFT_LIMIT` (median over the references): the machine ran at
    another speed during the final re-measurement than during the trials (a slow phase,
    docs/benchmarks.md §5), so the absolute budget check compares times from two machines."""
    found = reference_drift(references)
    if found is None or not drifted(found[0]):
        return None
    ratio, ref = found
    speed = "slower" if ratio > 1 else "faster"
    tries = f" (the closest of {attempts} final re-measurements)" if attempts > 1 else ""
    return (
        f"the machine ran {max(ratio, 1 / ratio):.2f}x {speed} during the final re-measurement "
        f"than during the trials{tries} ({ref.config.name}: {ref.latency.median_ms:.3f} ms, "
        f"then {ref.remeasured.median_ms:.3f} ms), so the budget check mixes two speeds; run the "
        "same command again to redo it (the study resumes, measured configs are reused), or "
        "give the budget relative to a reference (--budget-ms m0)"
    )


_sleep = time.sleep  # tests replace it


def remeasure_steady(
    run: SearchRun, references: list[Candidate], cands: list[Candidate]
) -> list[float]:
    """The final re-measurement of ``references + cands``, repeated up to
    ``opts.drift_retries`` times (after ``opts.drift_wait_seconds`` each) while the references
    show the machine at another speed than during the trials; the attempt closest to the
    trials' speed is kept. Returns each attempt's drift (re-measured / first, median)."""
    everyone = references + cands
    kept: tuple[float, list[tuple[Any, Any, Any]], Any] | None = None
    drifts: list[float] = []
    took = 0.0
    for attempt in range(run.opts.drift_retries + 1):
        if attempt:
            left = run.time_left()
            need = run.opts.drift_wait_seconds + took + run.after_remeasure_seconds()
            if left is not None and left < need:
                log.warning(
                    "final re-measurement: the machine ran %.2fx the trials' latency; no time "
                    "for another within --time-limit (%.0f s left, %.0f s needed)",
                    drifts[-1],
                    left,
                    need,
                )
                break
            log.warning(
                "final re-measurement %d: the machine ran %.2fx the trials' latency; "
                "measuring again in %.0f s",
                attempt,
                drifts[-1],
                run.opts.drift_wait_seconds,
            )
            _sleep(run.opts.drift_wait_seconds)
        began = _clock()
        run.remeasure(everyone)
        took = _clock() - began
        found = reference_drift(references)
        drift = found[0] if found else 1.0
        drifts.append(drift)
        if kept is None or abs(math.log(drift)) < abs(math.log(kept[0])):
            state = [(c.remeasured, c.vs_first, c.slot) for c in everyone]
            kept = (drift, state, run.interleaved)
        if not drifted(drift):
            break
    assert kept is not None
    for c, (remeasured, vs_first, slot) in zip(everyone, kept[1]):
        c.remeasured, c.vs_first, c.slot = remeasured, vs_first, slot
    run.interleaved = kept[2]
    return drifts


def run_search(opts: SearchOptions, progress_factory: Any | None = None) -> SearchOutcome:
    """Run (or resume) a search and write every output; see the module docstring."""
    from search.report import write_outputs

    run = SearchRun(opts)
    study = run.open_study()
    opts = run.opts  # with a measured budget (--budget-ms m0)
    run.check_smallest_fits()
    interrupted = False
    start = time.perf_counter()
    progress = progress_factory(run, study) if progress_factory else None
    try:
        run.optimize(study, progress)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if progress is not None:
            progress.close()
    search_seconds = time.perf_counter() - start
    cands = run.candidates(study)
    refs = {c.reference: c for c in cands if c.reference}
    # outside the space, or never run: measure them here (skipped after Ctrl-C, to exit fast)
    missing_refs = [] if interrupted else [n for n in reference_configs() if n not in refs]
    for name in missing_refs:
        config = reference_configs()[name].replace(num_classes=run.space.num_classes)
        with device_lock(run.target.device_key):
            latency = run.target.measure(config)
        refs[name] = Candidate(
            config=config,
            objective=0.0 if run.budget else run.objective.evaluate(config),
            latency=latency,
            params=evit.model_costs(config).params,
            macs=evit.model_costs(config).macs,
            reference=name,
            trained=False if run.budget else None,
        )
    references = [refs[name] for name in reference_configs() if name in refs]
    # the accuracy objective also compares at each trained reference's own latency
    trained_refs = [r for r in references if r.trained]
    chosen = run.to_remeasure(cands, references)
    final_start = time.perf_counter()
    run.target.build_level = None  # final engines at TensorRT's default optimization level
    drifts: list[float] = []
    if not interrupted:
        try:
            drifts = remeasure_steady(run, references, chosen)
        except KeyboardInterrupt:
            interrupted = True
    # reported, not enforced
    drift = None if interrupted else drift_warning(references, attempts=len(drifts))
    confirmed = None
    if not interrupted:
        try:
            confirmed = run.confirm(chosen, references)
        except KeyboardInterrupt:
            interrupted = True
    best = pick_best(
        confirmed or chosen, opts.budget_ms, run.budget_reference(references), run.interleaved
    )
    precision_rows: list[PrecisionRow] = []
    if run.target.precision != "fp32" and best is not None and not interrupted:
        try:
            precision_rows = run.compare_fp32([*references, best])
        except KeyboardInterrupt:
            interrupted = True
    measured = [c for c in cands if c.reference is None] + references
    fastest = (
        min(measured, key=lambda c: (c.remeasured or c.latency).median_ms) if measured else None
    )
    iso_latency = (  # with --confirm, M0's rival among the confirmed: both sides two seeds
        [
            pair
            for ref in trained_refs
            for pair in pick_family(
                [c for c in chosen if c.seeds] if confirmed and ref.seeds else chosen,
                [ref],
                run.interleaved,
                distinct=False,
            )
        ]
        if trained_refs and not interrupted
        else []
    )
    family = (
        pick_family(chosen, references, run.interleaved) if opts.family and not interrupted else []
    )
    stats = dict(
        run.stats,
        search_seconds=search_seconds,
        final_seconds=time.perf_counter() - final_start,
        run_seconds=_clock() - run.started,
        time_limit_s=opts.time_limit,
        final_drifts=drifts,
        trials=len(study.trials),
        timings=run.timings,
    )
    outcome = SearchOutcome(
        out=run.out,
        study_name=run.study_name,
        budget_ms=opts.budget_ms,
        target=run.target,
        objective=run.objective,
        best=best,
        pareto=sorted(chosen, key=lambda c: c.latency.median_ms),
        references=references,
        fastest=fastest,
        stats=stats,
        family=family,
        interrupted=interrupted,
        training=({**opts.train.settings(), "confirm": opts.train.confirm} if opts.train else None),
        iso_latency=iso_latency,
        interleaved=run.interleaved,
        precision_rows=precision_rows,
        auto_choice=run.auto_choice,
        budget_choice=run.budget_choice,
        budget_reference=opts.budget_reference,
        drift_warning=drift,
    )
    write_outputs(outcome, study, run)
    return outcome
