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

Weights are 7-bit by default for ONNX Runtime's files (``reduce_range``: |w| <= 64): ONNX
Runtime's x86 kernels without VNNI add pairs of uint8 x int8 products in 16 bits, which 8-bit
weights overflow (``edge.cpu``), so an 8-bit file is exact only on VNNI/AMX and non-x86 CPUs. The
7-bit file is exact everywhere (docs/benchmarks.md §11 has what it costs). The symmetric
(TensorRT) file keeps 8-bit weights: TensorRT's GPU kernels sum in 32 bits.

Verification checks the *quantization*, not this CPU's kernels: the int8 graph runs as written
(:func:`reference_session`: ONNX Runtime with graph optimizations off, so every
QuantizeLinear/DequantizeLinear rounds and clips as the file says and the layers compute in
float on the dequantized values) against the fp32 graph, on images *not* used for calibration:
top-1 agreement, top-5 overlap, the cosine of the logits' image-dependent part (each class's mean
over the images removed) and the relative error of the logits themselves (a wrong output scale or
offset, which the cosine cannot see). Separately, :func:`compare_deployed` says how far a
deployed runtime (ONNX Runtime's int8 kernels on this CPU, OpenVINO) is from that reference.
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

from edge.onnxfile import INPUT_NAME, set_metadata

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
class LogitAgreement:
    """How closely one set of logits (N, classes) follows another, on the same images."""

    top1_agreement: float
    top5_overlap: float
    cosine: float  # of the image-dependent parts (see centered_cosine)
    rel_error: float  # ||a - b|| / ||b||: a scale or offset the cosine cannot see
    samples: int


@dataclass(frozen=True)
class Int8Check:
    """The quantization (the Q/DQ graph run as written) against fp32 on held-out images.

    Attributes:
        images: the held-out images, in words (a folder's or generated frames).
        deployed: a deployed runtime's agreement with that reference (:func:`compare_deployed`),
            or None where none was run (the symmetric file is TensorRT's, not this CPU's).
    """

    top1_agreement: float
    top5_overlap: float
    cosine: float
    rel_error: float
    samples: int
    min_top1: float
    min_cosine: float
    max_rel_error: float
    images: str = ""
    deployed: DeployedCheck | None = None

    @property
    def passed(self) -> bool:
        return (
            self.top1_agreement >= self.min_top1
            and self.cosine >= self.min_cosine
            and self.rel_error <= self.max_rel_error
        )

    def summary(self) -> str:
        """One line: the figures against their limits, and the deployed runtime's."""
        line = (
            f"int8 (Q/DQ reference) vs fp32 on {self.samples} held-out images ({self.images}): "
            f"top-1 agreement {self.top1_agreement:.2f} (min {self.min_top1}), logit cosine "
            f"{self.cosine:.4f} (min {self.min_cosine}), relative error {self.rel_error:.3f} "
            f"(max {self.max_rel_error})"
        )
        return line + (f"; {self.deployed.summary()}" if self.deployed else "")


# A deployed runtime that computes the Q/DQ graph correctly differs from it only by rounding
# (integer sums land on the other side of a rounding boundary now and then), which is about as
# large as the quantization's own error (every value rounded) or smaller. Measured as
# deployed-vs-reference relative error over reference-vs-fp32 relative error
# (docs/benchmarks.md §11): exact kernels 0.34-0.60 on trained M0/M2 and 0.89-1.11 on live
# random M0s (whose random BN scales amplify every flipped rounding); ONNX Runtime's saturating
# kernels (8-bit weights, x86 without VNNI) 2.2-3.2 on the trained models and 1.56-3.0 on live
# random ones. The limit sits between the two groups.
DEPLOYED_ERROR_RATIO = 1.3
# The quantization's own error counts at most this much in that limit: a runtime whose logits
# are twice its graph's reads relative error ~1.0 whatever the model, so where a graph is itself
# 0.77 or more off fp32 (the tiny live test network read 0.28-0.91 over eight seeds) 1.3x its
# own error let doubled logits pass. On live M0s (AVX2 kind, benchmarks/bench_deployed_check.py)
# the right paths (ONNX Runtime and OpenVINO int8) read 0.24-0.56 against the graph where its
# own error was 0.46-0.56, doubled logits 1.05-1.29; on one seed of five the graph was 1.05 off
# fp32 and the right paths (0.98-1.01) fail too: no limit tells them apart there, which is why
# --target auto checks on one fixed network (evit.live.live_model, seed 0: own 0.50).
QUANTIZATION_ERROR_CAP = 0.6


@dataclass(frozen=True)
class DeployedCheck:
    """A deployed runtime's int8 logits against the Q/DQ reference's.

    Passes when their relative error is at most :data:`DEPLOYED_ERROR_RATIO` times the
    quantization's own (the reference's against fp32), counted at most
    :data:`QUANTIZATION_ERROR_CAP`."""

    runtime: str  # e.g. "onnxruntime int8 kernels on x86-no-vnni (avx avx2)"
    cosine: float
    rel_error: float
    top1_agreement: float
    samples: int
    quantization_rel_error: float
    max_ratio: float = DEPLOYED_ERROR_RATIO

    @property
    def ratio(self) -> float:
        return self.rel_error / max(self.quantization_rel_error, 1e-3)

    @property
    def max_rel_error(self) -> float:
        """The most relative error a runtime that computes the graph shows (see above)."""
        own = min(max(self.quantization_rel_error, 1e-3), QUANTIZATION_ERROR_CAP)
        return self.max_ratio * own

    @property
    def passed(self) -> bool:
        return self.rel_error <= self.max_rel_error

    def summary(self) -> str:
        verdict = "agrees" if self.passed else "DISAGREES (its outputs here are wrong)"
        return (
            f"{self.runtime} vs the reference: cosine {self.cosine:.4f}, relative error "
            f"{self.rel_error:.3f} = {self.ratio:.2f}x the quantization's own "
            f"(max {self.max_ratio}x, and at most {self.max_rel_error:.3f}): {verdict}"
        )


def is_quantized(proto: onnx.ModelProto) -> bool:
    return any(node.op_type in QDQ_OPS for node in proto.graph.node)


def whole_batches(count: int, batch: int) -> int:
    """``count`` rounded up to whole batches of ``batch`` (at least one): a graph exported for a
    fixed batch takes its calibration and verification images ``batch`` at a time."""
    return max(1, -(-count // batch)) * batch


@dataclass(frozen=True)
class ImageSets:
    """Calibration images and held-out verification images (N, 3, size, size), with where
    each came from in words."""

    calib: np.ndarray
    calib_source: str
    held_out: np.ndarray
    held_out_source: str


def calibration_images(
    source: str | os.PathLike | None, count: int, size: int, seed: int, batch: int = 1
) -> tuple[np.ndarray, str]:
    """``count`` preprocessed images (N, 3, size, size), rounded up to whole batches, and where
    they came from, in words.

    Args:
        source: an image folder (searched recursively) or None for generated frames (drawn
            shapes and textures from ``evit.train.synthetic``).
    """
    sets = image_sets(source, count, 0, size, seed, batch)
    return sets.calib, sets.calib_source


def image_sets(
    source: str | os.PathLike | None,
    calib_count: int,
    verify_count: int,
    size: int,
    seed: int,
    batch: int = 1,
) -> ImageSets:
    """Calibration images and, apart from them, held-out images to verify on.

    From a folder, both come from its files (shuffled with ``seed``; no file in both); when
    the folder has too few images left over for one batch, the held-out set is generated frames
    and says so. Without a folder both are generated frames, with different seeds. Counts are
    rounded up to whole batches of ``batch``.
    """
    if calib_count < 1:
        raise QuantizationError(f"--calib-images {calib_count}: must be at least 1")
    calib_n = whole_batches(calib_count, batch)
    verify_n = whole_batches(verify_count, batch) if verify_count > 0 else 0
    if source is None:
        calib = _generated(calib_n, size, seed)
        held_out = _generated(verify_n, size, seed + 1)
        return ImageSets(
            calib,
            f"generated frames (synthetic shapes, seed {seed})",
            held_out,
            f"generated frames, seed {seed + 1}",
        )
    root = Path(source)
    pictures = _folder_pictures(root, calib_n + verify_n, seed)
    if len(pictures) < batch:
        raise QuantizationError(f"--calib {root}: fewer than {batch} readable images")
    calib_pictures = pictures[: min(calib_n, len(pictures) // batch * batch)]
    rest = pictures[len(calib_pictures) :]
    rest = rest[: len(rest) // batch * batch]
    calib = _prepare(calib_pictures, size)
    described = f"{len(calib_pictures)} images from {root}"
    if calib_n > len(calib_pictures):
        log.warning("calibration: %s holds only %d readable images", root, len(pictures))
    if verify_n == 0:
        return ImageSets(calib, described, _generated(0, size, seed), "")
    if rest:
        return ImageSets(
            calib, described, _prepare(rest, size), f"{len(rest)} other images from {root}"
        )
    return ImageSets(
        calib,
        described,
        _generated(verify_n, size, seed + 1),
        f"generated frames (no image of {root} left over from calibration)",
    )


def _generated(count: int, size: int, seed: int) -> np.ndarray:
    from evit.train.synthetic import PATTERNS, SHAPES, draw_image

    rng = np.random.default_rng(seed)
    pictures = [
        draw_image(SHAPES[i % len(SHAPES)], PATTERNS[i % len(PATTERNS)], size, rng)
        for i in range(count)
    ]
    return _prepare(pictures, size) if pictures else np.zeros((0, 3, size, size), np.float32)


def _folder_pictures(root: Path, count: int, seed: int) -> list[Any]:
    """Up to ``count`` readable images of ``root``, in a seeded random order, as the
    evaluation pipeline reads them (EXIF orientation applied, RGB)."""
    from evit.train.data import IMAGE_EXTENSIONS, load_rgb

    if not root.is_dir():
        raise QuantizationError(f"--calib {root}: folder not found")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise QuantizationError(f"--calib {root}: no images (extensions {IMAGE_EXTENSIONS})")
    np.random.default_rng(seed).shuffle(files)
    pictures = []
    for path in files:
        try:
            pictures.append(load_rgb(path))
        except Exception:  # skipped, like unreadable training images
            log.warning("calibration: skipped unreadable %s", path)
        if len(pictures) == count:
            break
    return pictures


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
    weight_bits: int | None = None,
) -> onnx.ModelProto:
    """A QDQ int8 copy of ``fp32`` calibrated on ``images``.

    Args:
        activations: ``uint8`` (asymmetric: ONNX Runtime's fast u8s8 kernels on x86) or
            ``int8`` (symmetric, zero point 0: what TensorRT requires).
        nodes: quantize only these nodes (names; see :func:`quantizable_nodes`); None: the
            default selection (:func:`default_nodes`).
        weight_bits: 7 (exact on every CPU) or 8 (exact only where int8 sums are 32-bit: VNNI,
            AMX, non-x86, TensorRT); None: :func:`default_weight_bits`.
    """
    if activations not in ACTIVATIONS:
        raise QuantizationError(f"activations {activations!r}: choose {' or '.join(ACTIVATIONS)}")
    weight_bits = default_weight_bits(activations) if weight_bits is None else weight_bits
    if weight_bits not in WEIGHT_BITS:
        raise QuantizationError(f"weight bits {weight_bits}: choose 7 or 8")
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
            _quantize_static(src, dst, images, batch, activations, nodes, weight_bits)
        finally:
            logging.disable(previous)
        proto = onnx.load(str(dst))
    set_metadata(proto, {WEIGHT_BITS_KEY: str(weight_bits)})
    return proto


WEIGHT_BITS = (7, 8)
WEIGHT_BITS_KEY = "evit.int8_weight_bits"


def default_weight_bits(activations: str) -> int:
    """7 for ONNX Runtime's uint8 files (exact on every CPU, ``edge.cpu``), 8 for the symmetric
    files that TensorRT runs (its GPU kernels sum in 32 bits)."""
    return 7 if activations == "uint8" else 8


def weight_bits_of(proto: onnx.ModelProto) -> int | None:
    """The weights' bits an int8 file says it has (None: it does not say)."""
    value = next((p.value for p in proto.metadata_props if p.key == WEIGHT_BITS_KEY), None)
    return int(value) if value is not None else None


def cpu_warning(proto: onnx.ModelProto) -> str | None:
    """One line when running the Q/DQ file ``proto`` on this CPU would saturate (None: it
    would not, or the file is not quantized)."""
    from edge.cpu import int8_weight_warning

    return int8_weight_warning(weight_bits_of(proto)) if is_quantized(proto) else None


def exact_on(weight_bits: int) -> str:
    """Where a file with ``weight_bits``-bit weights computes what its Q/DQ graph says."""
    if weight_bits <= 7:
        return "every CPU and TensorRT"
    return (
        "x86 CPUs with VNNI or AMX (avx512_vnni, avx_vnni, amx_int8), non-x86 CPUs and TensorRT; "
        "ONNX Runtime's int8 kernels saturate on x86 CPUs without VNNI"
    )


def _quantize_static(
    src: Path,
    dst: Path,
    images: np.ndarray,
    batch: int,
    activations: str,
    nodes: Any,
    weight_bits: int,
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
        reduce_range=weight_bits == 7,  # weights only: |w| <= 64
        extra_options={"ActivationSymmetric": activations == "int8", "WeightSymmetric": True},
    )


def centered_cosine(q: np.ndarray, f: np.ndarray) -> float:
    """Cosine of two sets of logits (N, classes) after removing each class's mean over the
    images: a constant offset (e.g. a head bias that dominates a random network's output)
    would otherwise make any two graphs look alike."""
    qc, fc = (q - q.mean(axis=0)).ravel(), (f - f.mean(axis=0)).ravel()
    return float(np.dot(qc, fc) / max(np.linalg.norm(qc) * np.linalg.norm(fc), 1e-30))


def logit_agreement(a: np.ndarray, b: np.ndarray) -> LogitAgreement:
    """How closely logits ``a`` follow ``b`` (both (N, classes), the same images)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    top5a, top5b = np.argsort(-a, axis=1)[:, :5], np.argsort(-b, axis=1)[:, :5]
    overlap = np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(top5a, top5b)])
    return LogitAgreement(
        top1_agreement=float(np.mean(a.argmax(1) == b.argmax(1))),
        top5_overlap=float(overlap),
        cosine=centered_cosine(a, b),
        rel_error=float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)),
        samples=len(a),
    )


def reference_session(proto: onnx.ModelProto) -> Any:
    """ONNX Runtime with every graph optimization off: each QuantizeLinear/DequantizeLinear
    rounds and clips as written and each layer computes in float on the dequantized values, so
    no int8 kernel (and no CPU's saturation) takes part. What a correct int8 runtime computes,
    up to the rounding of its integer sums."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _run_batches(session: Any, images: np.ndarray, batch: int) -> np.ndarray:
    outs = [
        session.run(None, {INPUT_NAME: images[i : i + batch]})[0]
        for i in range(0, len(images) - batch + 1, batch)
    ]
    return np.concatenate(outs).astype(np.float64)


def _batch_of(proto: onnx.ModelProto) -> int:
    return proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value or 1


def compare_int8(
    int8: onnx.ModelProto,
    fp32: onnx.ModelProto,
    images: np.ndarray,
    min_top1: float,
    min_cosine: float,
    max_rel_error: float = 0.25,
    images_source: str = "",
    deployed: bool | None = None,
) -> Int8Check:
    """The quantization's check: the Q/DQ graph run as written (:func:`reference_session`)
    against the fp32 graph on ``images``, and (``deployed``; default: for uint8 files, which
    are ONNX Runtime's) ONNX Runtime's int8 kernels on this CPU against that reference."""
    from edge.onnxfile import ort_session

    batch = _batch_of(fp32)
    reference = _run_batches(reference_session(int8), images, batch)
    fp32_logits = _run_batches(ort_session(fp32.SerializeToString()), images, batch)
    agreement = logit_agreement(reference, fp32_logits)
    if deployed is None:
        deployed = activations_of(int8) == "uint8"
    kernels = None
    if deployed:
        here = _run_batches(ort_session(int8.SerializeToString()), images, batch)
        kernels = compare_deployed(
            here, reference, fp32_logits, f"onnxruntime int8 kernels on {_isa()}"
        )
    return Int8Check(
        **asdict(agreement),
        min_top1=min_top1,
        min_cosine=min_cosine,
        max_rel_error=max_rel_error,
        images=images_source,
        deployed=kernels,
    )


def _isa() -> str:
    from edge.cpu import describe_isa

    return describe_isa()


def compare_deployed(
    logits: np.ndarray, reference: np.ndarray, fp32: np.ndarray, runtime: str
) -> DeployedCheck:
    """A deployed runtime's int8 ``logits`` against the Q/DQ reference's on the same images,
    measured against the quantization's own error (``reference`` against ``fp32``)."""
    agreement = logit_agreement(logits, reference)
    return DeployedCheck(
        runtime=runtime,
        cosine=agreement.cosine,
        rel_error=agreement.rel_error,
        top1_agreement=agreement.top1_agreement,
        samples=agreement.samples,
        quantization_rel_error=logit_agreement(reference, fp32).rel_error,
    )


def run_reference(
    int8: str | os.PathLike | onnx.ModelProto, images: list[np.ndarray]
) -> np.ndarray:
    """The Q/DQ reference's logits for each input of ``images`` (arrays of the file's batch)."""
    proto = int8 if isinstance(int8, onnx.ModelProto) else onnx.load(str(int8))
    session = reference_session(proto)
    return np.concatenate([session.run(None, {INPUT_NAME: x})[0] for x in images]).astype(
        np.float64
    )


def activations_of(proto: onnx.ModelProto) -> str:
    """``uint8`` or ``int8``: the type of the activations' zero points in a Q/DQ graph (its
    QuantizeLinear nodes quantize activations; weights are stored quantized)."""
    types = {i.name: i.data_type for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in types:
            return "int8" if types[node.input[2]] == onnx.TensorProto.INT8 else "uint8"
    return "uint8"


def int8_metadata(
    source: str,
    count: int,
    floats: dict[str, int],
    check: Int8Check,
    activations: str,
    weight_bits: int,
) -> dict:
    return {
        "evit.precision": "int8-qdq",
        "evit.int8_activations": activations,
        WEIGHT_BITS_KEY: str(weight_bits),
        "evit.int8_exact_on": exact_on(weight_bits),
        "evit.calibration": json.dumps({"source": source, "images": count}),
        "evit.float_nodes": json.dumps(floats),
        "evit.int8_verification": json.dumps({**asdict(check), "passed": check.passed}),
    }
