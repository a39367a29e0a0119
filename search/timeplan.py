"""How long the next trial may take, for ``--time-limit``: told about every trial explicitly.

A trial either only measured a latency (over the budget, or a proxy objective), trained to the
end, or was stopped early by the early-stop rule. An early-stopped trial says little about the
next one: the rule stops the candidates that fall behind, and the next candidate is often a
larger one that will train to the end. So the estimate of a training trial is the upper
quartile of the trials that trained to the end (as for ``--confirm``'s contenders), not the mean
of all trials that trained.

Example:
    >>> times = TrialTimes()
    >>> for seconds in (30.0, 34.0, 60.0, 62.0):
    ...     times.record(seconds, TRAINED)
    >>> times.record(8.0, STOPPED)
    >>> round(times.next_trial(), 1)
    60.5
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from search.selection import FOCUS_CANDIDATES
from search.targets import interleave_seconds

MEASURED, TRAINED, STOPPED = "measured", "trained", "stopped"
KINDS = (MEASURED, TRAINED, STOPPED)
UPPER_QUARTILE = 75


@dataclass
class TrialTimes:
    """Wall seconds of this run's trials, by what each did.

    Attributes:
        earlier_trainings: full trainings of the study's earlier runs (a resumed run's first
            estimates).
    """

    walls: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    earlier_trainings: list[float] = field(default_factory=list)

    def record(self, seconds: float, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"trial kind {kind!r}: choose one of {', '.join(KINDS)}")
        self.walls[kind].append(seconds)

    def next_trial(self, trains: bool = True) -> float:
        """What the next trial may take (0 when nothing is known yet).

        Args:
            trains: the search trains its candidates (the accuracy objective).
        """
        trained = self.walls[TRAINED]
        if trained:
            return float(np.percentile(trained, UPPER_QUARTILE))
        measured = self.walls[MEASURED]
        seconds = float(np.mean(measured)) if measured else 0.0
        if not trains:
            return seconds
        if self.earlier_trainings:
            return seconds + float(np.percentile(self.earlier_trainings, UPPER_QUARTILE))
        stopped = self.walls[STOPPED]  # each a lower bound on a training to the end
        return max([seconds, *stopped])


OUTPUT_SECONDS = 20.0  # the final phase's fixed part: best.onnx (exported, verified), report
PREPARE_SECONDS = 2.0  # one model's export for a measurement, before a trial has timed one
PREPARE_KEYS = ("build_s", "export_s", "quantize_s", "engine_s")
# --weight-sharing: the supernet trains for this share of the time its reserves leave (the rest
# is the trials'), at least MIN_SUPERNET_SECONDS; M0 is fine-tuned with two seeds after it
SUPERNET_SHARE = 0.5
MIN_SUPERNET_SECONDS = 60.0
EARLY_FINE_TUNINGS = 2


@dataclass(frozen=True)
class Stop:
    """Why the trials stopped for ``--time-limit``: the figures of the decision."""

    limit_s: float
    trials_stopped_at_s: float
    final_estimate_s: float
    next_trial_estimate_s: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in self.__dict__.items()}


@dataclass
class TimePlan:
    """``--time-limit``: what is left, what the next trial and the final phase may take.

    Told about every event explicitly: :meth:`trial_done` (a trial's wall time and kind),
    :meth:`prepared` (the steps of a new measurement), :meth:`trained` (a training to the end,
    the confirmations' too).

    Attributes:
        limit: the whole run's seconds (None: no limit).
        started: the clock's reading when the run started.
        clock: seconds.
        trains: the run trains its candidates.
        confirm: ``--confirm``'s contenders.
        final_trainings: trainings of the final phase (``--confirm``'s second seeds, or
            ``--weight-sharing``'s fine-tunings), each estimated at the upper quartile of the
            run's training times.
        fp32: the target measures fp32 (else the final phase compares with fp32 too).
        references: M0-M5 in the final re-measurement.
        remeasure: ``--remeasure``.
        focus: the budget is a reference's latency, so that the final re-measurement may
            measure it again beside the candidates it could not tell from it
            (``search.final.focus_undecided``).
    """

    limit: float | None
    started: float
    clock: Callable[[], float]
    trains: bool = False
    confirm: int = 0
    final_trainings: int = 0
    fp32: bool = True
    references: int = 6
    remeasure: int = 6
    focus: bool = False
    times: TrialTimes = field(default_factory=TrialTimes)
    prepares: list[float] = field(default_factory=list)
    trainings: list[float] = field(default_factory=list)

    def trial_done(self, seconds: float, kind: str) -> None:
        self.times.record(seconds, kind)

    def prepared(self, timings: dict[str, float]) -> None:
        self.prepares.append(sum(timings.get(k, 0.0) for k in PREPARE_KEYS))

    def trained(self, seconds: float) -> None:
        self.trainings.append(seconds)

    def time_left(self) -> float | None:
        """Seconds left of the limit (None without one)."""
        return None if self.limit is None else self.limit - (self.clock() - self.started)

    def prepare_seconds(self) -> float:
        """One model's export (and quantization or engine build) before a measurement: this
        run's mean, or :data:`PREPARE_SECONDS` before the first."""
        return float(np.mean(self.prepares)) if self.prepares else PREPARE_SECONDS

    def after_remeasure_seconds(self, training: float | None = None) -> float:
        """The final phase after the re-measurement: its trainings (``final_trainings``, each
        ``training`` seconds, by default the upper quartile of the training times), the fp32
        comparison of a non-fp32 search, and the outputs."""
        seconds = OUTPUT_SECONDS
        times = self.trainings or self.times.earlier_trainings
        if training is None and times:
            # the contenders are the larger models: the upper quartile of training times
            training = float(np.percentile(times, UPPER_QUARTILE))
        if self.trains and self.final_trainings and training is not None:
            seconds += self.final_trainings * training
        if not self.fp32:  # the pick and M0-M5, twice each
            models = 2 * (self.references + 1)
            seconds += interleave_seconds(models) + models * self.prepare_seconds()
        return seconds

    def remeasure_seconds(self, models: int) -> float:
        """One interleaved run of ``models`` models: its time cap and each model's export."""
        return interleave_seconds(models) + models * self.prepare_seconds()

    def final_seconds(self, models: int, training: float | None = None) -> float:
        """The final phase's expected length when ``models`` models are re-measured (and each
        of its trainings takes ``training`` seconds; see :meth:`after_remeasure_seconds`)."""
        remeasure = self.remeasure_seconds(models)
        if self.focus:
            remeasure += self.remeasure_seconds(FOCUS_CANDIDATES + 1)
        return remeasure + self.after_remeasure_seconds(training)

    def most_remeasured(self, family: bool = True) -> int:
        """The most models the final run re-measures (``choose_remeasure``): every reference,
        the candidates the budget and ``--confirm`` add and, in family mode, 3 candidates under
        each reference's latency."""
        under_references = 3 * self.references if family else 0
        return self.references + under_references + 2 * self.remeasure + self.confirm

    def supernet_seconds(self, training: float) -> float | None:
        """``--weight-sharing``: the supernet's share of the time left (None without a limit).

        M0's fine-tunings (both seeds, right after the supernet) and the final phase come
        first, each training ``training`` seconds (estimated by timing a few steps, since
        nothing has trained yet); the supernet gets :data:`SUPERNET_SHARE` of what remains and
        the trials the rest.

        Raises:
            ValueError: what remains leaves the supernet less than
                :data:`MIN_SUPERNET_SECONDS`; the message gives the limit that would.
        """
        left = self.time_left()
        if left is None or self.limit is None:
            return None
        # not family mode's most: should it need more, the trials stop earlier (stop_for)
        reserve = EARLY_FINE_TUNINGS * training + self.final_seconds(
            self.most_remeasured(family=False), training
        )
        share = SUPERNET_SHARE * (left - reserve)
        if share < MIN_SUPERNET_SECONDS:
            needed = self.limit - left + reserve + MIN_SUPERNET_SECONDS / SUPERNET_SHARE
            raise ValueError(
                f"--time-limit {self.limit:.0f} is too short for --weight-sharing here: M0's "
                f"fine-tunings and the final phase need about {reserve:.0f} s (a fine-tuning "
                f"takes about {training:.0f} s), which leaves the supernet "
                f"{max(share, 0.0):.0f} s; give --time-limit {math.ceil(needed / 60) * 60} "
                "or more"
            )
        return share

    def stop_for(self, remeasure_count: Callable[[], int]) -> Stop | None:
        """None while the time left covers one more trial and then the final phase; else why
        not. ``remeasure_count`` gives the exact re-measurement if the trials stopped now."""
        left = self.time_left()
        if left is None or self.limit is None:
            return None
        trial = self.times.next_trial(trains=self.trains)
        if left >= trial + self.final_seconds(self.most_remeasured()):
            return None
        reserve = self.final_seconds(remeasure_count())  # exact count, when close
        if left >= trial + reserve:
            return None
        return Stop(self.limit, self.limit - left, reserve, trial)
