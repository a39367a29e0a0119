"""The statistics behind docs/benchmarks.md's proxy ranking (benchmarks/bench_proxies.py)."""

from __future__ import annotations

import math
import random

from benchmarks.bench_proxies import (
    bootstrap_interval,
    kendall_tau,
    replay_early_stop,
    tau_within_bins,
)


def test_kendall_tau_b_matches_hand_counts_and_handles_ties():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # one discordant pair of six: (5 - 1) / 6
    assert math.isclose(kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]), 4 / 6)
    # tau-b with a tie in x: C=5, D=0, ties_x=1 -> 5 / sqrt(5 * 6)
    assert math.isclose(kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]), 5 / math.sqrt(30))
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_bootstrap_interval_brackets_tau_and_narrows_with_signal():
    rng = random.Random(1)
    x = list(range(40))
    noisy = [v + rng.gauss(0, 15) for v in x]
    lo, hi = bootstrap_interval(x, noisy, resamples=400)
    assert lo <= kendall_tau(x, noisy) <= hi
    lo2, hi2 = bootstrap_interval(x, [v + rng.gauss(0, 1) for v in x], resamples=400)
    assert hi2 - lo2 < hi - lo and lo2 > 0.8


def test_tau_within_bins_ignores_what_only_latency_explains():
    latency = list(range(12))
    accuracy = [lat + (0.5 if i % 2 else 0) for i, lat in enumerate(latency)]
    # a proxy that is just latency ranks well overall...
    assert kendall_tau(latency, accuracy) > 0.9
    # ...and the within-bin tau sees the same order inside each bin here
    mean, per_bin = tau_within_bins(latency, latency, accuracy, bins=3)
    assert len(per_bin) == 3 and mean > 0.9
    # a proxy anti-correlated with accuracy inside every bin scores negative there
    anti = [-a for a in accuracy]
    assert tau_within_bins(latency, anti, accuracy, bins=3)[0] < -0.9


def test_early_stop_replay_counts_wrong_stops():
    def row(lat, curve, seconds=3.0):
        return {
            "latency_ms": lat,
            "train": {"0": {"curve": curve, "top1": curve[-1], "seconds": seconds}},
        }

    # the slow config starts worse but ends best: stopping it is a wrong stop
    rows = [row(1.0, [20, 25, 30]), row(2.0, [10, 30, 50])]
    r = replay_early_stop(rows, check_epoch=1, margin=2.0, orders=50)
    assert r["stopped_share"] > 0 and r["wrong_share_of_stops"] == 1.0
    assert 0 < r["time_saved_share"] < 1
    assert replay_early_stop(rows, check_epoch=1, margin=20.0, orders=10)["stopped_share"] == 0
