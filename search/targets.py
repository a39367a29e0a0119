"""Where latency is measured: ONNX Runtime CPU, TensorRT GPU, PyTorch CPU/CUDA.

A :class:`Target` turns a config into an open runtime (exporting ONNX or building an engine
when the target needs one) and measures it through the ``edge`` harness. ``auto`` picks TensorRT
when it and a GPU are present, else ONNX Runtime on the CPU.

Precision: ``fp32``, ``fp16`` (TensorRT; its default on a GPU) or ``int8`` (ONNX Runtime and
TensorRT): each candidate is exported, quantized to a Q/DQ graph (``edge.quantize``, calibrated
on a few generated frames or the given image folder: the scales do not change the speed) and
measured in that precision. TensorRT engines of trials are built at a low builder optimization
level with one timing cache shared by all trials (``build_level``, ``timing_cache``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import evit
from edge.devicelock import device_key
from edge.export import export_onnx
from edge.latency import (
    InterleavedResult,
    LatencyResult,
    environment,
    fingerprint,
    measure_interleaved,
    measure_latency,
    usable_cores,
)
from edge.runtimes import Runtime, RuntimeFactory, TorchRuntime
from evit.config import ModelConfig
from evit.fusion import GRAPH_VERSION

TARGETS = ("auto", "ort-cpu", "openvino-cpu", "trt", "torch-cpu", "torch-cuda")
CPU_TARGETS = ("ort-cpu", "openvino-cpu", "torch-cpu")
PRECISIONS = {  # what each target can measure; the first is its default
    "ort-cpu": ("fp32", "int8"),
    "openvino-cpu": ("fp32", "bf16", "int8"),
    "trt": ("fp16", "fp32", "int8"),
    "torch-cpu": ("fp32",),
    "torch-cuda": ("fp32",),
}
CALIB_IMAGES = 8  # per int8 trial: the scales change the accuracy, not the speed
TRIAL_BUILD_LEVEL = 1  # TensorRT builder optimization level of trial engines (default: 3)


class TargetUnavailable(RuntimeError):
    """The requested target cannot run on this machine."""


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_target(name: str) -> str:
    """Map ``auto`` to a concrete target; check that the target can run here."""
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
    from edge.tensorrt import tensorrt_status

    if name == "auto":
        return "trt" if tensorrt_status() is None else "ort-cpu"
    if name == "trt":
        reason = tensorrt_status()
        if reason is not None:
            raise TargetUnavailable(f"target trt unavailable: {reason}")
    if name == "openvino-cpu":
        from edge.openvino import OpenVinoUnavailable, import_openvino

        try:
            import_openvino()
        except OpenVinoUnavailable as e:
            raise TargetUnavailable(f"target openvino-cpu unavailable: {e}") from None
    if name == "torch-cuda" and not _cuda_available():
        raise TargetUnavailable("target torch-cuda unavailable: no CUDA GPU is visible")
    return name


@dataclass
class Target:
    """A concrete target with its measurement settings.

    Attributes:
        name: ``ort-cpu``, ``trt``, ``torch-cpu`` or ``torch-cuda``.
        batch: images per inference.
        threads: CPU threads (ORT intra-op / torch); None = all usable cores.
        workdir: where per-trial ONNX files and engines go (deleted after measuring).
        max_seconds: time cap of one measurement.
        precision: ``fp32``, ``fp16`` or ``int8`` (None: the target's default, see
            ``PRECISIONS``).
        calib: int8 calibration images (a folder; None: generated frames).
        build_level: TensorRT builder optimization level (None: TensorRT's default).
        timing_cache: TensorRT timing cache file shared by every build that names it.
    """

    name: str
    batch: int = 1
    threads: int | None = None
    workdir: Path = field(default_factory=lambda: Path("."))
    max_seconds: float = 2.0
    precision: str | None = None
    calib: Path | None = None
    build_level: int | None = None
    timing_cache: Path | None = None

    # between two blocks of an interleaved run: the device settles (a stand-in has nothing to)
    block_pause_seconds: ClassVar[float] = 0.02

    def __post_init__(self) -> None:
        allowed = PRECISIONS[self.name]
        if self.precision is None:
            self.precision = allowed[0]
        if self.precision not in allowed:
            raise ValueError(
                f"--precision {self.precision}: target {self.name} measures {', '.join(allowed)}"
            )
        if self.precision == "bf16":
            from edge.openvino import check_precision

            check_precision("bf16")  # a CPU without bf16: one line, not a silent f32 run
        if self.threads is None and self.name in CPU_TARGETS:
            self.threads = usable_cores()
        self.env = environment(
            self.threads, "cuda" if self.name in ("trt", "torch-cuda") else "cpu"
        )
        # the deployed graph's form is part of it: a latency of another form is not this one's
        runtime = self.name if self.precision == "fp32" else f"{self.name}-{self.precision}"
        self.fingerprint = fingerprint(self.env, f"{runtime}/graph{GRAPH_VERSION}", self.batch)

    @property
    def description(self) -> str:
        """The device and software a latency belongs to, in words (the study records it)."""
        versions = self.env.get("versions", {})
        package = {"ort": "onnxruntime", "trt": "tensorrt", "openvino": "openvino"}.get(
            self.runtime, "torch"
        )
        where = (
            self.env.get("gpu") or f"{self.env.get('cpu')} ({self.env.get('usable_cores')} cores)"
        )
        threads = f", {self.threads} threads" if self.threads else ""
        precision = "" if self.precision == "fp32" else f", {self.precision}"
        return f"{where}, {package} {versions.get(package, '?')}{threads}{precision}"

    @property
    def device_key(self) -> str:
        """The device this target measures on (see ``edge.devicelock``)."""
        return device_key("cuda" if self.name in ("trt", "torch-cuda") else "cpu")

    @property
    def runtime(self) -> str:
        return {"ort-cpu": "ort", "trt": "trt", "openvino-cpu": "openvino"}.get(self.name, "torch")

    def prepare(
        self,
        config: ModelConfig,
        timings: dict[str, float] | None = None,
        model: evit.EfficientViT | None = None,
    ) -> Callable[[], Runtime]:
        """Build (random weights, or ``model``'s) and fuse ``config``, export or compile it
        once, and return a factory that opens a fresh runtime on it (cheap: a session, not an
        export)."""
        timings = timings if timings is not None else {}
        start = time.perf_counter()
        model = (model if model is not None else evit.create_model(config)).eval()
        timings["build_s"] = time.perf_counter() - start
        shape = (self.batch, config.in_chans, config.img_size, config.img_size)
        start = time.perf_counter()
        if self.name in ("torch-cpu", "torch-cuda"):
            fused = evit.fuse(model)
            device = "cuda" if self.name == "torch-cuda" else "cpu"
            timings["export_s"] = time.perf_counter() - start
            return lambda: TorchRuntime(fused, shape, device=device, threads=self.threads)
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / f"{config.architecture_hash()}-{os.getpid()}.onnx"
        try:
            export_onnx(model, path, batch=self.batch, verify=False)
            timings["export_s"] = time.perf_counter() - start
            if self.precision == "int8":
                start = time.perf_counter()
                self._quantize(path, config.img_size)
                timings["quantize_s"] = time.perf_counter() - start
            if self.name == "trt":
                from edge.tensorrt import build_engine

                start = time.perf_counter()
                engine = build_engine(
                    path,
                    None,
                    batch=self.batch,
                    fp16=self._trt_fp16(),
                    timing_cache=self.timing_cache,
                    optimization_level=self.build_level,
                ).engine_bytes
                timings["engine_s"] = time.perf_counter() - start
                return RuntimeFactory("trt", engine, self.batch)
            onnx_bytes = path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
        precision = self.precision if self.runtime == "openvino" else "fp32"
        return RuntimeFactory(self.runtime, onnx_bytes, self.batch, self.threads, precision)

    def _quantize(self, path: Path, img_size: int) -> None:
        """Rewrite the fp32 file at ``path`` as a Q/DQ int8 graph (uint8 activations for ONNX
        Runtime's fast x86 kernels, symmetric int8 for TensorRT)."""
        import onnx

        from edge.onnxfile import set_metadata
        from edge.quantize import calibration_images, quantize_graph

        images, _ = calibration_images(self.calib, CALIB_IMAGES, img_size, 0, self.batch)
        activations = "int8" if self.name == "trt" else "uint8"
        proto = quantize_graph(onnx.load(str(path)), images, self.batch, activations)
        set_metadata(proto, {"evit.precision": "int8-qdq"})
        onnx.save(proto, str(path))

    def _trt_fp16(self) -> bool:
        """fp16 engines for ``fp16``; with ``int8``, fp16 where TensorRT 10 may use it (11 keeps
        the float part of a Q/DQ file in fp32)."""
        if self.precision == "fp16":
            return True
        if self.precision != "int8":
            return False
        from edge.tensorrt import import_tensorrt

        return int(import_tensorrt().__version__.split(".")[0]) < 11

    def open(
        self, config: ModelConfig, timings: dict[str, float] | None = None, label: str | None = None
    ) -> Runtime:
        """Prepare ``config`` and open one runtime on it."""
        timings = timings if timings is not None else {}
        factory = self.prepare(config, timings)
        start = time.perf_counter()
        rt = factory()
        timings["session_s"] = time.perf_counter() - start
        rt.label = label or config.name
        return rt

    def measure(
        self, config: ModelConfig, timings: dict[str, float] | None = None
    ) -> LatencyResult:
        timings = timings if timings is not None else {}
        rt = self.open(config, timings)
        start = time.perf_counter()
        try:
            return measure_latency(rt, max_seconds=self.max_seconds, env=self.env)
        finally:
            timings["measure_s"] = time.perf_counter() - start
            rt.close()


BUDGET_FILE = "budget.json"  # --budget-ms m0's measured budget, reused when the study resumes
# --budget-ms m0 admits trials up to this much over M0's start-up reading: one reading drifts by
# that much on a shared machine (docs/benchmarks.md §5), and a candidate exactly as fast as M0
# must not be left untrained for it; the final paired run decides what is as fast as M0
REFERENCE_BUDGET_SLACK = 0.10


def reference_budget(out: Path, target: Target, name: str, num_classes: int) -> tuple[float, str]:
    """``--budget-ms m0``: the budget is reference ``name``'s latency on ``target``, measured
    now (as a trial would be), plus :data:`REFERENCE_BUDGET_SLACK`, and saved in ``out``, so
    that a resumed study keeps it.

    Returns the budget in ms and a one-line account of where it came from.
    """
    from edge.devicelock import device_lock
    from search.space import reference_configs

    saved = out / BUDGET_FILE
    asked = {
        "reference": name,
        "target": target.name,
        "precision": target.precision,
        "batch": target.batch,
        "threads": target.threads,
    }
    if saved.is_file():
        data = json.loads(saved.read_text())
        if data.get("asked") == asked:
            return float(data["budget_ms"]), f"{data['line']} (measured when this study started)"
    config = reference_configs()[name].replace(num_classes=num_classes)
    with device_lock(target.device_key):
        result = target.measure(config)
    short = name.removeprefix("efficientvit_").upper()
    budget = result.median_ms * (1 + REFERENCE_BUDGET_SLACK)
    line = (
        f"--budget-ms {short.lower()}: {short}'s latency on {target.name} "
        f"({target.precision}), {result.median_ms:.3f} ms [{result.ci_low_ms:.3f}, "
        f"{result.ci_high_ms:.3f}]; trials up to {REFERENCE_BUDGET_SLACK:.0%} over it "
        f"({budget:.3f} ms) are trained, and the pick must be as fast as {short} in the final "
        "paired run"
    )
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"asked": asked, "budget_ms": budget, "line": line}))
    return budget, line


def interleave_seconds(models: int) -> float:
    """The time cap of one interleaved run of ``models`` models (the final re-measurement)."""
    return max(30.0, 4.0 * models)


def measure_side_by_side(
    jobs: list[tuple[Target, ModelConfig]],
    labels: list[str],
    *,
    min_rounds: int = 10,
    max_rounds: int = 40,
    max_seconds: float | None = None,
    block_seconds: float = 0.12,
) -> InterleavedResult:
    """Each (target, config) prepared, then all measured interleaved in one run (paired ratios;
    one session open at a time).

    Preparing (export, quantization, compilation) holds the device shared, as a training does;
    the measurement holds it exclusively (``edge.devicelock``).
    """
    from edge.devicelock import device_lock

    key = jobs[0][0].device_key
    with device_lock(key, exclusive=False):
        factories = [target.prepare(config) for target, config in jobs]
    with device_lock(key):
        return measure_interleaved(
            factories,
            labels=labels,
            min_rounds=min_rounds,
            max_rounds=max_rounds,
            max_seconds=max_seconds if max_seconds is not None else interleave_seconds(len(jobs)),
            block_seconds=block_seconds,
            pause_seconds=jobs[0][0].block_pause_seconds,
        )
