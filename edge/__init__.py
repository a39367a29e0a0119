"""edge: verified ONNX/TensorRT export, runtimes, and a latency harness you can trust.

``import edge`` works on a CPU-only machine: TensorRT is imported only when used.
"""

from __future__ import annotations

from edge.export import ExportResult, export_onnx, read_metadata
from edge.latency import InterleavedResult, LatencyResult, measure_interleaved, measure_latency
from edge.runtimes import OrtRuntime, Runtime, TorchRuntime, open_runtime

__all__ = [
    "ExportResult",
    "InterleavedResult",
    "LatencyResult",
    "OrtRuntime",
    "Runtime",
    "TorchRuntime",
    "export_onnx",
    "measure_interleaved",
    "measure_latency",
    "open_runtime",
    "read_metadata",
]
