"""Runtimes behind one small interface: ONNX Runtime (CPU), PyTorch (CPU/CUDA), TensorRT (GPU).

A runtime owns a loaded model and a prepared input of a fixed batch, and answers two calls:
``run()`` (one inference on the prepared input, returning the output as NumPy) and ``timed()``
(one inference, returning host milliseconds and, on a GPU, device milliseconds from CUDA events,
like trtexec's "GPU compute" vs "latency").

Example:
    >>> from edge.runtimes import open_runtime
    >>> rt = open_runtime("m0.onnx", threads=2)  # doctest: +SKIP
    >>> host_ms, gpu_ms = rt.timed()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.base import Runtime

log = logging.getLogger(__name__)

RUNTIMES = ("ort", "torch", "trt", "openvino")
DEVICES = ("cpu", "cuda")


class OrtRuntime(Runtime):
    """ONNX Runtime on the CPU.

    Args:
        path: the ``.onnx`` file, or its bytes.
        batch: images per inference (must match a static batch in the file).
        threads: intra-op threads (None: ONNX Runtime's default, one per core).
        optimization: graph optimization level, ``disable|basic|extended|all``.
        spinning: let idle worker threads spin; turn off inside a server so that idle threads do
            not starve request handling (costs some latency).
    """

    name = "ort"
    OPTIMIZATION = ("disable", "basic", "extended", "all")

    def __init__(
        self,
        path: str | os.PathLike | bytes,
        batch: int = 1,
        threads: int | None = None,
        optimization: str = "all",
        spinning: bool = True,
    ) -> None:
        import onnxruntime as ort

        from edge.onnxfile import image_input, load_onnx

        if optimization not in self.OPTIMIZATION:
            raise ValueError(
                f"optimization={optimization!r}: choose one of {', '.join(self.OPTIMIZATION)}"
            )
        if isinstance(path, bytes):  # an in-memory model (the search keeps no files around)
            import onnx

            proto = onnx.ModelProto.FromString(path)
            source: str | bytes = path
            path = "<in-memory model>"
        else:
            proto = load_onnx(path, load_weights=False)
            source = str(path)
        self.input_name, self.input_shape = image_input(proto, batch, str(path))
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
        options.log_severity_level = 3
        self.threads = threads
        self.label = str(path)
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"ONNX Runtime cannot load {path}: {first[:200]}") from None
        self.output_name = self.session.get_outputs()[0].name
        self.set_input(np.zeros(self.input_shape, np.float32))

    def set_input(self, x: np.ndarray) -> None:
        if tuple(x.shape) != self.input_shape:
            raise ValueError(
                f"input shape {tuple(x.shape)} does not match the model's {self.input_shape}"
            )
        self._feed = {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}
        self._last: np.ndarray | None = None

    def _infer(self) -> None:
        self._last = self.session.run([self.output_name], self._feed)[0]

    def _output(self) -> np.ndarray:
        assert self._last is not None
        return self._last

    def close(self) -> None:
        self.session = None


class TorchRuntime(Runtime):
    """Eager PyTorch on the CPU or a CUDA GPU (optionally replaying a CUDA graph).

    Args:
        model: an ``nn.Module`` (fused for deployment by the caller) taking (B, C, H, W).
        input_shape: (B, C, H, W).
        device: ``cpu`` or ``cuda``.
        threads: intra-op threads on the CPU (``torch.set_num_threads``; process-wide).
        cuda_graph: capture one inference as a CUDA graph and replay it.
    """

    name = "torch"

    def __init__(
        self,
        model: Any,
        input_shape: tuple[int, ...],
        device: str = "cpu",
        threads: int | None = None,
        cuda_graph: bool = False,
    ) -> None:
        import torch

        if device not in DEVICES:
            raise ValueError(f"device={device!r}: choose one of {', '.join(DEVICES)}")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "no CUDA GPU visible to PyTorch (torch.cuda.is_available() is "
                "False); use --device cpu"
            )
        if cuda_graph and device != "cuda":
            raise ValueError("cuda_graph needs device='cuda'")
        if threads is not None:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = device
        self.threads = threads
        self.input_shape = tuple(input_shape)
        self.label = getattr(getattr(model, "config", None), "name", type(model).__name__)
        self.model = model.to(device).eval()
        self.cuda_graph = cuda_graph
        self._graph = None
        self.set_input(np.zeros(self.input_shape, np.float32))

    def set_input(self, x: np.ndarray) -> None:
        if tuple(x.shape) != self.input_shape:
            raise ValueError(
                f"input shape {tuple(x.shape)} does not match the model's {self.input_shape}"
            )
        torch = self.torch
        self._input = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
        self._graph = None
        if self.cuda_graph:
            with torch.inference_mode():
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(3):  # warm up kernels before capture
                        self.model(self._input)
                torch.cuda.current_stream().wait_stream(stream)
                self._graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self._graph):
                    self._result = self.model(self._input)

    def _infer(self) -> None:
        if self._graph is not None:
            self._graph.replay()
            return
        with self.torch.inference_mode():
            self._result = self.model(self._input)

    def _output(self) -> np.ndarray:
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        return self._result.detach().float().cpu().numpy()

    def timed(self) -> tuple[float, float | None]:
        if self.device == "cpu":
            return super().timed()
        torch = self.torch
        start_evt = torch.cuda.Event(enable_timing=True)
        end_evt = torch.cuda.Event(enable_timing=True)
        start = time.perf_counter()
        start_evt.record()
        self._infer()
        end_evt.record()
        end_evt.synchronize()
        host = (time.perf_counter() - start) * 1e3
        return host, start_evt.elapsed_time(end_evt)

    def close(self) -> None:
        self._graph = None
        self.model = None


FILE_RUNTIMES = ("ort", "openvino", "trt")  # the runtimes that run an exported file


def runtime_status(runtime: str) -> str | None:
    """None when ``runtime`` can run on this machine, else the one-line reason it cannot."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime == "trt":
        from edge.tensorrt import tensorrt_status

        return tensorrt_status()
    if runtime == "openvino":
        from edge.openvino import OpenVinoUnavailable, import_openvino

        try:
            import_openvino()
        except OpenVinoUnavailable as e:
            return str(e)
    if runtime == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            return "PyTorch is not installed (pip install torch)"
    return None


@dataclass(frozen=True)
class RuntimeFactory:
    """Opens a fresh runtime on one exported model: the one place a runtime name becomes a
    runtime class (``open_runtime``, the search's targets and the demo all come here).

    Picklable, so that a measuring process can be handed one. ``source`` is an ONNX file or its
    bytes for ``ort`` and ``openvino``, a serialized engine (file or bytes) for ``trt``;
    ``precision`` is OpenVINO's inference precision (the other runtimes run the file's own).
    """

    runtime: str
    source: bytes | str
    batch: int = 1
    threads: int | None = None
    precision: str = "fp32"
    spinning: bool = True
    cuda_graph: bool = False
    label: str | None = None

    def __post_init__(self) -> None:
        if self.runtime not in FILE_RUNTIMES:
            raise ValueError(
                f"runtime {self.runtime!r} does not run an exported file; choose one of "
                f"{', '.join(FILE_RUNTIMES)}"
            )
        if self.precision != "fp32" and self.runtime != "openvino":
            raise ValueError(
                f"--precision {self.precision} is for --runtime openvino; {self.runtime} runs "
                "the file's own precision (export with --precision fp16 or int8)"
            )

    def __call__(self) -> Runtime:
        if self.runtime == "trt":
            from edge.tensorrt import TrtRuntime

            engine = self.source
            if isinstance(engine, str):
                engine = Path(engine).read_bytes()
            label = self.label or (self.source if isinstance(self.source, str) else "engine")
            return TrtRuntime(engine, batch=self.batch, label=label, cuda_graph=self.cuda_graph)
        if self.runtime == "openvino":
            from edge.openvino import OpenVinoRuntime

            rt: Runtime = OpenVinoRuntime(
                self.source, batch=self.batch, threads=self.threads, precision=self.precision
            )
        else:
            rt = OrtRuntime(
                self.source, batch=self.batch, threads=self.threads, spinning=self.spinning
            )
        if self.label is not None:
            rt.label = self.label
        return rt


def open_runtime(
    model: str | os.PathLike,
    *,
    runtime: str | None = None,
    device: str = "cpu",
    batch: int = 1,
    threads: int | None = None,
    weights: str | None = None,
    spinning: bool = True,
    cuda_graph: bool = False,
    precision: str | None = None,
) -> Runtime:
    """Open ``model`` (``.onnx``, ``.engine``, or a variant name / YAML / checkpoint).

    The runtime defaults by file type: ``.onnx`` -> ONNX Runtime, ``.engine`` -> TensorRT,
    anything else -> PyTorch (fused). A name with ``runtime='ort'`` or ``'openvino'`` is
    exported to a temporary ONNX file first. ``precision`` (``fp32``, ``bf16``, ``int8``) is
    OpenVINO's; the other runtimes run the file's own precision.
    """
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if batch < 1:
        raise ValueError(f"batch={batch}: must be >= 1")
    text = str(model)
    suffix = Path(text).suffix
    kind = runtime or {".onnx": "ort", ".engine": "trt", ".plan": "trt"}.get(suffix, "torch")
    if precision is not None and kind != "openvino":
        raise ValueError(
            f"--precision {precision} is for --runtime openvino; {kind} runs the file's own "
            "precision (export with --precision fp16 or int8)"
        )
    if suffix in (".onnx", ".engine", ".plan") and not Path(text).is_file():
        raise ValueError(f"model file not found: {text}")
    if kind == "trt":
        if suffix == ".onnx":
            from edge.tensorrt import build_engine

            engine = build_engine(text, out=None, batch=batch).engine_bytes
            return RuntimeFactory("trt", engine, batch, label=text, cuda_graph=cuda_graph)()
        if suffix not in (".engine", ".plan"):
            raise ValueError(
                "the TensorRT runtime takes a .engine file (build one with "
                "'python -m edge trt model.onnx') or an .onnx file"
            )
        return RuntimeFactory("trt", text, batch, cuda_graph=cuda_graph)()
    if kind in ("ort", "openvino"):
        if device != "cpu":
            raise ValueError(
                f"the {kind} runtime here is CPU only (--device cpu); use --runtime trt or "
                "--runtime torch for --device cuda"
            )
        if suffix == ".onnx":
            return RuntimeFactory(
                kind, text, batch, threads, precision or "fp32", spinning=spinning
            )()
        if kind == "openvino":
            raise ValueError(
                "the OpenVINO runtime takes an .onnx file (python -m edge export MODEL --out "
                "F.onnx)"
            )
        import tempfile

        from edge.export import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(text, Path(tmp) / "model.onnx", weights=weights, batch=batch).path
            return RuntimeFactory(kind, str(path), batch, threads, spinning=spinning, label=text)()
    if suffix in (".onnx", ".engine", ".plan"):
        raise ValueError(f"the torch runtime takes a variant name, YAML or checkpoint, not {text}")
    import evit

    net = evit.fuse(evit.create_model(text, weights=weights).eval())
    cfg = net.config
    rt = TorchRuntime(
        net,
        (batch, cfg.in_chans, cfg.img_size, cfg.img_size),
        device=device,
        threads=threads,
        cuda_graph=cuda_graph,
    )
    rt.label = text
    return rt
