"""Search test helpers: a tiny space and a deterministic fake latency target."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pytest
import yaml

from edge.latency import LatencyResult
from edge.runtimes import Runtime
from search.context import Seams
from search.study import run_search
from search.targets import Target

TINY_SPACE = {
    "img_size": [64],
    "num_classes": 10,
    "stages": [
        {
            "num_heads": [1, 2],
            "head_dim": [8, 16],
            "depth": [1],
            "key_dim": [4, 8],
            "ffn_ratio": [1.0, 2.0],
            "window_size": [2, 4],
            "kernel_sizes": [[3, 3], [5, 3]],
        },
        {
            "num_heads": [1, 2],
            "head_dim": [8, 16, 24],
            "depth": [1, 2],
            "key_dim": [4, 8],
            "ffn_ratio": [1.0, 2.0],
            "window_size": [2],
            "kernel_sizes": [[3, 3]],
        },
    ],
}


@pytest.fixture
def tiny_space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(TINY_SPACE))
    return str(path)


def fake_latency_ms(config) -> float:
    """Deterministic: grows with width and depth, like a real device would."""
    return 0.2 + sum(s.embed_dim * s.depth * (1 + 0.5 * s.num_heads) for s in config.stages) / 100


class ConstantRuntime(Runtime):
    name = "fake"

    def __init__(self, ms: float, label: str) -> None:
        self.ms, self.label, self.input_shape = ms, label, (1, 3, 64, 64)

    def set_input(self, x):
        pass

    def _infer(self):
        pass

    def _output(self):
        return None

    def timed(self):
        return self.ms, None


class NoisyRuntime(ConstantRuntime):
    """``ms`` times a seeded log-normal factor per inference, taking that long (so that a
    short block holds a few readings, as a real one does)."""

    def __init__(self, ms: float, label: str, spread: float, rng: np.random.Generator) -> None:
        super().__init__(ms, label)
        self.spread, self.rng = spread, rng

    def timed(self):
        if not self.spread:
            return self.ms, None
        ms = self.ms * float(np.exp(self.rng.normal(0.0, self.spread)))
        time.sleep(ms / 1e3)
        return ms, None


class FakeTarget(Target):
    """A target whose latency is :func:`fake_latency_ms`, without noise unless ``spread`` says:
    a function of the config giving the relative spread (log-normal sigma) of its readings,
    drawn from one seeded generator."""

    calls: ClassVar[list[str]] = []
    interrupt_at: ClassVar[int | None] = None
    seconds: ClassVar[float] = 0.0  # how long a "measurement" occupies the device
    spread: ClassVar[Callable | None] = None
    rng: ClassVar[np.random.Generator] = np.random.default_rng(0)

    INT8_SPEEDUP = 2.0  # a fake int8 run takes half the fp32 time
    block_pause_seconds = 0.0  # no device to settle between interleaved blocks

    def _ms(self, config) -> float:
        return fake_latency_ms(config) / (self.INT8_SPEEDUP if self.precision == "int8" else 1.0)

    def _spread(self, config) -> float:
        return FakeTarget.spread(config) if FakeTarget.spread is not None else 0.0

    def prepare(self, config, timings=None):
        ms, spread = self._ms(config), self._spread(config)
        return lambda: NoisyRuntime(ms, config.name, spread, FakeTarget.rng)

    def measure(self, config, timings=None):
        FakeTarget.calls.append(config.architecture_hash())
        if FakeTarget.interrupt_at is not None and len(FakeTarget.calls) == FakeTarget.interrupt_at:
            raise KeyboardInterrupt
        time.sleep(FakeTarget.seconds)
        spread = self._spread(config)
        noise = np.exp(FakeTarget.rng.normal(0.0, spread, 20)) if spread else np.ones(20)
        return latency_result(self._ms(config) * noise, config.name, self.env)


def latency_result(samples, model: str = "x", environment=None) -> LatencyResult:
    """A measurement made of the given samples (ms), as the harness would report it."""
    return LatencyResult.from_samples(
        list(samples),
        model=model,
        runtime="fake",
        device="cpu",
        batch=1,
        threads=1,
        converged=True,
        target_rel_ci=0.02,
        environment=environment or {},
    )


class Wiring:
    """The seams a test's search runs with (``search.context.Seams``): FakeTarget, and the
    clock, wait and training a test sets with :func:`wire`."""

    def __init__(self) -> None:
        self.values: dict = {"target": FakeTarget}

    def seams(self) -> Seams:
        return Seams(**self.values)


WIRING = Wiring()


def wire(**seams) -> None:
    """Set seams (``train``, ``clock``, ``sleep``, ``target``) for this test's searches."""
    WIRING.values.update(seams)


def run_fake(opts, progress=None):
    """``run_search`` wired to this test's seams."""
    return run_search(opts, progress, seams=WIRING.seams())


@pytest.fixture(autouse=True)
def fresh_wiring():
    WIRING.values = {"target": FakeTarget}
    yield
    WIRING.values = {"target": FakeTarget}


@pytest.fixture
def fake_target():
    FakeTarget.calls = []
    FakeTarget.interrupt_at = None
    FakeTarget.seconds = 0.0
    FakeTarget.spread = None
    FakeTarget.rng = np.random.default_rng(0)
    return FakeTarget
