from __future__ import annotations

import pytest

from edge.export import export_onnx
from tests.conftest import tiny_config


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """A small verified export shared by the runtime and latency tests."""
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(tiny_config(), path)
    return path
