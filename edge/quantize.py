"""INT8: explicit quantization (Q/DQ nodes) of an exported fp32 graph, verified against fp32.

QDQ is the format both ONNX Runtime and TensorRT 10/11 consume for explicit quantization:
``onnxruntime.quantization.quantize_static`` inserts QuantizeLinear/DequantizeLinear pairs with
per-channel symmetric int8 weights and, for activations, asymmetric uint8 (ONNX Runtime's fast
x86 path; the default) or symmetric int8 (zero point 0, as TensorRT requires), calibrated by
min/max on images prepared with the official evaluation preprocessing.
Convolutions and matrix products are quantized; what quantizes badly stays in float: the
softmax, the attention-bias add, and every other elementwise op (the metadata lists them). Of
the convolutions and matrix products, those of :data:`FLOAT_GROUPS` stay in float too: the
depthwise convolutions and the attention matmuls, which cost more in Q/DQ nodes than int8 saves
(measured in docs/benchmarks.md §15). The ReLUs are handed to the quantizer as well: one after a
quantized conv is dropped (with uint8 activations the conv's output takes the ReLU's range), so
that one int8 layer feeds the next without a dequantize/quantize pair (§15: M0 1.15x -> 1.24x,
M5 1.85x -> 2.01x fp32's speed).

Verification runs the int8 and the fp32 graphs on images *not* used for calibration and checks
top-1 agreement, top-5 overlap and the cosine of the logits against thresholds (the cosine of
their image-dependent part: each class's mean over the images is removed first).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge.onnxfile import INPUT_NAME

log = logging.getLogger(__name__)

LAYER_OPS = ["Conv", "MatMul", "Gemm"]  # the layers whose arithmetic int8 speeds up
# also handed to the quantizer, by name: a ReLU after a quantized conv, which the quantizer drops
# (the conv's uint8 output takes the ReLU's range) so that one int8 layer feeds the next without
# a DequantizeLinear/QuantizeLinear pair; and a residual Add between quantized layers (QLinearAdd)
JOINED_OPS = ["Relu", "Add"]
QUANTIZED_OPS = LAYER_OPS + JOINED_OPS
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


class QuantizationError(ValueError):
    """Bad calibration input, or a graph that cannot be quantized (one line)."""


@dataclass(frozen=True)
class Int8Check:
    """int8 vs fp32 logits on held-out images."""

    top1_agreement: float
    top5_overlap: float
    cosine: float
    samples: int
    min_top1: float
    min_cosine: float

    @property
    def passed(self) -> bool:
        return self.top1_agreement >= self.min_top1 and self.cosine >= self.min_cosine


def is_quantized(proto: onnx.ModelProto) -> bool:
    return any(node.op_type in QDQ_OPS for node in proto.graph.node)


def calibration_images(
    source: str | os.PathLike | None, count: int, size: int, seed: int, batch: int = 1
) -> tuple[np.ndarray, str]:
    """``count`` preprocessed images (N, 3, size, size) and where they came from, in words.

    Args:
        source: an image folder (searched recursively) or None for generated frames (drawn
            shapes and textures from ``evit.train.synthetic``).
    """
    if count < batch:
        raise QuantizationError(
            f"--calib-images {count}: the calibration set must hold at least one batch of {batch}"
        )
    if source is None:
        from evit.train.synthetic import PATTERNS, SHAPES, draw_image

        rng = np.random.default_rng(seed)
        pictures = [
            draw_image(SHAPES[i % len(SHAPES)], PATTERNS[i % len(PATTERNS)], size, rng)
            for i in range(count)
        ]
        return _prepare(pictures, size), f"generated frames (synthetic shapes, seed {seed})"
    from PIL import Image

    from evit.train.data import IMAGE_EXTENSIONS

    root = Path(source)
    if not root.is_dir():
        raise QuantizationError(f"--calib {root}: folder not found")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise QuantizationError(f"--calib {root}: no images (extensions {IMAGE_EXTENSIONS})")
    np.random.default_rng(seed).shuffle(files)
    pictures = []
    for path in files:
        try:
            with Image.open(path) as image:
                pictures.append(image.convert("RGB"))
        except Exception:  # skipped, like unreadable training images
            log.warning("calibration: skipped unreadable %s", path)
        if len(pictures) == count:
            break
    if len(pictures) < batch:
        raise QuantizationError(f"--calib {root}: fewer than {batch} readable images")
    return _prepare(pictures, size), f"{len(pictures)} images from {root}"


def _prepare(pictures: list[Any], size: int) -> np.ndarray:
    from evit.train.data import eval_transform

    transform = eval_transform(size)
    return np.stack([transform(p).numpy() for p in pictures]).astype(np.float32)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over an array of images."""

    def __init__(self, images: np.ndarray, batch: int) -> None:
        self.batches = [images[i : i + batch] for i in range(0, len(images) - batch + 1, batch)]

    def get_next(self) -> dict[str, np.ndarray] | None:
        return {INPUT_NAME: self.batches.pop(0)} if self.batches else None


def float_nodes(proto: onnx.ModelProto) -> dict[str, int]:
    """Op types left in float in a QDQ graph (every op but the quantized ones and Q/DQ)."""
    quantized = {
        n.name
        for n in proto.graph.node
        if n.op_type in QUANTIZED_OPS
        and any(i.endswith("_DequantizeLinear_Output") for i in n.input)
    }
    return dict(
        Counter(
            n.op_type
            for n in proto.graph.node
            if n.op_type not in QDQ_OPS and n.name not in quantized
        )
    )


ACTIVATIONS = ("uint8", "int8")


def unalias_constants(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy in which every Identity of an initializer is replaced by its own initializer.

    The exporter aliases equal constants through Identity nodes (a fresh model's all-zero
    biases, say); a quantizer then sees a bias that is not an initializer and leaves it in a
    form OpenVINO's CPU plugin has no int8 kernel for."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    inits = {i.name: i for i in out.graph.initializer}
    keep = []
    for node in out.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = out.graph.initializer.add()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
        else:
            keep.append(node)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    return out


OP_GROUPS = {  # the quantizable layers of an export, by role (node-name patterns)
    "patch_embed": r"/patch_embed/",
    "token_interaction": r"/dw[01]/",  # the depthwise convs around each attention layer
    "ffn": r"/ffn\d?/",
    "qkv": r"/qkv/",
    "query_dw": r"/heads\.\d+/dw/",  # cascaded group attention's depthwise conv on Q
    "attention_matmul": r"/attn/.*MatMul",
    "attention_proj": r"/attn/proj/",
    "downsample": r"/downsample/",
    "head": r"/head/",
}


def op_group(node_name: str) -> str | None:
    """The :data:`OP_GROUPS` role of a quantizable node, by its name (None: no group)."""
    return next((g for g, pat in OP_GROUPS.items() if re.search(pat, node_name)), None)


# left in float by default, for speed: with them quantized, ONNX Runtime ran M0 at 0.73x and M5
# at 1.54x fp32's speed, without them 1.20x and 2.02x (1 thread, one run; docs/benchmarks.md §15)
FLOAT_GROUPS = ("token_interaction", "query_dw", "attention_matmul")


def quantizable_nodes(proto: onnx.ModelProto, groups: Any = None) -> list[str]:
    """Names of the Conv/MatMul/Gemm nodes of ``proto`` (only those of ``groups`` if given)."""
    names = [n.name for n in proto.graph.node if n.op_type in LAYER_OPS]
    return names if groups is None else [n for n in names if op_group(n) in set(groups)]


def relu_nodes(proto: onnx.ModelProto) -> list[str]:
    """Every ReLU: the quantizer drops those whose input it quantizes, and no other."""
    return [n.name for n in proto.graph.node if n.op_type == "Relu"]


def residual_add_nodes(proto: onnx.ModelProto) -> list[str]:
    """The residual Adds of the FFNs (``x + pw2(relu(pw1(x)))``), not the attention's Adds."""
    return [
        n.name
        for n in proto.graph.node
        if n.op_type == "Add" and re.search(r"/(ffn\d?|res\d\.\d)/Add$", n.name)
    ]


def select_nodes(
    proto: onnx.ModelProto,
    float_groups: Any = FLOAT_GROUPS,
    relus: bool = True,
    adds: bool = False,
) -> list[str] | None:
    """Nodes to quantize: the layers outside ``float_groups``, and the ReLUs and residual Adds
    if asked. None (every layer and ReLU) for a graph whose node names have no
    :data:`OP_GROUPS` roles (not an export of this project)."""
    layers = quantizable_nodes(proto)
    if not any(op_group(n) for n in layers):
        return None
    chosen = [n for n in layers if op_group(n) not in set(float_groups)]
    chosen += relu_nodes(proto) if relus else []
    return chosen + (residual_add_nodes(proto) if adds else [])


def default_nodes(proto: onnx.ModelProto) -> list[str] | None:
    """The nodes quantized by default (:func:`select_nodes` with its defaults)."""
    return select_nodes(proto)


def quantize_graph(
    fp32: onnx.ModelProto,
    images: np.ndarray,
    batch: int,
    activations: str = "uint8",
    nodes: list[str] | None = None,
) -> onnx.ModelProto:
    """A QDQ int8 copy of ``fp32`` calibrated on ``images``.

    Args:
        activations: ``uint8`` (asymmetric: ONNX Runtime's fast u8s8 kernels on x86) or
            ``int8`` (symmetric, zero point 0: what TensorRT requires).
        nodes: quantize only these nodes (names; see :func:`quantizable_nodes`); None: the
            default selection (:func:`default_nodes`).
    """
    if activations not in ACTIVATIONS:
        raise QuantizationError(f"activations {activations!r}: choose {' or '.join(ACTIVATIONS)}")
    if is_quantized(fp32):
        raise QuantizationError("the model is already quantized (it has Q/DQ nodes)")
    if nodes is not None and not nodes:  # onnxruntime reads an empty list as "all"
        raise QuantizationError("no nodes to quantize were given")
    if nodes is None:
        nodes = default_nodes(fp32)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(unalias_constants(fp32), str(src))
        # onnxruntime's quantizer logs advice on the root logger for every call ("consider
        # pre-processing"): not for our users, whose graphs are already optimized exports
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            _quantize_static(src, dst, images, batch, activations, nodes)
        finally:
            logging.disable(previous)
        return onnx.load(str(dst))


def _quantize_static(
    src: Path, dst: Path, images: np.ndarray, batch: int, activations: str, nodes: Any
) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(src),
        str(dst),
        _Reader(images, batch),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=QUANTIZED_OPS,
        nodes_to_quantize=nodes,
        per_channel=True,
        activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": activations == "int8", "WeightSymmetric": True},
    )


def centered_cosine(q: np.ndarray, f: np.ndarray) -> float:
    """Cosine of two sets of logits (N, classes) after removing each class's mean over the
    images: a constant offset (e.g. a head bias that dominates a random network's output)
    would otherwise make any two graphs look alike."""
    qc, fc = (q - q.mean(axis=0)).ravel(), (f - f.mean(axis=0)).ravel()
    return float(np.dot(qc, fc) / max(np.linalg.norm(qc) * np.linalg.norm(fc), 1e-30))


def compare_int8(
    int8: onnx.ModelProto,
    fp32: onnx.ModelProto,
    images: np.ndarray,
    min_top1: float,
    min_cosine: float,
) -> Int8Check:
    """Run both graphs on ``images`` one at a time and compare their logits."""
    from edge.onnxfile import ort_session

    a, b = ort_session(int8.SerializeToString()), ort_session(fp32.SerializeToString())
    batch = fp32.graph.input[0].type.tensor_type.shape.dim[0].dim_value or 1
    qs, fs = [], []
    for i in range(0, len(images) - batch + 1, batch):
        x = images[i : i + batch]
        qs.append(a.run(None, {INPUT_NAME: x})[0])
        fs.append(b.run(None, {INPUT_NAME: x})[0])
    q, f = np.concatenate(qs).astype(np.float64), np.concatenate(fs).astype(np.float64)
    top5q, top5f = np.argsort(-q, axis=1)[:, :5], np.argsort(-f, axis=1)[:, :5]
    overlap = np.mean([len(set(x) & set(y)) / 5 for x, y in zip(top5q, top5f)])
    cosine = centered_cosine(q, f)
    return Int8Check(
        top1_agreement=float(np.mean(q.argmax(1) == f.argmax(1))),
        top5_overlap=float(overlap),
        cosine=cosine,
        samples=len(q),
        min_top1=min_top1,
        min_cosine=min_cosine,
    )


def int8_metadata(
    source: str, count: int, floats: dict[str, int], check: Int8Check, activations: str
) -> dict:
    return {
        "evit.precision": "int8-qdq",
        "evit.int8_activations": activations,
        "evit.calibration": json.dumps({"source": source, "images": count}),
        "evit.float_nodes": json.dumps(floats),
        "evit.int8_verification": json.dumps({**asdict(check), "passed": check.passed}),
    }
