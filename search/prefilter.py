"""The pre-filter: skip configurations that certainly exceed the budget, without measuring.

See docs/benchmarks.md for how often a skipped configuration would in fact have fitted.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

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
class PreFilter:
    """Skips configs that certainly exceed the budget.

    Two rules, both conservative: the MAC floor (MACs at twice the measured GEMM peak already
    exceed the budget; no convolution network here gets near the peak), and dominance
    (costlier in MACs, activation bytes and blocks than a config measured above
    ``DOMINANCE_MARGIN`` x budget). "Blocks" counts attention heads over all blocks
    (depth x heads per stage).
    """

    budget_ms: float
    peak_macs_per_ms: float | None
    slow: list[tuple[int, int, int, float]] = field(default_factory=list)

    def record(self, macs: int, act: int, blocks: int, latency_ms: float) -> None:
        if latency_ms > DOMINANCE_MARGIN * self.budget_ms:
            self.slow.append((macs, act, blocks, latency_ms))

    def check(self, macs: int, act: int, blocks: int) -> tuple[str, float] | None:
        """(reason, latency lower bound in ms) when the config can be skipped."""
        if self.peak_macs_per_ms:
            floor = macs / (FLOOR_SAFETY * self.peak_macs_per_ms)
            if floor > self.budget_ms:
                return f"MAC floor {floor:.2f} ms > budget", floor
        for m, a, b, lat in self.slow:
            if macs >= m and act >= a and blocks >= b:
                return (f"costlier than a config measured at {lat:.2f} ms", lat)
        return None
