from __future__ import annotations

import numpy as np
import pytest

import evit
from app.demo import main, make_predict
from app.predict import Classifier, center_crop_resize
from edge.export import export_onnx
from tests.conftest import randomize, tiny_config


@pytest.fixture(scope="module")
def labelled_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("app") / "tiny.onnx"
    live = randomize(evit.create_model(tiny_config())).eval()  # every block computes
    export_onnx(live, path, class_names=[f"thing {i}" for i in range(10)])
    return path


def test_center_crop_resize_keeps_the_middle():
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, 8:56] = 255  # the centre 48x48 square is white, the borders black
    out = center_crop_resize(frame, 16)
    assert out.shape == (16, 16, 3) and out.min() == 255
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) RGB frame"):
        center_crop_resize(np.zeros((4, 4)), 8)


def test_classifier_reads_metadata_and_returns_top_k(labelled_onnx):
    clf = Classifier(labelled_onnx, threads=1, top_k=3)
    assert clf.size == 64 and clf.name == "tiny"
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    result = clf(frame)
    assert len(result.labels) == 3 and all(k.startswith("thing ") for k in result.labels)
    probs = list(result.labels.values())
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    assert result.latency_ms > 0
    x = clf.preprocess(frame)
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32


def test_demo_cli_bad_model_exits_2(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "missing.onnx")]) == 2
    assert capsys.readouterr().err.startswith("error: ONNX file not found")


def test_predict_function_behind_the_ui(labelled_onnx):
    predict = make_predict(Classifier(labelled_onnx, threads=1))
    assert predict(None) == ({}, "waiting for the camera")
    frame = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    labels, text = predict(frame)
    assert len(labels) == 5 and text.startswith("tiny: ") and text.endswith("ms per frame")


def test_gradio_app_serves_predictions_to_a_client(labelled_onnx, tmp_path):
    """Launch the demo on loopback and call its ``predict`` event with gradio_client (which
    cannot drive the webcam stream; the stream shares the same function)."""
    pytest.importorskip("gradio", reason="Gradio not installed (pip install '.[app]')")
    import socket

    from gradio_client import Client, handle_file
    from PIL import Image

    from app.demo import build_demo

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = build_demo(Classifier(labelled_onnx, threads=1))
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        frame = tmp_path / "frame.png"
        Image.fromarray(
            np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
        ).save(frame)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        assert set(endpoints) == {"/stream", "/predict"}
        labels, text = client.predict(handle_file(str(frame)), api_name="/predict")
        assert labels["label"].startswith("thing ") and len(labels["confidences"]) == 5
        assert text.startswith("tiny: ") and text.endswith("ms per frame")
    finally:
        demo.close()


@pytest.mark.parametrize("port, match", [(0, "must be between 1 and 65535"), (70000, "between")])
def test_demo_port_out_of_range_exits_2(port, match, labelled_onnx, capsys):
    assert main(["--model", str(labelled_onnx), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_demo_port_in_use_exits_2(labelled_onnx, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--model", str(labelled_onnx), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"--port {port} on 127.0.0.1: cannot listen there" in err and err.count("\n") == 1
