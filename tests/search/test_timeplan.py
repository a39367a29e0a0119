"""--time-limit's estimate of the next trial: full trainings' upper quartile."""

from __future__ import annotations

import numpy as np
import pytest

from search.timeplan import (
    EARLY_FINE_TUNINGS,
    MEASURED,
    MIN_SUPERNET_SECONDS,
    STOPPED,
    SUPERNET_SHARE,
    TRAINED,
    TimePlan,
    TrialTimes,
)


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


def _weight_sharing_plan(limit, now=10.0):
    """A --weight-sharing search's plan: 6 final fine-tunings, M0-M5, the focused run."""
    return TimePlan(
        limit=limit,
        started=0.0,
        clock=lambda: now,
        trains=True,
        confirm=2,
        final_trainings=6,
        focus=True,
    )


def test_the_supernet_gets_half_of_what_the_fine_tunings_and_the_final_phase_leave():
    """Run D of docs §18: half of the time left went to the supernet and the final phase's
    fine-tunings then left no trial any time. The reserve comes first now."""
    plan = _weight_sharing_plan(840.0)
    training = 60.0
    remeasured = plan.most_remeasured(family=False)
    assert remeasured == 6 + 2 * 6 + 2  # M0-M5, twice --remeasure, --confirm
    reserve = EARLY_FINE_TUNINGS * training + plan.final_seconds(remeasured, training)
    assert reserve > 6 * training + 2 * training  # every fine-tuning is set aside
    share = plan.supernet_seconds(training)
    assert share == pytest.approx(SUPERNET_SHARE * (830.0 - reserve))
    # the supernet, then the reserve, still leave the trials as much as the supernet got
    assert 830.0 - share - reserve == pytest.approx(share)
    assert _weight_sharing_plan(None).supernet_seconds(training) is None  # no limit


def test_a_limit_too_short_for_the_supernet_is_an_error_that_names_one_that_fits():
    with pytest.raises(ValueError) as e:
        _weight_sharing_plan(600.0).supernet_seconds(60.0)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("--time-limit 600 is too short for --weight-sharing here")
    suggested = float(message.split("give --time-limit ")[1].split()[0])
    assert suggested % 60 == 0 and suggested > 600
    # the suggested limit leaves the supernet at least its minimum
    assert _weight_sharing_plan(suggested).supernet_seconds(60.0) >= MIN_SUPERNET_SECONDS
