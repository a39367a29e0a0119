"""``python -m edge``: export, inspect, build TensorRT engines, and measure latency.

Examples:
    python -m edge export m0 --out m0.onnx
    python -m edge export my_variant.yaml --batch dynamic --precision fp16 --out variant_fp16.onnx
    python -m edge info m0.onnx
    python -m edge bench m0.onnx --threads 2 --compare m1.onnx
    python -m edge trt m0.onnx --precision fp16 --out m0.engine --timing-cache trt.cache
    python -m edge export m0 --precision int8 --int8-activations int8 --out m0.int8.onnx
    python -m edge trt m0.int8.onnx --timing-cache trt.cache
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge.devicelock import device_key, device_lock
from edge.export import DEFAULT_OPSET, Int8Options, VerificationError, export_onnx
from edge.latency import LatencyResult, measure_interleaved, measure_latency, usable_cores
from edge.onnxfile import read_metadata
from edge.openvino import OpenVinoUnavailable
from edge.runtimes import DEVICES, RUNTIMES
from edge.tensorrt import TensorRTError, TensorRTUnavailable
from evit.clitools import (
    BAD_INPUT,
    EXIT_BAD_INPUT,
    EXIT_FAILED_CHECK,
    EXIT_INTERRUPTED,
    ArgumentParser,
    add_alias,
    add_command,
    add_verbose,
    configure_logging,
    epilog,
)
from evit.files import check_writable


def _batch(text: str) -> int | None:
    if text == "dynamic":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--batch {text!r}: give a positive integer or 'dynamic'"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--batch {value}: must be >= 1")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _export(args: argparse.Namespace) -> int:
    out = args.out or f"{str(args.model).rsplit('/', 1)[-1].split('.')[0]}.onnx"
    check_writable(out)  # before the export's minutes, not after
    try:
        result = export_onnx(
            args.model,
            out,
            weights=args.weights,
            batch=args.batch,
            opset=args.opset,
            fp16=args.precision == "fp16",
            int8=Int8Options(
                args.calib,
                args.calib_images,
                min_top1=args.min_top1,
                min_cosine=args.min_cosine,
                max_rel_error=args.max_rel_error,
                activations=args.int8_activations,
                weight_bits=args.int8_weight_bits,
            )
            if args.precision == "int8"
            else None,
        )
    except VerificationError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED_CHECK
    check = result.int8_check
    if check is not None and check.deployed is not None and not check.deployed.passed:
        print(f"warning: {check.deployed.summary()}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    v = result.verification
    print(
        f"wrote {result.path} ({result.precision}, batch "
        f"{'dynamic' if result.batch is None else result.batch}, opset {result.opset}, "
        f"{result.nodes} nodes)"
    )
    if check is not None:  # the int8 file's own check, not the fp32 graph's
        verdict = "verified" if check.passed else "checked (random weights: not enforced)"
        print(f"{verdict} {check.summary()}; weights exercised: {v.exercised}")
        return 0
    print(
        f"verified against {v.reference} on {v.samples} random input(s): max abs error "
        f"{v.max_abs_error:.3e}, max rel error {v.max_rel_error:.3e} (tolerance "
        f"{v.tolerance:.0e}), top-1 agreement {v.top1_agreement:.0%}; weights exercised: "
        f"{v.exercised}"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    meta = read_metadata(args.model)
    if args.json:
        meta = dict(meta)
        if "config" in meta:
            meta["config"] = meta["config"].to_dict()
        print(json.dumps(meta, indent=2))
        return 0
    if "config" not in meta:
        print(
            f"{args.model}: no evit metadata (not written by `python -m edge export`): "
            f"opset {meta['opset']}, {meta['nodes']} nodes"
        )
        return 0
    config = meta.pop("config", None)
    for key, value in meta.items():
        print(f"{key:<18} {value}")
    if config is not None:
        print("config:")
        print("  " + config.to_yaml().rstrip().replace("\n", "\n  "))
    return 0


def _trt(args: argparse.Namespace) -> int:
    from edge.tensorrt import build_engine

    fp16 = args.precision == "fp16"
    out = args.out or str(args.model).removesuffix(".onnx") + (".fp16" if fp16 else "") + ".engine"
    result = build_engine(
        args.model,
        out,
        fp16=fp16,
        timing_cache=args.timing_cache,
        workspace_mb=args.workspace_mb,
        batch=args.batch,
        max_batch=args.max_batch,
        optimization_level=args.opt_level,
    )
    print(
        f"wrote {out} and {out}.json ({result.info.precision}, TensorRT "
        f"{result.info.tensorrt_version}, {result.info.gpu}, built in "
        f"{result.info.build_seconds:.1f} s)"
    )
    return 0


def _format(r: LatencyResult) -> str:
    line = (
        f"{r.model}: median {r.median_ms:.3f} ms [95% CI {r.ci_low_ms:.3f}, "
        f"{r.ci_high_ms:.3f}]  p90 {r.p90_ms:.3f}  p99 {r.p99_ms:.3f}  mean {r.mean_ms:.3f}"
        f"  std {r.std_ms:.3f}  CV {r.cv:.1%}  runs {r.runs}"
        f"{'' if r.converged else ' (CI target not reached)'}"
    )
    if r.gpu_median_ms is not None:
        line += f"\n  GPU compute median {r.gpu_median_ms:.3f} ms  p99 {r.gpu_p99_ms:.3f} ms"
    if r.session_ms is not None:
        line += f"\n  session {r.session_ms:.1f} ms, first run {r.first_run_ms:.2f} ms"
    return line


def _verdict(ratio: Any, first: str, second: str) -> str:
    """Which file is faster, by name, and only when the CI excludes 1."""
    if ratio.ci_low > 1.0:
        return f"{first} is faster ({second} takes {ratio.ratio:.2f}x as long)"
    if ratio.ci_high < 1.0:
        return f"{second} is faster ({first} takes {1 / ratio.ratio:.2f}x as long)"
    return "no difference resolved (the CI contains 1)"


def _bench(args: argparse.Namespace) -> int:
    threads = args.threads
    if threads is None and args.device == "cpu":
        threads = usable_cores()  # what search measures with, stated instead of left implicit
    common = dict(
        runtime=args.runtime,
        device=args.device,
        batch=args.batch,
        threads=threads,
        precision=args.precision,
    )
    with device_lock(device_key(args.device)):  # no other measurement on this device meanwhile
        return _bench_locked(args, common)


def _int8_cpu_warnings(models: list[str]) -> None:
    """One line per int8 file that would saturate on this CPU (``edge.cpu``)."""
    from edge.onnxfile import load_onnx
    from edge.quantize import cpu_warning

    for model in models:
        if str(model).endswith(".onnx") and Path(model).is_file():
            warning = cpu_warning(load_onnx(model, load_weights=False))
            if warning:
                print(f"warning: {model}: {warning}", file=sys.stderr)


def _bench_locked(args: argparse.Namespace, common: dict[str, Any]) -> int:
    _int8_cpu_warnings([args.model] + ([args.compare] if args.compare else []))
    if args.runtime == "openvino":
        checked = _check_openvino(args, common)
        if checked:
            return checked
    if args.compare:
        res = measure_interleaved(
            [args.model, args.compare], **common, max_seconds=args.measure_seconds
        )
        if args.json:
            print(json.dumps(res.to_dict(), indent=2))
            return 0
        for r in res.results:
            print(_format(r))
        ratio = res.ratios[0]
        print(
            f"{ratio.other} / {ratio.reference} latency ratio: {ratio.ratio:.3f} "
            f"[95% CI {ratio.ci_low:.3f}, {ratio.ci_high:.3f}] over {ratio.rounds} "
            f"interleaved rounds: {_verdict(ratio, args.model, args.compare)}"
        )
        return 0
    result = measure_latency(
        args.model, **common, target_rel_ci=args.target_ci, max_seconds=args.measure_seconds
    )
    if args.json:
        print(result.to_json())
        return 0
    print(_format(result))
    env = result.environment
    package = {"ort": "onnxruntime", "trt": "tensorrt", "openvino": "openvino"}.get(
        result.runtime, "torch"
    )
    print(
        f"  {env['cpu']}, {env['usable_cores']} usable cores, threads "
        f"{result.threads or 'default'}, {result.runtime} "
        f"{env['versions'].get(package)}"
        + (f", GPU {env.get('gpu')}" if result.device == "cuda" else "")
    )
    return 0


def _check_openvino(args: argparse.Namespace, common: dict[str, Any]) -> int:
    """OpenVINO's numbers against ONNX Runtime's on the same file, before any timing."""
    from edge.crosscheck import check_against_ort
    from edge.runtimes import open_runtime

    for model in [args.model] + ([args.compare] if args.compare else []):
        rt = open_runtime(model, **common)
        try:
            check = check_against_ort(model, rt)
        finally:
            rt.close()
        line = (
            f"{model}: OpenVINO {check['precision']} vs ONNX Runtime on {check['samples']} "
            f"images: logit cosine {check['cosine']:.5f} (min {check['min_cosine']}), top-1 "
            f"agreement {check['top1_agreement']:.2f} (min {check['min_top1']})"
        )
        if not check["passed"]:
            print(f"error: {line}", file=sys.stderr)
            return EXIT_FAILED_CHECK
        print(line, file=sys.stderr if args.json else sys.stdout)
    return 0


PRECISIONS = ("fp32", "fp16", "int8")  # of an exported file, as search --precision names them
INT8_HELP = (
    "int8: a Q/DQ file: convolutions and matrix products (but the depthwise convolutions and "
    "the attention matmuls) in int8 with per-channel symmetric weights, 7-bit by default "
    "(--int8-weight-bits), and asymmetric uint8 activations for ONNX Runtime by default "
    "(--int8-activations int8: symmetric, 8-bit weights, for TensorRT); softmax and elementwise "
    "ops stay in float; verified against fp32 on held-out images"
)


def _bench_precision(text: str) -> str:
    """OpenVINO's spelling ``f32`` still reads as ``fp32``, with a warning (one release)."""
    if text == "f32":
        print("warning: --precision f32 is deprecated, use fp32", file=sys.stderr)
        return "fp32"
    return text


def _add_export(sub: argparse._SubParsersAction) -> None:
    ex = add_command(
        sub,
        "export",
        help="fuse, export to ONNX, check and verify against PyTorch",
        examples=[
            "python -m edge export m0 --out m0.onnx",
            "python -m edge export m0 --precision int8 --out m0.int8.onnx --json",
        ],
        done="written and verified",
        failed="the file disagrees with its reference (kept as *.unverified.onnx)",
    )
    ex.add_argument("model", help="variant name (m0..m5), YAML config, or evit checkpoint")
    ex.add_argument(
        "--weights",
        help="checkpoint to load (official, timm or evit format); random weights otherwise",
    )
    ex.add_argument("--out", help="output .onnx path (default: <model>.onnx)")
    ex.add_argument(
        "--batch",
        type=_batch,
        default=1,
        help="fixed batch size, or 'dynamic' for a dynamic batch axis (default 1)",
    )
    ex.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})"
    )
    ex.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="the file's precision: fp32 (default); fp16: mixed precision, fp16 except softmax "
        "and the attention-bias add (for TensorRT 11 strongly typed builds), verified against "
        f"fp32; {INT8_HELP}",
    )
    add_alias(ex, "--fp16", "--precision", value="fp16")
    add_alias(ex, "--int8", "--precision", value="int8")
    ex.add_argument(
        "--calib", help="--precision int8: image folder to calibrate on (default: generated frames)"
    )
    ex.add_argument("--calib-images", type=int, default=32, help="calibration images (default 32)")
    ex.add_argument(
        "--min-top1", type=float, default=0.9, help="int8 vs fp32 top-1 agreement (0.9)"
    )
    ex.add_argument(
        "--min-cosine", type=float, default=0.99, help="int8 vs fp32 logit cosine (0.99)"
    )
    ex.add_argument(
        "--max-rel-error",
        type=float,
        default=0.25,
        help="int8 vs fp32 relative error of the logits: a wrong scale or offset (0.25)",
    )
    ex.add_argument(
        "--int8-weight-bits",
        type=int,
        choices=(7, 8),
        default=None,
        help="7: exact on every CPU (default for uint8 activations); 8: exact only on x86 CPUs "
        "with VNNI/AMX, non-x86 CPUs and TensorRT (default for --int8-activations int8)",
    )
    ex.add_argument(
        "--int8-activations",
        choices=("uint8", "int8"),
        default="uint8",
        help="uint8: asymmetric, ONNX Runtime's fast path (default); int8: symmetric (zero point "
        "0), as TensorRT requires",
    )
    ex.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_trt(sub: argparse._SubParsersAction) -> None:
    trt = add_command(
        sub,
        "trt",
        help="build a TensorRT engine (needs tensorrt and a GPU)",
        examples="python -m edge trt m0.onnx --precision fp16 --out m0.engine --timing-cache "
        "trt.cache",
        done="engine and its .json sidecar written",
        failed="the build failed inside TensorRT",
        bad_input=f"{BAD_INPUT}; TensorRT or a GPU missing, a refused batch profile",
    )
    trt.add_argument("model", help=".onnx file")
    trt.add_argument("--out", help="engine path (default: <model>[.fp16].engine)")
    trt.add_argument(
        "--precision",
        choices=("fp32", "fp16"),
        default="fp32",
        help="fp32 (default): the file's own precision (int8 for a Q/DQ file); fp16: fp16 "
        "kernels (TensorRT 10: builder flag with softmax pinned to fp32; 11: built from a "
        "mixed-fp16 ONNX)",
    )
    add_alias(trt, "--fp16", "--precision", value="fp16")
    trt.add_argument("--timing-cache", help="timing cache file to reuse and update")
    trt.add_argument(
        "--workspace-mb",
        type=_positive,
        default=1024,
        help="builder workspace limit in MiB (default 1024)",
    )
    trt.add_argument(
        "--batch",
        type=_positive,
        default=1,
        help="optimal batch of a dynamic-batch profile (default 1)",
    )
    trt.add_argument(
        "--max-batch",
        type=_positive,
        help="largest batch of a dynamic-batch profile (default --batch)",
    )
    trt.add_argument(
        "--opt-level",
        type=int,
        choices=range(6),
        metavar="0-5",
        help="builder optimization level (default TensorRT's, 3; lower builds faster)",
    )


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = add_command(
        sub,
        "bench",
        help="measure latency (median, CI, percentiles)",
        examples=[
            "python -m edge bench m0.onnx --threads 2 --measure-seconds 10",
            "python -m edge bench m0.onnx --compare m0.int8.onnx --json",
        ],
        failed="OpenVINO's numbers disagree with ONNX Runtime's (--runtime openvino)",
    )
    bench.add_argument("model", help=".onnx, .engine, or a variant name / YAML / checkpoint")
    bench.add_argument(
        "--runtime",
        choices=RUNTIMES,
        help="default by file type: .onnx->ort, .engine->trt, name->torch; openvino: "
        "OpenVINO on the CPU (the 'openvino' extra)",
    )
    bench.add_argument("--device", choices=DEVICES, default="cpu", help="default cpu")
    bench.add_argument(
        "--precision",
        type=_bench_precision,
        choices=("fp32", "bf16", "int8"),
        help="--runtime openvino: inference precision (fp32 default; bf16 where the CPU has "
        "it; int8 from a Q/DQ file); the numbers are checked against fp32 ONNX Runtime first. "
        "The other runtimes run the file's own precision (edge export --precision)",
    )
    bench.add_argument("--batch", type=_positive, default=1, help="images per run (default 1)")
    bench.add_argument(
        "--threads",
        type=_positive,
        help="intra-op CPU threads (default: all usable cores, as search measures)",
    )
    bench.add_argument(
        "--compare",
        metavar="OTHER",
        help="second model, run interleaved; prints the paired latency ratio",
    )
    bench.add_argument(
        "--target-ci",
        type=float,
        default=0.02,
        help="stop when the median's 95%% CI is within this fraction (0.02)",
    )
    bench.add_argument(
        "--measure-seconds",
        type=float,
        default=20.0,
        help="time cap of the measurement (default 20)",
    )
    add_alias(bench, "--max-seconds", "--measure-seconds")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m edge",
        description=__doc__,
        epilog=epilog(
            ["python -m edge -v export m0 --out m0.onnx", "python -m edge bench m0.onnx"],
            done="done (each subcommand's --help says what it does and when it fails)",
            failed="an export that fails verification, OpenVINO disagreeing with ONNX Runtime, "
            "a failed TensorRT build",
        ),
    )
    add_verbose(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_export(sub)
    info = add_command(
        sub,
        "info",
        help="print an exported file's metadata",
        examples="python -m edge info m0.onnx --json",
    )
    info.add_argument("model", help=".onnx file written by 'edge export'")
    info.add_argument("--json", action="store_true", help="print the metadata as JSON")
    _add_trt(sub)
    _add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    handlers = {"export": _export, "info": _info, "trt": _trt, "bench": _bench}
    try:
        return handlers[args.command](args)
    except (ValueError, TensorRTUnavailable, OpenVinoUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TensorRTError as e:  # a build or run that failed inside TensorRT
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED_CHECK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
