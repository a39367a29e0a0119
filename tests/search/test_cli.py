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
from evit.files import _umask
from search.cli import main
from tests.search.conftest import WIRING


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
    assert "re-measured ms" in out and "efficientvit_m0" in out
    run = tmp_path / "run"
    listed = out.split("outputs: ")[1].split("(")[1].rstrip(")\n").split(", ")
    assert sorted(listed) == sorted(p.name for p in run.iterdir() if p.is_file())
    assert {"summary.json", "study.db", "best.onnx", "report.md"} <= set(listed)
    assert not (run / "tmp").exists()  # no empty leftovers
    html = (run / "pareto.html").read_text()
    assert 'src="https://cdn.plot.ly' not in html and len(html) > 1_000_000  # works offline
    assert oct((run / "best.onnx").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
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
        (["--budget-ms", "m9"], None),  # argparse: milliseconds or m0 ... m5
        (["--budget-ms", "2", "--objective", "nonsense"], None),
        (
            ["--budget-ms", "2", "--objective", "accuracy"],
            "error: --objective accuracy needs --data DIR",
        ),
        (["--budget-ms", "2", "--init", "x.pth"], "error: --init is for --objective accuracy"),
        (["--budget-ms", "-1"], "error: --budget-ms -1.0: must be a positive number"),
        (["--budget-ms", "2", "--time-limit", "0"], "error: --time-limit 0.0: must be > 0 seconds"),
        (["--budget-ms", "2", "--space", "missing.yaml"], "error: cannot read search space"),
        (["--budget-ms", "2", "--target", "trt"], "error: target trt unavailable"),
        (["--budget-ms", "2", "--storage", "nonsense"], "error: --storage 'nonsense'"),
        (["--budget-ms", "2", "--storage", "foo://bar"], "error: --storage foo://bar"),
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
    assert not (tmp_path / "x").exists()  # nothing created for a run that never started


def test_an_unwritable_out_is_refused_before_searching(tmp_path, tiny_space, capsys):
    (tmp_path / "file").write_text("not a folder")
    argv = _argv(tmp_path, tiny_space, "--trials", "3")
    argv[argv.index("--out") + 1] = str(tmp_path / "file" / "run")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and "cannot write there" in err
    assert err.count("\n") == 1


def test_an_impossible_budget_stops_at_once(tmp_path, tiny_space, capsys, fake_target):
    """The smallest config of the space is measured first; if even it is over, stop."""
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
            "30",
        ],
        seams=WIRING.seams(),
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no configuration fits 0.001 ms on ort-cpu: the smallest")
    assert len(fake_target.calls) == 1  # one measurement, not a search


def test_json_prints_the_summary_instead_of_the_table(tmp_path, tiny_space, capsys, fake_target):
    argv = ["--budget-ms", "50", "--target", "ort-cpu", "--threads", "1", "--space", tiny_space]
    argv += ["--out", str(tmp_path / "run"), "--no-progress", "--trials", "3", "--json"]
    assert main(argv, seams=WIRING.seams()) == 0
    printed = json.loads(capsys.readouterr().out)  # nothing but the JSON on stdout
    assert printed == json.loads((tmp_path / "run" / "summary.json").read_text())
    assert printed["best"] is not None and printed["target"] == "ort-cpu"


# the PostgreSQL variant repeats the journal one's path through Optuna's RDB storage (100 s)
@pytest.mark.parametrize(
    "kind", ["journal", pytest.param("postgres", marks=(pytest.mark.postgres, pytest.mark.slow))]
)
def test_killed_worker_loses_no_finished_trial(kind, tmp_path, tiny_space, request):
    """kill -9 mid-search, then the same command resumes: finished trials are kept, the
    trial that was running is failed and re-queued, nothing stays RUNNING."""
    if kind == "postgres":
        url, name = request.getfixturevalue("postgres_url"), f"k-{tmp_path.name}"
    else:
        url, name = f"journal://{tmp_path / 'study.log'}", "k"
    cmd = [
        sys.executable,
        "-m",
        "search",
        *_argv(tmp_path, tiny_space, "--trials", "12", "--storage", url, "--study", name),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from search.storage import make_storage

    finished: set[int] = set()
    deadline = time.time() + 180
    while time.time() < deadline and len(finished) < 3:
        time.sleep(0.3)
        try:
            study = optuna.load_study(study_name=name, storage=make_storage(url))
        except (KeyError, ValueError):  # the study (or its log file) is not created yet
            continue
        finished = {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = optuna.load_study(study_name=name, storage=make_storage(url))
    finished = {t.number for t in before.get_trials(states=(TrialState.COMPLETE,))}
    assert len(finished) >= 3
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    after = optuna.load_study(study_name=name, storage=make_storage(url))
    complete = after.get_trials(states=(TrialState.COMPLETE,))
    assert finished <= {t.number for t in complete} and len(complete) >= 12
    assert not after.get_trials(states=(TrialState.RUNNING,))


@pytest.mark.parametrize(
    ("argv", "timeout", "time_limit"),
    [
        ([], 330.0, None),
        (["--time-limit", "840"], None, 840.0),
        (["--time-limit", "840", "--timeout", "600"], 600.0, 840.0),
        (["--trials", "20"], None, None),
    ],
)
def test_the_default_timeout_gives_way_to_a_time_limit(argv, timeout, time_limit, monkeypatch):
    """Without --trials, --timeout or --time-limit the trials stop after 330 s; a time limit
    alone bounds the run by itself (no 330 s loop inside it); both given, both apply."""
    import search.cli

    seen = []

    def capture(opts, factory, seams=None):
        seen.append(opts)
        raise ValueError("captured")

    monkeypatch.setattr(search.cli, "run_search", capture)
    assert main(["--budget-ms", "2", "--no-progress", *argv]) == 2
    assert (seen[0].timeout, seen[0].time_limit) == (timeout, time_limit)
