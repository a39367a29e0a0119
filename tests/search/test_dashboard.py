"""``python -m search.dashboard``: bad input refused in one line, and a study's trials, Pareto
front and per-trial attributes in Optuna Dashboard, loaded in Debian's Chromium by Playwright.
The browser test is skipped, with the reason, without Chromium, Playwright or optuna-dashboard.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search.dashboard import INSTALL_HINT, STUDY_FILE, main
from search.storage import make_storage

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("EVIT_TEST_ARTIFACTS", "runs/test-artifacts"))
ROOT = Path(__file__).resolve().parents[2]
TRIALS = 7
REFERENCE_TRIAL = 3  # the one trial that carries a reference name


def ci_high_ms(number: int) -> float:
    """Trial ``number``'s upper latency bound: a different, exactly printable one per trial."""
    return 1.5 + 0.25 * number * (-1) ** number + number


def write_study(folder: Path) -> Path:
    """A two-objective study as ``python -m search`` leaves it: accuracy up, latency down."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=f"sqlite:///{folder / STUDY_FILE}",
        study_name="m0-budget-2ms",
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    for i in range(TRIALS):
        trial = study.ask()
        trial.suggest_int("depth", 1, 4)
        median = ci_high_ms(i) - 0.125
        trial.set_user_attr("latency_median_ms", median)
        trial.set_user_attr("latency_ci_low_ms", median - 0.125)
        trial.set_user_attr("latency_ci_high_ms", ci_high_ms(i))
        trial.set_user_attr("top1", 0.5 + i / 100)
        if i == REFERENCE_TRIAL:
            trial.set_user_attr("reference", "M0-official")
        study.tell(trial, [0.5 + i / 100, median])
    return folder


def run(argv: list[str], capsys) -> tuple[int, list[str]]:
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_missing_folder_is_refused_in_one_line(tmp_path, capsys):
    code, err = run([str(tmp_path / "nowhere")], capsys)
    assert code == 2
    assert len(err) == 1 and "nowhere: no such folder" in err[0], err


def test_a_folder_without_a_study_is_refused_in_one_line(tmp_path, capsys):
    code, err = run([str(tmp_path)], capsys)
    assert code == 2
    assert len(err) == 1 and f"no {STUDY_FILE} in this folder" in err[0], err


def test_a_url_to_a_missing_file_is_refused_instead_of_created(tmp_path, capsys):
    missing = tmp_path / "other.db"
    code, err = run([f"sqlite:///{missing}"], capsys)
    assert code == 2
    assert len(err) == 1 and f"no such file {missing}" in err[0], err
    assert not missing.exists()


def test_a_broken_or_empty_storage_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / STUDY_FILE).write_bytes(b"not a database, " * 64)
    code, err = run([str(tmp_path)], capsys)
    assert code == 2
    assert len(err) == 1 and "cannot open" in err[0], err

    empty = tmp_path / "empty"
    empty.mkdir()
    make_storage(f"sqlite:///{empty / STUDY_FILE}")  # the tables, no study
    code, err = run([str(empty)], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].endswith("holds no study"), err


def test_without_optuna_dashboard_the_error_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import raises ImportError
    code, err = run([str(write_study(tmp_path))], capsys)
    assert code == 2
    assert len(err) == 1 and INSTALL_HINT in err[0], err


@pytest.fixture
def dashboard(tmp_path):
    """The documented command on a free loopback port; yields (study page URL, process)."""
    pytest.importorskip("optuna_dashboard", reason=f"optuna-dashboard missing: {INSTALL_HINT}")
    write_study(tmp_path)
    command = [sys.executable, "-m", "search.dashboard", str(tmp_path), "--port", "0"]
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        found = re.search(
            r"m0-budget-2ms: (http://127\.0\.0\.1:\d+/dashboard/studies/\d+)$", lines[1]
        )
        assert found, (lines, proc.poll() is not None and proc.stderr.read())
        yield found.group(1), proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.timeout(90)
def test_the_study_its_pareto_front_and_trial_attributes_in_chromium(dashboard):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    expect = sync_api.expect
    study_url, proc = dashboard
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            page.goto(study_url.rsplit("/studies/", 1)[0] + "/")  # the list of studies
            expect(page.get_by_text("m0-budget-2ms", exact=False).first).to_be_visible()

            page.goto(study_url)  # the study's analytics: the Pareto front and best trials
            expect(page.get_by_text("Pareto Front", exact=True)).to_be_visible()

            page.goto(study_url + "/trials")
            # the count the storage holds, not just a page that loaded
            expect(page.get_by_text(f"{TRIALS} Trials", exact=True)).to_be_visible()
            expect(page.get_by_text(f"Trial {TRIALS - 1}", exact=True)).to_be_visible()
            expect(page.get_by_text(f"Trial {TRIALS}", exact=True)).to_have_count(0)

            page.get_by_text(f"Trial {REFERENCE_TRIAL}", exact=True).click()
            expect(page.get_by_role("heading", name=f"Trial {REFERENCE_TRIAL} (")).to_be_visible()
            expect(page.get_by_text("reference M0-official")).to_be_visible()
            high = f"latency_ci_high_ms {ci_high_ms(REFERENCE_TRIAL)}"
            expect(page.get_by_text(high)).to_be_visible()

            page.get_by_text("Trial 0", exact=True).click()  # the reference is trial 3's alone
            expect(page.get_by_role("heading", name="Trial 0 (")).to_be_visible()
            expect(page.get_by_text("M0-official")).to_have_count(0)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-trials.png"), full_page=True)
        finally:
            browser.close()
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the documented way to stop it
    assert proc.wait(timeout=10) == 130
