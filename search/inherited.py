"""``--weight-sharing``: every candidate scored by one supernet trained on the user's data.

Before the trials, one weight-sharing supernet of the search space is trained on ``--data``
(``evit.supernet``: the sandwich rule with in-place distillation, ``evit train``'s recipe), for
``--supernet-epochs`` or for its share of ``--time-limit`` (half of what is left once M0's
fine-tunings and the final phase are set aside: ``TimePlan.supernet_seconds``). A trial
then scores its candidate in seconds: the sub-network's weights are sliced out, its BatchNorm
statistics re-estimated on a fixed set of training batches, and validation top-1 measured on the
whole validation set (:class:`InheritedScorer`). Every candidate is scored by the same training,
so its noise is shared by the comparisons between candidates.

The final phase fine-tunes the pick's contenders, M0 and M0's rival from their inherited weights
(``search.accuracy.train_candidate`` with the sub-network as ``init``) with two seeds and picks
by the mean, as ``--confirm`` does for short trainings; ``best.pth`` is the pick's fine-tuned
weights (first seed).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from edge.latency import InterleavedResult, LatencyResult
from evit.config import ModelConfig
from search import keys
from search.accuracy import TrainBudget
from search.candidates import Candidate
from search.space import ACCURACY_SPACE
from search.trainer import INHERITED, OVER, TRIALS, Confirmation, Score, contenders

log = logging.getLogger(__name__)

SUPERNET = "supernet"  # the run folder's supernet training: supernet.pth, metrics.jsonl
NOT_CONTAINED = "not in the supernet"


class _OutOfTime(Exception):
    """The supernet's next epoch would not fit its share of the time limit."""


@dataclass(frozen=True)
class SupernetReport:
    """How the supernet was trained (the report says it)."""

    checkpoint: Path
    epochs: int  # trained (the run's epochs, or fewer when the time limit stopped it)
    planned_epochs: int  # --supernet-epochs
    seconds: float  # timing the steps included
    largest_top1: float
    smallest_top1: float
    steps: int = 0  # sandwich steps trained (fewer than whole passes when the time limit says)

    def as_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def train_supernet_for(
    budget: TrainBudget,
    space_path: str | Path | None,
    out: Path,
    epochs: int,
    share_for: Callable[[], float | None],
) -> SupernetReport:
    """Train (or resume, or reuse) the run's supernet at the candidates' training sizes, for
    at most the seconds ``share_for()`` gives (None: ``epochs`` whatever they take)."""
    from evit.supernet.checkpoint import load_supernet
    from evit.supernet.loop import SupernetOptions, train_supernet
    from evit.supernet.plan import Plan
    from evit.supernet.space import read_space
    from evit.train.recipe import choose_recipe

    space = read_space(space_path or ACCURACY_SPACE)
    space = space.with_img_size(tuple(sorted({budget.train_img_size(s) for s in space.img_size})))
    folder = out / SUPERNET
    checkpoint = folder / "supernet.pth"
    resume = checkpoint.is_file()  # a resumed run keeps its own plan and recipe

    def options(plan: Plan) -> SupernetOptions:
        images = budget.train_images()
        if plan.steps_per_epoch is not None:
            images = min(images, plan.steps_per_epoch * budget.batch_size)
        recipe, why = choose_recipe(
            "short", epochs=plan.epochs, train_images=images, batch_size=budget.batch_size
        )
        log.info("supernet: %s", why)
        return SupernetOptions(
            space=space,
            data=budget.data,
            out=folder,
            # the trials score the supernet's own weights: an EMA would double the epoch's
            # evaluation (the largest config's dominates a short run's time) for nothing
            recipe=recipe.replace(seed=budget.seed, aug="mild", ema_decay=0.0),
            resume=resume,
            steps_per_epoch=plan.steps_per_epoch,
            threads=budget.threads,
            device=budget.device,
            progress=False,
        )

    share = share_for()
    began = time.perf_counter()
    plan = Plan(epochs, None)
    if share is not None and not resume:
        plan = _fit(options(plan), epochs, share)
    run_options = options(plan)

    def in_time(epoch: int, record: dict[str, Any]) -> None:
        """A safety net: the plan's estimate can be wrong (the machine slows down)."""
        took = time.perf_counter() - began
        if share is None or epoch + 1 >= plan.epochs:
            return
        if took + (took - probe_seconds) / (epoch + 1) > share:
            raise _OutOfTime

    probe_seconds = time.perf_counter() - began
    try:
        history = train_supernet(run_options, in_time).history
    except _OutOfTime:
        history = load_supernet(checkpoint).extra["train_state"]["history"]
        log.warning(
            "supernet: stopped after %d of %d epochs for --time-limit", len(history), plan.epochs
        )
    last = history[-1] if history else {}
    return SupernetReport(
        checkpoint=checkpoint,
        epochs=len(history),
        planned_epochs=epochs,
        steps=int(last.get("step", 0)),
        seconds=time.perf_counter() - began,
        largest_top1=float(last.get("largest_top1", float("nan"))),
        smallest_top1=float(last.get("smallest_top1", float("nan"))),
    )


def _fit(options: Any, epochs: int, share: float) -> Any:
    """The supernet's epochs and steps that fit ``share`` seconds, its steps timed first
    (``evit.supernet.plan``); the timing comes out of the share."""
    from evit.supernet.plan import plan_for, time_steps

    began = time.perf_counter()
    times = time_steps(options)
    plan = plan_for(times, epochs, share - (time.perf_counter() - began))
    log.warning(
        "supernet: a sandwich step takes %.1f s and an evaluation %.0f s here: %s fit "
        "its share of --time-limit (%.0f s)",
        times.step_seconds,
        times.validate_seconds,
        f"{plan.epochs} epoch(s)"
        if plan.steps_per_epoch is None
        else f"{plan.steps_per_epoch} of one pass's {times.steps_per_pass} steps",
        share,
    )
    return plan


class InheritedScorer:
    """Scores candidates by the supernet (see the module docstring); the final phase's
    fine-tuning trains with ``train`` (``search.accuracy.train_candidate``'s signature)."""

    def __init__(
        self, budget: TrainBudget, out: Path, report: SupernetReport, train: Callable[..., Any]
    ) -> None:
        from evit.supernet.checkpoint import load_supernet
        from evit.supernet.evaluate import fixed_training_images
        from evit.train.data import resolve_data
        from evit.train.loop import BN_RECALIBRATION_BATCHES

        self.budget, self.out, self.report, self.train = budget, out, report, train
        loaded = load_supernet(report.checkpoint)
        self.supernet, self.class_names = loaded.supernet.eval(), loaded.class_names
        self.split = resolve_data(budget.data, None, 0.1, budget.seed)
        self.bn_batches = BN_RECALIBRATION_BATCHES
        self._bn: dict[int, Any] = {}
        self._val: dict[int, Any] = {}
        self._fixed = fixed_training_images
        # fine-tuned before the final phase, by architecture: (both seeds, kept weights, seconds)
        self._early: dict[str, tuple[list[float], Path, list[float]]] = {}

    def fine_tune_early(self, config: ModelConfig) -> list[float]:
        """Fine-tune ``config`` (M0) now, before the trials, with both seeds: the final phase
        reuses the result, and its trainings' seconds are what the time limit's estimate of
        that phase needs (the trials train nothing). Returns those seconds."""
        seconds: list[float] = []
        scores, kept = self._fine_tune(config, seconds)
        self._early[config.architecture_hash()] = (scores, kept, seconds)
        return seconds

    def _loaders(self, size: int) -> tuple[Any, Any]:
        from evit.train.evaluate import eval_loader

        if size not in self._bn:
            self._bn[size] = self._fixed(
                self.split.train, size, self.bn_batches, self.budget.batch_size, self.budget.seed
            )
            self._val[size] = eval_loader(self.split.val, size, self.budget.batch_size, 0)
        return self._bn[size], self._val[size]

    def _trained_config(self, config: ModelConfig) -> ModelConfig:
        size = self.budget.train_img_size(config.img_size)
        return config.at_img_size(size).replace(num_classes=len(self.class_names))

    def inherited_top1(self, config: ModelConfig) -> float:
        """Validation top-1 of ``config``'s sub-network (BN re-estimated, whole val set)."""
        from evit.supernet.evaluate import evaluate_subnet

        trained = self._trained_config(config)
        bn, val = self._loaders(trained.img_size)
        return evaluate_subnet(self.supernet, trained, bn, val)

    def contains(self, config: ModelConfig) -> bool:
        from evit.supernet.contain import check_contained

        try:
            check_contained(self.supernet.max_config, self._trained_config(config))
        except ValueError:
            return False
        return True

    def score(
        self,
        trial: optuna.Trial,
        config: ModelConfig,
        latency: LatencyResult,
        budget_ms: float,
        reference: str | None,
        sets_budget: bool,
    ) -> Score:
        """``config``'s inherited top-1, recorded on ``trial`` (not scored over the budget)."""
        if latency.median_ms > budget_ms and not sets_budget:
            trial.set_user_attr(keys.ACCURACY_SOURCE, "not trained: over the budget")
            return Score(0.0, OVER)
        if not self.contains(config):
            trial.set_user_attr(keys.ACCURACY_SOURCE, f"not scored: {NOT_CONTAINED}")
            return Score(0.0, OVER)
        start = time.perf_counter()
        top1 = self.inherited_top1(config)
        seconds = time.perf_counter() - start
        trial.set_user_attr(keys.TOP1, top1)
        trial.set_user_attr(keys.TRAIN_IMG_SIZE, self.budget.train_img_size(config.img_size))
        trial.set_user_attr(keys.ACCURACY_SOURCE, INHERITED)
        trial.set_user_attr(keys.INHERIT_SECONDS, seconds)
        return Score(top1, INHERITED, seconds)

    def keep_front_checkpoints(self, study: optuna.Study, budget_ms: float) -> None:
        """Nothing to delete: inherited scores keep no weights of their own."""

    def confirm(
        self,
        chosen: list[Candidate],
        references: list[Candidate],
        run: InterleavedResult | None,
        budget_ms: float,
        budget_reference: Candidate | None,
    ) -> Confirmation | None:
        """Fine-tune the contenders (the ``max(confirm, 1)`` best inherited scores within the
        budget), M0 and M0's rival from their inherited weights, with two seeds each."""
        k = max(self.budget.confirm, 1)
        top, todo = contenders(chosen, references, run, budget_ms, budget_reference, k)
        if not top:
            return None
        seeds: dict[str, list[float]] = {}
        kept: dict[str, Path] = {}
        seconds: list[float] = []
        for c in todo:
            arch = c.config.architecture_hash()
            if arch in seeds:
                continue
            if arch in self._early:
                seeds[arch], kept[arch], took = self._early[arch]
                seconds += took  # counted with the others in the report
            else:
                seeds[arch], kept[arch] = self._fine_tune(c.config, seconds)
        picks = [c.config.architecture_hash() for c in top]
        return Confirmation(seeds, picks, seconds, kept, fine_tuned=True)

    def _fine_tune(self, config: ModelConfig, seconds: list[float]) -> tuple[list[float], Path]:
        """Both seeds' top-1 after fine-tuning from the inherited weights; the first seed's
        weights are kept."""
        import evit
        from evit.supernet.evaluate import extract_model

        arch = config.architecture_hash()
        folder = self.out / TRIALS / f"finetune-{arch[:8]}"
        folder.mkdir(parents=True, exist_ok=True)
        init = folder / "inherited.pth"
        model = extract_model(self.supernet, self._trained_config(config))
        evit.save_checkpoint(model, init, {"source": "supernet"}, class_names=self.class_names)
        scores = []
        for seed in (self.budget.seed, self.budget.seed + 1):
            tuned = dataclasses.replace(self.budget, seed=seed, init=init)
            log.info("fine-tuning %s from its inherited weights, seed %d", config.name, seed)
            outcome = self.train(config, tuned, folder / f"seed{seed}", None)
            seconds.append(outcome.seconds)
            scores.append(outcome.top1)
        return scores, folder / f"seed{self.budget.seed}" / "best.pth"
