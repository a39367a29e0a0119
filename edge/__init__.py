"""edge: verified ONNX/TensorRT export, runtimes, and a latency harness you can trust.

``import edge`` works on a CPU-only machine: TensorRT is imported only when used, and names are
imported on first use (PEP 562), so running an exported file (``edge.onnxfile``,
``edge.runtimes.OrtRuntime``) does not import PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ExportResult": "edge.export",
    "export_onnx": "edge.export",
    "read_metadata": "edge.onnxfile",
    "InterleavedResult": "edge.latency",
    "LatencyResult": "edge.latency",
    "measure_interleaved": "edge.latency",
    "measure_latency": "edge.latency",
    "OrtRuntime": "edge.runtimes",
    "Runtime": "edge.base",
    "TorchRuntime": "edge.runtimes",
    "open_runtime": "edge.runtimes",
}

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

if TYPE_CHECKING:
    from edge.base import Runtime
    from edge.export import ExportResult, export_onnx
    from edge.latency import InterleavedResult, LatencyResult, measure_interleaved, measure_latency
    from edge.onnxfile import read_metadata
    from edge.runtimes import OrtRuntime, TorchRuntime, open_runtime


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edge' has no attribute {name!r}")
