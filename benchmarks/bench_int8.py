"""INT8 vs fp32 in ONNX Runtime on this CPU: M0-M5, batch 1, 1 and 2 threads, interleaved.

    python -m benchmarks.bench_int8                       # uint8 activations (the default)
    python -m benchmarks.bench_int8 --activations int8    # symmetric, as TensorRT needs
    python -m benchmarks.bench_int8 --accuracy CKPT --data DIR   # top-1, per op group

``--accuracy``: a trained checkpoint's validation top-1 in fp32 and after post-training
quantization (calibrated on ``--calib-images`` training images, never on validation ones): all
layers (uint8 and symmetric int8 activations), each op group alone (``edge.quantize.OP_GROUPS``:
which layers lose accuracy) and all groups but one (what keeping that group in float recovers).

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

import numpy as np

from benchmarks.common import fp32_and_int8, ratio_cell, save


def cpu_flags() -> list[str]:
    """This CPU's int8/bf16-relevant flags (AVX*, AMX*, *VNNI*), for the results."""
    from edge.cpu import cpu_flags as flags

    return sorted(f for f in flags() if f.startswith(("avx", "amx")) or "vnni" in f)


def _val_arrays(data: Path, size: int, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    from evit.train.data import eval_transform, resolve_data

    split = resolve_data(data)
    samples = split.val[:limit] if limit else split.val
    transform = eval_transform(size)
    xs = []
    for path, _ in samples:
        with Image.open(path) as image:
            xs.append(transform(image.convert("RGB")).numpy())
    return np.stack(xs).astype(np.float32), np.array([label for _, label in samples])


def _top1(proto_bytes: bytes, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    from edge.runtimes import OrtRuntime

    rt = OrtRuntime(proto_bytes, threads=2)
    preds = np.array([int(np.argmax(rt(x[i : i + 1]))) for i in range(len(x))])
    return float(np.mean(preds == y) * 100), preds


def accuracy(args: argparse.Namespace) -> None:
    import onnx

    import edge.quantize as q
    from edge.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        result = export_onnx(args.accuracy, Path(tmp) / "fp32.onnx")
        fp32 = onnx.load(str(result.path))
    size = result.config.img_size
    x, y = _val_arrays(Path(args.data), size, args.val_images)
    calib, source = q.calibration_images(Path(args.data) / "train", args.calib_images, size, 0)
    base, base_preds = _top1(fp32.SerializeToString(), x, y)
    print(f"fp32: top-1 {base:.2f} % on {len(y)} validation images", flush=True)
    groups = {g: q.quantizable_nodes(fp32, [g]) for g in q.OP_GROUPS}
    groups = {g: nodes for g, nodes in groups.items() if nodes}
    everything = q.quantizable_nodes(fp32)
    variants: list[tuple[str, str, list[str]]] = [
        ("all layers, uint8 activations", "uint8", everything),
        ("all layers, int8 activations (TensorRT)", "int8", everything),
        (
            "the default (edge.quantize.default_nodes)",
            "uint8",
            q.default_nodes(fp32),
        ),
    ]
    variants += [(f"only {g}", "uint8", nodes) for g, nodes in groups.items()]
    variants += [
        (f"all but {g}", "uint8", [n for n in everything if n not in set(nodes)])
        for g, nodes in groups.items()
    ]
    rows = []
    for label, activations, nodes in variants:
        int8 = q.quantize_graph(fp32, calib, 1, activations, nodes=nodes)
        top1, preds = _top1(int8.SerializeToString(), x, y)
        row = {
            "variant": label,
            "activations": activations,
            "quantized_nodes": len(nodes),
            "top1": top1,
            "drop": base - top1,
            "agreement": float(np.mean(preds == base_preds)),
        }
        rows.append(row)
        print(
            f"{label}: {len(nodes)} nodes, top-1 {top1:.2f} % (drop {base - top1:+.2f} points), "
            f"agreement with fp32 {row['agreement']:.3f}",
            flush=True,
        )
    save(
        "int8-accuracy",
        {
            "checkpoint": str(args.accuracy),
            "data": str(args.data),
            "img_size": size,
            "val_images": len(y),
            "calibration": source,
            "fp32_top1": base,
            "groups": {g: len(nodes) for g, nodes in groups.items()},
            "rows": rows,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[f"m{i}" for i in range(6)])
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--activations", choices=("uint8", "int8"), default="uint8")
    parser.add_argument("--accuracy", metavar="CKPT", help="trained checkpoint: top-1 mode")
    parser.add_argument("--data", help="with --accuracy: ImageFolder with train/ and val/")
    parser.add_argument("--calib-images", type=int, default=128)
    parser.add_argument("--val-images", type=int, help="first N validation images (default all)")
    args = parser.parse_args()
    if args.accuracy:
        if not args.data:
            parser.error("--accuracy needs --data")
        accuracy(args)
        return

    from edge.latency import measure_interleaved

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            fp32, int8 = fp32_and_int8(name, Path(tmp), args.activations)
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
