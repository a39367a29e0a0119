from __future__ import annotations

import json
import subprocess
import sys

from evit.cli import main


def test_info_json(capsys):
    assert main(["info", "m0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == 2_349_436
    assert data["macs"] == 79_193_600
    assert set(data["breakdown"]) == {"stem", "stage0", "stage1", "stage2", "head"}


def test_info_table(capsys):
    assert main(["info", "efficientvit_m5"]) == 0
    out = capsys.readouterr().out
    assert "12,473,772" in out and "stage2" in out


def test_bad_input_exits_2_with_one_line(capsys):
    assert main(["info", "m7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'm7'") and err.count("\n") == 1


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "evit", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == [f"efficientvit_m{i}" for i in range(6)]


def test_info_on_an_onnx_file_points_to_edge_info(capsys):
    assert main(["info", "runs/x/best.onnx"]) == 2
    err = capsys.readouterr().err
    assert "use `python -m edge info runs/x/best.onnx`" in err and err.count("\n") == 1
