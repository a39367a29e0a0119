"""INT8 vs fp32 in ONNX Runtime on this CPU: M0-M5, batch 1, 1 and 2 threads, interleaved.

    python -m benchmarks.bench_int8                       # uint8 activations (the default)
    python -m benchmarks.bench_int8 --activations int8    # symmetric, as TensorRT needs

Both files come from ``edge export`` (the int8 one with ``--int8``: QDQ, per-channel symmetric
int8 weights, softmax and elementwise ops in float, calibrated on 32 generated frames) of the
same live weights (``evit.live.live_copy``). Ratio = fp32 latency /
int8 latency per interleaved round (> 1: int8 faster), median [95 % CI]. The CPU's flags decide
what int8 can gain (VNNI, AMX): they are recorded with the results.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import ratio_cell, save


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[f"m{i}" for i in range(6)])
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--activations", choices=("uint8", "int8"), default="uint8")
    args = parser.parse_args()

    import evit
    from edge.export import Int8Options, export_onnx
    from edge.latency import measure_interleaved
    from evit.live import live_copy

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            live = live_copy(evit.create_model(name))
            fp32 = export_onnx(live, Path(tmp) / f"{name}.onnx").path
            int8 = export_onnx(
                live,
                Path(tmp) / f"{name}.int8.onnx",
                int8=Int8Options(min_top1=0.0, min_cosine=0.0, activations=args.activations),
            ).path
            row = {"model": name}
            for threads in (1, 2):
                res = measure_interleaved(
                    [str(fp32), str(int8)],
                    threads=threads,
                    labels=["fp32", "int8"],
                    max_seconds=args.max_seconds,
                    one_session_at_a_time=True,
                )
                r = res.ratios[0]  # int8 / fp32
                inverse = {"ratio": 1 / r.ratio, "ci_low": 1 / r.ci_high, "ci_high": 1 / r.ci_low}
                row[f"t{threads}"] = {
                    "fp32_ms": res.results[0].median_ms,
                    "int8_ms": res.results[1].median_ms,
                    "speedup": inverse,
                }
                print(
                    f"{name} {threads} thread(s): fp32 {res.results[0].median_ms:.3f} ms, int8 "
                    f"{res.results[1].median_ms:.3f} ms, int8/fp32 time {ratio_cell(r)} "
                    f"(speed-up {inverse['ratio']:.2f}x)",
                    flush=True,
                )
            rows.append(row)
    save(f"int8-{args.activations}", {"cpu_flags": cpu_flags(), "rows": rows})


if __name__ == "__main__":
    main()
