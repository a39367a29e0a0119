from __future__ import annotations

import numpy as np
import pytest
import torch

import evit
from edge.latency import measure_latency
from edge.runtimes import OrtRuntime, TorchRuntime, open_runtime
from tests.conftest import tiny_config


def test_ort_and_torch_agree(tiny_onnx, tiny_live_model):
    """ONNX Runtime on the exported file vs PyTorch eager on the model it came from."""
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    ort_out = OrtRuntime(tiny_onnx, threads=1)(x)
    with torch.no_grad():
        expected = tiny_live_model(torch.from_numpy(x)).numpy()
    assert np.abs(ort_out - expected).max() <= 1e-4 * np.abs(expected).max()
    # live weights: every block contributes, so the output is far from the stem+head alone
    stripped = evit.create_model(tiny_config()).eval()
    stripped.load_state_dict(tiny_live_model.state_dict())
    for name, module in stripped.named_modules():
        if isinstance(module, evit.model.Residual) and ".mixer" in name:
            module.branch = torch.nn.Identity()
            module.forward = lambda x: x  # attention removed
    with torch.no_grad():
        without_attention = stripped(torch.from_numpy(x)).numpy()
    assert np.abs(without_attention - expected).max() > 1e-2 * np.abs(expected).max()
    with open_runtime(str(tiny_onnx), threads=1, spinning=False) as rt:
        assert np.array_equal(rt(x), ort_out)


def test_torch_runtime_runs_fused_model():
    net = evit.fuse(evit.create_model(tiny_config()).eval())
    rt = TorchRuntime(net, (2, 3, 64, 64), threads=1)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        assert np.allclose(rt(x), net(torch.from_numpy(x)).numpy())
    host, gpu = rt.timed()
    assert host > 0 and gpu is None


def test_measure_real_ort(tiny_onnx):
    r = measure_latency(str(tiny_onnx), threads=1, max_seconds=2.0)
    assert r.runtime == "ort" and r.runs >= 3 and r.median_ms > 0
    assert r.session_ms is not None and r.session_ms > 0
    assert r.environment["versions"]["onnxruntime"]


def test_wrong_batch_and_shape(tiny_onnx):
    with pytest.raises(ValueError, match="exported for batch 1, but batch 4 was requested"):
        OrtRuntime(tiny_onnx, batch=4)
    rt = OrtRuntime(tiny_onnx)
    with pytest.raises(ValueError, match=r"input shape \(1, 3, 32, 32\) does not match"):
        rt(np.zeros((1, 3, 32, 32), np.float32))


def test_missing_corrupt_and_unknown(tmp_path):
    with pytest.raises(ValueError, match="model file not found"):
        open_runtime(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        open_runtime(bad)
    with pytest.raises(ValueError, match="unknown runtime 'tvm'; choose one of ort, torch, trt"):
        open_runtime("m0", runtime="tvm")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        open_runtime("m0", device="tpu")
    with pytest.raises(ValueError, match="CPU only"):
        open_runtime("m0", runtime="ort", device="cuda")


@pytest.mark.gpu
def test_torch_cuda_events_and_graph():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    net = evit.fuse(evit.create_model("m0").eval())
    for graph in (False, True):
        rt = TorchRuntime(net, (1, 3, 224, 224), device="cuda", cuda_graph=graph)
        host, gpu = rt.timed()
        assert host > 0 and gpu is not None and gpu > 0


def test_the_runtime_factory_rejects_what_it_cannot_open():
    from edge.runtimes import RuntimeFactory

    with pytest.raises(ValueError, match="'torch' does not run an exported file; choose one of"):
        RuntimeFactory("torch", b"")
    with pytest.raises(ValueError, match="--precision bf16 is for --runtime openvino"):
        RuntimeFactory("ort", b"", precision="bf16")


def test_runtime_status_names_the_reason_for_a_missing_runtime(monkeypatch):
    from edge import runtimes

    assert runtimes.runtime_status("ort") is None
    monkeypatch.setattr("edge.tensorrt.tensorrt_status", lambda: "no GPU")
    assert runtimes.runtime_status("trt") == "no GPU"
    with pytest.raises(ValueError, match="unknown runtime 'tvm'"):
        runtimes.runtime_status("tvm")
