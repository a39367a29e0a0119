"""OpenVINO on the CPU, behind the same :class:`~edge.base.Runtime` interface.

OpenVINO reads this project's ONNX files directly (no IR conversion step); an optional IR cache
(``.xml``/``.bin`` next to a ``.json`` naming the ONNX file's SHA-256) skips the conversion on
later runs, and a cache made from another file is refused. Precision:

- ``fp32``: ``INFERENCE_PRECISION_HINT`` f32, set explicitly: on a CPU with bf16 support
  OpenVINO's own default is bf16, which would make an "fp32" figure a bf16 one.
- ``bf16``: only where the CPU has it (``OPTIMIZATION_CAPABILITIES`` lists BF16: AVX-512 BF16
  or AMX). OpenVINO would silently run f32 elsewhere; this runtime refuses instead, and checks
  the compiled model's precision afterwards.
- ``int8``: from a Q/DQ file (``edge export --precision int8``); OpenVINO runs the quantized
  layers in int8 and the rest in f32. A Q/DQ file asked for as fp32/bf16 is refused (it would
  still run int8).

``openvino`` is an optional extra (``pip install '.[openvino]'``); without it a one-line
:class:`OpenVinoUnavailable` says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge.base import Runtime

PRECISIONS = ("fp32", "bf16", "int8")
ALIASES = {"f32": "fp32"}  # OpenVINO's own spelling
HINTS = ("LATENCY", "THROUGHPUT")
INSTALL_HINT = "pip install '.[openvino]'"
# OpenVINO vs ONNX Runtime on the same file (fp32 for fp32/bf16, the same Q/DQ graph for int8):
# the cosine of the image-dependent part of the logits, and top-1 agreement
# (int8: right for trained weights; on random weights int8 drifts from fp32 in both runtimes,
# see edge.crosscheck.check_int8_against_fp32)
TOLERANCE = {  # random images on random (live) weights leave near-tied logits: in bf16 and
    # int8 a few top-1 swaps among 16 images are rounding, the cosine is the real check; the
    # relative error of the logits catches a wrong scale or offset, which the cosine cannot
    "fp32": {"min_cosine": 0.9999, "min_top1": 1.0, "max_rel_error": 1e-3},
    "bf16": {"min_cosine": 0.99, "min_top1": 0.75, "max_rel_error": 0.15},
    "int8": {"min_cosine": 0.98, "min_top1": 0.75, "max_rel_error": 0.2},
}


class OpenVinoUnavailable(RuntimeError):
    """OpenVINO is not installed."""


def import_openvino() -> Any:
    try:
        import openvino as ov
    except ImportError:
        raise OpenVinoUnavailable(
            f"OpenVINO is not installed: {INSTALL_HINT} (the 'openvino' extra)"
        ) from None
    return ov


_CORE: list[Any] = []


def core() -> Any:
    """The process's one ``openvino.Core`` (OpenVINO recommends one per application)."""
    if not _CORE:
        _CORE.append(import_openvino().Core())
    return _CORE[0]


def cpu_capabilities() -> set[str]:
    """What the CPU plugin can run natively (FP32, INT8, BF16, ...)."""
    return {str(c).upper() for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")}


def cpu_name() -> str:
    return str(core().get_property("CPU", "FULL_DEVICE_NAME"))


def bf16_supported() -> bool:
    return "BF16" in cpu_capabilities()


def check_precision(precision: str) -> str:
    """The canonical precision name, or a one-line ValueError naming the allowed ones."""
    name = ALIASES.get(precision, precision)
    if name not in PRECISIONS:
        raise ValueError(f"OpenVINO precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if name == "bf16" and not bf16_supported():
        raise ValueError(
            f"--precision bf16: this CPU ({cpu_name()}) has no bf16 support (OpenVINO would "
            "silently run f32); use fp32 or int8"
        )
    return name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_model(source: str | os.PathLike | bytes, ir_cache: str | os.PathLike | None) -> Any:
    """An ``openvino.Model`` from ONNX (a path or bytes), through the IR cache when given.

    Raises:
        ValueError: the cache was made from another ONNX file, or OpenVINO cannot read it.
    """
    ov = import_openvino()
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    digest = _sha256(data)
    if ir_cache is not None:
        xml = Path(ir_cache)
        side = Path(f"{xml}.json")
        if xml.is_file():
            made_from = json.loads(side.read_text()).get("onnx_sha256") if side.is_file() else None
            if made_from != digest:
                raise ValueError(
                    f"IR cache {xml} was made from another ONNX file (sha256 "
                    f"{(made_from or 'unknown')[:12]}, this one {digest[:12]}); delete it or "
                    "give the matching ONNX file"
                )
            return core().read_model(str(xml))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(data)
            model = core().read_model(str(path))
    except Exception as e:  # OpenVINO raises its own exception types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"OpenVINO cannot read the model: {first[:200]}") from None
    if ir_cache is not None:
        xml = Path(ir_cache)
        xml.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, str(xml), compress_to_fp16=False)
        Path(f"{xml}.json").write_text(json.dumps({"onnx_sha256": digest}))
    return model


def compiled_precision(compiled: Any) -> str:
    """The float precision a compiled model runs in (``f32``, ``bf16``, ...)."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value).lower()


class OpenVinoRuntime(Runtime):
    """OpenVINO on the CPU.

    Args:
        path: the ``.onnx`` file, or its bytes.
        batch: images per inference (must match a static batch in the file).
        threads: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default).
        precision: ``fp32`` (``f32``), ``bf16`` or ``int8`` (a Q/DQ file).
        hint: ``PERFORMANCE_HINT``, ``LATENCY`` (default) or ``THROUGHPUT``.
        ir_cache: optional ``.xml`` path of an IR cache of this file.
    """

    name = "openvino"

    def __init__(
        self,
        path: str | os.PathLike | bytes,
        batch: int = 1,
        threads: int | None = None,
        precision: str = "fp32",
        hint: str = "LATENCY",
        ir_cache: str | os.PathLike | None = None,
    ) -> None:
        import onnx

        from edge.onnxfile import image_input, load_onnx
        from edge.quantize import is_quantized

        ov = import_openvino()
        if hint not in HINTS:
            raise ValueError(f"hint {hint!r}: choose one of {', '.join(HINTS)}")
        precision = check_precision(precision)
        if isinstance(path, bytes):
            proto = onnx.ModelProto.FromString(path)
            label = "<in-memory model>"
        else:
            proto = load_onnx(path, load_weights=False)
            label = str(path)
        quantized = is_quantized(proto)
        if precision == "int8" and not quantized:
            raise ValueError(
                f"{label}: --precision int8 needs a Q/DQ file; export one with "
                "'python -m edge export MODEL --precision int8'"
            )
        if precision != "int8" and quantized:
            raise ValueError(
                f"{label} is quantized (Q/DQ int8): run it with --precision int8, or give the "
                "fp32 export"
            )
        self.input_name, self.input_shape = image_input(proto, batch, label)
        self.threads, self.label, self.precision = threads, label, precision
        model = read_model(path, ir_cache)
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": hint,
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = core().compile_model(model, "CPU", config)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"OpenVINO cannot compile {label}: {first[:200]}") from None
        used = compiled_precision(self.compiled)
        wanted = "bf16" if precision == "bf16" else "f32"
        if used != wanted:
            raise ValueError(
                f"{label}: OpenVINO compiled it in {used}, not {wanted} (silent fallback)"
            )
        self.request = self.compiled.create_infer_request()
        self._ov = ov
        self.set_input(np.zeros(self.input_shape, np.float32))

    def set_input(self, x: np.ndarray) -> None:
        if tuple(x.shape) != self.input_shape:
            raise ValueError(
                f"input shape {tuple(x.shape)} does not match the model's {self.input_shape}"
            )
        self._feed = np.ascontiguousarray(x, dtype=np.float32)
        # shares the array's memory: no copy per inference
        self.request.set_input_tensor(self._ov.Tensor(self._feed, shared_memory=True))

    def _infer(self) -> None:
        self.request.infer()

    def _output(self) -> np.ndarray:
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def close(self) -> None:
        self.request = None
        self.compiled = None
