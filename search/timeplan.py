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

from dataclasses import dataclass, field

import numpy as np

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
