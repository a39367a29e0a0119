from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edge.quantize
import evit
from edge.cli import main
from edge.export import Int8Options, VerificationError, export_onnx
from edge.onnxfile import read_metadata
from edge.quantize import QuantizationError, calibration_images, is_quantized, quantize_graph
from evit.config import save_yaml
from evit.train.synthetic import write_synthetic
from tests.conftest import randomize, tiny_config

# a random (if live) 10-class network quantizes less gracefully than a trained one (trained M0:
# top-1 agreement 1.0, cosine 0.998, docs/benchmarks.md); these thresholds separate a correct
# quantization of it from a broken one
THRESHOLDS = {"min_top1": 0.8, "min_cosine": 0.98}


@pytest.fixture(scope="module")
def live_tiny():
    return randomize(evit.create_model(tiny_config()), seed=4).eval()


def test_int8_export_is_qdq_calibrated_verified_and_says_so(live_tiny, tmp_path):
    result = export_onnx(live_tiny, tmp_path / "tiny.int8.onnx", int8=Int8Options(**THRESHOLDS))
    proto = onnx.load(str(result.path))
    assert result.precision == "int8-qdq" and is_quantized(proto)
    meta = read_metadata(result.path)
    assert meta["precision"] == "int8-qdq"
    calibration = meta["calibration"]
    assert calibration["source"].startswith("generated frames") and calibration["images"] == 32
    assert "Softmax" in meta["float_nodes"]  # kept in float, and listed
    check = meta["int8_verification"]
    assert check["passed"] and check["cosine"] >= 0.98 and check["samples"] == 16
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    assert all(i.endswith("_DequantizeLinear_Output") for i in conv.input[:2])


def test_symmetric_int8_activations_for_tensorrt(live_tiny, tmp_path):
    options = Int8Options(activations="int8", **THRESHOLDS)
    result = export_onnx(live_tiny, tmp_path / "trt.int8.onnx", int8=options)
    proto = onnx.load(str(result.path))
    zero_points = [
        numpy_helper.to_array(i) for i in proto.graph.initializer if i.name.endswith("_zero_point")
    ]
    assert zero_points and not any(z.dtype == np.uint8 for z in zero_points)
    assert all(not z.any() for z in zero_points)  # symmetric: every zero point is 0
    assert read_metadata(result.path)["int8_activations"] == "int8"


def test_calibration_from_an_image_folder(live_tiny, tmp_path):
    write_synthetic(tmp_path / "data", num_classes=3, per_class=6, size=64)
    options = Int8Options(
        calib=tmp_path / "data" / "train", calib_images=8, min_top1=0, min_cosine=0
    )
    result = export_onnx(live_tiny, tmp_path / "folder.int8.onnx", int8=options)
    calibration = read_metadata(result.path)["calibration"]
    assert calibration == {"source": f"8 images from {tmp_path / 'data' / 'train'}", "images": 8}


def test_a_broken_quantization_fails_verification(live_tiny, tmp_path, monkeypatch):
    real = edge.quantize.quantize_graph

    def wrong_scale(fp32, images, batch, activations="uint8"):
        proto = real(fp32, images, batch, activations)
        for init in proto.graph.initializer:  # one weight scale of the first conv, 10x off
            if "patch_embed.conv1.weight" in init.name and init.name.endswith("_scale"):
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 10, init.name))
                return proto
        raise AssertionError("no weight scale found")

    monkeypatch.setattr(edge.quantize, "quantize_graph", wrong_scale)
    out = tmp_path / "broken.int8.onnx"
    with pytest.raises(VerificationError, match="int8 vs fp32 on 16 held-out images"):
        export_onnx(live_tiny, out, int8=Int8Options(**THRESHOLDS))
    assert not out.exists() and (tmp_path / "broken.int8.unverified.onnx").exists()


def test_int8_cli_and_its_bad_input(tmp_path, capsys):
    yaml = str(save_yaml(tiny_config(), tmp_path / "tiny.yaml"))
    (tmp_path / "empty").mkdir()
    cases = [
        (["--int8", "--fp16"], "--int8 and --fp16 exclude each other"),
        (["--int8", "--calib", str(tmp_path / "empty")], "no images"),
        (["--int8", "--calib", str(tmp_path / "none")], "folder not found"),
        (["--int8", "--batch", "4", "--calib-images", "2"], "at least one batch of 4"),
    ]
    for extra, match in cases:
        assert main(["export", yaml, "--out", str(tmp_path / "x.onnx"), *extra]) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.onnx").exists()


def test_an_already_quantized_graph_is_refused(live_tiny, tmp_path):
    result = export_onnx(live_tiny, tmp_path / "q.onnx", int8=Int8Options(min_top1=0, min_cosine=0))
    images, _ = calibration_images(None, 2, 64, 0)
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_graph(onnx.load(str(result.path)), images, 1)
    with pytest.raises(QuantizationError, match="choose uint8 or int8"):
        quantize_graph(onnx.load(str(result.path)), images, 1, "int4")
    unreadable = tmp_path / "calib"
    unreadable.mkdir()
    (unreadable / "a.png").write_bytes(b"not an image")
    with pytest.raises(QuantizationError, match="fewer than 1 readable images"):
        calibration_images(unreadable, 4, 64, 0)
    assert np.isfinite(images).all()


@pytest.fixture(scope="module")
def m0_fp32(tmp_path_factory):
    m0 = randomize(evit.create_model(evit.load_config("m0").at_img_size(64)), seed=1).eval()
    return onnx.load(str(export_onnx(m0, tmp_path_factory.mktemp("m0") / "m0.onnx").path))


def test_op_groups_cover_every_quantizable_layer_and_select_nodes(m0_fp32):
    from edge.quantize import OP_GROUPS, op_group, quantizable_nodes

    fp32 = onnx.ModelProto()
    fp32.CopyFrom(m0_fp32)
    names = quantizable_nodes(fp32)
    groups = {op_group(n) for n in names}
    assert None not in groups, [n for n in names if op_group(n) is None]
    assert groups == set(OP_GROUPS)  # every group occurs in M0
    ffn = quantizable_nodes(fp32, ["ffn"])
    assert ffn and all("/ffn" in n for n in ffn)
    images, _ = calibration_images(None, 2, 64, 0)
    partial = quantize_graph(fp32, images, 1, nodes=ffn)
    quantized = {
        n.name
        for n in partial.graph.node
        if n.op_type in ("Conv", "MatMul", "Gemm")
        and any(i.endswith("_DequantizeLinear_Output") for i in n.input)
    }
    assert quantized == set(ffn)  # only the FFN layers, nothing else
    with pytest.raises(QuantizationError, match="no nodes to quantize"):
        quantize_graph(fp32, images, 1, nodes=[])
    # the default leaves the depthwise convs and the attention matmuls in float, for speed
    default = quantize_graph(fp32, images, 1)
    producer = {o: n for n in default.graph.node for o in n.output}
    quantized = {  # its weights (or second operand) dequantized: a float op may share a DQ input
        n.name
        for n in default.graph.node
        if n.op_type in ("Conv", "MatMul", "Gemm")
        and getattr(producer.get(n.input[1]), "op_type", None) == "DequantizeLinear"
    }
    floats = set(names) - quantized
    assert floats and {op_group(n) for n in floats} == set(edge.quantize.FLOAT_GROUPS)
    assert {op_group(n) for n in quantized} == set(OP_GROUPS) - set(edge.quantize.FLOAT_GROUPS)
    # a graph whose node names carry no roles (not one of our exports): every layer
    for i, node in enumerate(fp32.graph.node):
        node.name = f"node{i}"
    assert edge.quantize.default_nodes(fp32) is None


def _ops(proto: onnx.ModelProto, op_type: str) -> list[str]:
    return [n.name for n in proto.graph.node if n.op_type == op_type]


def test_the_default_quantizes_the_relus_so_that_int8_layers_chain(m0_fp32):
    from edge.quantize import residual_add_nodes, select_nodes

    images, _ = calibration_images(None, 2, 64, 0)
    layers_only = quantize_graph(m0_fp32, images, 1, nodes=select_nodes(m0_fp32, relus=False))
    default = quantize_graph(m0_fp32, images, 1)
    ffn_relu = "/stages/stages.0/blocks/blocks.0/ffn0/act/Relu"
    assert ffn_relu in _ops(layers_only, "Relu") and ffn_relu not in _ops(default, "Relu")
    # pw1's quantized output feeds pw2's DequantizeLinear directly: no DQ -> Relu -> Q between
    producer = {o: n for n in default.graph.node for o in n.output}
    pw2 = next(n for n in default.graph.node if n.name.endswith("ffn0/pw2/Conv"))
    dq = producer[pw2.input[0]]
    chain = [dq.op_type, producer[dq.input[0]].op_type, producer[producer[dq.input[0]].input[0]]]
    assert chain[:2] == ["DequantizeLinear", "QuantizeLinear"]
    assert chain[2].name.endswith("ffn0/pw1/Conv")
    assert len(_ops(default, "QuantizeLinear")) < len(_ops(layers_only, "QuantizeLinear"))
    # a ReLU whose input stays in float (after the attention's concat) is left alone
    assert any(n.endswith("attn/act/Relu") for n in _ops(default, "Relu"))
    # residual Adds, when asked: the FFNs' only, never the attention's bias or cascade adds
    adds = residual_add_nodes(m0_fp32)
    ends = ("ffn0/Add", "ffn1/Add", "res1.1/Add", "res2.1/Add")
    assert adds and all(n.endswith(ends) for n in adds)
    with_adds = quantize_graph(m0_fp32, images, 1, nodes=select_nodes(m0_fp32, adds=True))

    def quantized_adds(proto: onnx.ModelProto) -> set[str]:  # read only through a Q node
        readers: dict[str, list[str]] = {}
        for n in proto.graph.node:
            for i in n.input:
                readers.setdefault(i, []).append(n.op_type)
        return {
            n.name
            for n in proto.graph.node
            if n.op_type == "Add" and set(readers.get(n.output[0], [])) == {"QuantizeLinear"}
        }

    assert set(adds) <= quantized_adds(with_adds)
    assert "/stages/stages.0/blocks/blocks.0/ffn0/Add" not in quantized_adds(default)
    assert not any("/heads." in n for n in quantized_adds(with_adds))  # the bias adds
