from __future__ import annotations

import json
import os

import pytest

from edge.cli import main
from evit.config import load_config, save_yaml
from tests.conftest import tiny_config


@pytest.fixture
def tiny_yaml(tmp_path):
    return str(save_yaml(tiny_config(), tmp_path / "tiny.yaml"))


def test_export_info_bench(tmp_path, tiny_yaml, capsys):
    out = tmp_path / "tiny.onnx"
    assert main(["export", tiny_yaml, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "max rel error" in text and "top-1 agreement 100%" in text
    assert main(["info", str(out), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["config"]["name"] == "tiny" and meta["precision"] == "fp32"
    assert main(["bench", str(out), "--threads", "1", "--json", "--measure-seconds", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["runtime"] == "ort" and result["threads"] == 1 and result["runs"] >= 3
    assert {"cpu", "versions", "usable_cores"} <= set(result["environment"])


def test_export_json_and_the_bench_threads_default(tmp_path, tiny_yaml, capsys):
    from edge.latency import usable_cores

    out = tmp_path / "tiny.onnx"
    assert main(["export", tiny_yaml, "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["path"] == str(out) and printed["precision"] == "fp32"
    assert printed["verification"]["passed"] and printed["int8_check"] is None
    assert main(["bench", str(out), "--json", "--measure-seconds", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["threads"] == usable_cores()  # as search measures


def test_compare_names_the_faster_file(tmp_path, tiny_yaml, capsys):
    """A model 10x the work must come out slower, and the verdict must name the files."""
    small, big = tmp_path / "small.onnx", tmp_path / "big.onnx"
    big_yaml = save_yaml(
        load_config("m0").at_img_size(64).replace(name="m0_64"), tmp_path / "b.yaml"
    )
    assert main(["export", tiny_yaml, "--out", str(small)]) == 0
    assert main(["export", str(big_yaml), "--out", str(big)]) == 0
    capsys.readouterr()
    argv = ["bench", str(small), "--compare", str(big), "--threads", "1", "--measure-seconds", "3"]
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    ratio = data["ratios"][0]  # big / small
    assert ratio["ci_low"] > 1.5 and ratio["rounds"] >= 10
    assert data["results"][0]["median_ms"] < data["results"][1]["median_ms"]
    assert main(argv) == 0
    assert f"{small} is faster ({big} takes" in capsys.readouterr().out


def test_export_checks_the_destination_before_exporting(tmp_path, capsys, monkeypatch):
    import edge.cli

    def must_not_run(*args, **kwargs):
        raise AssertionError("exported into a destination that cannot be written")

    monkeypatch.setattr(edge.cli, "export_onnx", must_not_run)
    (tmp_path / "file").write_text("x")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    cases = [tmp_path / "file" / "m.onnx", tmp_path]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append(readonly / "m.onnx")
    for out in cases:
        assert main(["export", "m0", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1


def test_info_on_a_foreign_onnx_file_says_so(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "foreign.onnx")
    assert main(["info", str(tmp_path / "foreign.onnx")]) == 0
    assert "no evit metadata" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "m9"], "error: unknown model 'm9'"),
        (["info", "missing.onnx"], "error: ONNX file not found: missing.onnx"),
        (["bench", "missing.onnx"], "error: model file not found: missing.onnx"),
        (
            ["bench", "m0", "--runtime", "ort", "--device", "cuda"],
            "error: the ort runtime here is CPU only",
        ),
    ],
)
def test_bad_input_exits_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv", [["export", "m0", "--batch", "0"], ["bench", "m0", "--runtime", "tvm"]]
)
def test_argument_errors_exit_2(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
