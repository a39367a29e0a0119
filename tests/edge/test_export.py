from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import evit
from edge import export as export_module
from edge.export import VerificationError, export_onnx, ort_session
from edge.fp16 import convert_to_mixed_fp16, precision_summary
from edge.onnxfile import read_metadata
from tests.conftest import VARIANTS, random_config, randomize, tiny_config


def _ort(path, x):
    return ort_session(str(path)).run(None, {"image": x})[0]


@pytest.mark.parametrize("name", VARIANTS)
def test_export_parity_m0_m5(name, tmp_path):
    model = randomize(evit.create_model(name), seed=2).eval()
    result = export_onnx(model, tmp_path / f"{name}.onnx")
    assert result.verification.passed and result.verification.max_rel_error < 1e-4
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = _ort(result.path, x)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert "BatchNormalization" not in ops and "Gather" not in ops


@pytest.mark.parametrize("seed", range(4))
def test_export_parity_random_configs(seed, tmp_path):
    config = random_config(random.Random(100 + seed))
    model = randomize(evit.create_model(config), seed=seed).eval()
    result = export_onnx(model, tmp_path / "random.onnx", batch=2)
    assert result.verification.max_rel_error < 1e-4
    assert result.verification.top1_agreement == 1.0 or config.num_classes == 0


def test_dynamic_batch(tmp_path, tiny_model):
    result = export_onnx(tiny_model, tmp_path / "dyn.onnx", batch=None)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 64, 64)).astype(np.float32)
        with torch.no_grad():
            expected = tiny_model(torch.from_numpy(x)).numpy()
        assert np.allclose(_ort(result.path, x), expected, rtol=1e-4, atol=1e-5)
    assert read_metadata(result.path)["batch"] == "dynamic"


def test_metadata_round_trip(tmp_path, tiny_model):
    names = [f"class {i}" for i in range(10)]
    result = export_onnx(tiny_model, tmp_path / "meta.onnx", class_names=names)
    meta = read_metadata(result.path)
    assert meta["config"] == tiny_model.config
    assert meta["class_names"] == names
    assert meta["input_size"] == [3, 64, 64]
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
    assert meta["version"] == evit.__version__
    assert meta["precision"] == "fp32" and meta["opset"] == 17
    assert meta["verification"]["max_rel_error"] == result.verification.max_rel_error


def test_fp16_export_keeps_softmax_in_fp32_and_says_ort_checks_only_weight_rounding(
    tmp_path, tiny_model
):
    result = export_onnx(tiny_model, tmp_path / "half.onnx", fp16=True)
    assert result.precision == "mixed-fp16"
    reference = result.verification.reference
    assert reference.startswith("onnx-fp32") and "not fp16 arithmetic" in reference
    assert read_metadata(result.path)["verification"]["reference"] == reference
    assert result.verification.max_rel_error < 2e-2
    proto = onnx.load(str(result.path))
    graph = proto.graph
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in list(inferred.value_info) + list(graph.input) + list(graph.output)
    }
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    assert softmax and all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in softmax)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert all(types[n.output[0]] == onnx.TensorProto.FLOAT16 for n in convs)
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    summary = precision_summary(proto)
    # the only fp32 weights left are the attention-bias tables
    heads = sum(s.num_heads * s.depth for s in tiny_model.config.stages)
    windows = [
        min(s.window_size, r) ** 4
        for s, r in zip(tiny_model.config.stages, tiny_model.config.stage_resolutions())
    ]
    assert summary["FLOAT"] <= heads * max(windows)


def test_fp16_conversion_of_m0_matches_fp32(tmp_path):
    model = randomize(evit.create_model("m0"), seed=4).eval()
    fp32 = export_onnx(model, tmp_path / "m0.onnx")
    half = convert_to_mixed_fp16(onnx.load(str(fp32.path)))
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    a = _ort(fp32.path, x)
    b = ort_session(half.SerializeToString()).run(None, {"image": x})[0]
    assert np.abs(a - b).max() / np.abs(a).max() < 1e-2
    assert a.argmax() == b.argmax()


def test_failed_verification_keeps_nothing_that_looks_complete(tmp_path, tiny_model, monkeypatch):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an older export")
    monkeypatch.setattr(export_module, "compare_outputs", _always_off(export_module))
    with pytest.raises(VerificationError, match=r"exceeds .*kept as .*model\.unverified\.onnx"):
        export_onnx(tiny_model, out)
    assert out.read_bytes() == b"an older export"  # a failed export never destroys a file
    assert (tmp_path / "model.unverified.onnx").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def _always_off(module):
    original = module.compare_outputs

    def compare(actual, expected, *args, **kwargs):
        return original(actual + 1.0, expected, *args, **kwargs)

    return compare


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch": 0}, "batch=0: must be >= 1"),
        ({"opset": 9}, "opset=9: supported opsets are 13..20"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_onnx(tiny_config(), tmp_path / "x.onnx", **kwargs)
    with pytest.raises(ValueError, match=r"must end in \.onnx"):
        export_onnx(tiny_config(), tmp_path / "x.bin")


def test_read_metadata_errors(tmp_path):
    with pytest.raises(ValueError, match="ONNX file not found"):
        read_metadata(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="is not a readable ONNX model"):
        read_metadata(bad)


def _perturbing(make_proto, suffix: str, done: list[str]):
    """Wrap a graph-producing function so one attention value of stage 0 is off by 1.0.

    (Fresh weights export equal zero tables as one shared constant, under another name; the
    live copy that verification checks names them all. ``done`` records what was changed.)
    """

    def wrapped(*args, **kwargs):
        proto = make_proto(*args, **kwargs)
        for init in proto.graph.initializer:
            if init.name.startswith("stages.0.") and init.name.endswith(suffix):
                values = numpy_helper.to_array(init).copy()
                values.flat[0] += 1.0
                init.CopyFrom(numpy_helper.from_array(values, init.name))
                done.append(init.name)
                break
        return proto

    return wrapped


@pytest.mark.parametrize("tensor", ["heads.0.qkv.weight", "heads.1.attention_bias"])
def test_verification_of_fresh_weights_catches_one_wrong_attention_value(
    tmp_path, monkeypatch, tensor
):
    """Fresh weights leave every branch at zero; the check runs on a live copy instead."""
    out = tmp_path / "fresh.onnx"
    export_onnx(tiny_config(), out)
    verification = read_metadata(out)["verification"]
    assert verification["exercised"].startswith("a live copy with randomized BN")
    assert "leave 12 of 14 residual branches at zero" in verification["exercised"]
    done: list[str] = []
    monkeypatch.setattr(
        export_module,
        "torchscript_export",
        _perturbing(export_module.torchscript_export, tensor, done),
    )
    with pytest.raises(VerificationError):
        export_onnx(tiny_config(), tmp_path / "broken.onnx")
    assert done  # the value was changed in the graph that verification checked
    assert not (tmp_path / "broken.onnx").exists()


def test_fp16_verification_catches_one_wrong_attention_value(tmp_path, monkeypatch):
    import edge.fp16

    done: list[str] = []
    monkeypatch.setattr(
        edge.fp16,
        "convert_to_mixed_fp16",
        _perturbing(edge.fp16.convert_to_mixed_fp16, "heads.0.qkv.weight", done),
    )
    with pytest.raises(VerificationError, match="onnx-fp32"):
        export_onnx(tiny_config(), tmp_path / "broken.onnx", fp16=True)
    assert done
