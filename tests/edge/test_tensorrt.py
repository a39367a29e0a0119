"""TensorRT paths: version-dependent build plans and the builder calls, checked against
stand-ins of the TensorRT 10 and 11 Python APIs (only the calls this project makes). The real
builds are under the ``tensorrt`` marker and skip with a one-line reason without TensorRT/GPU."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import types

import numpy as np
import onnx
import pytest
import torch

import evit
from edge import tensorrt as trt_module
from edge.cli import main
from edge.export import Int8Options, export_onnx
from edge.tensorrt import (
    TensorRTError,
    TensorRTUnavailable,
    TrtRuntime,
    build_engine,
    plan_build,
    tensorrt_status,
)
from tests.conftest import randomize, tiny_config


@pytest.mark.parametrize(
    ("version", "fp16", "onnx_precision", "network", "builder", "convert", "pin", "precision"),
    [
        ("10.8.0", False, "fp32", (), (), False, False, "fp32"),
        ("10.8.0", True, "fp32", (), ("FP16", "OBEY_PRECISION_CONSTRAINTS"), False, True, "fp16"),
        ("10.8.0", True, "mixed-fp16", ("STRONGLY_TYPED",), (), False, False, "mixed-fp16"),
        ("10.8.0", False, "int8-qdq", (), ("INT8",), False, False, "int8+fp32"),
        ("10.8.0", True, "int8-qdq", (), ("INT8", "FP16"), False, False, "int8+fp16"),
        ("11.0.0", False, "fp32", (), (), False, False, "fp32"),
        ("11.0.0", True, "fp32", (), (), True, False, "mixed-fp16"),
        ("11.3.1", True, "mixed-fp16", (), (), False, False, "mixed-fp16"),
        ("11.1.0", False, "int8-qdq", (), (), False, False, "int8+fp32"),
    ],
)
def test_plan_build(version, fp16, onnx_precision, network, builder, convert, pin, precision):
    plan = plan_build(version, fp16, onnx_precision)
    assert plan.network_flags == network
    assert plan.builder_flags == builder
    assert plan.convert_onnx_to_fp16 == convert
    assert plan.pin_softmax_fp32 == pin
    assert plan.precision == precision
    # TF32 is on by default in both versions: cleared wherever float layers stay fp32
    assert plan.tf32 == ("fp16" in precision)


def test_plan_rejects_old_versions_and_unknown_files():
    with pytest.raises(TensorRTUnavailable, match=r"TensorRT 8\.6\.1 is not supported"):
        plan_build("8.6.1", False)
    with pytest.raises(ValueError, match=r"builds a Q/DQ file as typed.*drop --precision fp16"):
        plan_build("11.1.0", True, "int8-qdq")
    with pytest.raises(ValueError, match=r"ONNX precision 'int4'"):
        plan_build("10.8.0", False, "int4")


def _fake_tensorrt(version: str, calls: dict) -> types.ModuleType:
    """A stand-in exposing only what this project calls, as TensorRT ``version`` spells it.

    ``calls`` records what was called and steers failures: ``fail_build`` (the builder returns
    None), ``bad_profile`` (``set_shape`` raises), ``engine_none`` (deserialization fails),
    ``exec_fail`` (``execute_async_v3`` returns False)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])
    trt.float32, trt.float16, trt.int32, trt.int8, trt.bool = "f32", "f16", "i32", "i8", "bool"
    calls.setdefault("loggers", 0)

    class Logger:
        WARNING = 2

        def __init__(self, level):
            calls["loggers"] += 1

    if major >= 11:

        class Layer:  # 11.x removed ILayer.precision and set_output_type
            __slots__ = ("type",)

            def __init__(self, kind):
                self.type = kind

    else:

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
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return b"timing-cache"

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            if calls.get("bad_profile"):
                raise RuntimeError("max dimensions are smaller than opt dimensions")
            calls["profile"] = (name, lo, opt, hi)

    class Config:
        def __init__(self):
            calls["builder_flags"], calls["cleared_flags"] = [], []
            calls["caches_created"] = 0

        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = size

        def set_flag(self, flag):
            calls["builder_flags"].append(flag)

        def clear_flag(self, flag):
            calls["cleared_flags"].append(flag)

        @property
        def builder_optimization_level(self):
            return calls.get("opt_level", 3)

        @builder_optimization_level.setter
        def builder_optimization_level(self, level):
            calls["opt_level"] = level

        def create_timing_cache(self, data):
            calls["cache_in"] = data
            calls["caches_created"] += 1
            return None if data == b"corrupt" else Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            assert cache is not None  # the real binding raises a TypeError on None
            calls["cache_set"] = cache.data
            return cache.data != b"other-version"

        def get_timing_cache(self):
            return Cache(b"")

        def add_optimization_profile(self, profile):
            calls["profiles"] = calls.get("profiles", 0) + 1

    class Builder:
        def __init__(self, logger):
            calls["builder_logger"] = logger

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return None if calls.get("fail_build") else b"serialized-engine"

    class Context:
        """Computes output[:, :3] = the input's per-channel mean, from the bound addresses."""

        def __init__(self, engine):
            self.engine, self.addresses = engine, {}
            self.shapes = {"image": engine.shape, "logits": (engine.shape[0], 5)}

        def set_input_shape(self, name, shape):
            if shape[0] > 4:
                return False
            self.shapes = {"image": shape, "logits": (shape[0], 5)}
            return True

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        def execute_async_v3(self, stream_handle):
            calls["executed"] = calls.get("executed", 0) + 1
            if calls.get("exec_fail"):
                return False
            device = calls["device"]
            x = device.tensors[self.addresses["image"]]
            out = device.tensors[self.addresses["logits"]]
            out.zero_()
            out[:, :3] = x.mean(dim=(2, 3))
            return True

    class Engine:
        num_io_tensors = 2

        def __init__(self, shape):
            self.shape = shape

        def get_tensor_name(self, i):
            return ("image", "logits")[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "image" else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return self.shape if name == "image" else (self.shape[0], 5)

        def get_tensor_dtype(self, name):
            return trt.float32

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            calls["runtime_logger"] = logger

        def deserialize_cuda_engine(self, data):
            if calls.get("engine_none"):
                return None
            return Engine(calls.get("engine_shape", (1, 3, 8, 8)))

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, Parser, Runtime
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.LayerType = types.SimpleNamespace(SOFTMAX="SOFTMAX")
    if major >= 11:  # weak-typing flags, INT8 calibration and EXPLICIT_BATCH are gone
        trt.BuilderFlag = types.SimpleNamespace(REFIT="REFIT", TF32="TF32")
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace()
    else:
        trt.BuilderFlag = types.SimpleNamespace(
            FP16="FP16", OBEY_PRECISION_CONSTRAINTS="OBEY", INT8="INT8", TF32="TF32"
        )
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(
            EXPLICIT_BATCH=0, STRONGLY_TYPED=1
        )
    return trt


class CpuCuda:
    """CPU stand-in for :class:`edge.tensorrt.TorchCuda`: buffers are CPU tensors the fake
    context finds by address; a capture can be made to fail."""

    def __init__(self, fail_capture: bool = False):
        self.tensors: dict[int, torch.Tensor] = {}
        self.fail_capture = fail_capture
        self.captures = self.replays = 0

    def stream(self):
        return types.SimpleNamespace(synchronize=lambda: None)

    def on(self, stream):
        return contextlib.nullcontext()

    def stream_handle(self, stream):
        return 1234

    def device_buffer(self, shape, dtype):
        t = torch.zeros(shape, dtype=dtype)
        self.tensors[t.data_ptr()] = t
        return t

    def pinned_buffer(self, shape, dtype):
        return torch.zeros(shape, dtype=dtype)

    def capture(self, stream, work):
        self.captures += 1
        if self.fail_capture:
            raise RuntimeError("operation not permitted when stream is capturing")

        def replay():
            self.replays += 1
            work()

        return types.SimpleNamespace(replay=replay)

    def event(self):
        return types.SimpleNamespace(record=lambda stream: None, elapsed_time=lambda end: 0.25)


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
        "int8": export_onnx(
            live,
            d / "m.int8.onnx",
            # the stand-ins only read the Q/DQ structure: int8 fidelity is test_quantize's
            int8=Int8Options(
                calib_images=8, verify_images=4, activations="int8", min_top1=0.5, min_cosine=0.9
            ),
        ).path,
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
    assert softmax.precision == "f32" and softmax.output_types == {0: "f32"}
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


def test_fp32_builds_clear_tf32_and_the_sidecar_says_so(fake_trt, onnx_files, tmp_path):
    for version in ("10.8.0", "11.1.0"):
        calls = fake_trt(version)
        build_engine(onnx_files["fp32"], tmp_path / f"{version}.engine", optimization_level=1)
        assert calls["cleared_flags"] == ["TF32"] and calls["opt_level"] == 1
        side = json.loads((tmp_path / f"{version}.engine.json").read_text())
        assert side["precision"] == "fp32" and side["tf32"] is False
        assert side["optimization_level"] == 1
    calls = fake_trt("10.8.0")
    build_engine(onnx_files["fp32"], tmp_path / "h.engine", fp16=True)
    assert calls["cleared_flags"] == [] and "opt_level" not in calls  # TensorRT's default level
    assert json.loads((tmp_path / "h.engine.json").read_text())["tf32"] is True
    with pytest.raises(ValueError, match=r"optimization level 9: must be 0\.\.5"):
        build_engine(onnx_files["fp32"], None, optimization_level=9)


def test_int8_qdq_file_builds_explicitly_quantized(fake_trt, onnx_files, tmp_path):
    calls = fake_trt("10.8.0")
    build_engine(onnx_files["int8"], tmp_path / "q.engine", fp16=True)
    assert calls["builder_flags"] == ["INT8", "FP16"] and calls["network_flags"] == 0
    assert any(n.op_type == "QuantizeLinear" for n in calls["parsed"].graph.node)
    assert json.loads((tmp_path / "q.engine.json").read_text())["precision"] == "int8+fp16"
    calls = fake_trt("11.1.0")  # typed: the Q/DQ nodes decide, no INT8 flag exists
    build_engine(onnx_files["int8"], tmp_path / "q11.engine")
    assert calls["builder_flags"] == [] and calls["cleared_flags"] == ["TF32"]
    argv = ["trt", str(onnx_files["int8"]), "--precision", "fp16", "--out", str(tmp_path / "x")]
    assert main(argv) == 2


def test_a_bad_timing_cache_is_replaced_with_a_warning(fake_trt, onnx_files, tmp_path, caplog):
    cache = tmp_path / "trt.cache"
    for content, why in ((b"corrupt", "unreadable"), (b"other-version", "another TensorRT")):
        cache.write_bytes(content)
        calls = fake_trt("10.8.0")
        with caplog.at_level(logging.WARNING):
            build_engine(onnx_files["fp32"], tmp_path / "m.engine", timing_cache=cache)
        assert why in caplog.text and "starting a new one" in caplog.text
        assert calls["cache_set"] == b"" and calls["caches_created"] == 2
        assert cache.read_bytes() == b"timing-cache"  # the new cache replaced it
        caplog.clear()


def test_build_failures_are_one_line_errors(fake_trt, onnx_files, tmp_path, capsys):
    calls = fake_trt("10.8.0")
    calls["fail_build"] = True
    with pytest.raises(TensorRTError, match="TensorRT failed to build an engine"):
        build_engine(onnx_files["fp32"], tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists() and not (tmp_path / "m.engine.json").exists()
    assert main(["trt", str(onnx_files["fp32"]), "--out", str(tmp_path / "m.engine")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: TensorRT failed to build") and err.count("\n") == 1
    calls = fake_trt("11.1.0")
    calls["input_shape"], calls["bad_profile"] = (-1, 3, 64, 64), True
    with pytest.raises(ValueError, match=r"TensorRT refused the batch profile 1\.\.8 \(opt 2\)"):
        build_engine(onnx_files["dynamic"], None, batch=2, max_batch=8)
    code = main(["trt", str(onnx_files["dynamic"]), "--batch", "2", "--max-batch", "8"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_one_logger_per_process(fake_trt, onnx_files, tmp_path):
    calls = fake_trt("10.8.0")
    build_engine(onnx_files["fp32"], tmp_path / "a.engine")
    build_engine(onnx_files["fp32"], tmp_path / "b.engine")
    calls["device"] = CpuCuda()
    TrtRuntime(b"engine", cuda=calls["device"])
    assert calls["loggers"] == 1
    assert calls["builder_logger"] is calls["runtime_logger"]


def _runtime(calls, **kw):
    calls["device"] = kw.pop("cuda", None) or CpuCuda()
    return TrtRuntime(b"engine", cuda=calls["device"], **kw)


def test_trt_runtime_runs_an_engine_and_returns_copies(fake_trt):
    calls = fake_trt("11.1.0")
    rt = _runtime(calls)
    assert rt.input_shape == (1, 3, 8, 8) and rt.cuda_graph is False
    rng = np.random.default_rng(0)
    x1, x2 = (rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(2))
    y1 = rt(x1)
    y2 = rt(x2)
    np.testing.assert_allclose(y1[:, :3], x1.mean(axis=(2, 3)), rtol=1e-6)
    np.testing.assert_allclose(y2[:, :3], x2.mean(axis=(2, 3)), rtol=1e-6)
    assert not np.shares_memory(y1, rt.host_output.numpy())  # the next run cannot change it
    host_ms, gpu_ms = rt.timed()
    assert host_ms > 0 and gpu_ms == 0.25
    with pytest.raises(ValueError, match=r"input shape \(1, 3, 4, 4\) does not match"):
        rt.set_input(np.zeros((1, 3, 4, 4), np.float32))


def test_trt_runtime_replays_a_cuda_graph_and_falls_back_when_capture_fails(fake_trt, caplog):
    calls = fake_trt("10.8.0")
    x = np.ones((1, 3, 8, 8), np.float32)
    rt = _runtime(calls, cuda_graph=True)
    assert rt.cuda_graph is True and calls["device"].captures == 1
    np.testing.assert_allclose(rt(x)[:, :3], 1.0)
    assert calls["device"].replays >= 1
    broken = CpuCuda(fail_capture=True)
    with caplog.at_level(logging.WARNING):
        rt = _runtime(calls, cuda_graph=True, cuda=broken)
    assert rt.cuda_graph is False and "CUDA graph capture failed" in caplog.text
    np.testing.assert_allclose(rt(x)[:, :3], 1.0)  # plain execution after the failed capture
    assert broken.replays == 0


def test_trt_runtime_errors(fake_trt):
    calls = fake_trt("10.8.0")
    calls["engine_none"] = True
    with pytest.raises(ValueError, match="cannot deserialize this engine"):
        _runtime(calls)
    calls["engine_none"] = False
    calls["engine_shape"] = (-1, 3, 8, 8)
    assert _runtime(calls, batch=4).input_shape == (4, 3, 8, 8)
    with pytest.raises(ValueError, match="batch 8 is outside the engine's profile"):
        _runtime(calls, batch=8)
    calls["engine_shape"] = (2, 3, 8, 8)
    with pytest.raises(ValueError, match="built for batch 2, but batch 1"):
        _runtime(calls)
    calls["engine_shape"], calls["exec_fail"] = (1, 3, 8, 8), True
    with pytest.raises(TensorRTError, match="execute_async_v3 failed"):
        _runtime(calls)


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
