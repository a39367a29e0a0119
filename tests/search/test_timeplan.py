"""--time-limit's estimate of the next trial: full trainings' upper quartile."""

from __future__ import annotations

import numpy as np
import pytest

from search.timeplan import MEASURED, STOPPED, TRAINED, TrialTimes


def test_the_next_trial_is_the_upper_quartile_of_full_trainings_not_the_mean_of_all():
    """Small candidates train fast and the early-stop rule cuts the laggards short; the next
    candidate is often a larger one: the mean of everything that trained underestimates it."""
    times = TrialTimes()
    for seconds in (20.0, 22.0, 25.0, 60.0, 65.0, 70.0):  # trainings vary in length
        times.record(seconds, TRAINED)
    for seconds in (6.0, 7.0, 8.0, 9.0):  # stopped early after half the epochs
        times.record(seconds, STOPPED)
    times.record(1.0, MEASURED)
    everything = [20.0, 22.0, 25.0, 60.0, 65.0, 70.0, 6.0, 7.0, 8.0, 9.0]
    assert np.mean(everything) == pytest.approx(29.2)  # the old estimate
    assert times.next_trial() == pytest.approx(np.percentile([20, 22, 25, 60, 65, 70], 75))
    assert times.next_trial() > 60.0


def test_before_a_full_training_the_estimate_uses_what_is_known():
    times = TrialTimes()
    assert times.next_trial() == 0.0
    times.record(2.0, MEASURED)
    assert times.next_trial(trains=False) == 2.0  # a proxy objective: measuring is all
    times.record(9.0, STOPPED)  # a stopped training: a lower bound on a full one
    assert times.next_trial() == 9.0
    resumed = TrialTimes(earlier_trainings=[30.0, 40.0, 50.0, 60.0])
    resumed.record(2.0, MEASURED)
    assert resumed.next_trial() == pytest.approx(2.0 + 52.5)  # the study's earlier trainings
    with pytest.raises(ValueError, match="trial kind 'pruned': choose one of measured"):
        times.record(1.0, "pruned")
