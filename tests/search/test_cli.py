"""The real thing: the CLI measuring with ONNX Runtime on this CPU (tiny space, few trials)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from edge.latency import measure_latency
from search.cli import main


def _argv(tmp_path, tiny_space, *extra):
    """A real ORT search on the tiny space with a generous budget."""
    return [
        "--budget-ms",
        "50",
        "--target",
        "ort-cpu",
        "--threads",
        "1",
        "--space",
        tiny_space,
        "--out",
        str(tmp_path / "run"),
        "--measure-seconds",
        "0.5",
        "--no-progress",
        *extra,
    ]


def _run(tmp_path, tiny_space, *extra):
    return main(_argv(tmp_path, tiny_space, *extra))


def test_end_to_end_on_onnx_runtime(tmp_path, tiny_space, capsys):
    assert _run(tmp_path, tiny_space, "--trials", "6") == 0
    out = capsys.readouterr().out
    assert "re-measured ms" in out and "efficientvit_m0" in out and "outputs:" in out
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    best = summary["best"]
    assert best["remeasured"]["ci_high_ms"] <= 50
    assert summary["stats"]["measured"] >= 1
    lines = (run / "measurements.jsonl").read_text().splitlines()
    phases = [json.loads(line)["phase"] for line in lines]
    assert phases.count("remeasure") >= 7 and "search" in phases  # M0-M5 + candidates
    # best.onnx, measured independently, is within the budget
    independent = measure_latency(str(run / "best.onnx"), threads=1, max_seconds=2)
    assert independent.median_ms <= 50


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget-ms", "2", "--target", "tpu"], None),
        (["--budget-ms", "2", "--objective", "accuracy"], None),
        (["--budget-ms", "-1"], "error: --budget-ms -1.0: must be a positive number"),
        (["--budget-ms", "2", "--space", "missing.yaml"], "error: cannot read search space"),
        (["--budget-ms", "2", "--target", "trt"], "error: target trt unavailable"),
        (["--budget-ms", "2", "--storage", "nonsense"], "error: --storage 'nonsense'"),
    ],
)
def test_bad_input_exits_2(argv, message, capsys, tmp_path):
    argv = [*argv, "--out", str(tmp_path / "x"), "--no-progress"]
    if message is None:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        return
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_infeasible_budget_exits_1_with_the_fastest(tmp_path, tiny_space, capsys, fake_target):
    code = main(
        [
            "--budget-ms",
            "0.001",
            "--target",
            "ort-cpu",
            "--threads",
            "1",
            "--space",
            tiny_space,
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--trials",
            "3",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "no configuration fits 0.001 ms on ort-cpu; fastest measured:" in err
    assert (tmp_path / "run" / "report.md").is_file()


def test_killed_worker_loses_no_finished_trial(tmp_path, tiny_space):
    """kill -9 mid-search, then the same command resumes: finished trials are kept, the
    trial that was running is failed and re-queued, nothing stays RUNNING."""
    cmd = [
        sys.executable,
        "-m",
        "search",
        *_argv(
            tmp_path,
            tiny_space,
            "--trials",
            "12",
            "--storage",
            f"journal://{tmp_path / 'study.log'}",
            "--study",
            "k",
        ),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from search.study import make_storage

    url = f"journal://{tmp_path / 'study.log'}"
    finished: set[int] = set()
    deadline = time.time() + 180
    while time.time() < deadline and len(finished) < 3:
        time.sleep(0.3)
        if (tmp_path / "study.log").exists():
            try:
                study = optuna.load_study(study_name="k", storage=make_storage(url))
            except KeyError:  # the study is not created yet
                continue
            finished = {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = optuna.load_study(study_name="k", storage=make_storage(url))
    finished = {t.number for t in before.get_trials(states=(TrialState.COMPLETE,))}
    assert len(finished) >= 3
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    after = optuna.load_study(
        study_name="k", storage=make_storage(f"journal://{tmp_path / 'study.log'}")
    )
    complete = after.get_trials(states=(TrialState.COMPLETE,))
    assert finished <= {t.number for t in complete} and len(complete) >= 12
    assert not after.get_trials(states=(TrialState.RUNNING,))
