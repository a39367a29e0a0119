"""What a search is asked to do (:class:`SearchOptions`) and what it found (:class:`SearchOutcome`).

Both are plain records: the CLI fills the options from flags, :func:`search.study.run_search`
returns the outcome, and the report and the CLI read it. Neither is changed after it is made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.latency import InterleavedResult, LatencyResult, Ratio
from search.accuracy import TrainBudget
from search.candidates import Candidate
from search.objectives import ACCURACY, Objective
from search.space import SearchSpace, reference_configs
from search.targets import Target

SAMPLERS = ("tpe", "nsga2", "random")
# with neither --trials nor --time-limit, the whole run (target choice, trials, final phase,
# outputs) ends within this many seconds on every CPU kind
DEFAULT_TIME_LIMIT_S = 600.0


@dataclass(frozen=True)
class SearchOptions:
    """Everything a search run needs; the CLI fills it from flags.

    Attributes:
        budget_ms: the latency budget in ms (ignored when ``budget_reference`` is set).
        budget_reference: ``--budget-ms m0``: the budget is this reference's latency on the
            target, measured at start-up.
        time_limit: the whole run's wall-clock seconds, target choice and final phase included
            (None: :data:`DEFAULT_TIME_LIMIT_S` unless ``trials`` is given).
        drift_retries: the final re-measurement is repeated this many times when the machine's
            speed drifted, after ``drift_wait_seconds`` each time.
        train: the accuracy objective's training (``--data``).
        precision: ``fp32``, ``fp16``, ``bf16`` or ``int8``; None: the target's default.
        weight_sharing: score candidates by one supernet trained on ``train.data`` first
            (``search.inherited``) instead of a short training each.
        supernet_epochs: the supernet's training epochs.
    """

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
    drift_retries: int = 2
    drift_wait_seconds: float = 60.0
    time_limit: float | None = None
    train: TrainBudget | None = None
    precision: str | None = None
    budget_reference: str | None = None
    weight_sharing: bool = False
    supernet_epochs: int = 10

    @property
    def whole_run_limit(self) -> float | None:
        """The time limit that applies: ``time_limit``, or the default without ``trials``."""
        if self.time_limit is not None:
            return self.time_limit
        return None if self.trials is not None else DEFAULT_TIME_LIMIT_S

    def check(self) -> None:
        """Raises ValueError (one line: the flag, its value, what is allowed) on bad input."""
        if self.budget_reference is not None:
            if self.budget_reference not in reference_configs():
                raise ValueError(
                    f"--budget-ms {self.budget_reference}: not a reference (m0 ... m5)"
                )
        elif not (self.budget_ms > 0 and math.isfinite(self.budget_ms)):
            raise ValueError(f"--budget-ms {self.budget_ms}: must be a positive number")
        for flag, value in (("--batch", self.batch), ("--threads", self.threads)):
            if value is not None and value < 1:
                raise ValueError(f"{flag} {value}: must be >= 1")
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
        if self.weight_sharing and self.train is None:
            raise ValueError(
                "--weight-sharing scores candidates by a supernet trained on your data: give "
                "--objective accuracy --data DIR"
            )
        if self.supernet_epochs < 1:
            raise ValueError(f"--supernet-epochs {self.supernet_epochs}: must be >= 1")
        if self.objective != ACCURACY and self.train is not None:
            raise ValueError(
                f"--data trains candidates, which only --objective accuracy does (objective "
                f"{self.objective!r} is a training-free proxy)"
            )


@dataclass(frozen=True)
class PrecisionRow:
    """One model in fp32 and in the search's precision, measured in one interleaved run."""

    candidate: Candidate
    fp32: LatencyResult
    this: LatencyResult
    speedup: Ratio  # fp32 time / this precision's time


@dataclass(frozen=True)
class SearchOutcome:
    """What a search found, with everything its report says.

    Attributes:
        budget_ms: the budget applied (measured for ``--budget-ms m0``).
        best: the pick (None when nothing fits).
        pareto: the candidates of the final re-measurement, by first-measured latency.
        references: M0-M5 as measured (and trained, with the accuracy objective).
        fastest: the fastest model measured (named when nothing fits).
        stats: counters and seconds of the run's phases (the report's account).
        family: (M_i, S_i) pairs with ``--family``.
        training: the accuracy objective's training settings.
        interleaved: the final re-measurement (paired ratios).
        iso_latency: accuracy objective: (trained reference, most accurate within its latency).
        precision_rows: not fp32: the pick and the references in fp32 and this precision.
        auto_choice: ``--target auto`` on a CPU: what it measured and chose.
        budget_choice: ``--budget-ms m0``: the reference's measured latency, in words.
        drift_warning: the machine's speed changed between the trials and the final phase.
        supernet: ``--weight-sharing``: the supernet's training (``SupernetReport.as_dict``).
    """

    out: Path
    study_name: str
    budget_ms: float
    target: Target
    objective: Objective
    space: SearchSpace
    best: Candidate | None
    pareto: list[Candidate]
    references: list[Candidate]
    fastest: Candidate | None
    stats: dict[str, Any] = field(default_factory=dict)
    family: list[tuple[Candidate, Candidate]] = field(default_factory=list)
    interrupted: bool = False
    training: dict[str, Any] | None = None
    interleaved: InterleavedResult | None = None
    iso_latency: list[tuple[Candidate, Candidate]] = field(default_factory=list)
    precision_rows: list[PrecisionRow] = field(default_factory=list)
    auto_choice: str | None = None
    budget_choice: str | None = None
    budget_reference: str | None = None
    drift_warning: str | None = None
    supernet: dict[str, Any] | None = None  # --weight-sharing: how the supernet was trained
