"""Where a small model's time goes: per-op overhead vs arithmetic, in ONNX Runtime and OpenVINO.

    python -m benchmarks.bench_overhead                  # M0 and M5, 1 thread
    python -m benchmarks.bench_overhead --models m0 --threads 2

For each model and path (ONNX Runtime fp32 and int8 Q/DQ; OpenVINO fp32, bf16 where the CPU
has it, and int8) the runtime's own profiler (ONNX Runtime ``enable_profiling``, OpenVINO
``PERF_COUNT``) lists the kernels one inference executes after the runtime's fusions. Reported:
kernels per inference, their summed time, the median time of a kernel, the *per-op overhead
floor* (kernels x the median time of the cheapest quarter: what the graph would cost if every
kernel did almost no arithmetic) next to the *arithmetic floor* (MACs at the measured fp32 GEMM
peak of this CPU), and the five op types taking the most time.

``--int8-variants layers``: which layers to quantize, for speed (ONNX Runtime): every
Conv/MatMul, all but the depthwise convolutions, all but the attention matmuls, only the 1x1
convolutions and the head, all but the depthwise convolutions and the attention matmuls.
``--int8-variants joined``: those last layers alone, with the ReLUs after them (the default of
``edge.quantize``), with the FFNs' residual Adds too, and each of these with the attention's
qkv convolutions left in float. All of a model's graphs are measured interleaved with fp32 in
one run (paired speed-up, 95 % CI).

``--graph-forms``: the deployed graph's attention head as :func:`evit.fuse` builds it (Q's
depthwise conv over the whole qkv tensor, one Reshape for q, k and v) against the previous,
narrow form (the conv over q alone, three Reshapes), on every CPU path: kernels each runtime
executes and the paired time ratio, interleaved; the two forms' outputs compared too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench_int8 import cpu_flags
from benchmarks.common import fp32_and_int8, ratio_cell, save
from edge.export import torchscript_export

RUNS = 200  # profiled inferences per path (after a warm-up)


def _floors(durations_us: list[float], macs: int, peak_macs_per_ms: float) -> dict[str, Any]:
    runs = sorted(durations_us)
    cheap = runs[: max(1, len(runs) // 4)]
    per_op = statistics.median(cheap)
    return {
        "kernels": len(runs),
        "kernel_sum_ms": sum(runs) / 1e3,
        "median_kernel_us": statistics.median(runs),
        "cheap_kernel_us": per_op,
        "overhead_floor_ms": len(runs) * per_op / 1e3,
        "arithmetic_floor_ms": macs / peak_macs_per_ms,
    }


def profile_ort(path: Path, threads: int) -> tuple[list[float], Counter]:
    """Per-kernel durations (us, median over the profiled runs) and time by op type."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "p")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal([1, *inp.shape[1:]]).astype(np.float32)
        for _ in range(20):
            session.run(None, {inp.name: x})
        session.end_profiling()  # drop the warm-up
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(20):
            session.run(None, {inp.name: x})
        for _ in range(RUNS):
            session.run(None, {inp.name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[str, list[float]] = defaultdict(list)
    op_of: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"].removesuffix("_kernel_time")
            per_node[node].append(float(e["dur"]))
            op_of[node] = e["args"].get("op_name", "?")
    # the last RUNS executions of each node: after the warm-up of the second session
    medians = {n: statistics.median(d[-RUNS:]) for n, d in per_node.items()}
    by_type: Counter = Counter()
    for n, us in medians.items():
        by_type[op_of[n]] += us
    return list(medians.values()), by_type


def profile_openvino(path: Path, threads: int, precision: str) -> tuple[list[float], Counter]:
    from edge.openvino import core, read_model

    hint = "bf16" if precision == "bf16" else "f32"
    compiled = core().compile_model(
        read_model(path, None),
        "CPU",
        {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": hint,
            "PERF_COUNT": True,
        },
    )
    request = compiled.create_infer_request()
    shape = list(compiled.input(0).shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(20):
        request.infer({0: x})
    samples: dict[str, list[float]] = defaultdict(list)
    op_of: dict[str, str] = {}
    for _ in range(RUNS):
        request.infer({0: x})
        for info in request.get_profiling_info():
            if str(info.status).endswith("EXECUTED"):
                samples[info.node_name].append(info.real_time.total_seconds() * 1e6)
                op_of[info.node_name] = f"{info.node_type} ({info.exec_type})"
    medians = {n: statistics.median(d) for n, d in samples.items()}
    by_type: Counter = Counter()
    for n, us in medians.items():
        by_type[op_of[n]] += us
    return list(medians.values()), by_type


def variant_nodes(which: str, proto: Any) -> dict[str, list[str]]:
    """The int8 graphs compared by ``--int8-variants WHICH``: label -> nodes to quantize."""
    import edge.quantize as q

    floats = q.FLOAT_GROUPS
    if which == "layers":  # which Conv/MatMul/Gemm layers (ReLUs and Adds left to float)
        groups = {
            "every Conv/MatMul/Gemm": [],
            "all but depthwise convs": ["token_interaction", "query_dw"],
            "all but attention matmuls": ["attention_matmul"],
            "1x1 convs and head only": [
                g for g in q.OP_GROUPS if g not in ("ffn", "qkv", "attention_proj", "head")
            ],
            "all but depthwise convs and attention matmuls": floats,
        }
        return {k: q.select_nodes(proto, g, relus=False) for k, g in groups.items()}
    with_qkv = (*floats, "qkv")
    return {  # the layers outside FLOAT_GROUPS, and what joins them
        "layers only": q.select_nodes(proto, relus=False),
        "+ ReLUs (the default)": q.select_nodes(proto),
        "+ ReLUs, qkv in float": q.select_nodes(proto, with_qkv),
        "+ ReLUs and residual Adds": q.select_nodes(proto, adds=True),
        "+ ReLUs and residual Adds, qkv in float": q.select_nodes(proto, with_qkv, adds=True),
    }


def int8_variants(name: str, which: str, threads: int, max_seconds: float) -> list[dict[str, Any]]:
    """Speed of int8 graphs that quantize different nodes, all interleaved with fp32 in one run."""
    import onnx

    import edge.quantize as q
    import evit
    from edge.export import export_onnx
    from edge.latency import measure_interleaved
    from evit.live import live_copy

    with tempfile.TemporaryDirectory() as tmp:
        live = live_copy(evit.create_model(name))
        fp32 = export_onnx(live, Path(tmp) / "fp32.onnx").path
        proto = onnx.load(str(fp32))
        size = evit.load_config(name).img_size
        calib, _ = q.calibration_images(None, 16, size, 0)
        variants = variant_nodes(which, proto)
        paths = [str(fp32)]
        for i, nodes in enumerate(variants.values()):
            paths.append(str(Path(tmp) / f"int8-{i}.onnx"))
            onnx.save(q.quantize_graph(proto, calib, 1, "uint8", nodes=nodes), paths[-1])
        res = measure_interleaved(
            paths,
            threads=threads,
            labels=["fp32", *variants],
            max_seconds=max_seconds,
            one_session_at_a_time=True,
        )
    rows = []
    for (label, nodes), r, timed in zip(variants.items(), res.ratios, res.results[1:]):
        speedup = {"ratio": 1 / r.ratio, "ci_low": 1 / r.ci_high, "ci_high": 1 / r.ci_low}
        rows.append(
            {
                "model": name,
                "variant": label,
                "quantized_nodes": len(nodes),
                "fp32_ms": res.results[0].median_ms,
                "int8_ms": timed.median_ms,
                "speedup": speedup,
            }
        )
        print(
            f"{name} int8 '{label}' ({len(nodes)} nodes): fp32 {res.results[0].median_ms:.3f}"
            f" ms, int8 {timed.median_ms:.3f} ms, int8/fp32 time {ratio_cell(r)}, speed-up "
            f"{speedup['ratio']:.2f}",
            flush=True,
        )
    return rows


def _openvino(path: Path, threads: int, precision: str) -> Any:
    from edge.openvino import OpenVinoRuntime

    return OpenVinoRuntime(path, threads=threads, precision=precision)


def openvino_precisions() -> list[str]:
    """OpenVINO's precisions on this CPU (none without the extra), as ``--target auto`` sees
    them."""
    from search.autotarget import cpu_paths

    return [precision for runtime, precision in cpu_paths() if runtime == "openvino-cpu"]


def graph_forms(name: str, threads: int, max_seconds: float) -> list[dict[str, Any]]:
    """The heads' wide query conv (evit.fuse's default) against the narrow one, on every CPU
    path (ORT fp32/int8, OpenVINO fp32/bf16/int8), each pair interleaved."""
    import onnx

    import edge.quantize as q
    import evit
    from edge.latency import measure_interleaved
    from edge.runtimes import OrtRuntime
    from evit.live import live_copy

    live = live_copy(evit.create_model(name))
    forms = {"wide": evit.fuse(live), "narrow": evit.fuse(live, wide_query_conv=False)}
    size = evit.load_config(name).img_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = float((forms["wide"](x) - forms["narrow"](x)).abs().max())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        calib, _ = q.calibration_images(None, 16, size, 0)
        files: dict[str, dict[str, Path]] = {}
        for form, fused in forms.items():
            fp32 = Path(tmp) / f"{form}.onnx"
            proto = torchscript_export(fused, live.config, 1, 17)
            onnx.save(proto, str(fp32))
            int8 = Path(tmp) / f"{form}.int8.onnx"
            onnx.save(q.quantize_graph(proto, calib, 1), str(int8))
            files[form] = {"fp32": fp32, "int8": int8}
        paths: list[tuple[str, str, Any]] = [
            ("onnxruntime", "fp32", lambda p: OrtRuntime(p, threads=threads)),
            ("onnxruntime", "int8", lambda p: OrtRuntime(p, threads=threads)),
        ]
        for precision in openvino_precisions():
            paths.append(
                (
                    "openvino",
                    precision,
                    lambda p, pr=precision: _openvino(p, threads, pr),
                )
            )
        for runtime, precision, make in paths:
            chosen = "int8" if precision == "int8" else "fp32"
            a, b = files["wide"][chosen], files["narrow"][chosen]
            res = measure_interleaved(
                [lambda p=a, make=make: make(p), lambda p=b, make=make: make(p)],
                labels=["wide", "narrow"],
                max_seconds=max_seconds,
            )
            r = res.ratios[0]  # narrow / wide: the wide form's speed-up
            kernels = {  # executed per inference, as the profiles above count them
                form: len(
                    profile_ort(path, threads)[0]
                    if runtime == "onnxruntime"
                    else profile_openvino(path, threads, precision)[0]
                )
                for form, path in (("wide", a), ("narrow", b))
            }
            rows.append(
                {
                    "model": name,
                    "runtime": runtime,
                    "precision": precision,
                    "kernels": kernels,
                    "wide_ms": res.results[0].median_ms,
                    "narrow_ms": res.results[1].median_ms,
                    "speedup_of_wide": {"ratio": r.ratio, "ci_low": r.ci_low, "ci_high": r.ci_high},
                    "max_abs_difference": difference,
                }
            )
            print(
                f"{name} {runtime} {precision}: kernels {kernels['narrow']} -> {kernels['wide']}"
                f", {res.results[1].median_ms:.3f} -> {res.results[0].median_ms:.3f} ms, speed-up "
                f"of the wide form {ratio_cell(r)}; outputs differ by {difference:.1e}",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["m0", "m5"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--int8-variants",
        choices=["layers", "joined"],
        help="compare int8 graphs: which layers to quantize, or what joins the default layers",
    )
    parser.add_argument("--graph-forms", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=20.0)
    args = parser.parse_args()

    import evit
    from search.prefilter import gemm_peak_macs_per_ms

    if args.graph_forms:
        rows = [r for m in args.models for r in graph_forms(m, args.threads, args.max_seconds)]
        save(f"graph-forms-t{args.threads}", {"cpu_flags": cpu_flags(), "rows": rows})
        return
    if args.int8_variants:
        rows = [
            r
            for m in args.models
            for r in int8_variants(m, args.int8_variants, args.threads, args.max_seconds)
        ]
        save(
            f"int8-variants-{args.int8_variants}-t{args.threads}",
            {"cpu_flags": cpu_flags(), "rows": rows},
        )
        return
    ov_paths = openvino_precisions()
    peak = gemm_peak_macs_per_ms(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            macs = evit.model_costs(evit.load_config(name)).macs
            fp32, int8 = fp32_and_int8(name, Path(tmp))
            paths = [("onnxruntime", "fp32", fp32), ("onnxruntime", "int8", int8)]
            paths += [("openvino", p, int8 if p == "int8" else fp32) for p in ov_paths]
            for runtime, precision, path in paths:
                if runtime == "onnxruntime":
                    durations, by_type = profile_ort(path, args.threads)
                else:
                    durations, by_type = profile_openvino(path, args.threads, precision)
                row = {
                    "model": name,
                    "runtime": runtime,
                    "precision": precision,
                    "macs": macs,
                    **_floors(durations, macs, peak),
                    "top_op_types_ms": {k: v / 1e3 for k, v in by_type.most_common(5)},
                }
                results.append(row)
                print(
                    f"{name} {runtime} {precision}: {row['kernels']} kernels, sum "
                    f"{row['kernel_sum_ms']:.3f} ms, median kernel {row['median_kernel_us']:.1f} "
                    f"us; overhead floor {row['overhead_floor_ms']:.3f} ms vs arithmetic floor "
                    f"{row['arithmetic_floor_ms']:.3f} ms; top: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in row["top_op_types_ms"].items()),
                    flush=True,
                )
    save(
        f"overhead-t{args.threads}",
        {"cpu_flags": cpu_flags(), "gemm_peak_macs_per_ms": peak, "rows": results},
    )


if __name__ == "__main__":
    main()
