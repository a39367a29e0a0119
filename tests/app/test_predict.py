from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import evit
from app.demo import DemoState, main
from app.models import ModelError, choices_for, model_info
from app.predict import Classifier
from app.preprocess import ImageError, load_image, to_input
from edge.export import export_onnx
from evit.train.data import eval_transform
from tests.app.conftest import NAMES
from tests.conftest import randomize, tiny_config


def _images(tmp_path) -> dict[str, object]:
    """Awkward inputs a camera, a phone or a user's disk produce."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(rgb).save(rotated, exif=exif)
    palette = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE)
    return {
        "rgb array": rgb,
        "rgba": Image.fromarray(rng.integers(0, 255, (200, 100, 4), dtype=np.uint8), "RGBA"),
        "grayscale": Image.fromarray(rng.integers(0, 255, (90, 120), dtype=np.uint8), "L"),
        "palette": palette,
        "exif rotated": rotated,
        "tiny": Image.fromarray(rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)),
        "huge": Image.fromarray(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8)),
    }


def test_app_and_evit_eval_prepare_an_image_identically(tmp_path):
    """A camera frame and a validation image go through the same steps: same tensor."""
    for name, image in _images(tmp_path).items():
        ours = to_input(load_image(image), 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        elif not isinstance(image, Image.Image):
            image = Image.open(image)
        from PIL import ImageOps

        reference = eval_transform(64)(ImageOps.exif_transpose(image).convert("RGB"))
        assert np.array_equal(ours, reference.numpy()[None]), name
    rotated = load_image(tmp_path / "rotated.jpg")
    assert rotated.size == (300, 400)  # turned upright: width and height swapped


@pytest.mark.parametrize(
    "bad, match",
    [
        (b"", "the file is empty"),
        (b"hello, I am a text file", "not a readable image"),
        (np.zeros((0, 0, 3), np.uint8), "empty or malformed frame"),
        (None, "no image"),
    ],
)
def test_bad_images_are_one_line_errors(bad, match, tmp_path):
    with pytest.raises(ImageError, match=match):
        load_image(bad)


def test_an_image_over_the_pixel_limit_is_refused_before_it_is_decoded(monkeypatch):
    from PIL import ImageFile

    from app.preprocess import MAX_PIXELS

    buffer = io.BytesIO()
    Image.new("1", (8000, 7000)).save(buffer, "PNG")  # 56 MP: Pillow itself only warns
    assert MAX_PIXELS < 8000 * 7000 < 2 * MAX_PIXELS

    def decoded(self):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)
    with pytest.raises(ImageError, match="8000x7000 pixels is larger than allowed"):
        load_image(buffer.getvalue())


@pytest.mark.parametrize("error", [EOFError, ValueError])
def test_decoder_errors_of_any_kind_are_one_line_image_errors(monkeypatch, error):
    from PIL import ImageFile

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")

    def fails(self):
        raise error("decoder gave up")

    monkeypatch.setattr(ImageFile.ImageFile, "load", fails)
    with pytest.raises(ImageError, match=r"not a readable image \(decoder gave up\)"):
        load_image(buffer.getvalue())


def test_classifier_reads_metadata_and_returns_top_k(labelled_onnx):
    clf = Classifier.from_file(labelled_onnx, threads=1, top_k=3)
    assert clf.size == 64 and clf.name == "tiny"
    assert not clf.info.random_weights and clf.info.params > 0
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    result = clf(frame)
    assert len(result.labels) == 3 and all(k.startswith("thing ") for k in result.labels)
    probs = list(result.labels.values())
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    assert 0 < result.model_ms <= result.end_to_end_ms
    assert "p50" in clf.stats.summary() and "p90" in clf.stats.summary()


def test_running_an_exported_model_does_not_import_torch(labelled_onnx):
    code = (
        "import sys, numpy as np\n"
        "from app.predict import Classifier\n"
        f"c = Classifier.from_file({str(labelled_onnx)!r}, threads=1)\n"
        "c(np.zeros((48, 64, 3), np.uint8))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_default_is_m0_with_a_random_weights_banner(tmp_path, monkeypatch):
    monkeypatch.setenv("EVIT_CACHE", str(tmp_path / "cache"))
    state = DemoState(choices_for(None), "ort", 1)
    assert state.classifier.name == "efficientvit_m0"
    assert "Random weights" in state.banner() and "--weights efficientvit_m0.pth" in state.banner()
    assert len(state.classifier.info.class_names) == 1000  # ImageNet names from package data
    assert state.classifier.info.class_names[0] == "tench"
    labels, stats, message = state.classify(np.zeros((480, 640, 3), np.uint8))
    assert len(labels) == 5 and message == "" and "model" in stats
    again = DemoState(choices_for("m0"), "ort", 1)  # the export is cached by content
    assert len(list((tmp_path / "cache" / "app").glob("*.onnx"))) == 1
    assert again.classifier.info.name == "efficientvit_m0"


def test_trained_checkpoint_brings_its_names_and_no_banner(tmp_path, monkeypatch):
    monkeypatch.setenv("EVIT_CACHE", str(tmp_path / "cache"))
    model = randomize(evit.create_model(tiny_config()))
    ckpt = evit.save_checkpoint(model, tmp_path / "best.pth", class_names=NAMES)
    yaml_path = evit.save_yaml(tiny_config(), tmp_path / "tiny.yaml")
    state = DemoState(choices_for(str(yaml_path), str(ckpt)), "ort", 1)
    assert state.classifier.info.class_names == NAMES
    assert state.classifier.info.weights == "checkpoint best.pth" and state.banner() == ""


def test_a_search_folder_offers_best_pareto_and_references(tmp_path, labelled_onnx):
    import shutil

    import yaml

    run = tmp_path / "runs" / "study"
    run.mkdir(parents=True)
    shutil.copy(labelled_onnx, run / "best.onnx")
    candidate = {"name": "searched_1", "config": tiny_config().to_dict()}
    (run / "pareto.yaml").write_text(yaml.safe_dump({"candidates": [candidate]}))
    labels = [c.label for c in choices_for(str(run))]
    assert labels[0] == "best (study)" and labels[1].startswith("searched_1")
    assert [x.split(" ")[0] for x in labels[2:]] == [f"m{i}" for i in range(6)]


def test_switching_model_and_runtime_without_restart(labelled_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("EVIT_CACHE", str(tmp_path / "cache"))
    state = DemoState(choices_for(str(labelled_onnx)) + choices_for("m0"), "ort", 1)
    note = state.switch("m0 (random weights)", "torch")
    assert note == "now serving m0 (random weights) on torch", note
    assert state.classifier.runtime_name == "torch" and "runtime torch" in state.header()
    note = state.switch("tiny.onnx", "torch")  # a plain ONNX file has no torch model
    assert note.startswith("could not switch to tiny.onnx on torch: the torch runtime needs")
    assert state.classifier.runtime_name == "torch"  # the old model keeps serving
    note = state.switch("tiny.onnx", "trt")
    assert note.startswith("could not switch") and "trt runtime is unavailable" in note


def test_switching_models_under_a_stream_of_frames_loses_no_frame(labelled_onnx, tmp_path):
    import threading

    other = export_onnx(randomize(evit.create_model(tiny_config()), seed=5), tmp_path / "b.onnx")
    state = DemoState(choices_for(str(labelled_onnx)) + choices_for(str(other.path)), "ort", 1)
    labels = list(state.choices)
    frame = np.zeros((64, 64, 3), np.uint8)
    messages: list[str] = []
    done = threading.Event()

    def stream() -> None:
        while not done.is_set():
            messages.append(state.classify(frame)[2])
            messages.append(state.predict(frame).get("error", ""))

    streams = [threading.Thread(target=stream) for _ in range(3)]
    for t in streams:
        t.start()
    for i in range(40):
        assert state.switch(labels[(i + 1) % 2], "ort").startswith("now serving")
    done.set()
    for t in streams:
        t.join()
    assert len(messages) > 40 and not [m for m in messages if m], set(messages)


def test_metadata_less_onnx_runs_with_defaults_and_says_so(tmp_path):
    import onnx

    path = tmp_path / "foreign.onnx"
    export_onnx(tiny_config(num_classes=1000), path)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(path))
    info = model_info(path)
    assert info.input_size == 64 and info.class_names[0] == "tench"
    assert "no evit metadata" in info.notes[0]
    assert Classifier.from_file(path, threads=1)(np.zeros((64, 64, 3), np.uint8)).labels


def test_an_int8_file_this_cpu_would_get_wrong_is_a_banner_warning(tmp_path):
    from edge.cpu import int8_isa, u8s8_saturates
    from edge.export import Int8Options
    from tests.conftest import randomize

    live = randomize(evit.create_model(tiny_config()), seed=3).eval()
    loose = dict(min_top1=0, min_cosine=0, max_rel_error=float("inf"))
    full = export_onnx(live, tmp_path / "w8.onnx", int8=Int8Options(weight_bits=8, **loose))
    default = export_onnx(live, tmp_path / "w7.onnx", int8=Int8Options(**loose))
    print(f"branch checked: {int8_isa()}")
    assert model_info(default.path).warnings == []  # 7-bit weights: right on every CPU
    warnings = model_info(full.path).warnings
    assert len(warnings) == (1 if u8s8_saturates() else 0)
    if warnings:
        state = DemoState(choices_for(str(full.path)), "ort", 1)
        assert "saturate" in state.banner() and state.banner().startswith("⚠️")


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--model", "missing.onnx"], "model file not found: missing.onnx"),
        (["--model", "m9"], "--model m9: give m0..m5"),
        (["--model", "m0", "--weights", "none.pth"], "--weights none.pth: file not found"),
        (["--runtime", "trt", "--model", "m0"], "the trt runtime is unavailable"),
        (["--auth", "nopassword"], "--auth: give user:password"),
        (["--port", "0"], "--port 0: must be between 1 and 65535"),
    ],
)
def test_bad_start_up_is_one_line_and_exit_2(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("EVIT_CACHE", str(tmp_path / "cache"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_corrupt_onnx_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    assert main(["--model", str(bad)]) == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
    with pytest.raises(ModelError):
        choices_for(str(tmp_path / "x.onnx"))


def test_demo_port_in_use_exits_2(labelled_onnx, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--model", str(labelled_onnx), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"--port {port} on 127.0.0.1: cannot listen there" in err and err.count("\n") == 1


def test_ui_handlers_turn_bad_input_into_messages(labelled_onnx):
    state = DemoState(choices_for(str(labelled_onnx)), "ort", 1)
    labels, _, message = state.classify(io.BytesIO(b"not an image").getvalue())
    assert labels == {} and message.startswith("⚠️ not a readable image")
    labels, _, message = state.classify(np.zeros((0, 5, 3), np.uint8))
    assert labels == {} and "empty or malformed frame" in message
    assert state.predict(b"") == {"error": "the file is empty (0 bytes)"}


def test_openvino_serves_the_same_top_classes_as_onnx_runtime(labelled_onnx):
    pytest.importorskip(
        "openvino", reason="OpenVINO is not installed (pip install -e '.[openvino]')"
    )
    frame = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    choice = choices_for(str(labelled_onnx))[0]
    ort_result, ov = Classifier(choice, "ort", 1)(frame), Classifier(choice, "openvino", 1)
    assert ov.runtime_name == "openvino" and type(ov.runtime).__name__ == "OpenVinoRuntime"
    ov_result = ov(frame)
    assert list(ov_result.labels) == list(ort_result.labels)
    for name, p in ort_result.labels.items():
        assert ov_result.labels[name] == pytest.approx(p, abs=1e-3)


def test_runtimes_this_machine_lacks_are_listed_with_their_reason_not_offered(monkeypatch):
    from app import demo, models

    monkeypatch.setattr(
        "edge.runtimes.runtime_status",
        lambda name: "TensorRT is not installed" if name == "trt" else None,
    )
    status = models.available_runtimes()
    assert set(status) == {"ort", "openvino", "torch", "trt"}
    assert [r for r, why in status.items() if why is None] == ["ort", "openvino", "torch"]
    assert demo.unavailable_note(status) == "- `trt` unavailable here: TensorRT is not installed"
    assert demo.unavailable_note({"ort": None}) == ""
