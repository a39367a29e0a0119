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

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import evit
from edge.devicelock import device_key
from edge.export import export_onnx
from edge.latency import LatencyResult, environment, fingerprint, measure_latency
from edge.runtimes import OrtRuntime, Runtime, TorchRuntime
from evit.config import ModelConfig

TARGETS = ("auto", "ort-cpu", "trt", "torch-cpu", "torch-cuda")
PRECISIONS = {  # what each target can measure; the first is its default
    "ort-cpu": ("fp32", "int8"),
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
    if name == "torch-cuda" and not _cuda_available():
        raise TargetUnavailable("target torch-cuda unavailable: no CUDA GPU is visible")
    return name


@dataclass(frozen=True)
class OrtFactory:
    """Opens an ONNX Runtime session on in-memory ONNX bytes (picklable: it can be sent to a
    fresh measuring process)."""

    onnx_bytes: bytes
    batch: int
    threads: int | None

    def __call__(self) -> Runtime:
        return OrtRuntime(self.onnx_bytes, batch=self.batch, threads=self.threads)


@dataclass(frozen=True)
class TrtFactory:
    """Deserializes an engine into a fresh TensorRT runtime (picklable)."""

    engine: bytes
    batch: int

    def __call__(self) -> Runtime:
        from edge.tensorrt import TrtRuntime

        return TrtRuntime(self.engine, batch=self.batch)


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

    def __post_init__(self) -> None:
        allowed = PRECISIONS[self.name]
        if self.precision is None:
            self.precision = allowed[0]
        if self.precision not in allowed:
            raise ValueError(
                f"--precision {self.precision}: target {self.name} measures {', '.join(allowed)}"
            )
        if self.threads is None and self.name in ("ort-cpu", "torch-cpu"):
            self.threads = (
                len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity")
                else os.cpu_count() or 1
            )
        self.env = environment(
            self.threads, "cuda" if self.name in ("trt", "torch-cuda") else "cpu"
        )
        # an fp32 fingerprint stays what it was before precisions existed (caches remain valid)
        runtime = self.name if self.precision == "fp32" else f"{self.name}-{self.precision}"
        self.fingerprint = fingerprint(self.env, runtime, self.batch)

    @property
    def description(self) -> str:
        """The device and software a latency belongs to, in words (the study records it)."""
        versions = self.env.get("versions", {})
        package = {"ort": "onnxruntime", "trt": "tensorrt"}.get(self.runtime, "torch")
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
        return {"ort-cpu": "ort", "trt": "trt"}.get(self.name, "torch")

    def prepare(
        self, config: ModelConfig, timings: dict[str, float] | None = None
    ) -> Callable[[], Runtime]:
        """Build (random weights) and fuse ``config``, export or compile it once, and return a
        factory that opens a fresh runtime on it (cheap: a session, not an export)."""
        timings = timings if timings is not None else {}
        start = time.perf_counter()
        model = evit.create_model(config).eval()
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
                return TrtFactory(engine, self.batch)
            onnx_bytes = path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
        return OrtFactory(onnx_bytes, self.batch, self.threads)

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
