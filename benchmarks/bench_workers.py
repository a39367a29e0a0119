"""Two search workers on one machine: does the device lock keep their latencies honest?

    python -m benchmarks.bench_workers            # M0, ONNX Runtime, 2 threads

Each "worker" is a process that alternates what a search worker does: heavy work that is not a
measurement (an ONNX export of a random config, holding the device lock shared), then a
measurement of M0 (``measure_latency``, holding the lock exclusively). Phases, in this order,
repeated three times so that a slow phase of the VM shows up as a disagreement between repeats:

- ``single``: one worker alone;
- ``two, locked``: two workers at once, with the lock (what the search does);
- ``two, unlocked``: two workers at once, the lock disabled (what the search did before).

Reported per phase: the median of the per-measurement medians, with a 95 % CI over measurements.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import save
from edge.latency import median_ci


def _worker(onnx: str, n: int, threads: int, locked: bool, seed: int, queue, barrier) -> None:
    import evit
    from edge.devicelock import device_key, device_lock
    from edge.export import export_onnx
    from edge.latency import measure_latency
    from search.space import load_space

    space = load_space()
    rng = random.Random(seed)
    key = device_key("cpu")

    def hold(exclusive: bool):
        return device_lock(key, exclusive=exclusive) if locked else contextlib.nullcontext()

    medians = []
    barrier.wait()  # start together, after the imports (start-up is not what is measured)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            with hold(False):  # a worker's export of its next candidate
                sampler = _RandomTrial(rng)
                config = space.sample(sampler)
                export_onnx(evit.create_model(config), Path(tmp) / f"{i}.onnx", verify=False)
            with hold(True):
                r = measure_latency(onnx, threads=threads, max_seconds=1.0, target_rel_ci=0.01)
            medians.append(r.median_ms)
    queue.put(medians)


class _RandomTrial:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def suggest_categorical(self, name, choices):
        return self.rng.choice(choices)


def _phase(onnx: str, workers: int, n: int, threads: int, locked: bool) -> list[float]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    barrier = ctx.Barrier(workers)
    procs = [
        ctx.Process(target=_worker, args=(onnx, n, threads, locked, seed, queue, barrier))
        for seed in range(workers)
    ]
    for p in procs:
        p.start()
    medians = [m for _ in procs for m in queue.get(timeout=600)]
    for p in procs:
        p.join()
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measurements", type=int, default=12, help="per worker and phase")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import evit
    from edge.export import export_onnx
    from evit.live import live_copy

    with tempfile.TemporaryDirectory() as tmp:
        onnx = str(Path(tmp) / "m0.onnx")
        export_onnx(live_copy(evit.create_model("m0")), onnx)
        rows = []
        for repeat in range(3):
            for name, workers, locked in (
                ("single", 1, True),
                ("two, locked", 2, True),
                ("two, unlocked", 2, False),
            ):
                start = time.perf_counter()
                medians = _phase(onnx, workers, args.measurements, args.threads, locked)
                lo, hi = median_ci(np.asarray(medians))
                row = {
                    "repeat": repeat,
                    "phase": name,
                    "median_ms": float(np.median(medians)),
                    "ci_low_ms": lo,
                    "ci_high_ms": hi,
                    "measurements": len(medians),
                    "seconds": time.perf_counter() - start,
                }
                rows.append(row)
                print(
                    f"repeat {repeat} {name:<14}: M0 {row['median_ms']:.3f} ms "
                    f"[{lo:.3f}, {hi:.3f}] over {len(medians)} measurements",
                    flush=True,
                )
    save("workers", {"threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
