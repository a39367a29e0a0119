"""An exported model with live weights and class names, and a demo server on loopback."""

from __future__ import annotations

import socket

import pytest

import evit
from edge.export import export_onnx
from tests.conftest import randomize, tiny_config

NAMES = [f"thing {i}" for i in range(10)]


@pytest.fixture(scope="session")
def labelled_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("app") / "tiny.onnx"
    live = randomize(evit.create_model(tiny_config())).eval()  # every block computes
    export_onnx(live, path, class_names=NAMES)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(state, stream_every: float = 0.1, max_upload_mb: float = 1.0):
    """Launch the demo for ``state`` on a free loopback port; returns (demo, url)."""
    from app.demo import build_demo

    port = free_port()
    demo = build_demo(state, stream_every)
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        max_file_size=int(max_upload_mb * 1024 * 1024),
    )
    return demo, f"http://127.0.0.1:{port}/"
