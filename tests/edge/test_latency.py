"""The harness's statistics and stopping rules, on deterministic fake runtimes and clocks."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from edge.latency import (
    LatencyResult,
    fingerprint,
    measure_interleaved,
    measure_latency,
    median_ci,
)
from edge.runtimes import Runtime


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeRuntime(Runtime):
    """Each run 'takes' the next value of ``pattern`` (ms) on ``clock``."""

    name = "fake"

    def __init__(self, pattern, clock: FakeClock, label: str = "fake", gpu: bool = False):
        self.values = itertools.cycle(pattern)
        self.clock = clock
        self.label = label
        self.input_shape = (1, 3, 8, 8)
        self.gpu = gpu
        self.runs = 0
        self.history: list[float] = []

    def set_input(self, x):
        pass

    def _infer(self):
        pass

    def _output(self):
        return np.zeros((1, 2))

    def timed(self):
        ms = next(self.values)
        self.clock.now += ms / 1e3
        self.runs += 1
        self.history.append(ms)
        return ms, (ms * 0.8 if self.gpu else None)


def test_median_ci_order_statistics():
    x = np.arange(1, 101, dtype=float)  # 1..100
    lo, hi = median_ci(x)
    # n=100: j = floor(50 - 9.8) = 40 -> x[40] = 41; k = ceil(50 + 9.8) = 60 -> x[60] = 61
    assert (lo, hi) == (41.0, 61.0)
    assert median_ci([5.0]) == (5.0, 5.0)
    with pytest.raises(ValueError):
        median_ci([])


def test_constant_latency_converges_at_min_runs():
    clock = FakeClock()
    rt = FakeRuntime([2.0], clock)
    r = measure_latency(rt, clock=clock, min_runs=20, env={})
    assert r.converged and r.runs == 20
    assert r.median_ms == r.ci_low_ms == r.ci_high_ms == 2.0
    assert r.std_ms == 0.0 and r.cv == 0.0
    assert r.first_run_ms == 2.0
    assert rt.runs == 1 + 100 + 20  # first run, 200 ms warm-up at 2 ms, measured runs


def test_noisy_latency_runs_until_the_ci_is_tight():
    clock = FakeClock()
    pattern = list(np.random.default_rng(0).lognormal(0.0, 0.1, size=1000))
    rt = FakeRuntime(pattern, clock)
    r = measure_latency(rt, clock=clock, env={}, target_rel_ci=0.02)
    assert r.converged and 100 < r.runs < 1000  # ~150 runs for a 10 % spread
    assert r.rel_ci <= 0.02
    samples = rt.history[-r.runs :]  # what the harness measured after the warm-up
    assert r.median_ms == pytest.approx(float(np.median(samples)))
    assert r.p99_ms == pytest.approx(float(np.percentile(samples, 99)))
    assert r.mean_ms == pytest.approx(float(np.mean(samples)))


def test_time_cap_stops_a_measurement_that_cannot_converge():
    clock = FakeClock()
    pattern = [1.0, 10.0]  # bimodal: the median's CI never narrows
    r = measure_latency(FakeRuntime(pattern, clock), clock=clock, env={}, max_seconds=1.0)
    assert not r.converged
    assert 1.0 <= clock.now - 0.2 - 0.001 < 1.1  # warm-up + cap (+ one run)


def test_gpu_times_are_reported_separately():
    clock = FakeClock()
    r = measure_latency(FakeRuntime([2.0], clock, gpu=True), clock=clock, env={})
    assert r.gpu_median_ms == pytest.approx(1.6) and r.median_ms == 2.0


def test_result_json_round_trip():
    clock = FakeClock()
    r = measure_latency(FakeRuntime([1.0, 1.1], clock), clock=clock, env={"cpu": "x"})
    data = json.loads(r.to_json())
    assert {
        "median_ms",
        "ci_low_ms",
        "ci_high_ms",
        "p90_ms",
        "p99_ms",
        "mean_ms",
        "std_ms",
        "cv",
        "runs",
        "session_ms",
        "first_run_ms",
        "environment",
    } <= set(data)
    assert LatencyResult.from_dict(data) == r
    with pytest.raises(ValueError, match="unknown LatencyResult field"):
        LatencyResult.from_dict({**data, "colour": 1})


def test_interleaved_ratio_recovers_a_known_speedup():
    clock = FakeClock()
    a = FakeRuntime([1.0, 1.02, 0.98], clock, "a")
    b = FakeRuntime([2.0, 2.04, 1.96], clock, "b")
    res = measure_interleaved([a, b], clock=clock, sleep=lambda s: None, min_rounds=10)
    assert res.rounds == 10
    ratio = res.ratios[0]
    assert (ratio.reference, ratio.other) == ("a", "b")
    assert ratio.ci_low <= 2.0 <= ratio.ci_high and ratio.ratio == pytest.approx(2.0, rel=0.02)
    assert [r.model for r in res.results] == ["a", "b"]
    assert res.results[1].median_ms == pytest.approx(2.0, rel=0.02)


def test_interleaved_alternates_blocks():
    clock = FakeClock()
    order = []

    class Recording(FakeRuntime):
        def timed(self):
            order.append(self.label)
            return super().timed()

    a, b = Recording([1.0], clock, "a"), Recording([1.0], clock, "b")
    measure_interleaved(
        [a, b], clock=clock, sleep=lambda s: None, min_rounds=2, max_rounds=2, block_seconds=0.01
    )
    switches = [x for x, y in itertools.pairwise(order) if x != y]
    assert len(switches) >= 3  # a-warmup, b-warmup, then rounds a b | b a


def test_fingerprint_changes_with_conditions():
    env = {"cpu": "x", "threads": 2, "versions": {"onnxruntime": "1"}}
    assert fingerprint(env, "ort", 1) == fingerprint(dict(env), "ort", 1)
    assert fingerprint(env, "ort", 1) != fingerprint({**env, "threads": 1}, "ort", 1)
    assert fingerprint(env, "ort", 1) != fingerprint(env, "ort", 4)
