from __future__ import annotations

import pytest

import evit
from edge.export import export_onnx
from tests.conftest import randomize, tiny_config


@pytest.fixture(scope="session")
def tiny_live_model() -> evit.EfficientViT:
    """A small model whose every branch computes something (randomized BN and biases)."""
    return randomize(evit.create_model(tiny_config()), seed=11).eval()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_live_model):
    """A small verified export of live weights, shared by the runtime and latency tests."""
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(tiny_live_model, path)
    return path
