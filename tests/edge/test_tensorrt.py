"""TensorRT paths: version-dependent build plans and the builder calls, checked against
stand-ins of the TensorRT 10 and 11 Python APIs (only the calls this project makes). The real
builds are under the ``tensorrt`` marker and skip with a one-line reason without TensorRT/GPU."""

from __future__ import annotations

import json
import sys
import types

import onnx
import pytest

import evit
from edge import tensorrt as trt_module
from edge.cli import main
from edge.export import export_onnx
from edge.tensorrt import TensorRTUnavailable, build_engine, plan_build, tensorrt_status
from tests.conftest import randomize, tiny_config


@pytest.mark.parametrize(
    ("version", "fp16", "onnx_precision", "network", "builder", "convert", "pin", "precision"),
    [
        ("10.8.0", False, "fp32", (), (), False, False, "fp32"),
        ("10.8.0", True, "fp32", (), ("FP16", "OBEY_PRECISION_CONSTRAINTS"), False, True, "fp16"),
        ("10.8.0", True, "mixed-fp16", ("STRONGLY_TYPED",), (), False, False, "mixed-fp16"),
        ("11.0.0", False, "fp32", (), (), False, False, "fp32"),
        ("11.0.0", True, "fp32", (), (), True, False, "mixed-fp16"),
        ("11.3.1", True, "mixed-fp16", (), (), False, False, "mixed-fp16"),
    ],
)
def test_plan_build(version, fp16, onnx_precision, network, builder, convert, pin, precision):
    plan = plan_build(version, fp16, onnx_precision)
    assert plan.network_flags == network
    assert plan.builder_flags == builder
    assert plan.convert_onnx_to_fp16 == convert
    assert plan.pin_softmax_fp32 == pin
    assert plan.precision == precision


def test_plan_rejects_old_versions():
    with pytest.raises(TensorRTUnavailable, match=r"TensorRT 8\.6\.1 is not supported"):
        plan_build("8.6.1", False)


def _fake_tensorrt(version: str, calls: dict) -> types.ModuleType:
    """A stand-in exposing only what build_engine uses, as TensorRT ``version`` spells it."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])
    trt.float32 = "float32"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Layer:
        def __init__(self, kind):
            self.type, self.precision, self.output_types = kind, None, {}

        def set_output_type(self, index, dtype):
            self.output_types[index] = dtype

    class Input:
        name = "image"

        def __init__(self, shape):
            self.shape = shape

    class Network:
        def __init__(self, flags):
            calls["network_flags"] = flags
            self.layers = [Layer("CONV"), Layer("SOFTMAX")]
            self.num_layers = 2
            self.shape = (1, 3, 64, 64)

        def get_layer(self, i):
            return self.layers[i]

        def get_input(self, i):
            return Input(calls.get("input_shape", (1, 3, 64, 64)))

    class Parser:
        def __init__(self, network, logger):
            calls["network"] = network
            self.num_errors = 0

        def parse(self, data):
            calls["parsed"] = onnx.ModelProto.FromString(data)
            return True

    class Cache:
        def serialize(self):
            return b"timing-cache"

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            calls["profile"] = (name, lo, opt, hi)

    class Config:
        def __init__(self):
            calls["builder_flags"] = []

        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = size

        def set_flag(self, flag):
            calls["builder_flags"].append(flag)

        def create_timing_cache(self, data):
            calls["cache_in"] = data
            return Cache()

        def set_timing_cache(self, cache, ignore_mismatch):
            return True

        def get_timing_cache(self):
            return Cache()

        def add_optimization_profile(self, profile):
            calls["profiles"] = calls.get("profiles", 0) + 1

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"serialized-engine"

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, Parser
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.LayerType = types.SimpleNamespace(SOFTMAX="SOFTMAX")
    if major >= 11:  # weak-typing flags and EXPLICIT_BATCH are gone
        trt.BuilderFlag = types.SimpleNamespace(REFIT="REFIT")
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace()
    else:
        trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", OBEY_PRECISION_CONSTRAINTS="OBEY")
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(
            EXPLICIT_BATCH=0, STRONGLY_TYPED=1
        )
    return trt


@pytest.fixture
def fake_trt(monkeypatch):
    def install(version):
        calls: dict = {}
        monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(version, calls))
        monkeypatch.setattr("torch.cuda.is_available", lambda: True)
        monkeypatch.setattr("torch.cuda.get_device_name", lambda *a: "Fake GPU")
        return calls

    return install


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """Exports of live weights: every attention, FFN and softmax path contributes, so an
    engine that gets one of them wrong (e.g. the softmax in fp16) fails the comparison."""
    d = tmp_path_factory.mktemp("trt")
    live = randomize(evit.create_model(tiny_config()), seed=5).eval()
    return {
        "fp32": export_onnx(live, d / "m.onnx").path,
        "mixed": export_onnx(live, d / "m16.onnx", fp16=True).path,
        "dynamic": export_onnx(live, d / "dyn.onnx", batch=None).path,
    }


def _initializer_types(proto):
    return {init.data_type for init in proto.graph.initializer}


def test_trt10_fp16_uses_builder_flags_and_pins_softmax(fake_trt, onnx_files, tmp_path):
    calls = fake_trt("10.8.0")
    out = tmp_path / "m.engine"
    cache = tmp_path / "trt.cache"
    result = build_engine(onnx_files["fp32"], out, fp16=True, timing_cache=cache, workspace_mb=64)
    assert calls["builder_flags"] == ["FP16", "OBEY"]
    assert calls["network_flags"] == 0
    softmax = calls["network"].layers[1]
    assert softmax.precision == "float32" and softmax.output_types == {0: "float32"}
    assert calls["network"].layers[0].precision is None
    assert calls["workspace"] == 64 << 20
    assert onnx.TensorProto.FLOAT16 not in _initializer_types(calls["parsed"])
    assert out.read_bytes() == b"serialized-engine"
    assert cache.read_bytes() == b"timing-cache"
    side = json.loads((tmp_path / "m.engine.json").read_text())
    assert side["precision"] == "fp16" and side["tensorrt_version"] == "10.8.0"
    assert side["gpu"] == "Fake GPU" and side["config"]["name"] == "tiny"
    assert result.info.precision == "fp16"
    build_engine(onnx_files["fp32"], tmp_path / "again.engine", timing_cache=cache)
    assert calls["cache_in"] == b"timing-cache"  # the saved cache is reused


def test_trt10_mixed_onnx_builds_strongly_typed(fake_trt, onnx_files, tmp_path):
    calls = fake_trt("10.3.0")
    build_engine(onnx_files["mixed"], tmp_path / "m.engine")
    assert calls["network_flags"] == 1 << 1
    assert calls["builder_flags"] == []


def test_trt11_fp16_converts_the_onnx_instead_of_flags(fake_trt, onnx_files, tmp_path):
    calls = fake_trt("11.0.0")
    build_engine(onnx_files["fp32"], tmp_path / "m.engine", fp16=True)
    assert calls["builder_flags"] == [] and calls["network_flags"] == 0
    assert onnx.TensorProto.FLOAT16 in _initializer_types(calls["parsed"])
    nodes = calls["parsed"].graph.node
    producer = {out: n for n in nodes for out in n.output}
    for softmax in (n for n in nodes if n.op_type == "Softmax"):
        add = producer[softmax.input[0]]  # the bias add, fed by a cast to fp32
        assert add.op_type == "Add" and producer[add.input[0]].op_type == "Cast"
    assert json.loads((tmp_path / "m.engine.json").read_text())["precision"] == "mixed-fp16"


def test_dynamic_batch_gets_a_profile(fake_trt, onnx_files, tmp_path):
    calls = fake_trt("11.0.0")
    calls["input_shape"] = (-1, 3, 64, 64)
    build_engine(onnx_files["dynamic"], tmp_path / "d.engine", batch=4, max_batch=8)
    assert calls["profile"] == ("image", (1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64))
    assert calls["profiles"] == 1


def test_missing_tensorrt_is_one_line_and_exit_2(monkeypatch, onnx_files, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    with pytest.raises(TensorRTUnavailable, match=r"TensorRT is not installed: pip install"):
        trt_module.import_tensorrt()
    assert main(["trt", str(onnx_files["fp32"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: TensorRT is not installed") and err.count("\n") == 1


def test_missing_gpu_is_one_line(fake_trt, monkeypatch, onnx_files):
    fake_trt("10.8.0")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(TensorRTUnavailable, match="no CUDA GPU is visible"):
        build_engine(onnx_files["fp32"], None)
    assert tensorrt_status().startswith("no CUDA GPU")


@pytest.mark.tensorrt
def test_real_engine_matches_onnx_runtime(onnx_files, tmp_path):
    reason = tensorrt_status()
    if reason is not None:
        pytest.skip(reason)
    import numpy as np

    from edge.runtimes import OrtRuntime
    from edge.tensorrt import TrtRuntime

    for fp16 in (False, True):
        result = build_engine(onnx_files["fp32"], tmp_path / f"m{fp16}.engine", fp16=fp16)
        x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
        expected = OrtRuntime(onnx_files["fp32"])(x)
        for graph in (False, True):
            got = TrtRuntime(result.engine_bytes, cuda_graph=graph)(x)
            assert np.abs(got - expected).max() / np.abs(expected).max() < (2e-2 if fp16 else 1e-3)
