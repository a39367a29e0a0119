"""The accuracy objective's trainings: one trial's score, the kept checkpoints, the second seeds.

A :class:`Trainer` trains a candidate that fits the budget on the user's data and returns its
:class:`Score`; a config over the budget is never trained; the same architecture trained before
gives its score again; the early-stop rule (``search.accuracy.EarlyStopRule``) ends hopeless
trainings (:class:`Stopped`, an ``optuna.TrialPruned`` that carries its score). Trained weights
are kept only for the current front (``trials/<number>/best.pth``). :meth:`Trainer.confirm` trains
the pick's contenders, M0 and M0's rival again with another seed and returns those scores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from edge.devicelock import device_lock
from edge.latency import InterleavedResult, LatencyResult
from evit.config import ModelConfig
from search import keys
from search.accuracy import ConfirmLog, EarlyRecord, EarlyStopped, TrainBudget, epoch_top1
from search.candidates import Candidate
from search.selection import fits_budget, front_indices, within_reference
from search.targets import Target

log = logging.getLogger(__name__)

TRIALS = "trials"  # trained weights of the front: trials/<number>/
CONFIRM = "confirm.jsonl"  # the second-seed scores (search.accuracy.ConfirmLog)
TRAINED, STOPPED, COPIED, OVER = "trained", "stopped", "copied", "over the budget"
INHERITED = "inherited"  # --weight-sharing: read from the supernet (search.inherited)


@dataclass(frozen=True)
class Score:
    """One trial's accuracy and what it took.

    Attributes:
        kind: ``trained`` (to the end), ``stopped`` (early), ``copied`` (the same architecture
            trained before), ``inherited`` (read from the supernet) or ``over the budget`` (not
            scored; ``top1`` 0 is a placeholder).
    """

    top1: float
    kind: str
    seconds: float = 0.0
    saved_s: float = 0.0  # an early stop: the estimated rest of the training


class Stopped(optuna.TrialPruned):
    """The early-stop rule ended the trial's training."""

    def __init__(self, message: str, score: Score) -> None:
        super().__init__(message)
        self.score = score


@dataclass(frozen=True)
class Confirmation:
    """Two seeds' scores by architecture hash, the architectures of the pick's contenders, and
    each new training's seconds.

    Attributes:
        checkpoints: fine-tuned weights by architecture (``--weight-sharing``: they replace
            the candidates' own).
        fine_tuned: both seeds are fine-tunings from inherited weights (the first score is not
            the trial's own).
    """

    seeds: dict[str, list[float]] = field(default_factory=dict)
    contenders: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    checkpoints: dict[str, Path] = field(default_factory=dict)
    fine_tuned: bool = False

    def apply(self, cands: list[Candidate]) -> list[Candidate]:
        """Copies of ``cands``; those confirmed carry both seeds and their mean as objective
        (and, fine-tuned, their inherited score and fine-tuned weights)."""
        out = []
        for c in cands:
            arch = c.config.architecture_hash()
            seeds = self.seeds.get(arch)
            if seeds is not None and c.trained:
                if self.fine_tuned:  # the trial's own score was the supernet's
                    checkpoint = self.checkpoints.get(arch, c.checkpoint)
                    c = dataclasses.replace(c, inherited=c.objective, checkpoint=checkpoint)
                c = dataclasses.replace(c, seeds=seeds, objective=sum(seeds) / len(seeds))
            out.append(c)
        return out


class Trainer:
    """Trains candidates of one run (see the module docstring).

    Args:
        budget: the training every candidate gets.
        out: the run folder (``trials/``, ``confirm.jsonl``).
        target: where latency is measured (a training on the same device holds it shared).
        train: ``search.accuracy.train_candidate`` or a stand-in.
    """

    def __init__(
        self, budget: TrainBudget, out: Path, target: Target, train: Callable[..., Any]
    ) -> None:
        self.budget, self.out, self.target, self.train = budget, out, target, train

    def _shares_device(self) -> bool:
        """Training holds the device lock (shared) when it runs where latency is measured."""
        gpu_target = self.target.name in ("trt", "torch-cuda")
        device = self.budget.device
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return gpu_target == device.startswith("cuda")

    def _lock(self) -> Any:
        if self._shares_device():
            return device_lock(self.target.device_key, exclusive=False)
        return contextlib.nullcontext()

    def score(
        self,
        trial: optuna.Trial,
        config: ModelConfig,
        latency: LatencyResult,
        budget_ms: float,
        reference: str | None,
        sets_budget: bool,
    ) -> Score:
        """Train ``config`` if it fits (or is the reference that sets the budget: the pick is
        compared with it) and record its score on ``trial``."""
        if latency.median_ms > budget_ms and not sets_budget:
            trial.set_user_attr(keys.ACCURACY_SOURCE, "not trained: over the budget")
            return Score(0.0, OVER)
        same = _trained_before(trial.study, config.architecture_hash())
        if same is not None:  # the same architecture under the same training: the same score
            for key in keys.SCORE_KEYS:
                if key in same.user_attrs:
                    trial.set_user_attr(key, same.user_attrs[key])
            trial.set_user_attr(keys.ACCURACY_SOURCE, f"trial {same.number}")
            return Score(float(same.user_attrs[keys.TOP1]), COPIED)
        return self._train_trial(trial, config, latency, reference)

    def _train_trial(
        self, trial: optuna.Trial, config: ModelConfig, latency: LatencyResult, reference: Any
    ) -> Score:
        rule = self.budget.rule()
        folder = self.out / TRIALS / f"{trial.number:05d}"
        curve: list[float] = []

        def on_epoch(epoch: int, record: dict[str, Any]) -> None:
            top1 = epoch_top1(record)
            curve.append(round(top1, 3))
            trial.set_user_attr(keys.CURVE, curve)
            if epoch + 1 == rule.check_epoch:
                trial.set_user_attr(keys.EARLY_TOP1, top1)
                leader = rule.beaten_by(latency.median_ms, top1, _early_records(trial.study))
                if leader is not None and not reference:
                    raise EarlyStopped(epoch + 1, top1, leader)

        trial.set_user_attr(keys.TRAIN_IMG_SIZE, self.budget.train_img_size(config.img_size))
        start = time.perf_counter()
        try:
            with self._lock():
                outcome = self.train(config, self.budget, folder, on_epoch)
        except EarlyStopped as e:
            elapsed = time.perf_counter() - start
            saved = elapsed / e.epoch * (self.budget.epochs - e.epoch)
            for key, value in ((keys.EARLY_STOPPED, str(e)), (keys.TRAIN_SECONDS, elapsed)):
                trial.set_user_attr(key, value)
            trial.set_user_attr(keys.EARLY_SAVED_S, saved)
            shutil.rmtree(folder, ignore_errors=True)
            raise Stopped(f"early stop: {e}", Score(e.top1, STOPPED, elapsed, saved)) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        (folder / "last.pth").unlink(missing_ok=True)  # best.pth and metrics.jsonl stay
        for key, value in {
            keys.TOP1: outcome.top1,
            keys.TRAIN_SECONDS: outcome.seconds,
            keys.CHECKPOINT: str(folder.relative_to(self.out) / "best.pth"),
            keys.ACCURACY_SOURCE: TRAINED,
        }.items():
            trial.set_user_attr(key, value)
        return Score(outcome.top1, TRAINED, outcome.seconds)

    def keep_front_checkpoints(self, study: optuna.Study, budget_ms: float) -> None:
        """Delete the trained weights of finished trials off the (accuracy, latency) front and
        not among ``--confirm``'s contenders."""
        folder = self.out / TRIALS
        if not folder.is_dir():
            return
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        trained = [
            t
            for t in trials.values()
            if t.state == TrialState.COMPLETE and keys.CHECKPOINT in t.user_attrs
        ]
        searched = [t for t in trained if keys.REFERENCE not in t.user_attrs]
        # the selection picks from the searched front; the report compares with references
        keep = {t.number for group in (searched, trained) for t in _front(group)}
        fits = [t for t in searched if t.user_attrs[keys.LATENCY_MEDIAN] <= budget_ms]
        best = sorted(fits, key=lambda t: -t.user_attrs[keys.TOP1])[: self.budget.confirm]
        keep |= {t.number for t in best}
        for d in folder.iterdir():
            t = trials.get(int(d.name)) if d.name.isdigit() else None
            if t is not None and t.state.is_finished() and t.number not in keep:
                shutil.rmtree(d, ignore_errors=True)

    def confirm(
        self,
        chosen: list[Candidate],
        references: list[Candidate],
        run: InterleavedResult | None,
        budget_ms: float,
        budget_reference: Candidate | None,
    ) -> Confirmation | None:
        """Train the pick's contenders, M0 and M0's rival again with seed + 1.

        Trained again: the ``budget.confirm`` most accurate candidates within the budget, M0
        (when it was trained) and the most accurate candidate within M0's latency, so that the
        headline comparisons (pick vs M0, and at M0's latency) are between means of the same
        two seeds. None when nothing was confirmed. Second-seed weights are not kept:
        ``best.pth`` is the first seed's.
        """
        if self.budget.confirm == 0:
            return None
        top, todo = contenders(
            chosen, references, run, budget_ms, budget_reference, self.budget.confirm
        )
        if not top:
            return None
        seeds, seconds = self._second_seeds(todo)
        return Confirmation(seeds, [c.config.architecture_hash() for c in top], seconds)

    def _second_seeds(self, todo: list[Candidate]) -> tuple[dict[str, list[float]], list[float]]:
        seed = self.budget.seed + 1
        again = dataclasses.replace(self.budget, seed=seed)
        confirmed = ConfirmLog(self.out / CONFIRM, self.budget.settings())
        seeds: dict[str, list[float]] = {}
        seconds: list[float] = []
        for c in todo:
            arch = c.config.architecture_hash()
            if arch in seeds:
                continue
            top1 = confirmed.get(arch, seed)
            if top1 is None:
                folder = self.out / TRIALS / f"confirm-{arch[:8]}-seed{seed}"
                log.info("confirming %s with seed %d", c.config.name, seed)
                try:
                    with self._lock():
                        outcome = self.train(c.config, again, folder, None)
                except Exception as e:  # one failed training loses no result
                    log.warning("confirming %s failed: %s; its one seed stands", c.config.name, e)
                    continue
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
                top1 = outcome.top1
                seconds.append(outcome.seconds)
                confirmed.append(arch, seed, top1, outcome.seconds)
            seeds[arch] = [c.objective, top1]
        return seeds, seconds


def _front(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trained trials no other one beats in both top-1 and first-measured latency."""
    points = [(t.user_attrs[keys.TOP1], t.user_attrs[keys.LATENCY_MEDIAN]) for t in trials]
    return [trials[i] for i in front_indices(points)]


class Scorer(Protocol):
    """What scores the accuracy objective's candidates: :class:`Trainer` (a short training
    each) or ``search.inherited.InheritedScorer`` (the supernet's weights)."""

    def score(
        self,
        trial: optuna.Trial,
        config: ModelConfig,
        latency: LatencyResult,
        budget_ms: float,
        reference: str | None,
        sets_budget: bool,
    ) -> Score: ...

    def keep_front_checkpoints(self, study: optuna.Study, budget_ms: float) -> None: ...

    def confirm(
        self,
        chosen: list[Candidate],
        references: list[Candidate],
        run: InterleavedResult | None,
        budget_ms: float,
        budget_reference: Candidate | None,
    ) -> Confirmation | None: ...


def contenders(
    chosen: list[Candidate],
    references: list[Candidate],
    run: InterleavedResult | None,
    budget_ms: float,
    budget_reference: Candidate | None,
    k: int,
) -> tuple[list[Candidate], list[Candidate]]:
    """The ``k`` most accurate trained candidates within the budget (the pick is made among
    them), and what is trained again: those, plus M0 (when trained) and the most accurate
    candidate within M0's paired latency, so that the headline comparisons are between means
    of the same two seeds."""
    fits = [c for c in chosen if c.trained and fits_budget(c, budget_ms, budget_reference, run)]
    top = sorted(fits, key=lambda c: -c.objective)[:k]
    todo = list(top)
    m0 = next((r for r in references if r.reference == "efficientvit_m0" and r.trained), None)
    if top and m0 is not None and run is not None:
        under = [c for c in chosen if c.trained and within_reference(c, m0, run)]
        todo += [max(under, key=lambda c: c.objective)] if under else []
        todo.append(m0)
    return top, todo


def _early_records(study: optuna.Study) -> list[EarlyRecord]:
    return [
        EarlyRecord(t.number, t.user_attrs[keys.LATENCY_MEDIAN], t.user_attrs[keys.EARLY_TOP1])
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if keys.EARLY_TOP1 in t.user_attrs and keys.LATENCY_MEDIAN in t.user_attrs
    ]


def _trained_before(study: optuna.Study, arch: str) -> FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get(keys.ARCH_HASH) == arch and keys.was_trained(t.user_attrs):
            return t
    return None
