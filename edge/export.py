"""Verified ONNX export.

``export_onnx`` fuses the model (``evit.fuse``), exports it with the TorchScript exporter
(``dynamo=False``: the cleanest graph for this model, and the one TensorRT 10/11 parse), runs
``onnx.checker``, writes self-describing metadata, and checks the file against PyTorch with
ONNX Runtime on random inputs. The file appears at its final path only once it passed; a file that
failed verification is kept next to it as ``*.unverified.onnx`` for inspection.

Example:
    >>> from edge.export import export_onnx
    >>> result = export_onnx("m0", "m0.onnx")  # doctest: +SKIP
    >>> result.verification.max_rel_error < 1e-4  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import evit
from edge.onnxfile import INPUT_NAME, OUTPUT_NAME, ort_session, set_metadata
from evit.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from evit.files import atomic_path

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
RTOL = 1e-3  # fp32 export vs eager, relative to the output's max magnitude
RTOL_FP16 = 2e-2


@dataclass(frozen=True)
class Verification:
    """Exported file vs a reference (PyTorch eager, or the fp32 ONNX for fp16 files)."""

    max_abs_error: float
    max_rel_error: float
    top1_agreement: float
    samples: int
    reference: str
    tolerance: float
    exercised: str = ""  # which weights the compared graph held (see export_onnx)

    @property
    def passed(self) -> bool:
        return self.max_rel_error <= self.tolerance


@dataclass(frozen=True)
class ExportResult:
    path: Path
    config: ModelConfig
    batch: int | None  # None = dynamic
    opset: int
    precision: str
    verification: Verification | None  # None when verification was skipped
    nodes: int
    int8_check: Any = None  # edge.quantize.Int8Check of an int8 export

    def to_dict(self) -> dict[str, Any]:
        """What ``python -m edge export --json`` prints: the file, its form, and its checks
        (each with ``passed``; an int8 file's own check under ``int8_check``)."""
        v, check = self.verification, self.int8_check
        int8 = None
        if check is not None:
            int8 = {**asdict(check), "passed": check.passed}
            if check.deployed is not None:
                deployed = check.deployed
                int8["deployed"] = {
                    **asdict(deployed),
                    "ratio": deployed.ratio,
                    "max_rel_error": deployed.max_rel_error,
                    "passed": deployed.passed,
                }
        return {
            "path": str(self.path),
            "model": self.config.name,
            "precision": self.precision,
            "batch": self.batch,
            "opset": self.opset,
            "nodes": self.nodes,
            "verification": None if v is None else {**asdict(v), "passed": v.passed},
            "int8_check": int8,
        }


class VerificationError(RuntimeError):
    """The exported file disagrees with its reference beyond tolerance."""


def _atomic_save(model_proto: onnx.ModelProto, path: Path) -> None:
    with atomic_path(path) as tmp:
        onnx.save(model_proto, str(tmp))


def build_metadata(
    config: ModelConfig,
    precision: str,
    batch: int | None,
    class_names: list[str] | None = None,
    verification: Verification | None = None,
) -> dict[str, str]:
    """The key/value pairs stored in the ONNX file's ``metadata_props``."""
    meta = {
        "evit.config": config.to_yaml(),
        "evit.version": evit.__version__,
        "evit.input_size": json.dumps([config.in_chans, config.img_size, config.img_size]),
        "evit.input_name": INPUT_NAME,
        "evit.batch": "dynamic" if batch is None else str(batch),
        "evit.mean": json.dumps(IMAGENET_MEAN),
        "evit.std": json.dumps(IMAGENET_STD),
        "evit.precision": precision,
        "evit.architecture_hash": config.architecture_hash(),
    }
    costs = evit.model_costs(config)
    meta["evit.params"], meta["evit.macs"] = str(costs.params), str(costs.macs)
    if class_names is not None:
        meta["evit.class_names"] = json.dumps(class_names)
    if verification is not None:
        meta["evit.verification"] = json.dumps(asdict(verification))
    return meta


def compare_outputs(
    actual: np.ndarray,
    expected: np.ndarray,
    reference: str,
    tolerance: float,
    exercised: str = "",
) -> Verification:
    actual = actual.astype(np.float64)
    expected = expected.astype(np.float64)
    abs_err = float(np.abs(actual - expected).max())
    scale = float(np.abs(expected).max()) or 1.0
    top1 = float((actual.argmax(-1) == expected.argmax(-1)).mean()) if expected.ndim == 2 else 1.0
    return Verification(
        max_abs_error=abs_err,
        max_rel_error=abs_err / scale,
        top1_agreement=top1,
        samples=int(expected.shape[0]),
        reference=reference,
        tolerance=tolerance,
        exercised=exercised,
    )


def _sample_inputs(config: ModelConfig, batch: int | None, samples: int, seed: int) -> np.ndarray:
    n = batch if batch is not None else samples
    gen = np.random.default_rng(seed)
    return gen.standard_normal((n, config.in_chans, config.img_size, config.img_size)).astype(
        np.float32
    )


def torchscript_export(
    model: torch.nn.Module, config: ModelConfig, batch: int | None, opset: int
) -> onnx.ModelProto:
    """Export with the TorchScript exporter to an in-memory ModelProto."""
    example = torch.zeros(batch or 1, config.in_chans, config.img_size, config.img_size)
    dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if batch is None else None
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_axes=dynamic,
            do_constant_folding=True,
            dynamo=False,
        )
        return onnx.load(str(path))


def _weights_provenance(net: evit.EfficientViT, source: Any) -> str:
    """Where the file's weights came from, in words (the app shows it; ``random`` first when
    the predictions mean nothing)."""
    from evit.live import dead_branches
    from evit.weights import is_checkpoint_path

    if is_checkpoint_path(source):
        return f"checkpoint {Path(source).name}"
    if dead_branches(net):
        return "random (a fresh initialization: the predictions are meaningless)"
    return "an in-memory model (not loaded from a checkpoint file)"


def _checkpoint_class_names(source: Any) -> list[str] | None:
    """Class names an ``evit train`` checkpoint carries (``None`` for other sources)."""
    from evit.weights import is_checkpoint_path, read_checkpoint_meta

    if not is_checkpoint_path(source):
        return None
    return read_checkpoint_meta(source)["class_names"]


FP16_REFERENCE = (
    "onnx-fp32 (ONNX Runtime's CPU provider runs the fp16 ops in fp32, so this checks the fp16 "
    "rounding of weights and the graph's casts, not fp16 arithmetic)"
)


def _verification_probe(
    net: evit.EfficientViT,
    deployed: torch.nn.Module,
    proto: onnx.ModelProto,
    batch: int | None,
    opset: int,
    seed: int,
) -> tuple[torch.nn.Module, onnx.ModelProto, str]:
    """The model and graph to verify, and what they exercise.

    A model whose residual branches output zero (fresh weights) would be verified only through
    its stem, patch merging and head; it is checked instead on a live copy (random BN and
    attention biases, see ``evit.live``) exported through the same path into a graph of the same
    operators, so that every attention, FFN and depthwise conv takes part.
    """
    from evit.live import dead_branches, live_copy

    dead = dead_branches(net)
    if not dead:
        return deployed, proto, "the file's own weights (every residual branch live)"
    probe = evit.fuse(live_copy(net, seed).eval())
    probe_proto = torchscript_export(probe, net.config, batch, opset)
    ops, probe_ops = _op_types(proto), _op_types(probe_proto)
    if ops != probe_ops:
        raise VerificationError(
            f"the live verification copy exported to another graph ({len(probe_ops)} vs "
            f"{len(ops)} nodes); cannot verify a model whose branches are all zero"
        )
    total = sum(1 for m in net.modules() if isinstance(m, evit.model.Residual))
    return (
        probe,
        probe_proto,
        f"a live copy with randomized BN and attention biases, same graph (the file's own "
        f"weights leave {len(dead)} of {total} residual branches at zero)",
    )


@dataclass(frozen=True)
class Int8Options:
    """How to calibrate and verify an int8 export (see ``edge.quantize``).

    Counts are rounded up to whole batches of the export's batch. With ``calib``, the held-out
    verification images are other images of that folder."""

    calib: str | os.PathLike | None = None  # image folder; None: generated frames
    calib_images: int = 32
    verify_images: int = 16  # never used for calibration
    min_top1: float = 0.9
    min_cosine: float = 0.99
    max_rel_error: float = 0.25  # of the logits: a scale or offset the cosine cannot see
    activations: str = "uint8"  # "int8" (symmetric) for TensorRT
    weight_bits: int | None = None  # None: 7 for uint8 (exact on every CPU), 8 for int8


def _quantize(
    proto: onnx.ModelProto,
    probe_proto: onnx.ModelProto,
    config: ModelConfig,
    batch: int | None,
    options: Int8Options,
    seed: int,
) -> tuple[onnx.ModelProto, Any]:
    """The file's int8 graph, checked on the probe's (live weights when the file's are dead)."""
    import edge.quantize as q

    b = batch or 1
    bits = options.weight_bits or q.default_weight_bits(options.activations)
    sets = q.image_sets(
        options.calib, options.calib_images, options.verify_images, config.img_size, seed, b
    )
    probe_int8 = q.quantize_graph(probe_proto, sets.calib, b, options.activations, weight_bits=bits)
    check = q.compare_int8(
        probe_int8,
        probe_proto,
        sets.held_out,
        options.min_top1,
        options.min_cosine,
        options.max_rel_error,
        images_source=sets.held_out_source,
    )
    file_int8 = (
        probe_int8
        if probe_proto is proto
        else q.quantize_graph(proto, sets.calib, b, options.activations, weight_bits=bits)
    )
    floats = q.float_nodes(file_int8)
    meta = q.int8_metadata(
        sets.calib_source, len(sets.calib), floats, check, options.activations, bits
    )
    set_metadata(file_int8, meta)
    return file_int8, check


def _op_types(proto: onnx.ModelProto) -> list[str]:
    """The operators in order; Identity nodes (the exporter's aliases of equal constants, which
    zero-initialized weights produce) compute nothing and are left out."""
    return [node.op_type for node in proto.graph.node if node.op_type != "Identity"]


def export_onnx(
    model: str | os.PathLike | ModelConfig | evit.EfficientViT,
    out: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    batch: int | None = 1,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    int8: Int8Options | None = None,
    class_names: list[str] | None = None,
    verify: bool = True,
    verify_samples: int = 2,
    seed: int = 0,
) -> ExportResult:
    """Fuse, export, check and verify a model; write ``out`` only if it verifies.

    Args:
        model: variant name, YAML path, config, evit checkpoint, or a built model.
        out: destination ``.onnx`` path.
        weights: checkpoint to load (random weights otherwise).
        batch: fixed batch size, or ``None`` for a dynamic batch axis.
        opset: ONNX opset (17 is what TensorRT 10/11 and ONNX Runtime handle best here).
        fp16: write a mixed-precision file (fp16 everywhere but softmax and the attention-bias
            add) for TensorRT 11's strongly typed builds; verified against the fp32 export.
        int8: write a QDQ int8 file (``edge.quantize``) calibrated and verified as these
            options say, against the fp32 export.
        class_names: stored in the metadata; by default those an ``evit train`` checkpoint
            carries.
        verify: compare against PyTorch with ONNX Runtime (skip only for throw-away files, such
            as the search's per-trial latency probes; the file's metadata then says so).
        verify_samples: images used for verification when the batch is dynamic.
        seed: seed of the random verification inputs.

    Raises:
        ValueError: bad arguments or model spec.
        VerificationError: the file disagrees with its reference (kept as ``*.unverified.onnx``).
    """
    if batch is not None and batch < 1:
        raise ValueError(f"batch={batch}: must be >= 1 or None (dynamic)")
    if fp16 and int8 is not None:
        raise ValueError("fp16 and int8 exclude each other: choose one precision")
    if not 13 <= opset <= 20:
        raise ValueError(f"opset={opset}: supported opsets are 13..20 (17 recommended)")
    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"output {out} must end in .onnx")
    if isinstance(model, evit.EfficientViT):
        net = model
    else:
        net = evit.create_model(model, weights=weights)
    if class_names is None:
        class_names = _checkpoint_class_names(weights if weights is not None else model)
    provenance = _weights_provenance(net, weights if weights is not None else model)
    config = net.config
    deployed = evit.fuse(net.eval())
    proto = torchscript_export(deployed, config, batch, opset)
    onnx.checker.check_model(proto)

    if not verify:
        set_metadata(proto, build_metadata(config, "fp32", batch, class_names))
        set_metadata(proto, {"evit.weights": provenance})
        set_metadata(proto, {"evit.verification": "skipped"})
        _atomic_save(proto, out)
        return ExportResult(
            path=out,
            config=config,
            batch=batch,
            opset=opset,
            precision="fp32",
            verification=None,
            nodes=len(proto.graph.node),
        )
    x = _sample_inputs(config, batch, verify_samples, seed)
    probe, probe_proto, exercised = _verification_probe(net, deployed, proto, batch, opset, seed)
    with torch.no_grad():
        expected = probe(torch.from_numpy(x)).numpy()
        own_expected = deployed(torch.from_numpy(x)).numpy()
    fp32_out = ort_session(probe_proto.SerializeToString()).run(None, {INPUT_NAME: x})[0]
    verification = compare_outputs(fp32_out, expected, "pytorch-eager", RTOL, exercised)
    if probe_proto is not proto:  # the file's own weights must agree too
        own_out = ort_session(proto.SerializeToString()).run(None, {INPUT_NAME: x})[0]
        own = compare_outputs(own_out, own_expected, "pytorch-eager", RTOL, exercised)
        if not own.passed:
            verification = own
    precision = "fp32"
    if fp16 and verification.passed:
        from edge.fp16 import convert_to_mixed_fp16

        proto = convert_to_mixed_fp16(proto)
        onnx.checker.check_model(proto)
        half_probe = proto if probe_proto is proto else convert_to_mixed_fp16(probe_proto)
        half_out = ort_session(half_probe.SerializeToString()).run(None, {INPUT_NAME: x})[0]
        verification = compare_outputs(half_out, fp32_out, FP16_REFERENCE, RTOL_FP16, exercised)
        precision = "mixed-fp16"
    int8_check = None
    random_weights = probe_proto is not proto  # the check then ran on a live copy
    if int8 is not None and verification.passed:
        proto, int8_check = _quantize(proto, probe_proto, config, batch, int8, seed)
        precision = "int8-qdq"
    set_metadata(proto, build_metadata(config, precision, batch, class_names, verification))
    set_metadata(proto, {"evit.weights": provenance})
    if int8_check is not None and not int8_check.passed and random_weights:
        # random weights: int8 fidelity of a random network says nothing about a trained one
        log.warning(
            "int8 check on random weights below the thresholds (cosine %.3f, relative error "
            "%.3f): recorded, not enforced; export trained weights to verify int8 accuracy",
            int8_check.cosine,
            int8_check.rel_error,
        )
    elif int8_check is not None and not int8_check.passed:
        bad = out.with_suffix(".unverified.onnx")
        _atomic_save(proto, bad)
        raise VerificationError(f"{out}: {int8_check.summary()}; kept as {bad}")
    if not verification.passed:
        bad = out.with_suffix(".unverified.onnx")
        _atomic_save(proto, bad)  # the destination, if it exists, is left as it was
        raise VerificationError(
            f"{out}: max relative error {verification.max_rel_error:.2e} vs "
            f"{verification.reference} exceeds {verification.tolerance:.0e} (top-1 agreement "
            f"{verification.top1_agreement:.2f}); kept as {bad} for inspection"
        )
    _atomic_save(proto, out)
    log.info(
        "exported %s (%s, %d nodes, max rel err %.2e)",
        out,
        precision,
        len(proto.graph.node),
        verification.max_rel_error,
    )
    return ExportResult(
        path=out,
        config=config,
        batch=batch,
        opset=opset,
        precision=precision,
        verification=verification,
        nodes=len(proto.graph.node),
        int8_check=int8_check,
    )
