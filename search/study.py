"""The search: an Optuna multi-objective study under a measured latency budget.

Directions: maximize the objective (a proxy such as ``params``, or trained validation top-1),
minimize measured latency; the budget is a constraint (``trial.set_constraint``: feasible when
latency - budget <= 0). :func:`run_search` wires the phases, each in its own module:

- ``search.context``: the options checked and the run's facts settled once (space, target,
  ``--target auto``'s path, ``--budget-ms m0``'s measured budget, the study);
- ``search.measure``: latency on the target (measurement log, pre-filter, device lock, the final
  side-by-side run);
- ``search.trainer``: the accuracy objective's trainings (score, early stop, kept checkpoints,
  second seeds);
- ``search.trial`` and ``search.loop``: one trial, and the loop with its stopping rules;
- ``search.timeplan``: ``--time-limit`` (what the next trial and the final phase may take);
- ``search.final``: the re-measurement, confirmations and the pick (``search.selection``);
- ``search.report``: the files a run leaves.

Example:
    >>> from search.study import run_search
    >>> from search.options import SearchOptions
    >>> outcome = run_search(SearchOptions(budget_ms=2.0, trials=40))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from search import keys
from search.context import RunContext, Seams, make_context, open_study, trains
from search.final import Final, finish, remeasure_count
from search.loop import TrialLoop
from search.measure import Measurer
from search.options import SearchOptions, SearchOutcome
from search.space import reference_configs
from search.storage import WorkerPresence

if TYPE_CHECKING:
    from search.inherited import SupernetReport
from search.timeplan import TimePlan
from search.trainer import Scorer, Trainer
from search.trial import TrialRunner

log = logging.getLogger(__name__)

# progress_factory(ctx, plan, study) -> a trial callback with .close()
ProgressFactory = Callable[[RunContext, TimePlan, optuna.Study], Any]


def _earlier_trainings(study: optuna.Study) -> list[float]:
    """Full trainings of the study's earlier runs: estimates for a resumed run's first trials."""
    return [
        t.user_attrs[keys.TRAIN_SECONDS]
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if keys.was_trained(t.user_attrs) and keys.TRAIN_SECONDS in t.user_attrs
    ]


def final_trainings(ctx: RunContext) -> int:
    """The final phase's trainings: ``--confirm``'s second seed of the contenders, M0 and its
    rival; with ``--weight-sharing`` two seeds of the contenders and M0's rival (M0 itself is
    fine-tuned before the trials: :meth:`InheritedScorer.fine_tune_early`)."""
    if ctx.train is None:
        return 0
    if ctx.opts.weight_sharing:
        return 2 * (max(ctx.train.confirm, 1) + 1)
    return ctx.train.confirm + 2 if ctx.train.confirm else 0


def make_plan(ctx: RunContext, seams: Seams, study: optuna.Study) -> TimePlan:
    plan = TimePlan(
        limit=ctx.opts.whole_run_limit,
        started=ctx.started,
        clock=seams.clock,
        trains=trains(ctx),
        confirm=ctx.train.confirm if ctx.train is not None else 0,
        final_trainings=final_trainings(ctx),
        fp32=ctx.target.precision == "fp32",
        references=len(reference_configs()),
        remeasure=ctx.opts.remeasure,
        focus=ctx.budget_reference is not None,
    )
    plan.times.earlier_trainings.extend(_earlier_trainings(study))
    return plan


def _stats(
    ctx: RunContext, loop: TrialLoop, final: Final, study: optuna.Study, seconds: dict[str, float]
) -> dict[str, Any]:
    stats = loop.tally.as_dict(trains(ctx), ctx.opts.weight_sharing)
    if trains(ctx):
        done = final.confirmation.seconds if final.confirmation is not None else []
        stats.update(confirmed=len(done), confirm_seconds=sum(done))
    if loop.stop is not None:
        stats["time_limit"] = loop.stop.as_dict()
    return {
        **stats,
        **seconds,
        "time_limit_s": ctx.opts.whole_run_limit,
        "final_drifts": final.drifts,
        "trials": len(study.trials),
        "timings": loop.tally.timings,
    }


@dataclass(frozen=True)
class Run:
    """One worker's run, wired and ready for its trials (see :func:`prepare_run`)."""

    ctx: RunContext
    study: optuna.Study
    measurer: Measurer
    trainer: Scorer | None
    plan: TimePlan
    loop: TrialLoop
    presence: WorkerPresence  # held while the worker runs: others see it alive
    supernet: SupernetReport | None = None  # --weight-sharing: how the supernet was trained

    def trials(self, progress: Any | None = None) -> None:
        """The trial loop (``search.loop``); KeyboardInterrupt re-queues the cut trial."""
        self.loop.run(self.study, progress, lambda: remeasure_count(self.study, self.ctx))


def prepare_run(opts: SearchOptions, seams: Seams | None = None) -> Run:
    """Settle the run's facts, open (or join) the study, and stop at once when even the
    space's smallest config cannot fit (``search.measure.NothingFits``)."""
    seams = seams or Seams()
    ctx = make_context(opts, seams)
    study, ctx, presence = open_study(ctx)
    measurer = Measurer(
        ctx.target, ctx.out / "measurements.jsonl", ctx.budget_ms, opts.remeasure_block_seconds
    )
    measurer.learn_from(study, ctx.space)
    measurer.check_smallest_fits(ctx.space, ctx.budget_ms)
    plan = make_plan(ctx, seams, study)
    trainer, supernet = _scorer(ctx, seams, plan)
    loop = TrialLoop(ctx, TrialRunner(ctx, measurer, trainer), plan, trainer, seams.clock)
    return Run(ctx, study, measurer, trainer, plan, loop, presence, supernet)


def _scorer(
    ctx: RunContext, seams: Seams, plan: TimePlan
) -> tuple[Scorer | None, SupernetReport | None]:
    """What scores a candidate: nothing (a proxy), a short training each, or the supernet
    (``--weight-sharing``, trained here first)."""
    if ctx.train is None:
        return None, None
    if not ctx.opts.weight_sharing:
        return Trainer(ctx.train, ctx.out, ctx.target, seams.train), None
    from search.inherited import InheritedScorer, train_supernet_for

    m0 = reference_configs()["efficientvit_m0"].replace(num_classes=ctx.space.num_classes)
    params = ctx.space.params_of(m0)
    m0 = ctx.space.config_from_params(params) if params is not None else m0

    def share() -> float | None:  # after M0's fine-tunings and the final phase, at M0's cost
        if plan.limit is None:
            return None
        training = seams.estimate_training(m0, ctx.train)
        seconds = plan.supernet_seconds(training)
        log.warning(
            "--weight-sharing: a fine-tuning takes about %.0f s here (M0, timed steps); the "
            "supernet may train %.0f s of the %.0f s left",
            training,
            seconds,
            plan.time_left(),
        )
        return seconds

    report = train_supernet_for(ctx.train, ctx.opts.space, ctx.out, ctx.opts.supernet_epochs, share)
    scorer = InheritedScorer(ctx.train, ctx.out, report, seams.train)
    if params is not None:  # the final phase's time estimate needs a training time
        for seconds in scorer.fine_tune_early(m0):
            plan.trained(seconds)
    return scorer, report


def run_search(
    opts: SearchOptions,
    progress_factory: ProgressFactory | None = None,
    *,
    seams: Seams | None = None,
) -> SearchOutcome:
    """Run (or resume) a search and write every output; see the module docstring."""
    from search.outputs import write_outputs

    seams = seams or Seams()
    run = prepare_run(opts, seams)
    ctx, study, loop = run.ctx, run.study, run.loop
    progress = progress_factory(ctx, run.plan, study) if progress_factory else None
    interrupted = False
    start = time.perf_counter()
    try:
        run.trials(progress)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if progress is not None:
            progress.close()
    search_seconds = time.perf_counter() - start
    final = finish(ctx, study, run.measurer, run.trainer, run.plan, seams.sleep, interrupted)
    seconds = {
        "search_seconds": search_seconds,
        "final_seconds": time.perf_counter() - start - search_seconds,
        "run_seconds": seams.clock() - ctx.started,
    }
    outcome = SearchOutcome(
        out=ctx.out,
        study_name=ctx.study_name,
        budget_ms=ctx.budget_ms,
        target=ctx.target,
        objective=ctx.objective,
        space=ctx.space,
        best=final.best,
        pareto=sorted(final.chosen, key=lambda c: c.latency.median_ms),
        references=final.references,
        fastest=final.fastest,
        stats=_stats(ctx, loop, final, study, seconds),
        family=final.family,
        interrupted=final.interrupted,
        training=({**opts.train.settings(), "confirm": opts.train.confirm} if opts.train else None),
        iso_latency=final.iso_latency,
        interleaved=final.run,
        precision_rows=final.precision_rows,
        auto_choice=ctx.auto_choice,
        budget_choice=ctx.budget_choice,
        budget_reference=opts.budget_reference,
        drift_warning=final.drift_warning,
        supernet=run.supernet.as_dict() if run.supernet is not None else None,
    )
    write_outputs(outcome, study)
    return outcome
