"""Search test helpers: a tiny space and a deterministic fake latency target."""

from __future__ import annotations

import time
from typing import ClassVar

import pytest
import yaml

from edge.latency import LatencyResult
from edge.runtimes import Runtime
from search import study as study_module
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


class FakeTarget(Target):
    """A target whose latency is :func:`fake_latency_ms`: no export, no timing noise."""

    calls: ClassVar[list[str]] = []
    interrupt_at: ClassVar[int | None] = None
    seconds: ClassVar[float] = 0.0  # how long a "measurement" occupies the device

    INT8_SPEEDUP = 2.0  # a fake int8 run takes half the fp32 time

    def _ms(self, config) -> float:
        return fake_latency_ms(config) / (self.INT8_SPEEDUP if self.precision == "int8" else 1.0)

    def prepare(self, config, timings=None):
        return lambda: ConstantRuntime(self._ms(config), config.name)

    def measure(self, config, timings=None):
        FakeTarget.calls.append(config.architecture_hash())
        if FakeTarget.interrupt_at is not None and len(FakeTarget.calls) == FakeTarget.interrupt_at:
            raise KeyboardInterrupt
        time.sleep(FakeTarget.seconds)
        return latency_result([self._ms(config)] * 20, config.name, self.env)


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


@pytest.fixture
def fake_target(monkeypatch):
    FakeTarget.calls = []
    FakeTarget.interrupt_at = None
    FakeTarget.seconds = 0.0
    monkeypatch.setattr(study_module, "Target", FakeTarget)
    return FakeTarget
