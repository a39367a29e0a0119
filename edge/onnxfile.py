"""Exported files and their metadata, without PyTorch.

Everything needed to *run* an exported model (read its metadata, load it) lives here, so that a
deployment that only runs ONNX files needs onnx, onnxruntime and NumPy, not torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import onnx

from evit.config import ModelConfig

INPUT_NAME, OUTPUT_NAME = "image", "logits"


def set_metadata(model_proto: onnx.ModelProto, meta: dict[str, str]) -> None:
    existing = {p.key: p for p in model_proto.metadata_props}
    for key, value in meta.items():
        if key in existing:
            existing[key].value = value
        else:
            model_proto.metadata_props.add(key=key, value=value)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata of an exported file, decoded (config as a :class:`ModelConfig`)."""
    model_proto = load_onnx(path, load_weights=False)
    raw = {p.key: p.value for p in model_proto.metadata_props}
    out: dict[str, Any] = {
        k.removeprefix("evit."): v for k, v in raw.items() if k.startswith("evit.")
    }
    decoded = ("input_size", "mean", "std", "class_names", "verification", "params", "macs")
    for key in (*decoded, "calibration", "float_nodes", "int8_verification"):
        if key in out and out[key] != "skipped":
            out[key] = json.loads(out[key])
    if "config" in out:
        import yaml

        out["config"] = ModelConfig.from_dict(
            yaml.safe_load(out["config"]), source=f"{path} metadata"
        ).validate()
    out["opset"] = next(
        (o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")), None
    )
    out["nodes"] = len(model_proto.graph.node)
    return out


def image_input(
    proto: onnx.ModelProto, batch: int, source: str
) -> tuple[str, tuple[int, int, int, int]]:
    """The name and run shape of a model's one image input (B, C, H, W) at ``batch``.

    Raises:
        ValueError: not one 4-D input, or a static batch other than ``batch``.
    """
    inp = proto.graph.input[0]
    dims = [
        d.dim_value if d.HasField("dim_value") else d.dim_param
        for d in inp.type.tensor_type.shape.dim
    ]
    if len(dims) != 4:
        raise ValueError(f"{source}: expected one image input (B, C, H, W), got shape {dims}")
    if isinstance(dims[0], int) and dims[0] > 0 and dims[0] != batch:
        raise ValueError(
            f"{source} was exported for batch {dims[0]}, but batch {batch} was "
            "requested; re-export with --batch N or --batch dynamic"
        )
    c, h, w = (int(d) for d in dims[1:])
    return inp.name, (batch, c, h, w)


def load_onnx(path: str | os.PathLike, load_weights: bool = True) -> onnx.ModelProto:
    """Read an ONNX file; a missing or corrupt file raises a one-line ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=load_weights)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{path} is not a readable ONNX model: {first[:200]}") from None


def ort_session(model: str | os.PathLike | bytes, threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
