"""The search: an Optuna multi-objective study under a measured latency budget.

Directions: maximize the objective (a proxy such as ``params``), minimize measured latency; the
budget is a constraint (``trial.set_constraint``: feasible when latency - budget <= 0). Every
latency comes from the ``edge`` harness on the target; a repeated architecture reuses its earlier
measurement (cache keyed by architecture hash and target fingerprint, persisted in
``measurements.jsonl``). A cheap pre-filter skips configs that certainly exceed the budget; those
trials carry a latency *lower bound* labelled as such and are never reported as feasible. At the
end, the Pareto candidates and the references M0-M5 are re-measured interleaved in one run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import evit
from edge.latency import LatencyResult, Ratio, measure_interleaved
from evit.config import ModelConfig
from search.objectives import Objective, get_objective
from search.space import SearchSpace, load_space, reference_configs
from search.targets import Target, resolve_target

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "nsga2", "random")
DOMINANCE_MARGIN = 1.3  # skip configs costlier in every way than one measured at 1.3x budget
FLOOR_SAFETY = 2.0  # the MAC floor assumes twice the measured GEMM peak
FALLBACK_MARGIN = 0.85  # re-measure a few candidates this far under the budget too


@dataclass
class SearchOptions:
    """Everything a search run needs; the CLI fills it from flags."""

    budget_ms: float
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

    def check(self) -> None:
        if not (self.budget_ms > 0 and math.isfinite(self.budget_ms)):
            raise ValueError(f"--budget-ms {self.budget_ms}: must be a positive number")
        if self.batch < 1:
            raise ValueError(f"--batch {self.batch}: must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads {self.threads}: must be >= 1")
        if self.trials is not None and self.trials < 1:
            raise ValueError(f"--trials {self.trials}: must be >= 1")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"--timeout {self.timeout}: must be > 0 seconds")
        if self.sampler not in SAMPLERS:
            raise ValueError(
                f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}"
            )


@dataclass
class Candidate:
    """A measured architecture with everything the report needs."""

    config: ModelConfig
    objective: float
    latency: LatencyResult
    params: int
    macs: int
    trial: int | None = None
    reference: str | None = None
    remeasured: LatencyResult | None = None
    vs_first: Ratio | None = None  # re-measured latency / the first re-measured model's (M0)

    @property
    def fits_ms(self) -> float:
        """Latency used for the budget check: upper end of the re-measured median's CI."""
        r = self.remeasured or self.latency
        return r.ci_high_ms


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


# --- storage -------------------------------------------------------------------------------


def make_storage(url: str) -> optuna.storages.BaseStorage:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    """``sqlite:///…``, ``postgresql://…``, ``mysql://…`` (RDB, with heartbeats so a killed
    worker's trial is failed and retried), or ``journal:///path`` / a ``.log`` path
    (JournalStorage: several processes on one machine)."""
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix("journal://").removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    if "://" not in url:
        raise ValueError(
            f"--storage {url!r}: give an RDB URL (sqlite:///study.db, "
            "postgresql://user@host/db) or journal:///path/study.log"
        )
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=10,
            grace_period=40,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=1
            ),
        )
    except ImportError as e:
        raise ValueError(
            f"--storage {url}: database driver missing ({e}); for PostgreSQL "
            "pip install '.[postgres]'"
        ) from None
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"--storage {url}: cannot open ({first[:200]})") from None


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_workers(study: optuna.Study) -> int:
    """Fail RUNNING trials whose worker process on this host is gone, and queue them again.

    RDB storages also do this through heartbeats (any host); this covers JournalStorage and
    makes a restart after ``kill -9`` immediate.
    """
    host = socket.gethostname()
    reaped = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        name, _, pid = worker.rpartition(":")
        if name != host or not pid.isdigit() or pid_alive(int(pid)):
            continue
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(
            trial.params, user_attrs={k: v for k, v in trial.user_attrs.items() if k == "reference"}
        )
        reaped += 1
    if reaped:
        log.warning("failed and re-queued %d trial(s) left running by a dead worker", reaped)
    return reaped


# --- measurement cache ---------------------------------------------------------------------


class MeasurementLog:
    """Append-only JSONL of every latency measurement; doubles as the latency cache."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.cache: dict[str, LatencyResult] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a killed process
                if row.get("fingerprint") == fingerprint and row.get("phase") == "search":
                    self.cache[row["arch_hash"]] = LatencyResult.from_dict(row["result"])

    def get(self, arch_hash: str) -> LatencyResult | None:
        return self.cache.get(arch_hash)

    def append(
        self, arch_hash: str, result: LatencyResult, phase: str, extra: dict[str, Any] | None = None
    ) -> None:
        if phase == "search":
            self.cache[arch_hash] = result
        row = {
            "time": time.time(),
            "worker": _worker_id(),
            "phase": phase,
            "arch_hash": arch_hash,
            "fingerprint": self.fingerprint,
            **(extra or {}),
            "result": result.to_dict(),
        }
        with open(self.path, "a") as f:  # one write per line: appends from workers interleave
            f.write(json.dumps(row) + "\n")


# --- pre-filter ----------------------------------------------------------------------------


def gemm_peak_macs_per_ms(threads: int | None) -> float:
    """Measured fp32 matrix-multiply peak on this CPU: no model can run faster than this."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(512, 512), torch.randn(512, 512)
        for _ in range(3):
            a @ b
        best = math.inf
        deadline = time.perf_counter() + 0.3
        while time.perf_counter() < deadline:  # the fastest of many: robust to brief noise
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(old)
    return 512**3 / (best * 1e3)


@dataclass
class PreFilter:
    """Skips configs that certainly exceed the budget.

    Two rules, both conservative: the MAC floor (MACs at twice the measured GEMM peak already
    exceed the budget; no convolution network here gets near the peak), and dominance
    (costlier in MACs, activation bytes and blocks than a config measured above
    ``DOMINANCE_MARGIN`` x budget). "Blocks" counts attention heads over all blocks
    (depth x heads per stage).
    """

    budget_ms: float
    peak_macs_per_ms: float | None
    slow: list[tuple[int, int, int, float]] = field(default_factory=list)

    def record(self, macs: int, act: int, blocks: int, latency_ms: float) -> None:
        if latency_ms > DOMINANCE_MARGIN * self.budget_ms:
            self.slow.append((macs, act, blocks, latency_ms))

    def check(self, macs: int, act: int, blocks: int) -> tuple[str, float] | None:
        """(reason, latency lower bound in ms) when the config can be skipped."""
        if self.peak_macs_per_ms:
            floor = macs / (FLOOR_SAFETY * self.peak_macs_per_ms)
            if floor > self.budget_ms:
                return f"MAC floor {floor:.2f} ms > budget", floor
        for m, a, b, lat in self.slow:
            if macs >= m and act >= a and blocks >= b:
                return (f"costlier than a config measured at {lat:.2f} ms", lat)
        return None


# --- the study -----------------------------------------------------------------------------


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, constant_liar=True, n_startup_trials=12
        )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=24)
    return optuna.samplers.RandomSampler(seed=seed)


def default_study_name(target: str, opts: SearchOptions, threads: int | None) -> str:
    budget = f"{opts.budget_ms:g}".replace(".", "p")
    return f"{target}-b{opts.batch}-t{threads or 'gpu'}-{budget}ms-{opts.objective}"


def _settings(opts: SearchOptions, target: Target, space: SearchSpace) -> dict[str, Any]:
    return {
        "budget_ms": opts.budget_ms,
        "target": target.name,
        "batch": target.batch,
        "threads": target.threads,
        "objective": opts.objective,
        # a changed space would give the same parameter names other choices mid-study
        "space": hashlib.sha256(repr(space).encode()).hexdigest()[:12],
    }


def _blocks(config: ModelConfig) -> int:
    """Attention heads over all blocks: each runs its own small ops, whatever its MACs."""
    return sum(s.depth * s.num_heads for s in config.stages)


class SearchRun:
    """One worker's run of a search (see :func:`run_search`)."""

    def __init__(self, opts: SearchOptions) -> None:
        opts.check()
        self.opts = opts
        self.space = load_space(opts.space)
        self.objective = get_objective(opts.objective)
        target_name = resolve_target(opts.target)
        self.target = Target(
            target_name, batch=opts.batch, threads=opts.threads, max_seconds=opts.measure_seconds
        )
        self.study_name = opts.study or default_study_name(target_name, opts, self.target.threads)
        self.out = Path(opts.out) if opts.out else Path("runs") / self.study_name
        self.out.mkdir(parents=True, exist_ok=True)
        self.target.workdir = self.out / "tmp"
        self.storage_url = opts.storage or f"sqlite:///{self.out / 'study.db'}"
        self.log = MeasurementLog(self.out / "measurements.jsonl", self.target.fingerprint)
        peak = (
            gemm_peak_macs_per_ms(self.target.threads)
            if target_name in ("ort-cpu", "torch-cpu")
            else None
        )
        self.prefilter = PreFilter(opts.budget_ms, peak)
        self.stats = {"measured": 0, "cached": 0, "prefiltered": 0, "failed": 0}
        self.timings: list[dict[str, float]] = []
        self.current_trial: int | None = None

    # study set-up ------------------------------------------------------------------------
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
        if previous is None:
            study.set_user_attr("settings", settings)
        elif previous != settings:
            changed = ", ".join(
                f"{k} {previous.get(k)!r} -> {v!r}"
                for k, v in settings.items()
                if previous.get(k) != v
            )
            raise ValueError(
                f"study {self.study_name!r} in {self.storage_url} was created with "
                f"other settings ({changed}); pass another --study or --out"
            )
        reap_dead_workers(study)
        for name, config in reference_configs().items():
            params = self.space.params_of(config.replace(num_classes=self.space.num_classes))
            if params is not None:
                study.enqueue_trial(params, user_attrs={"reference": name}, skip_if_exists=True)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            self._record_for_prefilter(trial)
        return study

    def _record_for_prefilter(self, trial: FrozenTrial) -> None:
        attrs = trial.user_attrs
        if attrs.get("latency_source") in ("measured", "cache"):
            self.prefilter.record(
                attrs["macs"],
                attrs["activation_bytes"],
                attrs["blocks"],
                attrs["latency_median_ms"],
            )

    # one trial ---------------------------------------------------------------------------
    def evaluate(self, trial: optuna.Trial) -> tuple[float, float]:
        self.current_trial = trial._trial_id
        trial.set_user_attr("worker", _worker_id())
        config = self.space.sample(trial)
        arch = config.architecture_hash()
        config = config.replace(name=f"searched_{arch[:8]}")
        costs = evit.model_costs(config)
        timings: dict[str, float] = {}
        start = time.perf_counter()
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
        reference = trial.user_attrs.get("reference")  # references are always measured
        skip = (
            None
            if reference
            else self.prefilter.check(costs.macs, costs.activation_bytes, _blocks(config))
        )
        if skip is not None:
            reason, bound = skip
            self.stats["prefiltered"] += 1
            trial.set_user_attr("latency_source", "prefilter-bound")
            trial.set_user_attr("prefilter_reason", reason)
            trial.set_constraint("latency_ms", bound - self.opts.budget_ms)
            return score, bound
        cached = self.log.get(arch)
        if cached is not None:
            result, source = cached, "cache"
            self.stats["cached"] += 1
        else:
            result = self.target.measure(config, timings)
            source = "measured"
            self.stats["measured"] += 1
            self.log.append(arch, result, "search", {"trial": trial.number})
            self.timings.append(timings)
        self.prefilter.record(costs.macs, costs.activation_bytes, _blocks(config), result.median_ms)
        for key, value in {
            "latency_source": source,
            "latency_median_ms": result.median_ms,
            "latency_ci_low_ms": result.ci_low_ms,
            "latency_ci_high_ms": result.ci_high_ms,
            "latency_p90_ms": result.p90_ms,
            "latency_runs": result.runs,
            "latency_converged": result.converged,
            "timings": timings,
        }.items():
            trial.set_user_attr(key, value)
        trial.set_constraint("latency_ms", result.median_ms - self.opts.budget_ms)
        return score, result.median_ms

    # the loop ----------------------------------------------------------------------------
    def optimize(self, study: optuna.Study, progress: Any | None) -> None:
        callbacks: list[Any] = []
        if self.opts.trials is not None:
            callbacks.append(
                optuna.study.MaxTrialsCallback(
                    self.opts.trials, states=(TrialState.COMPLETE, TrialState.PRUNED)
                )
            )
        if progress is not None:
            callbacks.append(progress)

        def on_error(study: optuna.Study, trial: FrozenTrial) -> None:
            if trial.state == TrialState.FAIL:
                self.stats["failed"] += 1

        callbacks.append(on_error)
        already = len(
            study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        )
        if self.opts.trials is not None and already >= self.opts.trials:
            return
        try:
            study.optimize(
                self.evaluate,
                n_trials=None if self.opts.trials is None else self.opts.trials - already,
                timeout=self.opts.timeout,
                callbacks=callbacks,
                catch=(Exception,),
                gc_after_trial=False,
            )
        except KeyboardInterrupt:
            self.requeue_interrupted(study)
            raise

    def requeue_interrupted(self, study: optuna.Study) -> None:
        """The trial cut by Ctrl-C is failed by Optuna; queue its parameters again."""
        if self.current_trial is None:
            return
        trial = study._storage.get_trial(self.current_trial)
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
            config = self.space.config_from_params(t.params)
            reference = attrs.get("reference")
            key = attrs["arch_hash"] + (reference or "")
            if key in seen:
                continue
            seen.add(key)
            name = reference or f"searched_{attrs['arch_hash'][:8]}"
            latency = self.log.get(attrs["arch_hash"])
            if latency is None:  # measured by another worker whose log line we cannot read
                continue
            out.append(
                Candidate(
                    config=config.replace(name=name),
                    objective=t.values[0],
                    latency=latency,
                    params=attrs["params"],
                    macs=attrs["macs"],
                    trial=t.number,
                    reference=reference,
                )
            )
        return out

    def remeasure(self, cands: list[Candidate]) -> None:
        """Re-measure candidates interleaved in one run (references included), one session
        open at a time."""
        if len(cands) < 2:
            for c in cands:
                c.remeasured = self.target.measure(c.config)
            return
        factories = [self.target.prepare(c.config) for c in cands]
        res = measure_interleaved(
            factories,
            labels=[c.config.name for c in cands],
            min_rounds=10,
            max_rounds=40,
            max_seconds=max(30.0, 4.0 * len(cands)),
            block_seconds=self.opts.remeasure_block_seconds,
        )
        for c, r, ratio in zip(cands, res.results, [None, *res.ratios]):
            c.remeasured = r
            c.vs_first = ratio
            self.log.append(c.config.architecture_hash(), r, "remeasure", {"name": c.config.name})


def pareto_front(cands: list[Candidate]) -> list[Candidate]:
    """Non-dominated candidates (objective up, first-measured latency down)."""
    front = []
    for c in cands:
        dominated = any(
            o.objective >= c.objective
            and o.latency.median_ms <= c.latency.median_ms
            and (o.objective > c.objective or o.latency.median_ms < c.latency.median_ms)
            for o in cands
        )
        if not dominated:
            front.append(c)
    return sorted(front, key=lambda c: c.latency.median_ms)


def choose_remeasure(
    cands: list[Candidate],
    budget_ms: float,
    limit: int,
    family_latencies: list[float] | None = None,
) -> list[Candidate]:
    """Pareto candidates worth re-measuring: the best few within the budget, plus the best few
    with a 15 % margin (a first measurement of a winner is optimistic, so the top ones may not
    fit when re-measured); in family mode, the best three under each reference latency."""
    searched = [c for c in cands if c.reference is None]
    front = pareto_front(searched)
    feasible = [c for c in front if c.latency.median_ms <= budget_ms]
    by_objective = sorted(feasible, key=lambda c: -c.objective)
    chosen = by_objective[:limit]
    fallbacks = [c for c in by_objective if c.latency.median_ms <= FALLBACK_MARGIN * budget_ms]
    for c in fallbacks[: max(1, limit // 3)]:
        if c not in chosen:
            chosen.append(c)
    if not chosen and searched:  # nothing fits: re-measure the fastest to report it honestly
        chosen = sorted(searched, key=lambda c: c.latency.median_ms)[:1]
    for lat in family_latencies or []:
        under = sorted((c for c in front if c.latency.median_ms <= lat), key=lambda c: -c.objective)
        for c in under[:3]:
            if c not in chosen:
                chosen.append(c)
    return chosen


def run_search(opts: SearchOptions, progress_factory: Any | None = None) -> SearchOutcome:
    """Run (or resume) a search and write every output; see the module docstring."""
    from search.report import write_outputs

    run = SearchRun(opts)
    study = run.open_study()
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
        refs[name] = Candidate(
            config=config,
            objective=run.objective.evaluate(config),
            latency=run.target.measure(config),
            params=evit.model_costs(config).params,
            macs=evit.model_costs(config).macs,
            reference=name,
        )
    references = [refs[name] for name in reference_configs() if name in refs]
    family_lat = [r.latency.median_ms for r in references] if opts.family else None
    chosen = choose_remeasure(cands, opts.budget_ms, opts.remeasure, family_lat)
    final_start = time.perf_counter()
    if not interrupted:
        try:
            run.remeasure(references + chosen)
        except KeyboardInterrupt:
            interrupted = True
    fits = [c for c in chosen if c.remeasured is not None and c.fits_ms <= opts.budget_ms]
    best = max(fits, key=lambda c: c.objective) if fits else None
    measured = [c for c in cands if c.reference is None] + references
    fastest = (
        min(measured, key=lambda c: (c.remeasured or c.latency).median_ms) if measured else None
    )
    family = []
    if opts.family and not interrupted:
        used: set[str] = set()
        for ref in references:
            budget = ref.remeasured.median_ms if ref.remeasured else ref.latency.median_ms
            under = [
                c for c in chosen if c.remeasured is not None and c.remeasured.median_ms <= budget
            ]
            fresh = [c for c in under if c.config.architecture_hash() not in used]
            if fresh or under:  # six distinct configs where the front allows it
                pick = max(fresh or under, key=lambda c: c.objective)
                used.add(pick.config.architecture_hash())
                family.append((ref, pick))
    stats = dict(
        run.stats,
        search_seconds=search_seconds,
        final_seconds=time.perf_counter() - final_start,
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
    )
    write_outputs(outcome, study, run)
    return outcome
