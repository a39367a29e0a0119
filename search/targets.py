"""Where latency is measured: ONNX Runtime CPU, TensorRT GPU, PyTorch CPU/CUDA.

A :class:`Target` turns a config into an open runtime (exporting ONNX or building an engine
when the target needs one) and measures it through the ``edge`` harness. ``auto`` picks TensorRT
when it and a GPU are present, else ONNX Runtime on the CPU.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import evit
from edge.export import export_onnx
from edge.latency import LatencyResult, environment, fingerprint, measure_latency
from edge.runtimes import OrtRuntime, Runtime, TorchRuntime
from evit.config import ModelConfig

TARGETS = ("auto", "ort-cpu", "trt", "torch-cpu", "torch-cuda")


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


@dataclass
class Target:
    """A concrete target with its measurement settings.

    Attributes:
        name: ``ort-cpu``, ``trt``, ``torch-cpu`` or ``torch-cuda``.
        batch: images per inference.
        threads: CPU threads (ORT intra-op / torch); None = all usable cores.
        workdir: where per-trial ONNX files and engines go (deleted after measuring).
        max_seconds: time cap of one measurement.
    """

    name: str
    batch: int = 1
    threads: int | None = None
    workdir: Path = field(default_factory=lambda: Path("."))
    max_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.threads is None and self.name in ("ort-cpu", "torch-cpu"):
            self.threads = (
                len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity")
                else os.cpu_count() or 1
            )
        self.env = environment(
            self.threads, "cuda" if self.name in ("trt", "torch-cuda") else "cpu"
        )
        self.fingerprint = fingerprint(self.env, self.name, self.batch)

    @property
    def runtime(self) -> str:
        return {"ort-cpu": "ort", "trt": "trt"}.get(self.name, "torch")

    def open(
        self, config: ModelConfig, timings: dict[str, float] | None = None, label: str | None = None
    ) -> Runtime:
        """Build (random weights), fuse, export if needed, and open a runtime for ``config``."""
        timings = timings if timings is not None else {}
        start = time.perf_counter()
        model = evit.create_model(config).eval()
        timings["build_s"] = time.perf_counter() - start
        shape = (self.batch, config.in_chans, config.img_size, config.img_size)
        if self.name in ("torch-cpu", "torch-cuda"):
            start = time.perf_counter()
            rt: Runtime = TorchRuntime(
                evit.fuse(model),
                shape,
                device="cuda" if self.name == "torch-cuda" else "cpu",
                threads=self.threads,
            )
            timings["export_s"] = time.perf_counter() - start
        else:
            self.workdir.mkdir(parents=True, exist_ok=True)
            path = self.workdir / f"{config.architecture_hash()}-{os.getpid()}.onnx"
            start = time.perf_counter()
            export_onnx(model, path, batch=self.batch, verify=False)
            timings["export_s"] = time.perf_counter() - start
            start = time.perf_counter()
            try:
                if self.name == "trt":
                    from edge.tensorrt import TrtRuntime, build_engine

                    engine = build_engine(path, None, batch=self.batch).engine_bytes
                    rt = TrtRuntime(engine, batch=self.batch)
                else:
                    rt = OrtRuntime(path, batch=self.batch, threads=self.threads)
            finally:
                path.unlink(missing_ok=True)
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
