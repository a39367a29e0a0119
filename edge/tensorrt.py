"""TensorRT engines: build through the ONNX parser, run with name-based tensors.

Written against the documented Python APIs of TensorRT 10.x and 11.x:
- 10.x: ``create_network(flags)``; fp16 from an fp32 ONNX uses the weak-typing builder flag
  ``BuilderFlag.FP16`` with ``OBEY_PRECISION_CONSTRAINTS`` and every Softmax pinned to fp32; a
  mixed-precision ONNX is built ``STRONGLY_TYPED`` so its types are obeyed.
- 11.x: strong typing is always on and ``BuilderFlag.FP16``, INT8 calibrators and
  ``EXPLICIT_BATCH`` are gone: fp16 means building from a mixed-precision ONNX, which
  :func:`edge.fp16.convert_to_mixed_fp16` produces (softmax and the attention-bias add in fp32).
- both: ``set_memory_pool_limit(WORKSPACE, ...)``, timing cache, an optimization profile for a
  dynamic batch, ``build_serialized_network``; ``deserialize_cuda_engine``,
  ``set_input_shape``, ``set_tensor_address`` and ``execute_async_v3``.

Device buffers and the stream come from PyTorch's CUDA allocator, so no other CUDA binding is
needed. ``tensorrt`` is imported only when used; without it, or without a GPU, a one-line
:class:`TensorRTUnavailable` says what is missing.

Nothing in this module has run on real TensorRT here (no machine of this project has it): the
CPU-side parts are unit-tested, the GPU tests are marked ``tensorrt`` and skip cleanly.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.base import Runtime
from evit.files import atomic_write_bytes

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install '.[trt]' on a machine with an NVIDIA GPU and driver"


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing."""


def import_tensorrt() -> Any:
    """Import ``tensorrt`` or raise :class:`TensorRTUnavailable` with the install hint."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable(f"TensorRT is not installed: {INSTALL_HINT}") from None
    return trt


def require_gpu() -> None:
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable(
            "no CUDA GPU is visible (torch.cuda.is_available() is False); "
            "TensorRT needs an NVIDIA GPU"
        )


def tensorrt_status() -> str | None:
    """None when TensorRT can run here, else the one-line reason it cannot."""
    try:
        import_tensorrt()
        require_gpu()
    except TensorRTUnavailable as e:
        return str(e)
    return None


@dataclass(frozen=True)
class BuildPlan:
    """Version-dependent choices for one build (pure data; unit-tested without TensorRT)."""

    trt_major: int
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag member names
    builder_flags: tuple[str, ...]  # BuilderFlag member names
    convert_onnx_to_fp16: bool  # rewrite the ONNX as mixed fp16 before parsing
    pin_softmax_fp32: bool  # weak typing: keep Softmax layers in fp32
    precision: str  # what the engine computes in: fp32 | fp16 | mixed-fp16


def plan_build(version: str, fp16: bool, onnx_precision: str = "fp32") -> BuildPlan:
    """Choose network/builder flags for TensorRT ``version``.

    Args:
        version: ``tensorrt.__version__``.
        fp16: build an fp16 engine.
        onnx_precision: the ONNX file's precision (``fp32`` or ``mixed-fp16``, from metadata).
    """
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise TensorRTUnavailable(f"unrecognised TensorRT version {version!r}") from None
    if major < 10:
        raise TensorRTUnavailable(
            f"TensorRT {version} is not supported: 10.x or 11.x is needed ({INSTALL_HINT})"
        )
    mixed_onnx = onnx_precision != "fp32"
    if major >= 11:
        return BuildPlan(
            major,
            (),
            (),
            convert_onnx_to_fp16=fp16 and not mixed_onnx,
            pin_softmax_fp32=False,
            precision="mixed-fp16" if fp16 or mixed_onnx else "fp32",
        )
    if mixed_onnx:
        return BuildPlan(major, ("STRONGLY_TYPED",), (), False, False, "mixed-fp16")
    if fp16:
        return BuildPlan(major, (), ("FP16", "OBEY_PRECISION_CONSTRAINTS"), False, True, "fp16")
    return BuildPlan(major, (), (), False, False, "fp32")


@dataclass
class EngineInfo:
    """The sidecar written next to an engine (``model.engine.json``)."""

    source_onnx: str
    tensorrt_version: str
    gpu: str
    precision: str
    batch: str
    workspace_mb: int
    build_seconds: float
    config: dict[str, Any] | None
    created: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@dataclass
class BuildResult:
    engine_bytes: bytes
    info: EngineInfo
    path: Path | None


def sidecar_path(engine: str | os.PathLike) -> Path:
    return Path(f"{engine}.json")


def write_engine(path: Path, engine_bytes: bytes, info: EngineInfo) -> None:
    """Sidecar first, engine last: an engine file on disk always has its sidecar."""
    side = sidecar_path(path)
    atomic_write_bytes(side, info.to_json().encode())
    try:
        atomic_write_bytes(path, engine_bytes)
    except BaseException:
        side.unlink(missing_ok=True)
        raise


def build_engine(
    onnx_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    fp16: bool = False,
    timing_cache: str | os.PathLike | None = None,
    workspace_mb: int = 1024,
    batch: int = 1,
    max_batch: int | None = None,
) -> BuildResult:
    """Build a serialized engine from an ONNX file (and write it to ``out`` when given).

    Args:
        onnx_path: the model (fp32, or mixed fp16 from ``edge export --fp16``).
        out: engine path; a JSON sidecar is written next to it.
        fp16: build in fp16 (see the module doc for how each TensorRT version does it).
        timing_cache: file to read tactic timings from and save them to (faster rebuilds).
        workspace_mb: builder workspace limit.
        batch: optimal batch of a dynamic-batch profile.
        max_batch: largest batch of a dynamic-batch profile (default ``batch``).
    """
    from edge.onnxfile import load_onnx, read_metadata

    if workspace_mb < 1:
        raise ValueError(f"workspace_mb={workspace_mb}: must be >= 1")
    trt = import_tensorrt()
    require_gpu()
    import torch

    proto = load_onnx(onnx_path)
    meta = read_metadata(onnx_path)
    plan = plan_build(trt.__version__, fp16, meta.get("precision", "fp32"))
    if plan.convert_onnx_to_fp16:
        from edge.fp16 import convert_to_mixed_fp16

        proto = convert_to_mixed_fp16(proto)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(proto.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if plan.pin_softmax_fp32:
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type == trt.LayerType.SOFTMAX:
                layer.precision = trt.float32
                layer.set_output_type(0, trt.float32)
    cache_data = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_data = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise ValueError(
            f"timing cache {timing_cache} does not match this TensorRT/GPU; "
            "delete it to start a new one"
        )
    inp = network.get_input(0)
    dynamic = inp.shape[0] == -1
    if dynamic:
        top = max(max_batch or batch, batch)
        rest = tuple(inp.shape)[1:]
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (1, *rest), (batch, *rest), (top, *rest))
        config.add_optimization_profile(profile)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log)")
    if timing_cache is not None:
        atomic_write_bytes(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    config_data = meta.get("config")
    info = EngineInfo(
        source_onnx=str(onnx_path),
        tensorrt_version=trt.__version__,
        gpu=torch.cuda.get_device_name(),
        precision=plan.precision,
        batch=f"1..{max(max_batch or batch, batch)} (opt {batch})"
        if dynamic
        else str(inp.shape[0]),
        workspace_mb=workspace_mb,
        build_seconds=round(seconds, 2),
        config=config_data.to_dict() if config_data is not None else None,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    engine_bytes = bytes(serialized)
    path = Path(out) if out is not None else None
    if path is not None:
        write_engine(path, engine_bytes, info)
    return BuildResult(engine_bytes=engine_bytes, info=info, path=path)


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if dtype not in table:
        raise ValueError(f"engine tensor type {dtype} is not supported by this runner")
    return table[dtype]


class TrtRuntime(Runtime):
    """Run a serialized engine: host latency (copies + execute) and GPU time (CUDA events).

    Args:
        engine_bytes: a serialized engine (from :func:`build_engine` or a ``.engine`` file).
        batch: images per inference (sets the input shape of a dynamic-batch engine).
        label: name used in reports.
        cuda_graph: capture ``execute_async_v3`` in a CUDA graph and replay it.
    """

    name = "trt"
    device = "cuda"

    def __init__(
        self, engine_bytes: bytes, batch: int = 1, label: str = "engine", cuda_graph: bool = False
    ) -> None:
        trt = import_tensorrt()
        require_gpu()
        import torch

        self.torch = torch
        self.label = label
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise ValueError(
                f"{label}: TensorRT cannot deserialize this engine (built by another "
                "TensorRT version or for another GPU?); rebuild it here"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"{label}: expected one input and one output, got {inputs} -> {outputs}"
            )
        self.input_name, self.output_name = inputs[0], outputs[0]
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        if shape[0] == -1:
            shape = (batch, *shape[1:])
            if not self.context.set_input_shape(self.input_name, shape):
                raise ValueError(f"{label}: batch {batch} is outside the engine's profile")
        elif shape[0] != batch:
            raise ValueError(
                f"{label} was built for batch {shape[0]}, but batch {batch} was requested"
            )
        self.input_shape = shape
        self.stream = torch.cuda.Stream()
        self.buffers = {}
        for name in (self.input_name, self.output_name):
            dims = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(name))
            self.buffers[name] = torch.empty(dims, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())
        self.host_input = torch.zeros(
            shape, dtype=self.buffers[self.input_name].dtype, pin_memory=True
        )
        self.host_output = torch.empty(
            self.buffers[self.output_name].shape,
            dtype=self.buffers[self.output_name].dtype,
            pin_memory=True,
        )
        self._graph = None
        self._execute()  # enqueue once before any capture, as TensorRT requires
        self.stream.synchronize()
        if cuda_graph:
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph, stream=self.stream):
                self._execute()

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"{self.label}: execute_async_v3 failed")

    def set_input(self, x: np.ndarray) -> None:
        if tuple(x.shape) != self.input_shape:
            raise ValueError(
                f"input shape {tuple(x.shape)} does not match the engine's {self.input_shape}"
            )
        self.host_input.copy_(self.torch.from_numpy(np.ascontiguousarray(x)))

    def _infer(self) -> None:
        with self.torch.cuda.stream(self.stream):
            self.buffers[self.input_name].copy_(self.host_input, non_blocking=True)
            if self._graph is not None:
                self._graph.replay()
            else:
                self._execute()
            self.host_output.copy_(self.buffers[self.output_name], non_blocking=True)
        self.stream.synchronize()

    def _output(self) -> np.ndarray:
        return self.host_output.float().numpy()

    def timed(self) -> tuple[float, float | None]:
        torch = self.torch
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start = time.perf_counter()
        with torch.cuda.stream(self.stream):
            self.buffers[self.input_name].copy_(self.host_input, non_blocking=True)
            begin.record(self.stream)
            if self._graph is not None:
                self._graph.replay()
            else:
                self._execute()
            end.record(self.stream)
            self.host_output.copy_(self.buffers[self.output_name], non_blocking=True)
        self.stream.synchronize()
        return (time.perf_counter() - start) * 1e3, begin.elapsed_time(end)

    def close(self) -> None:
        self._graph = None
        self.context = None
        self.engine = None
        self.buffers = {}
