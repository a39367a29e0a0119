"""Eager PyTorch CPU: our fused M0-M5 vs timm's fused models, interleaved, paired ratios.

    python benchmarks/bench_eager.py            # batch 1 on 2 threads, batch 16 on 1 thread

Ratio = timm latency / ours (> 1: ours is faster), per interleaved round, median [95 % CI].
Both models hold identical random weights. Also times ``evit.model_costs`` per config.
"""

from __future__ import annotations

import time

import torch

import evit
from benchmarks.common import ours_and_timm, ratio_cell, save
from edge.latency import measure_interleaved
from edge.runtimes import TorchRuntime

VARIANTS = [f"efficientvit_m{i}" for i in range(6)]
SETTINGS = [(1, 2), (16, 1)]  # (batch, threads)


def main() -> None:
    rows = []
    for name in VARIANTS:
        ours, ref = ours_and_timm(name)
        row = {"model": name}
        for batch, threads in SETTINGS:
            shape = (batch, 3, 224, 224)
            res = measure_interleaved(
                [
                    TorchRuntime(ours, shape, threads=threads),
                    TorchRuntime(ref, shape, threads=threads),
                ],
                labels=["evit", "timm"],
                block_seconds=0.3 if batch == 1 else 1.0,
                min_rounds=10,
                max_rounds=30,
                max_seconds=60,
            )
            key = f"b{batch}_t{threads}"
            row[key] = {
                "ours_ms": res.results[0].median_ms,
                "timm_ms": res.results[1].median_ms,
                "ratio": res.ratios[0].to_dict(),
            }
            print(
                f"{name} batch {batch} threads {threads}: ours {res.results[0].median_ms:.2f} ms,"
                f" timm {res.results[1].median_ms:.2f} ms, timm/ours {ratio_cell(res.ratios[0])}",
                flush=True,
            )
        rows.append(row)
    config = evit.load_config("m5")
    start = time.perf_counter()
    for _ in range(1000):
        evit.model_costs(config)
    costs_ms = time.perf_counter() - start
    print(f"model_costs: {costs_ms:.3f} ms per config (M5)")
    save("eager", {"rows": rows, "model_costs_ms": costs_ms, "torch": torch.__version__})


if __name__ == "__main__":
    main()
