"""The demo as a server: its API through gradio_client, bad uploads, and a load test."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from app.demo import DemoState
from app.models import choices_for
from tests.app.conftest import serve

pytest.importorskip("gradio", reason="Gradio not installed (pip install '.[app]')")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@pytest.fixture(scope="module")
def server(labelled_onnx):
    state = DemoState(choices_for(str(labelled_onnx)), "ort", 1)
    demo, url = serve(state, max_upload_mb=1.0)
    yield state, url
    demo.close()


@pytest.fixture
def frame(tmp_path):
    path = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)).save(path)
    return path


def test_predict_api_for_scripts(server, frame):
    from gradio_client import Client, handle_file

    _, url = server
    client = Client(url, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/stream", "/predict"} <= set(endpoints)
    result = client.predict(handle_file(str(frame)), api_name="/predict")
    assert len(result["labels"]) == 5 and result["labels"][0].startswith("thing ")
    assert result["probabilities"] == sorted(result["probabilities"], reverse=True)
    assert 0 < result["model_ms"] <= result["end_to_end_ms"]


def test_bad_uploads_answer_with_a_message_and_the_server_lives_on(server, frame, tmp_path):
    from gradio_client import Client, handle_file

    _, url = server
    client = Client(url, verbose=False)
    text = tmp_path / "notes.png"
    text.write_text("a text file with an image name")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert client.predict(handle_file(str(text)), api_name="/predict")["error"].startswith(
        "not a readable image"
    )
    assert "empty" in client.predict(handle_file(str(empty)), api_name="/predict")["error"]
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(2_000_000))  # over the 1 MB cap of this server
    with pytest.raises(Exception, match=r"(?i)size|large|exceed"):
        client.predict(handle_file(str(big)), api_name="/predict")
    assert client.predict(handle_file(str(frame)), api_name="/predict")["labels"]


def test_eight_concurrent_callers(server, frame, capsys):
    """8 clients for a fixed time: no error, bounded memory, one shared session."""
    from gradio_client import Client, handle_file

    state, url = server
    session = state.classifier.runtime
    clients = [Client(url, verbose=False) for _ in range(8)]
    rss_before = _rss_mb()
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + 8.0

    def caller(client) -> None:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            try:
                result = client.predict(handle_file(str(frame)), api_name="/predict")
                if "labels" not in result:
                    errors.append(str(result))
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
            latencies.append((time.perf_counter() - start) * 1e3)

    threads = [threading.Thread(target=caller, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    rss_after = _rss_mb()
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    with capsys.disabled():
        print(
            f"\nload: 8 callers x 8 s: {len(latencies)} calls, {len(errors)} errors, "
            f"latency p50 {p50:.0f} ms, p90 {p90:.0f} ms, p99 {p99:.0f} ms; "
            f"RSS {rss_before:.0f} -> {rss_after:.0f} MB"
        )
    assert not errors, errors[:3]
    assert len(latencies) >= 16
    assert rss_after - rss_before < 300
    assert state.classifier.runtime is session  # still the one session
