"""Sampler, constraint, cache, resume, workers and outputs, on a deterministic fake latency."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import multiprocessing
import os
import subprocess
import sys

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import evit
from search.options import SearchOptions
from search.prefilter import PreFilter
from search.selection import pareto_front
from search.storage import make_storage, reap_dead_workers
from search.targets import Target
from tests.search.conftest import (
    WIRING,
    FakeTarget,
    fake_latency_ms,
    latency_result,
    run_fake,
    wire,
)


def _opts(tmp_path, space, **kw):
    base = dict(
        budget_ms=3.0,
        target="ort-cpu",
        trials=16,
        space=space,
        out=tmp_path / "run",
        remeasure_block_seconds=0.001,
        drift_wait_seconds=0.0,
    )
    base.update(kw)
    return SearchOptions(**base)


def _study(outcome):
    return optuna.load_study(
        study_name=outcome.study_name, storage=f"sqlite:///{outcome.out / 'study.db'}"
    )


def test_search_respects_the_budget_and_writes_every_output(tmp_path, tiny_space, fake_target):
    outcome = run_fake(_opts(tmp_path, tiny_space))
    out = outcome.out
    study = _study(outcome)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 16
    # constraint: feasible exactly when the (fake) latency is within the budget
    for t in complete:
        assert t.constraints == {"latency_ms": pytest.approx(t.values[1] - 3.0)}
        if t.user_attrs["latency_source"] == "measured":
            assert t.values[1] == pytest.approx(t.user_attrs["latency_median_ms"])
    best = outcome.best
    assert best is not None and best.remeasured.ci_high_ms <= 3.0
    feasible = [c for c in outcome.pareto if c.remeasured and c.remeasured.ci_high_ms <= 3.0]
    assert best.objective == max(c.objective for c in feasible)
    assert fake_latency_ms(best.config) == pytest.approx(best.remeasured.median_ms)
    for name in (
        "trials.csv",
        "pareto.yaml",
        "best.yaml",
        "best.onnx",
        "report.md",
        "pareto.png",
        "pareto.html",
        "measurements.jsonl",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    loaded = evit.create_model(out / "best.yaml")
    assert loaded.config.stages == best.config.stages
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 16
    assert {r["reference"] for r in rows} == {""}  # M0-M5 lie outside this tiny space
    pareto = yaml.safe_load((out / "pareto.yaml").read_text())
    assert pareto["objective"] == "params" and len(pareto["references"]) == 6
    assert all(c["remeasured"] is not None for c in pareto["candidates"])
    report = (out / "report.md").read_text()
    assert "No accuracy was measured" in report and "efficientvit_m5" in report
    assert f"**{best.config.name}**" in report
    assert not (out / "tmp").exists()  # per-trial probes are gone, and so is their folder


def test_cache_makes_repeated_configs_free(tmp_path, tiny_space, fake_target):
    outcome = run_fake(_opts(tmp_path, tiny_space, trials=40))
    hashes = FakeTarget.calls[:]
    assert len(hashes) == len(set(hashes))  # each architecture measured once...
    study = _study(outcome)
    sources = [t.user_attrs.get("latency_source") for t in study.trials]
    assert outcome.stats["cache"] == sources.count("cache") > 0  # ...repeats reuse it


def test_resume_after_interruption_loses_nothing(tmp_path, tiny_space, fake_target):
    FakeTarget.interrupt_at = 5
    first = run_fake(_opts(tmp_path, tiny_space, trials=12))
    assert first.interrupted
    assert "Interrupted" in (first.out / "report.md").read_text()
    study = _study(first)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    done_before = {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    cut = study.get_trials(states=(TrialState.FAIL,))
    assert len(cut) == 1 and study.get_trials(states=(TrialState.WAITING,))  # re-queued
    FakeTarget.interrupt_at = None
    second = run_fake(_opts(tmp_path, tiny_space, trials=12))
    study = _study(second)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 12 and done_before <= {t.number for t in complete}
    assert complete_params_include(complete, cut[0].params)


def complete_params_include(trials, params):
    return any(t.params == params for t in trials)


def test_settings_mismatch_on_resume_is_an_error(tmp_path, tiny_space, fake_target):
    run_fake(_opts(tmp_path, tiny_space, trials=3, study="s"))
    with pytest.raises(ValueError, match=r"created with other settings \(budget_ms 3.0 -> 5.0"):
        run_fake(_opts(tmp_path, tiny_space, trials=3, study="s", budget_ms=5.0))


def test_an_impossible_budget_stops_after_one_measurement(tmp_path, tiny_space, fake_target):
    from search.measure import NothingFits

    with pytest.raises(NothingFits, match=r"no configuration fits 0.01 ms .* the smallest"):
        run_fake(_opts(tmp_path, tiny_space, trials=8, budget_ms=0.01))
    assert len(FakeTarget.calls) == 1


def test_infeasible_budget_names_the_fastest(tmp_path, tiny_space, fake_target, monkeypatch):
    """When the smallest fits but the search found nothing that does, the report says so."""

    class FastOnce(FakeTarget):  # the smallest's first reading fits, nothing else does
        def measure(self, config, timings=None):
            first = not FakeTarget.calls
            result = super().measure(config, timings)
            return latency_result([0.001] * 20, config.name) if first else result

    wire(target=FastOnce)
    outcome = run_fake(_opts(tmp_path, tiny_space, trials=8, budget_ms=0.01))
    assert outcome.best is None and outcome.fastest is not None
    report = (outcome.out / "report.md").read_text()
    assert "No configuration fits the budget" in report
    assert outcome.fastest.config.name in report
    assert not (outcome.out / "best.yaml").exists()
    # named by what the final run read, not by the stale first reading that was under budget
    fastest = outcome.fastest
    assert fastest.remeasured is not None and fastest.remeasured.median_ms > 0.01
    assert f"{fastest.config.name} at {fastest.remeasured.median_ms:.3f} ms" in report
    assert "at 0.001 ms" not in report
    from search.report import short_budget

    assert short_budget(outcome) == "0.01 ms on ort-cpu"
    as_m0 = dataclasses.replace(outcome, budget_reference="efficientvit_m0")
    assert short_budget(as_m0) == "as fast as M0 on ort-cpu in the final paired run"


def test_prefilter_rules():
    f = PreFilter(budget_ms=1.0, peak_macs_per_ms=100e6)
    reason, bound = f.check(300e6, 1, 1)
    assert reason.startswith("MAC floor") and bound == pytest.approx(1.5)
    assert f.check(100e6, 1, 1) is None
    f.record(100, 100, 4, latency_ms=2.5, config="slow")  # 2.5 ms > 2 x budget, once
    assert f.check(150, 120, 4) is None  # one reading may be a slow phase: not yet a rule
    slow = f.unconfirmed(150, 120, 4)
    assert slow is not None and slow.config == "slow"
    f.confirm(slow, 2.2)  # a second reading agrees
    assert f.check(150, 120, 4)[1] == 2.2
    assert f.check(150, 90, 4) is None  # fewer activation bytes: not dominated
    f.record(10, 10, 1, latency_ms=3.0, config="noisy")
    f.confirm(f.unconfirmed(20, 20, 2), 0.9)  # the second reading fits: it was noise
    assert f.check(20, 20, 2) is None and f.unconfirmed(20, 20, 2) is None
    f.record(10, 10, 1, latency_ms=1.9)  # under the margin (slow phases read up to 1.9x)
    assert f.unconfirmed(20, 20, 2) is None


def test_pareto_front():
    from search.candidates import Candidate

    def cand(obj, ms):
        return Candidate(config=None, objective=obj, latency=latency_result([ms]), params=0, macs=0)

    a, b, c, d = cand(1, 1.0), cand(2, 2.0), cand(1.5, 2.5), cand(3, 3.0)
    assert pareto_front([a, b, c, d]) == [a, b, d]


def _worker(storage_url, space, out, n, study_name="shared", seconds=0.0, start=None):
    from search.context import Seams
    from search.study import prepare_run

    FakeTarget.seconds = seconds
    opts = SearchOptions(
        budget_ms=3.0,
        target="ort-cpu",
        trials=n,
        space=space,
        out=out,
        storage=storage_url,
        study=study_name,
    )
    run = prepare_run(opts, Seams(target=FakeTarget))  # a spawned process: wired here
    if start is not None:  # both workers begin together, however long each took to import
        start.wait(120)
    run.trials()


@pytest.mark.parametrize("kind", ["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_workers_share_one_study_and_one_device(kind, tmp_path, tiny_space, request):
    """Two processes, one study, one device: no trial lost, no architecture measured twice,
    and no two measurements at the same time (from the logged lock intervals)."""
    if kind == "postgres":
        url = request.getfixturevalue("postgres_url")
        study_name = f"shared-{tmp_path.name}"
    else:
        url = f"journal://{tmp_path / 'study.log'}"
        study_name = "shared"
    ctx = multiprocessing.get_context("spawn")
    out = tmp_path / "out"
    start = ctx.Barrier(2)
    workers = [
        ctx.Process(target=_worker, args=(url, tiny_space, out, 20, study_name, 0.05, start))
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(180)
        assert w.exitcode == 0
    study = optuna.load_study(study_name=study_name, storage=make_storage(url))
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert 20 <= len(complete) <= 21  # MaxTrialsCallback may let one in-flight trial finish
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # both did work
    rows = [json.loads(line) for line in (out / "measurements.jsonl").read_text().splitlines()]
    measured = [r for r in rows if r["phase"] == "search"]
    hashes = [r["arch_hash"] for r in measured]
    assert len(hashes) == len(set(hashes))  # never measured twice, across workers
    assert len({r["worker"] for r in measured}) == 2
    intervals = sorted((r["held_from"], r["held_to"]) for r in measured)
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(intervals))


def test_a_worker_on_another_device_is_refused(tmp_path, tiny_space, fake_target, monkeypatch):
    run_fake(_opts(tmp_path, tiny_space, trials=3, study="s"))
    monkeypatch.setattr(FakeTarget, "description", property(lambda self: "another CPU"))
    monkeypatch.setattr(FakeTarget, "__post_init__", _other_fingerprint)
    with pytest.raises(ValueError, match=r"measures on .*, this worker on another CPU"):
        run_fake(_opts(tmp_path, tiny_space, trials=3, study="s"))


def test_a_study_measured_on_another_graph_form_is_refused(
    tmp_path, tiny_space, fake_target, monkeypatch
):
    """Same device, a deployed graph of another form (evit.fusion.GRAPH_VERSION): its
    latencies are not comparable, and the message says what changed, not 'another device'."""
    import search.targets

    run_fake(_opts(tmp_path, tiny_space, trials=3, study="s"))
    before = FakeTarget(name="ort-cpu").fingerprint
    monkeypatch.setattr(search.targets, "GRAPH_VERSION", search.targets.GRAPH_VERSION + 1)
    assert FakeTarget(name="ort-cpu").fingerprint != before
    with pytest.raises(ValueError, match=r"created with other settings \(device_fingerprint"):
        run_fake(_opts(tmp_path, tiny_space, trials=3, study="s"))


def _other_fingerprint(self):
    Target.__post_init__(self)
    self.fingerprint = "f" * 16


def test_candidates_read_latency_from_the_trials(tmp_path, tiny_space, fake_target):
    """A worker on another host has no local log: the trials carry their measurements."""
    from search.final import collect_candidates
    from search.study import prepare_run

    outcome = run_fake(_opts(tmp_path, tiny_space, trials=10, study="s"))
    (outcome.out / "measurements.jsonl").unlink()
    run = prepare_run(_opts(tmp_path, tiny_space, trials=10, study="s"), WIRING.seams())
    cands = collect_candidates(run.study, run.ctx)
    assert len(cands) >= 6 and all(c.latency.median_ms > 0 for c in cands)


def test_failed_trials_are_logged_with_their_reason(tmp_path, tiny_space, fake_target, caplog):
    calls = {"n": 0}
    real = FakeTarget.measure

    def flaky(self, config, timings=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("device fell off the bus")
        return real(self, config, timings)

    FakeTarget.measure = flaky
    try:
        with caplog.at_level("WARNING", logger="search"):
            outcome = run_fake(_opts(tmp_path, tiny_space, trials=6))
    finally:
        FakeTarget.measure = real
    failed = _study(outcome).get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1
    assert failed[0].user_attrs["fail_reason"] == "RuntimeError: device fell off the bus"
    assert "device fell off the bus" in caplog.text


def test_a_password_never_reaches_an_error(tmp_path):
    with pytest.raises(ValueError) as info:
        make_storage("postgresql://evit:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(info.value) and "evit:***@" in str(info.value)


def test_dead_worker_trial_is_failed_and_requeued(tmp_path):
    storage = make_storage(f"journal://{tmp_path / 's.log'}")
    study = optuna.create_study(
        study_name="s", storage=storage, directions=["maximize", "minimize"]
    )
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial = study.ask({"x": optuna.distributions.CategoricalDistribution([1, 2])})
    trial.set_user_attr("worker", f"{os.uname().nodename}:{dead.pid}")
    alive = study.ask({"x": optuna.distributions.CategoricalDistribution([1, 2])})
    alive.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
    assert reap_dead_workers(study) == 1
    states = {t.number: t.state for t in study.get_trials()}
    assert states[trial.number] == TrialState.FAIL
    assert states[alive.number] == TrialState.RUNNING
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == trial.params


def test_an_unsigned_trial_of_a_killed_worker_is_reaped_when_no_one_else_runs(tmp_path):
    """kill -9 between a trial's creation and its signature leaves a RUNNING trial with no
    worker name; it is failed when no other worker on this machine is alive, and only then."""
    from search.storage import WorkerPresence

    storage = make_storage(f"journal://{tmp_path / 's.log'}")
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize"] * 2)
    study.ask()  # created, never signed
    folder = tmp_path / ".workers"
    other = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from search.storage import WorkerPresence;"
            f" w = WorkerPresence(Path({str(folder)!r})); print('ready', flush=True);"
            " time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout.readline().strip() == "ready"
        me = WorkerPresence(folder)
        assert reap_dead_workers(study, me) == 0  # it may be the other worker's
    finally:
        other.kill()
        other.wait()
    assert reap_dead_workers(study, me) == 1
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]
    assert [p.name for p in folder.iterdir()] == [me.path.name]  # the dead one's file is gone


def test_trials_csv_survives_a_trial_with_partial_parameters(tiny_space):
    """A worker killed while sampling leaves a failed trial with only some parameters."""
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from search.outputs import trials_csv
    from search.space import load_space

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(
        create_trial(
            state=TrialState.FAIL,
            params={"s0_num_heads": 2},
            distributions={"s0_num_heads": CategoricalDistribution([1, 2])},
        )
    )
    text = trials_csv(study, load_space(tiny_space), 1.0)
    assert "partial parameters (its worker died while sampling)" in text


def test_a_machine_slower_in_the_final_remeasurement_is_reported(
    tmp_path, tiny_space, fake_target, monkeypatch
):
    """The trials measured at one speed, the final re-measurement (which decides the budget
    check) at 1.6x slower: the report and the CLI say so instead of a silent verdict."""
    from tests.search.conftest import ConstantRuntime

    steady = run_fake(_opts(tmp_path, tiny_space, trials=8, study="steady"))
    assert steady.drift_warning is None
    monkeypatch.setattr(
        FakeTarget,
        "prepare",
        lambda self, config, timings=None: (
            lambda: ConstantRuntime(1.6 * self._ms(config), config.name)
        ),
    )
    slow = run_fake(_opts(tmp_path, tiny_space, trials=8, study="slow", out=tmp_path / "slow"))
    assert slow.drift_warning and "1.60x slower during the final re-measurement" in (
        slow.drift_warning
    )
    assert "**Warning**: the machine ran 1.60x slower" in (slow.out / "report.md").read_text()
    summary = json.loads((slow.out / "summary.json").read_text())
    assert summary["drift_warning"] == slow.drift_warning
    # measured three times (two retries), slow each time, and the warning says so
    assert summary["stats"]["final_drifts"] == pytest.approx([1.6] * 3)
    assert "the closest of 3 final re-measurements" in slow.drift_warning


def test_a_drifted_final_remeasurement_is_repeated_and_the_closest_run_kept(
    tmp_path, tiny_space, fake_target, monkeypatch
):
    """The machine reads 1.6x slow in the final run, then 1.4x, then 2.0x (it changes speed
    while the search waits): the attempt closest to the trials' speed decides (1.4x, still
    warned); when it recovers after one wait, the second run decides and nothing is warned."""
    from tests.search.conftest import ConstantRuntime

    speeds = []
    monkeypatch.setattr(
        FakeTarget,
        "prepare",
        lambda self, config, timings=None: (
            lambda: ConstantRuntime(speeds[0] * self._ms(config), config.name)
        ),
    )
    waits = []
    wire(sleep=lambda s: (waits.append(s), speeds.pop(0)))

    speeds[:] = [1.6, 1.4, 2.0]
    worst = run_fake(_opts(tmp_path, tiny_space, trials=8, study="a", out=tmp_path / "a"))
    assert len(waits) == 2 and speeds == [2.0]
    assert "1.40x slower" in worst.drift_warning
    ratio = worst.best.remeasured.median_ms / worst.best.latency.median_ms
    assert ratio == pytest.approx(1.4)  # the kept run's figures, not the last run's

    speeds[:] = [1.6, 1.0]
    waits.clear()
    steady = run_fake(_opts(tmp_path, tiny_space, trials=8, study="b", out=tmp_path / "b"))
    assert len(waits) == 1 and steady.drift_warning is None
    assert steady.stats["final_drifts"] == pytest.approx([1.6, 1.0])
    assert steady.best.remeasured.median_ms == pytest.approx(steady.best.latency.median_ms)

    speeds[:] = [1.6]  # --drift-retries 0: one run, warned
    none = run_fake(
        _opts(tmp_path, tiny_space, trials=8, study="c", out=tmp_path / "c", drift_retries=0)
    )
    assert none.stats["final_drifts"] == pytest.approx([1.6])
    assert "1.60x slower during the final re-measurement than during the trials (" in (
        none.drift_warning
    )


def test_negative_drift_retries_are_refused(tmp_path, tiny_space):
    with pytest.raises(ValueError, match="--drift-retries -1: must be >= 0"):
        _opts(tmp_path, tiny_space, drift_retries=-1).check()


def test_a_time_limit_skips_drift_remeasurements_that_do_not_fit(
    tmp_path, tiny_space, fake_target, monkeypatch, caplog
):
    """Each trial takes 10 s of a fake clock; the final re-measurement reads the machine 1.6x
    slow. With --time-limit 200 the trials stop leaving the final phase its expected time, and
    the minute-long wait for a second re-measurement, which would overrun, is skipped (said
    so); without the limit the same search waits and measures again."""
    from tests.search.conftest import ConstantRuntime

    clock = [0.0]

    class TenSeconds(FakeTarget):  # each measurement takes 10 s of the fake clock
        def measure(self, config, timings=None):
            clock[0] += 10.0
            return super().measure(config, timings)

        def prepare(self, config, timings=None):  # the final run reads the machine 1.6x slow
            return lambda: ConstantRuntime(1.6 * self._ms(config), config.name)

    wire(clock=lambda: clock[0], target=TenSeconds)
    waits = []
    wire(sleep=waits.append)
    opts = _opts(tmp_path, tiny_space, trials=500, time_limit=200.0, drift_wait_seconds=60.0)
    with caplog.at_level("WARNING", logger="search"):
        limited = run_fake(opts)
    stop = limited.stats["time_limit"]
    assert stop["next_trial_estimate_s"] == pytest.approx(10.0)
    # the trials left the final phase its expected time, and stopped only when another
    # trial would have eaten into it
    left = 200 - stop["trials_stopped_at_s"]
    assert stop["final_estimate_s"] <= left < stop["final_estimate_s"] + 10
    # the run ends within the limit; after the trials, only the six references outside the
    # tiny space were measured (10 s each): the final side-by-side run costs no fake time
    assert clock[0] == stop["trials_stopped_at_s"] + 60.0 <= 200.0
    assert waits == [] and limited.stats["final_drifts"] == pytest.approx([1.6])
    assert "no time for another within --time-limit" in caplog.text
    assert "- Time limit: this run took" in (limited.out / "report.md").read_text()

    unlimited = run_fake(
        _opts(tmp_path, tiny_space, trials=8, out=tmp_path / "b", drift_wait_seconds=60.0)
    )
    assert waits == [60.0, 60.0] and len(unlimited.stats["final_drifts"]) == 3


def test_a_time_limit_must_be_positive(tmp_path, tiny_space):
    with pytest.raises(ValueError, match="--time-limit -5: must be > 0 seconds"):
        _opts(tmp_path, tiny_space, time_limit=-5).check()


def test_a_candidate_under_the_budget_only_by_its_median_is_not_the_pick(
    tmp_path, tiny_space, fake_target
):
    """Seeded noise, through the whole run: configs whose latency sits just under the budget
    read with a 50 % spread per inference, the others exactly. A rule on medians would pick
    the largest noisy one; the rule applied (the upper end of the re-measured median's 95 % CI
    within the budget) picks one whose latency is known to fit."""
    budget = 2.85
    band = (0.9 * budget, 1.1 * budget)
    fake_target.spread = lambda c: 0.5 if band[0] <= fake_latency_ms(c) < band[1] else 0.0
    outcome = run_fake(_opts(tmp_path, tiny_space, trials=40, budget_ms=budget))
    best = outcome.best
    assert best is not None and best.remeasured.ci_high_ms <= budget
    by_median = max(
        (c for c in outcome.pareto if c.remeasured.median_ms <= budget),
        key=lambda c: c.objective,
    )
    assert by_median is not best and by_median.objective > best.objective
    assert by_median.remeasured.ci_high_ms > budget  # its median fits, its CI does not
    assert fake_target.spread(by_median.config) > 0 and fake_target.spread(best.config) == 0


def test_without_trials_or_a_time_limit_the_whole_run_is_bounded(tmp_path, tiny_space):
    from search.options import DEFAULT_TIME_LIMIT_S

    assert _opts(tmp_path, tiny_space, trials=None).whole_run_limit == DEFAULT_TIME_LIMIT_S
    assert _opts(tmp_path, tiny_space, trials=None, timeout=40).whole_run_limit == 600.0
    assert _opts(tmp_path, tiny_space, trials=None, time_limit=90).whole_run_limit == 90
    assert _opts(tmp_path, tiny_space, trials=5).whole_run_limit is None  # a count was asked
