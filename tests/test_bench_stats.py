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


def _runs(vectors: dict[str, list[list[int]]], classes: int) -> dict:
    """bench_noise's layout: model -> seed -> per-class 1/0 lists."""
    out: dict = {}
    for model, seeds in vectors.items():
        out[model] = {}
        for seed, vec in enumerate(seeds):
            per = len(vec) // classes
            out[model][str(seed)] = {
                "correct": {f"c{i}": vec[i * per : (i + 1) * per] for i in range(classes)}
            }
    return out


def test_comparison_noise_splits_into_validation_and_training_parts():
    from benchmarks.bench_noise import comparison_sd, summarize

    rng = random.Random(0)
    same = [rng.random() < 0.3 for _ in range(2000)]
    # every run predicts alike: no validation noise in a comparison, no training noise
    still = comparison_sd(_runs({"a": [same, same], "b": [same, same]}, 10), [50, 200])
    assert still["agreement"] == 1.0 and still["total_sd"][50] == 0.0
    # independent coin flips: the per-image difference has sd sqrt(0.5); the validation part
    # shrinks as 1/sqrt(images), and a seed-to-seed spread shows up as training noise
    flips = {m: [[rng.random() < 0.5 for _ in range(2000)] for _ in range(4)] for m in "ab"}
    noisy = comparison_sd(_runs(flips, 10), [50, 200])
    assert math.isclose(noisy["val_sd"][50], 100 * math.sqrt(0.5 / 500), rel_tol=0.05)
    assert math.isclose(noisy["val_sd"][50] / noisy["val_sd"][200], 2.0)
    assert 0.4 < noisy["agreement"] < 0.6
    # a model that is better on every seed is ordered right by every pairing of seeds
    better = {"a": [same, same], "b": [[1] * 2000, [1] * 2000]}
    rows = summarize(_runs(better, 10), [50, 200])
    assert all(r["ordered_right"] == 1.0 and r["diff"]["mean"] > 60 for r in rows)
