"""Which int8 weights are right on this CPU, what they cost in accuracy, and their speed.

    python -m benchmarks.bench_int8_cpu --checkpoint CKPT --data DIR     # accuracy (+ speed)
    python -m benchmarks.bench_int8_cpu --speed-only --models m0 m5        # speed of live copies

Three ways to quantize the same fp32 export (Q/DQ, the default node selection of
``edge.quantize``, calibrated on ``--calib-images`` training images):

- ``w8``: uint8 activations x int8 weights with 8 bits (exact only where int8 sums are 32-bit:
  VNNI, AMX, non-x86);
- ``w7``: the same with 7-bit weights (``reduce_range``, the project's default: no 16-bit pair
  sum can overflow, ``edge.cpu``);
- ``u8u8``: uint8 weights too (ONNX Runtime's other way around the overflow).

For each, the validation top-1 as the Q/DQ graph itself computes it (the reference, with ONNX
Runtime's graph optimizations off: what a CPU with exact int8 sums computes, whatever CPU runs
this script) and as ONNX Runtime's int8 kernels compute it *on this CPU*, next to fp32. Speed:
every file of a model interleaved with fp32 in one run (``edge.latency.measure_interleaved``);
ratio = fp32 latency / int8 latency per round (> 1: int8 faster), median [95 % CI]. The CPU's
int8 kind (``edge.cpu.describe_isa``) is recorded with the results.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

from benchmarks.common import save

VARIANTS = ("w8", "w7", "u8u8")


def quantize_variant(fp32: onnx.ModelProto, calib: np.ndarray, variant: str) -> onnx.ModelProto:
    """The Q/DQ file of one variant (``edge.quantize.quantize_graph`` for w7/w8)."""
    import edge.quantize as q

    if variant in ("w7", "w8"):
        return q.quantize_graph(fp32, calib, 1, weight_bits=int(variant[1]))
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "a.onnx", Path(tmp) / "b.onnx"
        onnx.save(q.unalias_constants(fp32), str(src))
        logging.disable(logging.WARNING)
        try:
            quantize_static(
                str(src),
                str(dst),
                q._Reader(calib, 1),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=q.QUANTIZED_OPS,
                nodes_to_quantize=q.default_nodes(fp32),
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QUInt8,
                extra_options={"WeightSymmetric": False},
            )
        finally:
            logging.disable(logging.NOTSET)
        return onnx.load(str(dst))


def _logits(session, x: np.ndarray) -> np.ndarray:
    return np.concatenate([session.run(None, {"image": x[i : i + 1]})[0] for i in range(len(x))])


def accuracy(args: argparse.Namespace, fp32: onnx.ModelProto, size: int) -> dict:
    import edge.quantize as q
    from benchmarks.bench_int8 import _val_arrays
    from edge.onnxfile import ort_session

    x, y = _val_arrays(Path(args.data), size, args.val_images)
    calib, source = q.calibration_images(Path(args.data) / "train", args.calib_images, size, 0)
    f = _logits(ort_session(fp32.SerializeToString(), threads=2), x)
    rows = {"fp32": {"top1": float(np.mean(f.argmax(1) == y) * 100)}}
    print(f"fp32: top-1 {rows['fp32']['top1']:.2f} % on {len(y)} validation images", flush=True)
    for variant in VARIANTS:
        proto = quantize_variant(fp32, calib, variant)
        reference = _logits(q.reference_session(proto), x)
        kernels = _logits(ort_session(proto.SerializeToString(), threads=2), x)
        row = {
            "reference_top1": float(np.mean(reference.argmax(1) == y) * 100),
            "kernels_top1": float(np.mean(kernels.argmax(1) == y) * 100),
            "reference_vs_fp32": q.logit_agreement(reference, f).__dict__,
            "kernels_vs_reference": q.logit_agreement(kernels, reference).__dict__,
        }
        rows[variant] = row
        print(
            f"{variant}: top-1 {row['reference_top1']:.2f} % (Q/DQ reference) / "
            f"{row['kernels_top1']:.2f} % (ONNX Runtime kernels here); kernels vs reference: "
            f"cosine {row['kernels_vs_reference']['cosine']:.4f}, relative error "
            f"{row['kernels_vs_reference']['rel_error']:.3f}",
            flush=True,
        )
    return {"calibration": source, "val_images": len(y), "rows": rows}


def speed(fp32_files: dict[str, onnx.ModelProto], calib: dict, args: argparse.Namespace) -> dict:
    from edge.latency import measure_interleaved
    from edge.runtimes import RuntimeFactory

    out = {}
    for name, fp32 in fp32_files.items():
        protos = [fp32] + [quantize_variant(fp32, calib[name], v) for v in VARIANTS]
        factories = [RuntimeFactory("ort", p.SerializeToString(), 1, args.threads) for p in protos]
        res = measure_interleaved(
            factories,
            labels=["fp32", *VARIANTS],
            min_rounds=10,
            max_rounds=60,
            max_seconds=args.max_seconds,
        )
        # the harness gives other / first; the table wants fp32 / int8
        cells = {
            v: {
                "ratio": 1 / r.ratio,
                "ci_low": 1 / r.ci_high,
                "ci_high": 1 / r.ci_low,
                "int8_ms": res.results[i + 1].median_ms,
            }
            for i, (v, r) in enumerate(zip(VARIANTS, res.ratios))
        }
        out[name] = {"fp32_ms": res.results[0].median_ms, "rounds": res.ratios[0].rounds, **cells}
        line = " | ".join(
            f"{v} {c['int8_ms']:.2f} ms, {c['ratio']:.2f}x [{c['ci_low']:.2f}, {c['ci_high']:.2f}]"
            for v, c in cells.items()
        )
        print(f"{name}: fp32 {res.results[0].median_ms:.2f} ms | {line}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="a trained evit checkpoint (accuracy)")
    p.add_argument("--data", help="its dataset (train/ for calibration, val/ for top-1)")
    p.add_argument("--models", nargs="*", default=["m0", "m5"], help="speed: live copies")
    p.add_argument("--speed-only", action="store_true", help="skip the accuracy part")
    p.add_argument("--calib-images", type=int, default=128)
    p.add_argument("--val-images", type=int, default=None, help="default: all")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=90.0, help="per model, speed")
    p.add_argument("--label", default="int8_cpu")
    args = p.parse_args(argv)

    import edge.quantize as q
    import evit
    from edge.cpu import describe_isa
    from edge.export import export_onnx
    from evit.live import live_copy

    result: dict = {"cpu_int8": describe_isa()}
    print(f"CPU: {result['cpu_int8']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.speed_only:
            if not (args.checkpoint and args.data):
                p.error("--checkpoint and --data are needed unless --speed-only")
            exported = export_onnx(args.checkpoint, Path(tmp) / "trained.onnx")
            fp32 = onnx.load(str(exported.path))
            result["accuracy"] = accuracy(args, fp32, exported.config.img_size)
        fp32_files, calib = {}, {}
        for name in args.models:
            live = live_copy(evit.create_model(name).eval())
            path = export_onnx(live, Path(tmp) / f"{name}.onnx").path
            fp32_files[name] = onnx.load(str(path))
            calib[name], _ = q.calibration_images(None, 16, live.config.img_size, 0)
        result["speed"] = speed(fp32_files, calib, args)
    print(f"saved {save(args.label, result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
