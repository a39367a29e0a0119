"""ONNX Runtime CPU, batch 1: our exported M0-M5 vs timm's standard export, interleaved.

    python benchmarks/bench_ort.py

timm's export: timm model with its own BN fusion, ``torch.onnx.export`` (TorchScript exporter),
opset 17. Ours: ``python -m edge export``. Ratio = timm latency / ours (> 1: ours is faster),
median over interleaved rounds [95 % CI], for 1 and 2 threads. Also: an ORT profile of our M0
(time per operator type) and the single-thread SGEMM floor for M0 and M5.
"""

from __future__ import annotations

import collections
import json
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

import evit
from benchmarks.common import export_torch_onnx, ours_and_timm, ratio_cell, save
from edge.export import export_onnx
from edge.latency import measure_interleaved

VARIANTS = [f"efficientvit_m{i}" for i in range(6)]


def sgemm_gflops(threads: int) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(5):
        a @ b
    best = float("inf")
    for _ in range(30):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 1024**3 / best / 1e9


def profile_ops(path: Path, threads: int = 1, runs: int = 200) -> dict[str, float]:
    """Share of ORT kernel time per operator type."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(path.parent / "ort_profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = {session.get_inputs()[0].name: torch.randn(1, 3, 224, 224).numpy()}
    for _ in range(runs):
        session.run(None, x)
    events = json.loads(Path(session.end_profiling()).read_text())
    totals: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            totals[e["args"]["op_name"]] += e["dur"]
    total = sum(totals.values())
    return {op: round(100 * t / total, 1) for op, t in totals.most_common(8)}


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for name in VARIANTS:
        ours, ref = ours_and_timm(name)
        ours_path = tmp / f"{name}_evit.onnx"
        export_onnx(evit.create_model(name), ours_path)
        timm_path = export_torch_onnx(ref, tmp / f"{name}_timm.onnx")
        row = {"model": name}
        for threads in (1, 2):
            res = measure_interleaved(
                [str(ours_path), str(timm_path)],
                threads=threads,
                labels=["evit", "timm"],
                min_rounds=12,
                max_rounds=40,
                max_seconds=60,
            )
            row[f"t{threads}"] = {
                "ours_ms": res.results[0].median_ms,
                "timm_ms": res.results[1].median_ms,
                "ratio": res.ratios[0].to_dict(),
            }
            print(
                f"{name} ORT b1 {threads} thread(s): ours {res.results[0].median_ms:.3f} ms, "
                f"timm {res.results[1].median_ms:.3f} ms, timm/ours "
                f"{ratio_cell(res.ratios[0])}",
                flush=True,
            )
        rows.append(row)
    gflops = sgemm_gflops(1)
    floors = {}
    for name in ("efficientvit_m0", "efficientvit_m5"):
        macs = evit.model_costs(evit.load_config(name)).macs
        floor_ms = 2 * macs / (gflops * 1e9) * 1e3
        measured = next(r for r in rows if r["model"] == name)["t1"]["ours_ms"]
        floors[name] = {
            "floor_ms": floor_ms,
            "measured_ms": measured,
            "fraction_of_floor": floor_ms / measured,
        }
        print(
            f"{name}: 1-thread SGEMM floor {floor_ms:.2f} ms ({gflops:.0f} GFLOP/s), "
            f"measured {measured:.2f} ms: {floor_ms / measured:.0%} of peak",
            flush=True,
        )
    profile = profile_ops(tmp / "efficientvit_m0_evit.onnx")
    print(f"ORT profile of our M0 (1 thread), % of kernel time: {profile}")
    save(
        "ort",
        {"rows": rows, "sgemm_gflops_1thread": gflops, "floors": floors, "m0_profile": profile},
    )


if __name__ == "__main__":
    main()
