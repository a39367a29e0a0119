"""Every CPU path for M0-M5 on this CPU: ONNX Runtime fp32/int8, OpenVINO fp32/bf16/int8.

    python -m benchmarks.bench_cpu_paths                     # 1 and 2 threads, M0-M5
    python -m benchmarks.bench_cpu_paths --models m0 m5 --threads 1
    python -m benchmarks.bench_cpu_paths --accuracy CKPT --data DIR   # top-1 of every path

Per model and thread count, all paths run interleaved in one measurement (one session open at a
time), batch 1, from the same live weights: the fp32 file from ``edge export`` and the Q/DQ
int8 file from ``edge export --int8`` (uint8 activations, 32 generated calibration frames);
OpenVINO runs both files as they are (bf16 where the CPU has it). Every OpenVINO path is first
checked: fp32 and bf16 against ONNX Runtime on the same file (``check_against_ort``), int8 by
whether it is as close to the fp32 model as ONNX Runtime's int8 is (``check_int8_against_fp32``:
on random weights int8 drifts from fp32 in every runtime, see ``edge.crosscheck``). The CPU
model and its flags are recorded: int8/bf16 speed depends on VNNI, AVX-512 BF16 and AMX.

``--accuracy``: a trained checkpoint exported as fp32 and Q/DQ int8 (calibrated on 32 training
images), every path's top-1 on the validation split, and OpenVINO int8 against ONNX Runtime int8
on the same file (cosine and top-1 agreement on the validation images and on random ones).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.bench_int8 import cpu_flags
from benchmarks.common import fp32_and_int8, save


def accuracy(checkpoint: Path, data: Path) -> None:
    import numpy as np
    import onnx

    import edge.quantize as q
    from benchmarks.bench_int8 import _val_arrays
    from edge.export import export_onnx
    from edge.openvino import OpenVinoRuntime, bf16_supported, cpu_name
    from edge.runtimes import OrtRuntime

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        result = export_onnx(checkpoint, fp32)
        size = result.config.img_size
        x, y = _val_arrays(data, size, None)
        calib, source = q.calibration_images(data / "train", 32, size, 0)
        int8 = Path(tmp) / "int8.onnx"
        onnx.save(q.quantize_graph(onnx.load(str(fp32)), calib, 1, "uint8"), str(int8))
        paths = {
            "ort fp32": lambda: OrtRuntime(fp32, threads=2),
            "ort int8": lambda: OrtRuntime(int8, threads=2),
            "openvino fp32": lambda: OpenVinoRuntime(fp32, threads=2),
            "openvino int8": lambda: OpenVinoRuntime(int8, threads=2, precision="int8"),
        }
        if bf16_supported():
            paths["openvino bf16"] = lambda: OpenVinoRuntime(fp32, threads=2, precision="bf16")
        rng = np.random.default_rng(0)
        noise = rng.standard_normal((16, 3, size, size)).astype(np.float32)
        logits, on_noise = {}, {}
        for label, make in paths.items():
            rt = make()
            logits[label] = np.concatenate([rt(x[i : i + 1]) for i in range(len(x))])
            on_noise[label] = np.concatenate([rt(noise[i : i + 1]) for i in range(len(noise))])
            rt.close()
    ref = logits["ort fp32"].argmax(1)
    rows = {
        label: {
            "top1": float(np.mean(v.argmax(1) == y) * 100),
            "agreement_with_ort_fp32": float(np.mean(v.argmax(1) == ref)),
            "cosine_to_ort_fp32": q.centered_cosine(v.astype(float), logits["ort fp32"]),
        }
        for label, v in logits.items()
    }
    a, b = logits["openvino int8"].astype(float), logits["ort int8"].astype(float)
    na, nb = on_noise["openvino int8"].astype(float), on_noise["ort int8"].astype(float)
    int8_pair = {
        "val_cosine": q.centered_cosine(a, b),
        "val_top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
        "noise_cosine": q.centered_cosine(na, nb),
        "noise_top1_agreement": float(np.mean(na.argmax(1) == nb.argmax(1))),
    }
    for label, row in rows.items():
        print(
            f"{label}: top-1 {row['top1']:.2f} %, agreement with ORT fp32 "
            f"{row['agreement_with_ort_fp32']:.3f}, cosine {row['cosine_to_ort_fp32']:.4f}"
        )
    print(
        "OpenVINO int8 vs ONNX Runtime int8 (same file): "
        + ", ".join(f"{k} {v:.4f}" for k, v in int8_pair.items())
    )
    save(
        "cpu-paths-accuracy",
        {
            "cpu": cpu_name(),
            "checkpoint": str(checkpoint),
            "data": str(data),
            "img_size": size,
            "val_images": len(y),
            "calibration": source,
            "rows": rows,
            "openvino_int8_vs_ort_int8": int8_pair,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[f"m{i}" for i in range(6)])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--max-seconds", type=float, default=40.0)
    parser.add_argument("--accuracy", metavar="CKPT", type=Path, help="trained checkpoint")
    parser.add_argument("--data", type=Path, help="with --accuracy: ImageFolder (train/, val/)")
    args = parser.parse_args()
    if args.accuracy:
        if not args.data:
            parser.error("--accuracy needs --data")
        accuracy(args.accuracy, args.data)
        return

    from edge.crosscheck import check_against_ort, check_int8_against_fp32
    from edge.latency import measure_interleaved
    from edge.openvino import OpenVinoRuntime, bf16_supported, cpu_name
    from edge.runtimes import OrtRuntime

    ov_precisions = ["fp32", "bf16", "int8"] if bf16_supported() else ["fp32", "int8"]
    rows = []
    checks: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            fp32, int8 = fp32_and_int8(name, Path(tmp))
            checked = []  # a path that fails its check is not timed
            for p in ov_precisions:
                rt = OpenVinoRuntime(int8 if p == "int8" else fp32, threads=1, precision=p)
                check = (
                    check_int8_against_fp32(int8, fp32, rt)
                    if p == "int8"
                    else check_against_ort(fp32, rt)
                )
                checks[f"{name} openvino {p}"] = check
                if check["passed"]:
                    checked.append(p)
                else:
                    print(f"{name} OpenVINO {p} failed its check: {check}", flush=True)
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
