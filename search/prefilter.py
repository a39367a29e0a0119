"""The pre-filter: skip configurations that certainly exceed the budget, without measuring.

See docs/benchmarks.md for how often a skipped configuration would in fact have fitted.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

# Skip configs costlier in every way than one measured above 2x the budget. The VM's slow
# phases read latencies up to 1.9x high (docs/benchmarks.md section 5), so a config measured
# above 2x the budget in a slow phase is still above the budget in a fast one; with the former
# margin of 1.3 a slow phase could prune configs that fit (measured: docs/benchmarks.md).
DOMINANCE_MARGIN = 2.0
FLOOR_SAFETY = 2.0  # the MAC floor assumes twice the measured GEMM peak


def gemm_peak_macs_per_ms(threads: int | None) -> float:
    """Measured fp32 matrix-multiply peak on this CPU: no model can run faster than this."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(512, 512), torch.randn(512, 512)
        for _ in range(3):
            a @ b
        best = math.inf
        deadline = time.perf_counter() + 0.3
        while time.perf_counter() < deadline:  # the fastest of many: robust to brief noise
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(old)
    return 512**3 / (best * 1e3)


@dataclass
class SlowConfig:
    """A config measured above the dominance margin, and whether a second reading agreed."""

    macs: int
    act: int
    blocks: int
    latency_ms: float
    config: Any = None  # to measure it again
    confirmed: bool = False


@dataclass
class PreFilter:
    """Skips configs that exceed the budget by rules that hold under this machine's noise.

    Two rules: the MAC floor (MACs at twice the measured GEMM peak already exceed the budget; no
    convolution network here gets near the peak), and dominance (costlier in MACs, activation
    bytes and blocks than a config measured above ``DOMINANCE_MARGIN`` x budget *twice*: a
    single reading can fall in a slow phase of the machine, and one that did pruned configs
    that fit; docs/benchmarks.md). "Blocks" counts attention heads over all blocks.
    """

    budget_ms: float
    peak_macs_per_ms: float | None
    slow: list[SlowConfig] = field(default_factory=list)

    def record(
        self, macs: int, act: int, blocks: int, latency_ms: float, config: Any = None
    ) -> None:
        if latency_ms > DOMINANCE_MARGIN * self.budget_ms:
            self.slow.append(SlowConfig(macs, act, blocks, latency_ms, config))

    def _dominators(self, macs: int, act: int, blocks: int) -> list[SlowConfig]:
        return [s for s in self.slow if macs >= s.macs and act >= s.act and blocks >= s.blocks]

    def check(self, macs: int, act: int, blocks: int) -> tuple[str, float] | None:
        """(reason, latency bound in ms) when the config can be skipped."""
        if self.peak_macs_per_ms:
            floor = macs / (FLOOR_SAFETY * self.peak_macs_per_ms)
            if floor > self.budget_ms:
                return f"MAC floor {floor:.2f} ms > budget", floor
        for s in self._dominators(macs, act, blocks):
            if s.confirmed:
                return (
                    f"costlier than a config measured twice at >= {s.latency_ms:.2f} ms",
                    s.latency_ms,
                )
        return None

    def unconfirmed(self, macs: int, act: int, blocks: int) -> SlowConfig | None:
        """A dominator whose slowness rests on one reading (measure it again to use it)."""
        return next(
            (s for s in self._dominators(macs, act, blocks) if not s.confirmed and s.config),
            None,
        )

    def confirm(self, slow: SlowConfig, latency_ms: float) -> None:
        """A second reading: the config dominates only if both are above the margin."""
        slow.latency_ms = min(slow.latency_ms, latency_ms)
        if slow.latency_ms > DOMINANCE_MARGIN * self.budget_ms:
            slow.confirmed = True
        else:
            self.slow.remove(slow)
