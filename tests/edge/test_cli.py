from __future__ import annotations

import json

import pytest

from edge.cli import main
from evit.config import save_yaml
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
    assert main(["bench", str(out), "--threads", "1", "--json", "--max-seconds", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["runtime"] == "ort" and result["threads"] == 1 and result["runs"] >= 3
    assert {"cpu", "versions", "usable_cores"} <= set(result["environment"])


def test_compare_reports_a_paired_ratio(tmp_path, tiny_yaml, capsys):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert main(["export", tiny_yaml, "--out", str(a)]) == 0
    assert main(["export", tiny_yaml, "--out", str(b), "--batch", "dynamic"]) == 0
    capsys.readouterr()
    assert (
        main(
            ["bench", str(a), "--compare", str(b), "--threads", "1", "--json", "--max-seconds", "2"]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    ratio = data["ratios"][0]
    assert ratio["ci_low"] <= ratio["ratio"] <= ratio["ci_high"] and ratio["rounds"] >= 10
    assert len(data["results"]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "m9"], "error: unknown model 'm9'"),
        (["info", "missing.onnx"], "error: ONNX file not found: missing.onnx"),
        (["bench", "missing.onnx"], "error: model file not found: missing.onnx"),
        (["bench", "m0", "--runtime", "ort", "--device", "cuda"], "error: the ONNX Runtime"),
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
