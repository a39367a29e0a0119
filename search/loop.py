"""The trial loop: Optuna's ``optimize`` with the run's stopping rules and bookkeeping.

:class:`TrialLoop` hands each trial to the :class:`~search.trial.TrialRunner`, sums the reports
into a :class:`~search.trial.Tally`, tells the :class:`~search.timeplan.TimePlan` how long each
trial took, and stops at ``--trials``, ``--timeout`` or when the time plan says the final phase
needs the rest of ``--time-limit``. Ctrl-C re-queues the trial it cut.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search import keys
from search.context import RunContext, counted_trials
from search.timeplan import MEASURED, STOPPED, TRAINED, Stop, TimePlan
from search.trainer import Scorer
from search.trial import Pruned, Tally, TrialReport, TrialRunner

log = logging.getLogger(__name__)


class TrialLoop:
    """Runs the trials of one worker (see the module docstring).

    Attributes:
        tally: what this run's trials did.
        stop: why ``--time-limit`` ended the trials, if it did.
    """

    def __init__(
        self,
        ctx: RunContext,
        runner: TrialRunner,
        plan: TimePlan,
        trainer: Scorer | None,
        clock: Callable[[], float],
    ) -> None:
        self.ctx, self.runner, self.plan, self.trainer, self.clock = (
            ctx,
            runner,
            plan,
            trainer,
            clock,
        )
        self.tally = Tally()
        self.stop: Stop | None = None
        self.current: int | None = None  # the trial under way (re-queued after Ctrl-C)

    def objective(self, trial: optuna.Trial) -> tuple[float, float]:
        """One trial; a failure is recorded on the trial with its reason, and logged."""
        self.current = trial.number
        began = self.clock()
        report: TrialReport | None = None
        try:
            values, report = self.runner(trial)
            return values
        except Pruned as e:
            report = e.report
            raise
        except optuna.TrialPruned:
            raise
        except Exception as e:
            reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
            trial.set_user_attr(keys.FAIL_REASON, reason)
            log.warning("trial %d failed: %s", trial.number, reason)
            raise
        finally:
            if report is not None:
                self.tally.add(report)
                self._tell_plan(report, self.clock() - began)

    def _tell_plan(self, report: TrialReport, seconds: float) -> None:
        """How long a trial that measured (and trained) took, for ``--time-limit``."""
        kind = report.score.kind if report.score is not None else None
        if report.latency_source == keys.MEASURED:
            self.plan.prepared(report.timings)
        if kind == TRAINED:
            self.plan.trial_done(seconds, TRAINED)
            self.plan.trained(report.score.seconds)  # type: ignore[union-attr]
        elif kind == STOPPED:
            self.plan.trial_done(seconds, STOPPED)
        elif report.latency_source == keys.MEASURED:
            self.plan.trial_done(seconds, MEASURED)

    def _in_time(self, remeasure_count: Callable[[], int]) -> bool:
        self.stop = self.plan.stop_for(remeasure_count)
        if self.stop is None:
            return True
        log.warning(
            "--time-limit %.0f s: stopping the trials with %.0f s left for the final phase "
            "(expected %.0f s)",
            self.stop.limit_s,
            self.stop.limit_s - self.stop.trials_stopped_at_s,
            self.stop.final_estimate_s,
        )
        return False

    def run(
        self,
        study: optuna.Study,
        progress: Callable[[optuna.Study, FrozenTrial], None] | None,
        remeasure_count: Callable[[], int],
    ) -> None:
        """Trials until a stopping rule; KeyboardInterrupt re-queues the cut trial, re-raised."""
        trials = self.ctx.opts.trials

        def after(study: optuna.Study, trial: FrozenTrial) -> None:
            if trial.state == TrialState.FAIL:
                self.tally.failed += 1
            if self.trainer is not None:
                self.trainer.keep_front_checkpoints(study, self.ctx.budget_ms)
            enough = trials is not None and counted_trials(study) >= trials
            if enough or not self._in_time(remeasure_count):
                study.stop()

        callbacks: list[Any] = [after] + ([progress] if progress is not None else [])
        if trials is not None and counted_trials(study) >= trials:
            return
        if not self._in_time(remeasure_count):
            return
        try:
            study.optimize(
                self.objective,
                n_trials=None,
                timeout=self.ctx.opts.timeout,
                callbacks=callbacks,
                catch=(Exception,),
                gc_after_trial=False,
            )
        except KeyboardInterrupt:
            self._requeue(study)
            raise

    def _requeue(self, study: optuna.Study) -> None:
        """The trial cut by Ctrl-C is failed by Optuna; queue its parameters again."""
        failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        trial = next((t for t in failed if t.number == self.current), None)
        if trial is not None and trial.params:
            reference = {k: v for k, v in trial.user_attrs.items() if k == keys.REFERENCE}
            study.enqueue_trial(trial.params, user_attrs=reference)
