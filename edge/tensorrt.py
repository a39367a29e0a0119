"""TensorRT engines: build through the ONNX parser, run with name-based tensors.

Written against the documented Python APIs of TensorRT 10.x and 11.x:
- 10.x: ``create_network(flags)``; fp16 from an fp32 ONNX uses the weak-typing builder flag
  ``BuilderFlag.FP16`` with ``OBEY_PRECISION_CONSTRAINTS`` and every Softmax pinned to fp32; a
  mixed-precision ONNX is built ``STRONGLY_TYPED`` so its types are obeyed.
- 11.x: strong typing is always on and ``BuilderFlag.FP16``, INT8 calibrators and
  ``EXPLICIT_BATCH`` are gone: fp16 means building from a mixed-precision ONNX, which
  :func:`edge.fp16.convert_to_mixed_fp16` produces (softmax and the attention-bias add in fp32).
- int8 from a Q/DQ ONNX (``edge export --precision int8 --int8-activations int8``), explicit
  quantization: 10.x sets ``BuilderFlag.INT8`` (+ ``FP16`` when asked) on the weakly typed
  network; 11.x builds it as typed (int8 where the Q/DQ nodes say, fp32 elsewhere). No
  calibrator in either: the scales are in the file.
- both: ``set_memory_pool_limit(WORKSPACE, ...)``, ``builder_optimization_level``, timing cache
  (a corrupt or other-version cache is replaced, with a warning), an optimization profile for a
  dynamic batch, ``build_serialized_network``; ``deserialize_cuda_engine``,
  ``set_input_shape``, ``set_tensor_address`` and ``execute_async_v3``. TF32 is on by default
  in both; an fp32 build clears ``BuilderFlag.TF32`` (as Polygraphy does), and the sidecar
  records it. One ``trt.Logger`` per process (TensorRT warns about a second one, and its
  messages must not interleave with ``--json`` output).

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


class TensorRTError(RuntimeError):
    """TensorRT failed a build or a run (one line; details are in TensorRT's log)."""


# keyed by the module itself, not its id(): a module (a test's stand-in) that was freed could
# hand its id to the next one, which would then get the freed module's logger
_LOGGERS: dict[Any, Any] = {}


def trt_logger(trt: Any) -> Any:
    """The process's one ``trt.Logger`` (warnings and errors only), made on first use."""
    if trt not in _LOGGERS:
        _LOGGERS[trt] = trt.Logger(trt.Logger.WARNING)
    return _LOGGERS[trt]


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
    precision: str  # what the engine computes in: fp32 | fp16 | mixed-fp16 | int8+fp16 | ...
    clear_flags: tuple[str, ...] = ()  # BuilderFlag members on by default to clear (TF32)

    @property
    def tf32(self) -> bool:
        return "TF32" not in self.clear_flags


def plan_build(version: str, fp16: bool, onnx_precision: str = "fp32") -> BuildPlan:
    """Choose network/builder flags for TensorRT ``version``.

    Args:
        version: ``tensorrt.__version__``.
        fp16: build an fp16 engine (with an int8 file: fp16 where the Q/DQ nodes leave float).
        onnx_precision: the ONNX file's precision from its metadata: ``fp32``,
            ``mixed-fp16`` or ``int8-qdq``.
    """
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise TensorRTUnavailable(f"unrecognised TensorRT version {version!r}") from None
    if major < 10:
        raise TensorRTUnavailable(
            f"TensorRT {version} is not supported: 10.x or 11.x is needed ({INSTALL_HINT})"
        )
    no_tf32 = ("TF32",)  # "fp32" means fp32: TensorRT would use TF32 tensor cores otherwise
    if onnx_precision == "int8-qdq":
        if major >= 11:
            if fp16:
                raise ValueError(
                    "TensorRT 11 builds a Q/DQ file as typed (int8 where the Q/DQ nodes are, fp32 "
                    "elsewhere): fp16 for the float part is not available; drop --precision fp16"
                )
            return BuildPlan(major, (), (), False, False, "int8+fp32", no_tf32)
        if fp16:
            return BuildPlan(major, (), ("INT8", "FP16"), False, False, "int8+fp16")
        return BuildPlan(major, (), ("INT8",), False, False, "int8+fp32", no_tf32)
    if onnx_precision not in ("fp32", "mixed-fp16"):
        raise ValueError(
            f"ONNX precision {onnx_precision!r}: TensorRT builds fp32, mixed-fp16 or int8-qdq files"
        )
    mixed_onnx = onnx_precision == "mixed-fp16"
    if major >= 11:
        fp = fp16 or mixed_onnx
        return BuildPlan(
            major,
            (),
            (),
            convert_onnx_to_fp16=fp16 and not mixed_onnx,
            pin_softmax_fp32=False,
            precision="mixed-fp16" if fp else "fp32",
            clear_flags=() if fp else no_tf32,
        )
    if mixed_onnx:
        return BuildPlan(major, ("STRONGLY_TYPED",), (), False, False, "mixed-fp16")
    if fp16:
        return BuildPlan(major, (), ("FP16", "OBEY_PRECISION_CONSTRAINTS"), False, True, "fp16")
    return BuildPlan(major, (), (), False, False, "fp32", no_tf32)


@dataclass
class EngineInfo:
    """The sidecar written next to an engine (``model.engine.json``)."""

    source_onnx: str
    tensorrt_version: str
    gpu: str
    precision: str
    tf32: bool  # whether float layers may use TF32 (off for fp32 builds)
    optimization_level: int | None  # builder_optimization_level (None: TensorRT's default, 3)
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
    optimization_level: int | None = None,
) -> BuildResult:
    """Build a serialized engine from an ONNX file (and write it to ``out`` when given).

    Args:
        onnx_path: the model (fp32, mixed fp16 from ``edge export --precision fp16``, or Q/DQ
            int8 from ``edge export --precision int8``).
        out: engine path; a JSON sidecar is written next to it.
        fp16: build in fp16 (see the module doc for how each TensorRT version does it).
        timing_cache: file to read tactic timings from and save them to (faster rebuilds,
            shared by all builds that name it).
        workspace_mb: builder workspace limit.
        batch: optimal batch of a dynamic-batch profile.
        max_batch: largest batch of a dynamic-batch profile (default ``batch``).
        optimization_level: ``builder_optimization_level`` 0-5 (None: TensorRT's default 3;
            lower builds faster and may run slower).

    Raises:
        ValueError: bad arguments or a file TensorRT cannot parse (one line).
        TensorRTError: the build failed (TensorRT's log has the details).
    """
    from edge.onnxfile import load_onnx, read_metadata

    if workspace_mb < 1:
        raise ValueError(f"workspace_mb={workspace_mb}: must be >= 1")
    if optimization_level is not None and not 0 <= optimization_level <= 5:
        raise ValueError(f"optimization level {optimization_level}: must be 0..5")
    trt = import_tensorrt()
    require_gpu()
    import torch

    proto = load_onnx(onnx_path)
    meta = read_metadata(onnx_path)
    plan = plan_build(trt.__version__, fp16, meta.get("precision", "fp32"))
    if plan.convert_onnx_to_fp16:
        from edge.fp16 import convert_to_mixed_fp16

        proto = convert_to_mixed_fp16(proto)
    logger = trt_logger(trt)
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
    for name in plan.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    if optimization_level is not None:
        config.builder_optimization_level = optimization_level
    if plan.pin_softmax_fp32:
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type == trt.LayerType.SOFTMAX:
                layer.precision = trt.float32
                layer.set_output_type(0, trt.float32)
    _use_timing_cache(config, timing_cache)
    inp = network.get_input(0)
    dynamic = inp.shape[0] == -1
    if dynamic:
        top = max(max_batch or batch, batch)
        rest = tuple(inp.shape)[1:]
        profile = builder.create_optimization_profile()
        try:
            profile.set_shape(inp.name, (1, *rest), (batch, *rest), (top, *rest))
        except (RuntimeError, TypeError, ValueError) as e:
            raise ValueError(
                f"{onnx_path}: TensorRT refused the batch profile 1..{top} (opt {batch}) for "
                f"input {inp.name} {tuple(inp.shape)}: {str(e).splitlines()[0] if str(e) else e!r}"
            ) from None
        config.add_optimization_profile(profile)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise TensorRTError(f"TensorRT failed to build an engine from {onnx_path} (see its log)")
    if timing_cache is not None:
        atomic_write_bytes(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    config_data = meta.get("config")
    info = EngineInfo(
        source_onnx=str(onnx_path),
        tensorrt_version=trt.__version__,
        gpu=torch.cuda.get_device_name(),
        precision=plan.precision,
        tf32=plan.tf32,
        optimization_level=optimization_level,
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


def _use_timing_cache(config: Any, path: str | os.PathLike | None) -> None:
    """Read the timing cache at ``path`` into ``config``; a corrupt one, or one written by
    another TensorRT version or GPU, is replaced by a new one with a one-line warning."""
    data = Path(path).read_bytes() if path is not None and Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    if data and (cache is None or not config.set_timing_cache(cache, ignore_mismatch=False)):
        why = "unreadable" if cache is None else "written by another TensorRT version or GPU"
        log.warning("timing cache %s is %s; starting a new one", path, why)
        cache = None
    if cache is None or not data:
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise TensorRTError("TensorRT could not create an empty timing cache")


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


class TorchCuda:
    """The CUDA plumbing :class:`TrtRuntime` needs, from PyTorch's allocator and streams (CPU
    tests hand the runtime a stand-in instead)."""

    def __init__(self) -> None:
        import torch

        self.torch = torch

    def stream(self) -> Any:
        return self.torch.cuda.Stream()

    def on(self, stream: Any) -> Any:
        return self.torch.cuda.stream(stream)

    def stream_handle(self, stream: Any) -> int:
        return stream.cuda_stream

    def device_buffer(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.torch.empty(shape, dtype=dtype, device="cuda")

    def pinned_buffer(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.torch.zeros(shape, dtype=dtype, pin_memory=True)

    def capture(self, stream: Any, work: Any) -> Any:
        """A CUDA graph of ``work()`` captured on ``stream``."""
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph, stream=stream):
            work()
        return graph

    def event(self) -> Any:
        return self.torch.cuda.Event(enable_timing=True)


class TrtRuntime(Runtime):
    """Run a serialized engine: host latency (copies + execute) and GPU time (CUDA events).

    Args:
        engine_bytes: a serialized engine (from :func:`build_engine` or a ``.engine`` file).
        batch: images per inference (sets the input shape of a dynamic-batch engine).
        label: name used in reports.
        cuda_graph: capture ``execute_async_v3`` in a CUDA graph and replay it; when the
            capture fails (some engines cannot be captured), fall back to plain execution with
            a warning, as trtexec does (``self.cuda_graph`` says which one runs).
        cuda: the CUDA plumbing (default :class:`TorchCuda`).
    """

    name = "trt"
    device = "cuda"

    def __init__(
        self,
        engine_bytes: bytes,
        batch: int = 1,
        label: str = "engine",
        cuda_graph: bool = False,
        cuda: Any | None = None,
    ) -> None:
        trt = import_tensorrt()
        require_gpu()
        self.cuda = cuda if cuda is not None else TorchCuda()
        self.label = label
        self._runtime = trt.Runtime(trt_logger(trt))
        self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise ValueError(
                f"{label}: TensorRT cannot deserialize this engine (built by another "
                "TensorRT version or for another GPU?); rebuild it here"
            )
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise TensorRTError(f"{label}: TensorRT could not create an execution context")
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
        self.stream = self.cuda.stream()
        self.buffers = {}
        for name in (self.input_name, self.output_name):
            dims = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(name))
            self.buffers[name] = self.cuda.device_buffer(dims, dtype)
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())
        self.host_input = self.cuda.pinned_buffer(shape, self.buffers[self.input_name].dtype)
        out = self.buffers[self.output_name]
        self.host_output = self.cuda.pinned_buffer(tuple(out.shape), out.dtype)
        self._graph = None
        self._execute()  # enqueue once before any capture, as TensorRT requires
        self.stream.synchronize()
        self.cuda_graph = False
        if cuda_graph:
            try:
                self._graph = self.cuda.capture(self.stream, self._execute)
                self.cuda_graph = True
            except Exception as e:  # the capture ended with the context manager; run plainly
                log.warning(
                    "%s: CUDA graph capture failed (%s); running without a graph",
                    label,
                    str(e).splitlines()[0] if str(e) else type(e).__name__,
                )
                self._graph = None
                self._execute()  # plain execution still works after the failed capture
                self.stream.synchronize()

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.cuda.stream_handle(self.stream)):
            raise TensorRTError(f"{self.label}: execute_async_v3 failed (see TensorRT's log)")

    def set_input(self, x: np.ndarray) -> None:
        if tuple(x.shape) != self.input_shape:
            raise ValueError(
                f"input shape {tuple(x.shape)} does not match the engine's {self.input_shape}"
            )
        import torch

        self.host_input.copy_(torch.from_numpy(np.ascontiguousarray(x)))

    def _launch(self, begin: Any = None, end: Any = None) -> None:
        with self.cuda.on(self.stream):
            self.buffers[self.input_name].copy_(self.host_input, non_blocking=True)
            if begin is not None:
                begin.record(self.stream)
            if self._graph is not None:
                self._graph.replay()
            else:
                self._execute()
            if end is not None:
                end.record(self.stream)
            self.host_output.copy_(self.buffers[self.output_name], non_blocking=True)
        self.stream.synchronize()

    def _infer(self) -> None:
        self._launch()

    def _output(self) -> np.ndarray:
        # a copy: the pinned buffer is overwritten by the next run
        return self.host_output.float().numpy().copy()

    def timed(self) -> tuple[float, float | None]:
        begin, end = self.cuda.event(), self.cuda.event()
        start = time.perf_counter()
        self._launch(begin, end)
        return (time.perf_counter() - start) * 1e3, begin.elapsed_time(end)

    def close(self) -> None:
        self._graph = None
        self.context = None
        self.engine = None
        self.buffers = {}
