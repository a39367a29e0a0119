from __future__ import annotations

import json

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

    def wrong_scale(fp32, images, batch, activations="uint8", **kwargs):
        proto = real(fp32, images, batch, activations, **kwargs)
        for init in proto.graph.initializer:  # one weight scale of the first conv, 10x off
            if "patch_embed.conv1.weight" in init.name and init.name.endswith("_scale"):
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 10, init.name))
                return proto
        raise AssertionError("no weight scale found")

    monkeypatch.setattr(edge.quantize, "quantize_graph", wrong_scale)
    out = tmp_path / "broken.int8.onnx"
    with pytest.raises(VerificationError, match=r"int8 \(Q/DQ reference\) vs fp32 on 16 held-out"):
        export_onnx(live_tiny, out, int8=Int8Options(**THRESHOLDS))
    assert not out.exists() and (tmp_path / "broken.int8.unverified.onnx").exists()


def test_int8_cli_and_its_bad_input(tmp_path, capsys):
    yaml = str(save_yaml(tiny_config(), tmp_path / "tiny.yaml"))
    (tmp_path / "empty").mkdir()
    cases = [
        (["--precision", "int8", "--calib", str(tmp_path / "empty")], "no images"),
        (["--precision", "int8", "--calib", str(tmp_path / "none")], "folder not found"),
        (["--precision", "int8", "--calib-images", "0"], "--calib-images 0: must be at least 1"),
    ]
    for extra, match in cases:
        assert main(["export", yaml, "--out", str(tmp_path / "x.onnx"), *extra]) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.onnx").exists()


def test_a_batch_above_the_image_counts_calibrates_and_verifies_on_whole_batches(tmp_path, capsys):
    yaml = str(save_yaml(tiny_config(), tmp_path / "tiny.yaml"))
    out = tmp_path / "b32.onnx"
    argv = ["export", yaml, "--out", str(out), "--precision", "int8", "--batch", "32", "--json"]
    assert main(argv) == 0
    meta = read_metadata(out)
    assert meta["calibration"]["images"] == 32 and meta["int8_verification"]["samples"] == 32
    printed = json.loads(capsys.readouterr().out)  # --json: the result, and nothing else
    assert printed["precision"] == "int8-qdq" and printed["path"] == str(out)
    assert printed["int8_check"]["samples"] == 32 and "passed" in printed["int8_check"]
    out = tmp_path / "b4.onnx"
    assert (
        main(
            [
                *("export", yaml, "--out", str(out), "--precision", "int8"),
                *("--batch", "4", "--calib-images", "2"),
            ]
        )
        == 0
    )
    assert read_metadata(out)["calibration"]["images"] == 4  # one whole batch
    printed = capsys.readouterr().out
    assert "int8 (Q/DQ reference) vs fp32 on 16 held-out images" in printed  # the int8 figures


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


def _weight_codes(proto: onnx.ModelProto) -> list[np.ndarray]:
    """The quantized weights (int8 initializers read by a DequantizeLinear)."""
    inits = {i.name: i for i in proto.graph.initializer}
    return [
        numpy_helper.to_array(inits[n.input[0]])
        for n in proto.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].data_type == onnx.TensorProto.INT8
    ]


def test_uint8_files_have_7_bit_weights_and_say_where_they_are_exact(live_tiny, tmp_path):
    result = export_onnx(live_tiny, tmp_path / "u8.onnx", int8=Int8Options(**THRESHOLDS))
    codes = _weight_codes(onnx.load(str(result.path)))
    assert (
        codes and max(int(np.abs(c).max()) for c in codes) <= 64
    )  # ONNX Runtime's 7 bits: -64..64
    meta = read_metadata(result.path)
    assert meta["int8_weight_bits"] == "7" and meta["int8_exact_on"].startswith("every CPU")
    full = export_onnx(
        live_tiny, tmp_path / "u8w8.onnx", int8=Int8Options(weight_bits=8, min_top1=0, min_cosine=0)
    )
    codes = _weight_codes(onnx.load(str(full.path)))
    assert max(int(np.abs(c).max()) for c in codes) == 127
    assert "saturate on x86 CPUs without VNNI" in read_metadata(full.path)["int8_exact_on"]
    # TensorRT's symmetric file keeps 8-bit weights (its GPU kernels sum in 32 bits)
    trt = export_onnx(
        live_tiny, tmp_path / "s8.onnx", int8=Int8Options(activations="int8", **THRESHOLDS)
    )
    assert read_metadata(trt.path)["int8_weight_bits"] == "8"
    assert read_metadata(trt.path)["int8_verification"]["deployed"] is None  # no CPU kernel
    with pytest.raises(QuantizationError, match="weight bits 4: choose 7 or 8"):
        quantize_graph(
            onnx.load(str(export_onnx(live_tiny, tmp_path / "f.onnx").path)),
            calibration_images(None, 1, 64, 0)[0],
            1,
            weight_bits=4,
        )


def _matmul_integer(weights: np.ndarray) -> onnx.ModelProto:
    from onnx import TensorProto, helper

    k, n = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])],
        "u8s8",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, n])],
        [numpy_helper.from_array(weights, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def saturating_u8s8(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x86 without VNNI (vpmaddubsw): neighbouring products summed in a saturating int16."""
    products = a.astype(np.int64)[:, :, None] * w.astype(np.int64)[None]  # (1, K, N)
    pairs = products[:, 0::2] + products[:, 1::2]
    return np.clip(pairs, -32768, 32767).sum(axis=1)


def test_u8s8_kernels_saturate_without_vnni_and_7_bit_weights_never_do():
    """The mechanism, on every CPU kind: this CPU's ONNX Runtime matches the exact sum (VNNI,
    AMX, non-x86) or the saturating model of the no-VNNI kernels; 7-bit weights give the exact
    sum under both."""
    import onnxruntime as ort

    from edge.cpu import int8_isa

    a = np.full((1, 64), 255, np.uint8)
    for bits, w in ((8, np.full((64, 8), 127, np.int8)), (7, np.full((64, 8), 64, np.int8))):
        session = ort.InferenceSession(
            _matmul_integer(w).SerializeToString(), providers=["CPUExecutionProvider"]
        )
        got = session.run(None, {"a": a})[0]
        exact = a.astype(np.int64) @ w.astype(np.int64)
        simulated = saturating_u8s8(a, w)
        if bits == 7:
            assert (simulated == exact).all() and (got == exact).all()
        elif int8_isa() == "x86-no-vnni":
            print("branch checked: x86 without VNNI (ONNX Runtime's kernels saturate)")
            assert (got == simulated).all() and (got != exact).all()
        else:
            print(f"branch checked: {int8_isa()} (ONNX Runtime's kernels sum exactly)")
            assert (got == exact).all() and (simulated != exact).all()


def test_the_check_runs_the_qdq_graph_not_this_cpus_kernels(m0_fp32):
    """8-bit weights: the quantization itself is as good as with 7 bits (the reference does
    not saturate), and only on an x86 CPU without VNNI do ONNX Runtime's kernels disagree."""
    from edge.cpu import int8_isa
    from edge.quantize import compare_int8

    images, _ = calibration_images(None, 16, 64, 0)
    held_out, _ = calibration_images(None, 16, 64, 1)
    checks = {
        bits: compare_int8(
            quantize_graph(m0_fp32, images, 1, weight_bits=bits), m0_fp32, held_out, 0.5, 0.9
        )
        for bits in (7, 8)
    }
    for check in checks.values():  # the quantization of a live M0: close to fp32 either way
        assert check.cosine > 0.9 and check.rel_error < 0.4 and check.deployed is not None
    assert checks[7].deployed.passed  # 7-bit weights: exact kernels on every CPU
    saturates = int8_isa() == "x86-no-vnni"
    print(f"branch checked: {int8_isa()}; 8-bit weights' kernels agree: {not saturates}")
    assert checks[8].deployed.passed is (not saturates)
    if saturates:  # far off, not rounding: the 16-bit sums overflowed
        assert checks[8].deployed.cosine < 0.9


def _scaled_output(proto: onnx.ModelProto, factor: float) -> onnx.ModelProto:
    """A copy whose logits come out multiplied by ``factor`` (a wrong output scale)."""
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    name = out.graph.output[0].name
    for node in out.graph.node:
        node.output[:] = [f"{o}_unscaled" if o == name else o for o in node.output]
    out.graph.initializer.append(numpy_helper.from_array(np.float32(factor), "scale_factor"))
    out.graph.node.append(helper.make_node("Mul", [f"{name}_unscaled", "scale_factor"], [name]))
    return out


def test_a_uniform_scale_on_the_output_fails_the_int8_check(live_tiny, tmp_path):
    from edge.quantize import compare_int8

    fp32 = onnx.load(str(export_onnx(live_tiny, tmp_path / "f.onnx").path))
    images, _ = calibration_images(None, 32, 64, 0)  # as export_onnx calibrates
    held_out, _ = calibration_images(None, 16, 64, 1)
    int8 = quantize_graph(fp32, images, 1)
    good = compare_int8(int8, fp32, held_out, **THRESHOLDS)
    doubled = compare_int8(_scaled_output(int8, 2.0), fp32, held_out, **THRESHOLDS)
    assert good.passed, good.summary()
    # the same argmax and the same centred cosine: only the magnitude shows it
    assert doubled.top1_agreement == good.top1_agreement
    assert doubled.cosine == pytest.approx(good.cosine, abs=1e-9)
    assert not doubled.passed and doubled.rel_error > 0.9


def test_a_deployed_check_rejects_doubled_logits_however_far_the_quantization_is():
    """A runtime's logits twice its graph's read relative error 1.0; where the graph itself is
    0.9 off fp32 (live random networks read up to 0.83), 1.3x its own error would let them in."""
    from edge.quantize import QUANTIZATION_ERROR_CAP, compare_deployed

    rng = np.random.default_rng(0)

    def off_by(a: np.ndarray, rel: float) -> np.ndarray:  # ``a`` plus noise of rel * its norm
        noise = rng.standard_normal(a.shape)
        return a + rel * np.linalg.norm(a) * noise / np.linalg.norm(noise)

    fp32 = rng.standard_normal((16, 10))
    reference = off_by(fp32, 0.9)
    own = compare_deployed(reference, reference, fp32, "x").quantization_rel_error
    assert own > QUANTIZATION_ERROR_CAP
    rounding = off_by(reference, 0.5)
    close = compare_deployed(rounding, reference, fp32, "exact kernels")
    doubled = compare_deployed(2 * reference, reference, fp32, "doubled")
    assert close.passed, close.summary()
    assert doubled.ratio < doubled.max_ratio  # the ratio alone would pass it
    assert not doubled.passed and "DISAGREES" in doubled.summary()
    assert "at most 0.780" in doubled.summary()


def test_held_out_images_come_from_the_calibration_folder(tmp_path):
    from PIL import Image

    from edge.quantize import _folder_pictures, image_sets

    write_synthetic(tmp_path / "data", num_classes=3, per_class=6, size=64)
    sets = image_sets(tmp_path / "data" / "train", 8, 16, 64, 0, batch=2)
    assert len(sets.calib) == 8 and len(sets.held_out) == 10  # 18 images: none in both
    assert sets.held_out_source == f"10 other images from {tmp_path / 'data' / 'train'}"
    assert not any(np.array_equal(c, h) for c in sets.calib for h in sets.held_out)
    exhausted = image_sets(tmp_path / "data" / "train", 18, 16, 64, 0)
    assert exhausted.held_out_source.startswith("generated frames (no image of")
    # calibration reads images as the evaluation pipeline does: EXIF orientation applied
    turned = tmp_path / "exif"
    turned.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.new("RGB", (40, 20), "red").save(turned / "a.jpg", exif=exif)
    assert _folder_pictures(turned, 1, 0)[0].size == (20, 40)


def test_a_cpu_that_saturates_gets_one_line_for_an_8_bit_file(live_tiny, tmp_path, capsys):
    import edge.cpu as cpu

    no_vnni, vnni = frozenset({"avx2", "fma"}), frozenset({"avx2", "avx512_vnni"})
    assert cpu.int8_weight_warning(7, no_vnni, x86=True) is None
    assert cpu.int8_weight_warning(8, vnni, x86=True) is None
    assert cpu.int8_weight_warning(8, no_vnni, x86=False) is None  # Arm: 32-bit dot products
    line = cpu.int8_weight_warning(8, no_vnni, x86=True)
    assert "saturate" in line and "--precision int8" in line and "\n" not in line
    assert "does not say" in cpu.int8_weight_warning(None, no_vnni, x86=True)
    full = export_onnx(
        live_tiny, tmp_path / "w8.onnx", int8=Int8Options(weight_bits=8, min_top1=0, min_cosine=0)
    ).path
    assert main(["bench", str(full), "--measure-seconds", "0.2"]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "saturate" in line]
    print(f"branch checked: {cpu.int8_isa()}")
    assert len(warned) == (1 if cpu.u8s8_saturates() else 0)
