"""Every CPU path for M0-M5 on this CPU: ONNX Runtime fp32/int8, OpenVINO fp32/bf16/int8.

    python -m benchmarks.bench_cpu_paths                     # 1 and 2 threads, M0-M5
    python -m benchmarks.bench_cpu_paths --models m0 m5 --threads 1

Per model and thread count, all paths run interleaved in one measurement (one session open at a
time), batch 1, from the same live weights: the fp32 file from ``edge export`` and the Q/DQ
int8 file from ``edge export --int8`` (uint8 activations, 32 generated calibration frames);
OpenVINO runs both files as they are (bf16 where the CPU has it). Every OpenVINO path is first
checked against ONNX Runtime on the same file (``edge.openvino.check_against_ort``). The CPU
model and its flags are recorded: int8/bf16 speed depends on VNNI, AVX-512 BF16 and AMX.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.bench_int8 import cpu_flags
from benchmarks.common import fp32_and_int8, save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[f"m{i}" for i in range(6)])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--max-seconds", type=float, default=40.0)
    args = parser.parse_args()

    from edge.crosscheck import check_against_ort
    from edge.latency import measure_interleaved
    from edge.openvino import OpenVinoRuntime, bf16_supported, cpu_name
    from edge.runtimes import OrtRuntime

    ov_precisions = ["fp32", "bf16", "int8"] if bf16_supported() else ["fp32", "int8"]
    rows = []
    checks: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            fp32, int8 = fp32_and_int8(name, Path(tmp))
            checked = []  # a path whose numbers disagree with ONNX Runtime is not timed
            for p in ov_precisions:
                path = int8 if p == "int8" else fp32
                check = check_against_ort(path, OpenVinoRuntime(path, threads=1, precision=p))
                checks[f"{name} openvino {p}"] = check
                if check["passed"]:
                    checked.append(p)
                else:
                    print(f"{name} OpenVINO {p} disagrees with ONNX Runtime: {check}", flush=True)
            for threads in args.threads:
                paths = {
                    "ort fp32": lambda t=threads, f=fp32: OrtRuntime(f, threads=t),
                    "ort int8": lambda t=threads, f=int8: OrtRuntime(f, threads=t),
                }
                for p in checked:
                    path = int8 if p == "int8" else fp32
                    paths[f"openvino {p}"] = lambda t=threads, f=path, p=p: OpenVinoRuntime(
                        f, threads=t, precision=p
                    )
                res = measure_interleaved(
                    list(paths.values()),
                    labels=list(paths),
                    max_seconds=args.max_seconds,
                    min_rounds=10,
                )
                ms = {label: r.median_ms for label, r in zip(paths, res.results)}
                ratios = {  # every path against ONNX Runtime fp32 (the first), paired
                    label: r.to_dict() for label, r in zip(list(paths)[1:], res.ratios)
                }
                winner = min(ms, key=ms.get)
                rows.append(
                    {
                        "model": name,
                        "threads": threads,
                        "ms": ms,
                        "vs_ort_fp32": ratios,
                        "winner": winner,
                    }
                )
                print(
                    f"{name} t{threads}: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in ms.items())
                    + f" -> {winner}",
                    flush=True,
                )
    save(
        "cpu-paths",
        {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "rows": rows, "checks": checks},
    )


if __name__ == "__main__":
    main()
