"""The accuracy objective: train-after-measure, early stop, checkpoints, resume, bad input.

Training is faked deterministically (accuracy a function of the config, one call per epoch)
except in the last test, which trains for real on a tiny generated dataset.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import onnx
import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

import evit
from search.accuracy import (
    EarlyRecord,
    EarlyStopRule,
    TrainBudget,
    TrainOutcome,
    check_init,
)
from search.cli import main as search_main
from search.options import SearchOptions
from tests.search.conftest import TINY_SPACE, WIRING, fake_latency_ms, run_fake, wire

BUDGET_MS = 1.5
EPOCHS = 3


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from evit.train.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("data") / "shapes"
    write_synthetic(root, num_classes=2, per_class=8, size=32, seed=0, val_per_class=4)
    return root


def fake_accuracy(config, epoch: int) -> float:
    """Top-1 after ``epoch`` (1-based): grows with width and epochs; the first stage's FFN
    ratio, which costs no (fake) latency, is worth 15 points, so that configs of equal
    latency differ and the early-stop rule has something to stop."""
    final = 30 + sum(s.embed_dim for s in config.stages) / 4
    final += 15 if config.stages[0].ffn_ratio == 2.0 else 0
    return final * epoch / EPOCHS


class FakeTraining:
    """Stands in for ``train_candidate``: writes a real (random) checkpoint with class names."""

    def __init__(self, fail_when=None, luck=None):
        self.trained: list = []  # (config, epochs run)
        self.seeds: list[int] = []  # the training seed of each call
        self.fail_when = fail_when  # (config, seed) -> crash
        self.luck = luck  # (config, seed) -> points added to the final top-1

    def __call__(self, config, budget, out, on_epoch):
        self.seeds.append(budget.seed)
        if self.fail_when is not None and self.fail_when(config, budget.seed):
            raise RuntimeError("simulated training crash")
        from pathlib import Path

        out = Path(out)
        out.mkdir(parents=True)
        history = []
        epochs_run = 0
        try:
            for epoch in range(budget.epochs):
                time.sleep(0.001)
                top1 = fake_accuracy(config, epoch + 1)
                record = {"val_top1": top1, "epoch": epoch + 1}
                history.append(record)
                epochs_run = epoch + 1
                if on_epoch is not None:
                    on_epoch(epoch, record)
        finally:
            self.trained.append((config, epochs_run))
        if self.luck is not None:
            history[-1]["val_top1"] += self.luck(config, budget.seed)
        trained = config.at_img_size(budget.train_img_size(config.img_size)).replace(num_classes=2)
        model = evit.create_model(trained)
        evit.save_checkpoint(model, out / "best.pth", {}, class_names=["first", "second"])
        (out / "last.pth").write_bytes(b"resume state")
        return TrainOutcome(history[-1]["val_top1"], history, out / "best.pth", 0.01)


@pytest.fixture
def fake_training(monkeypatch):
    fake = FakeTraining()
    wire(train=fake)
    return fake


def on_a_fake_clock(training, fake_target, monkeypatch, train_s=20.0, measure_s=1.0):
    """Wire a run onto a fake clock on which each training of ``training`` (a
    :class:`FakeTraining`) takes ``train_s`` and each measurement ``measure_s``, and every
    reading of the clock a little; returns the clock (a one-element list)."""
    clock = [0.0]

    def ticking():  # every reading costs a little, so cached trials take time too
        clock[0] += 0.01
        return clock[0]

    def timed(config, budget, out, on_epoch):
        clock[0] += train_s
        return dataclasses.replace(training(config, budget, out, on_epoch), seconds=train_s)

    measure = fake_target.measure

    def measured(self, config, timings=None):
        clock[0] += measure_s
        if timings is not None:
            timings["measure_s"] = measure_s
        return measure(self, config, timings)

    wire(clock=ticking, train=timed, estimate_training=lambda config, budget: train_s)
    monkeypatch.setattr(fake_target, "measure", measured)
    return clock


def _opts(tmp_path, space, data, **kw):
    train = TrainBudget(data=data, epochs=EPOCHS, batch_size=4, early_stop=0.33)
    base = dict(
        budget_ms=BUDGET_MS,
        target="ort-cpu",
        trials=24,
        space=space,
        out=tmp_path / "run",
        remeasure_block_seconds=0.001,
        objective="accuracy",
        train=train,
    )
    base.update(kw)
    return SearchOptions(**base)


def _front(trials):
    """The trials no other one beats in both top-1 and latency (written out, not imported)."""

    def point(t):
        return t.user_attrs["top1"], t.user_attrs["latency_median_ms"]

    return {
        t.number
        for t in trials
        if not any(
            point(o)[0] >= point(t)[0] and point(o)[1] <= point(t)[1] and point(o) != point(t)
            for o in trials
        )
    }


def _study(outcome):
    return optuna.load_study(
        study_name=outcome.study_name, storage=f"sqlite:///{outcome.out / 'study.db'}"
    )


# --- the early-stop rule -----------------------------------------------------------------


def test_early_stop_rule_needs_a_faster_trial_ahead_by_the_margin():
    rule = EarlyStopRule.for_budget(epochs=3, fraction=0.33, margin=2.0)
    assert rule.check_epoch == 1
    finished = [EarlyRecord(0, 1.0, 30.0), EarlyRecord(1, 2.0, 40.0), EarlyRecord(2, 5.0, 60.0)]
    assert rule.beaten_by(2.0, 37.0, finished).trial == 1  # equal latency counts
    assert rule.beaten_by(2.0, 38.0, finished) is None  # 2 points ahead is within the margin
    assert rule.beaten_by(1.5, 20.0, finished).trial == 0  # only faster ones compare
    assert rule.beaten_by(0.5, 0.0, finished) is None  # nothing is faster
    assert EarlyStopRule.for_budget(3, 0.0, 2.0).check_epoch == 0  # off
    assert EarlyStopRule.for_budget(1, 0.5, 2.0).check_epoch == 0  # no epoch before the end
    with pytest.raises(ValueError, match=r"--early-stop 1.5: must be in \[0, 1\)"):
        EarlyStopRule.for_budget(3, 1.5, 2.0)
    with pytest.raises(ValueError, match="--early-stop-margin -1"):
        EarlyStopRule.for_budget(3, 0.5, -1.0)


def test_proxy_training_sizes_scale_and_must_stay_distinct(tmp_path):
    budget = TrainBudget(data=tmp_path, img_size=64)
    assert [budget.train_img_size(s) for s in (192, 224, 256)] == [48, 64, 80]
    budget.check_sizes([192, 224, 256])
    with pytest.raises(ValueError, match=r"img_size 160 and 192 .* both train at 48 px"):
        budget.check_sizes([160, 192, 224])
    assert TrainBudget(data=tmp_path).train_img_size(192) == 192  # no proxy: its own size


# --- the search with the accuracy objective ------------------------------------------------


def test_accuracy_search_trains_only_what_fits_and_stops_hopeless_trials(
    tmp_path, tiny_space, shapes, fake_target, fake_training
):
    outcome = run_fake(_opts(tmp_path, tiny_space, shapes))
    study = _study(outcome)
    trials = study.trials
    # latency first: nothing over the budget was ever trained
    assert fake_training.trained
    assert all(fake_latency_ms(c) <= BUDGET_MS for c, _ in fake_training.trained)
    over = [t for t in trials if t.user_attrs.get("latency_median_ms", 0) > BUDGET_MS]
    assert over and all("top1" not in t.user_attrs for t in over)
    assert all(t.user_attrs["accuracy_source"].startswith("not trained") for t in over)
    # the objective is the validation accuracy of the (fake) training
    complete = [t for t in trials if t.state == TrialState.COMPLETE and "top1" in t.user_attrs]
    for t in complete:
        assert t.values[0] == t.user_attrs["top1"]
    # early stop: every stopped trial was beaten at epoch 1 by a finished, faster trial
    stopped = [t for t in trials if t.state == TrialState.PRUNED]
    assert stopped, "the fake accuracies leave hopeless trials to stop"
    for t in stopped:
        early = t.user_attrs["early_top1"]
        lat = t.user_attrs["latency_median_ms"]
        assert any(
            o.user_attrs.get("early_top1", -1) > early + 2.0
            and o.user_attrs["latency_median_ms"] <= lat
            and o.datetime_complete < t.datetime_complete
            for o in complete
        )
        assert t.user_attrs["early_saved_s"] > 0 and "reached" in t.user_attrs["early_stopped"]
    stopped_runs = [n for _, n in fake_training.trained if n < EPOCHS]
    assert len(stopped_runs) == len(stopped) and set(stopped_runs) == {1}
    assert outcome.stats["early_stopped"] == len(stopped)
    assert outcome.stats["early_saved_s"] > 0
    # weights kept only for the Pareto set, without resume state
    kept = {int(p.name) for p in (outcome.out / "trials").iterdir()}
    front = _front([t for t in complete if "checkpoint" in t.user_attrs])
    searched = _front(
        [t for t in complete if "checkpoint" in t.user_attrs and "reference" not in t.user_attrs]
    )
    assert kept == front | searched
    assert not list((outcome.out / "trials").glob("*/last.pth"))
    # the pick: the most accurate re-measured candidate within the budget, with its weights
    best = outcome.best
    fits = [c for c in outcome.pareto if c.remeasured.ci_high_ms <= BUDGET_MS]
    assert best.objective == max(c.objective for c in fits)
    assert best.trained and best.checkpoint is not None
    meta = {p.key: p.value for p in onnx.load(outcome.out / "best.onnx").metadata_props}
    assert json.loads(meta["evit.class_names"]) == ["first", "second"]
    assert (outcome.out / "best.pth").is_file()
    report = (outcome.out / "report.md").read_text()
    assert "No accuracy was measured" not in report
    assert f"pick {best.objective:.1f} %" in report and "the trained weights" in report
    assert f"stopped {len(stopped)}" in report
    summary = json.loads((outcome.out / "summary.json").read_text())
    assert summary["training"]["epochs"] == EPOCHS and summary["best"]["trained"] is True


def test_accuracy_study_resumes_without_training_twice(
    tmp_path, tiny_space, shapes, fake_target, fake_training
):
    first = run_fake(_opts(tmp_path, tiny_space, shapes, trials=8))
    trained_first = len(fake_training.trained)
    before = {t.number: t.values for t in _study(first).get_trials(states=(TrialState.COMPLETE,))}
    second = run_fake(_opts(tmp_path, tiny_space, shapes, trials=14))
    study = _study(second)
    counted = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(counted) == 14
    after = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert all(after[n] == v for n, v in before.items())  # finished trials kept as they were
    new_trainings = len(fake_training.trained) - trained_first - second.stats["confirmed"]
    new_trials = [t for t in counted if t.number not in before]
    assert new_trainings <= len(new_trials)  # nothing finished before was trained again
    with pytest.raises(ValueError, match=r"created with other settings .*training"):
        run_fake(
            _opts(
                tmp_path,
                tiny_space,
                shapes,
                trials=14,
                train=TrainBudget(data=shapes, epochs=EPOCHS + 1, batch_size=4),
            )
        )


def test_a_training_crash_fails_that_trial_only(
    tmp_path, tiny_space, shapes, fake_target, monkeypatch, caplog
):
    fake = FakeTraining(fail_when=lambda c, seed: c.stages[0].num_heads == 2)
    wire(train=fake)
    outcome = run_fake(_opts(tmp_path, tiny_space, shapes, trials=16))
    failed = _study(outcome).get_trials(states=(TrialState.FAIL,))
    assert failed
    assert all("simulated training crash" in t.user_attrs["fail_reason"] for t in failed)
    assert "simulated training crash" in caplog.text
    assert outcome.best is not None and outcome.best.config.stages[0].num_heads == 1
    assert not any((outcome.out / "trials" / f"{t.number:05d}").exists() for t in failed)


def test_confirmation_ranks_the_contenders_by_the_mean_of_two_seeds(
    tmp_path, tiny_space, shapes, fake_target, monkeypatch
):
    """A candidate lucky on seed 0 wins without confirmation and loses with it."""
    plain = FakeTraining()
    wire(train=plain)
    budget = TrainBudget(data=shapes, epochs=EPOCHS, batch_size=4, early_stop=0.0, confirm=0)
    kw = dict(trials=12, sampler="random", train=budget)
    truth = run_fake(_opts(tmp_path / "truth", tiny_space, shapes, **kw))
    fits = sorted(
        (c for c in truth.pareto if c.trained and c.remeasured.ci_high_ms <= BUDGET_MS),
        key=lambda c: -c.objective,
    )
    first, second = fits[0], fits[1]
    gap = first.objective - second.objective
    assert gap > 0
    lucky_arch = second.config.architecture_hash()

    def luck(config, seed):  # seed 0 puts the runner-up ahead; its mean stays behind
        return 1.5 * gap if seed == 0 and config.architecture_hash() == lucky_arch else 0.0

    fooled = FakeTraining(luck=luck)
    wire(train=fooled)
    unconfirmed = run_fake(_opts(tmp_path / "off", tiny_space, shapes, **kw))
    assert unconfirmed.best.config.architecture_hash() == lucky_arch
    assert unconfirmed.best.seeds is None and set(fooled.seeds) == {0}

    confirming = FakeTraining(luck=luck)
    wire(train=confirming)
    kw["train"] = dataclasses.replace(budget, confirm=2)
    outcome = run_fake(_opts(tmp_path / "on", tiny_space, shapes, **kw))
    best = outcome.best
    assert best.config.architecture_hash() == first.config.architecture_hash()
    assert best.seeds == [first.objective, first.objective]
    assert best.checkpoint is not None and best.checkpoint.is_file()
    lucky = next(c for c in outcome.pareto if c.config.architecture_hash() == lucky_arch)
    assert lucky.seeds == [second.objective + 1.5 * gap, second.objective]
    assert lucky.objective == second.objective + 0.75 * gap < best.objective
    # the lucky seed-0 score dominated the winner (faster and ahead): off the front, a
    # contender all the same, and its weights were kept
    assert lucky.latency.median_ms < best.latency.median_ms
    assert confirming.seeds.count(1) == outcome.stats["confirmed"] == 2  # M0 is over the budget
    report = (outcome.out / "report.md").read_text()
    assert (
        f"pick {best.objective:.1f} % (seeds " in report and "trained again with seed 1" in report
    )
    summary = json.loads((outcome.out / "summary.json").read_text())
    assert summary["best"]["seeds"] == best.seeds
    rows = [json.loads(line) for line in (outcome.out / "confirm.jsonl").read_text().splitlines()]
    assert {r["seed"] for r in rows} == {1} and len(rows) == 2
    # a repeated run reuses the second-seed scores instead of training again
    again = run_fake(_opts(tmp_path / "on", tiny_space, shapes, **kw))
    assert again.stats["confirmed"] == 0 and again.best.seeds == best.seeds
    assert confirming.seeds.count(1) == 2


def test_confirmation_covers_the_contenders_m0_and_its_rival(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from search.candidates import Candidate
    from tests.conftest import tiny_config
    from tests.search.conftest import latency_result

    lat = {}

    def cand(name, ms, top1, reference=None, trained=True):
        config = tiny_config(name=name, img_size=64 + 16 * len(lat))  # distinct hashes
        r = latency_result([ms] * 20, name)
        c = Candidate(config, top1, r, 1, 1, reference=reference, remeasured=r, slot=len(lat))
        c.trained = trained
        lat[c.slot] = ms
        return c

    m0, m1 = cand("m0", 1.0, 20.0, "efficientvit_m0"), cand("m1", 1.3, 21.0, "efficientvit_m1")
    m2 = cand("m2", 1.8, 0.0, "efficientvit_m2", trained=False)
    a, b, c, d = (
        cand("a", 0.9, 19.0),
        cand("b", 1.2, 24.0),
        cand("c", 1.25, 22.0),
        cand("d", 1.4, 18.0),
    )
    second_seed = {"a": 21.0, "b": 18.0, "c": 22.0, "m0": 22.0, "m1": 21.0}
    trained = []

    def train(config, budget, out, on_epoch):
        trained.append((config.name, budget.seed))
        return TrainOutcome(second_seed[config.name], [], out / "best.pth", 1.0)

    from search.selection import pick_best
    from search.trainer import Trainer

    budget = TrainBudget(data=tmp_path, confirm=2, device="cpu")
    target = SimpleNamespace(name="ort-cpu", device_key="cpu-test")
    trainer = Trainer(budget, tmp_path, target, train)
    run = SimpleNamespace(ratio=lambda x, y: SimpleNamespace(ci_high=lat[x] / lat[y]))
    done = trainer.confirm([a, b, c, d], [m0, m1, m2], run, 1.5, None)
    arch = {x.config.name: x.config.architecture_hash() for x in (a, b, c, d, m0, m1, m2)}
    assert done.contenders == [arch["b"], arch["c"]]  # the two most accurate within the budget
    # b, c; within m0's latency: a; m0. Not m1 (seed 0 only), never m2 (not trained)
    assert trained == [("b", 1), ("c", 1), ("a", 1), ("m0", 1)]
    a2, b2, c2, d2 = done.apply([a, b, c, d])
    m0b, m1b, m2b = done.apply([m0, m1, m2])
    assert b2.seeds == [24.0, 18.0] and b2.objective == 21.0
    assert c2.seeds == [22.0, 22.0] and c2.objective == 22.0
    assert a2.objective == 20.0 and m0b.objective == 21.0
    assert d2.seeds is None and m1b.seeds is None and m2b.seeds is None
    assert b.seeds is None and b.objective == 24.0  # the candidates given are not changed
    assert pick_best([b2, c2], 1.5) is c2  # the mean decides


def test_a_failed_confirmation_keeps_the_first_seed(
    tmp_path, tiny_space, shapes, fake_target, monkeypatch, caplog
):
    fake = FakeTraining(fail_when=lambda c, seed: seed == 1)
    wire(train=fake)
    outcome = run_fake(_opts(tmp_path, tiny_space, shapes, trials=8))
    assert outcome.best is not None and outcome.best.seeds is None
    assert "its one seed stands" in caplog.text and outcome.stats["confirmed"] == 0
    assert not list((outcome.out / "trials").glob("confirm-*"))
    with pytest.raises(ValueError, match=r"--confirm -1: must be >= 0"):
        TrainBudget(data=shapes, batch_size=4, confirm=-1).check()


# --- bad input -----------------------------------------------------------------------------


def test_accuracy_without_data_is_a_one_line_error(capsys):
    assert search_main(["--budget-ms", "2", "--objective", "accuracy"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --objective accuracy needs --data DIR") and "\n" not in err
    with pytest.raises(ValueError, match="--objective accuracy needs --data"):
        SearchOptions(budget_ms=2, objective="accuracy").check()
    with pytest.raises(ValueError, match="only --objective accuracy"):
        SearchOptions(budget_ms=2, train=TrainBudget(data="x")).check()


def test_data_without_val_is_refused(tmp_path, shapes, capsys):
    import shutil

    flat = tmp_path / "noval"
    shutil.copytree(shapes / "train", flat / "train")
    with pytest.raises(ValueError, match=r"--data .*noval: no val/ folder"):
        TrainBudget(data=flat).check()
    with pytest.raises(ValueError, match="no such folder"):
        TrainBudget(data=tmp_path / "missing").check()
    code = search_main(
        [
            "--budget-ms",
            "2",
            "--objective",
            "accuracy",
            "--data",
            str(flat),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "no val/ folder" in capsys.readouterr().err


def test_an_init_that_cannot_be_inherited_names_the_tensor(tmp_path, shapes):
    from search.space import load_space

    config = evit.load_config("m0").replace(num_classes=2)
    model = evit.create_model(config)
    evit.save_checkpoint(model, tmp_path / "good.pth", {})
    sd = torch.load(tmp_path / "good.pth", weights_only=False)
    key = next(k for k in sd["state_dict"] if k.endswith("dws.0.conv.weight"))
    sd["state_dict"][key] = sd["state_dict"][key][:, 0]  # 3-D where the space needs 4-D
    torch.save(sd, tmp_path / "bad.pth")
    space = load_space(None)
    budget = TrainBudget(data=shapes, init=tmp_path / "bad.pth", img_size=64)
    with pytest.raises(ValueError) as e:
        check_init(budget, [space.smallest(), space.largest()], 2)
    message = str(e.value)
    assert message.startswith("--init ") and key in message and "shape" in message
    assert "\n" not in message
    good = TrainBudget(data=shapes, init=tmp_path / "good.pth", img_size=64)
    check_init(good, [space.smallest(), space.largest()], 2)  # inheritable: no error
    with pytest.raises(ValueError, match=r"--init .*nothere.pth: no such file"):
        TrainBudget(data=shapes, init=tmp_path / "nothere.pth", batch_size=4).check()


# --- shape rules ---------------------------------------------------------------------------


def test_shape_rules_reject_configs_before_any_measurement(tmp_path, fake_target):
    space = {**TINY_SPACE, "rules": {"non_decreasing_widths": True, "min_first_width": 16}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    from search.space import load_space

    loaded = load_space(path)
    assert [s.embed_dim for s in loaded.smallest().stages] == [16, 16]
    outcome = run_fake(
        SearchOptions(
            budget_ms=BUDGET_MS,
            target="ort-cpu",
            trials=10,
            space=str(path),
            out=tmp_path / "run",
            remeasure_block_seconds=0.001,
        )
    )
    study = _study(outcome)
    rejected = [t for t in study.trials if "rejected" in t.user_attrs]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 10 and rejected  # rejections do not count towards --trials
    measured = set(fake_target.calls)
    for t in rejected:
        assert t.state == TrialState.PRUNED and "latency_median_ms" not in t.user_attrs
    for t in complete:
        w = [s.embed_dim for s in loaded.config_from_params(t.params).stages]
        assert w[0] >= 16 and w == sorted(w)
        assert t.user_attrs["arch_hash"] in measured or t.user_attrs["latency_source"] != "measured"
    bad = {**TINY_SPACE, "rules": {"non_decreasing": True}}
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"rules: unknown key.*non_decreasing"):
        load_space(path)
    path.write_text(yaml.safe_dump({**TINY_SPACE, "rules": {"min_first_width": 1000}}))
    with pytest.raises(ValueError, match="no config of the space keeps the rules"):
        load_space(path)
    path.write_text(yaml.safe_dump({**TINY_SPACE, "rules": {"max_width_ratio": 0.5}}))
    with pytest.raises(ValueError, match=r"max_width_ratio=0.5 must be >= 1"):
        load_space(path)


def test_shape_rules_say_which_rule_a_config_breaks():
    from search.space import ShapeRules

    m0 = evit.load_config("m0")  # 64/128/192
    assert ShapeRules(True, 64, 2.0).violation(m0) is None
    assert ShapeRules(min_first_width=96).violation(m0) == "first-stage width 64 < 96"
    assert ShapeRules(max_width_ratio=1.5).violation(m0) == (
        "widths 64/128/192 grow more than 1.5x per stage"
    )
    shrinking = m0.replace(stages=tuple(reversed(m0.stages)))
    assert ShapeRules(non_decreasing_widths=True).violation(shrinking) == (
        "widths 192/128/64 decrease"
    )


def test_zico_is_deterministic_and_tells_configs_apart():
    from search.objectives import zico_score

    small = evit.load_config("m0").at_img_size(64)
    wide = small.replace(
        stages=tuple(s.__class__(**{**s.__dict__, "ffn_ratio": 4.0}) for s in small.stages)
    )
    a, b = zico_score(small), zico_score(small)
    assert a == b and a == a and abs(a) != float("inf")
    assert zico_score(wide) != a


# --- one real training ---------------------------------------------------------------------


def test_a_real_accuracy_search_exports_the_trained_pick(tmp_path, tiny_space, shapes, fake_target):
    opts = _opts(
        tmp_path,
        tiny_space,
        shapes,
        trials=3,
        train=TrainBudget(data=shapes, epochs=1, batch_size=8, lr=1e-3, threads=2),
    )
    outcome = run_fake(opts)
    best = outcome.best
    assert best is not None and best.trained
    checkpoint = torch.load(outcome.out / "best.pth", weights_only=False)
    assert checkpoint["class_names"] == sorted(p.name for p in (shapes / "train").iterdir())
    trained = evit.create_model(outcome.out / "best.pth")
    assert trained.config.stages == best.config.replace(num_classes=2).stages
    meta = {p.key: p.value for p in onnx.load(outcome.out / "best.onnx").metadata_props}
    assert json.loads(meta["evit.class_names"]) == checkpoint["class_names"]


@pytest.mark.parametrize(
    ("target", "device", "shares"),
    [
        ("ort-cpu", "cpu", True),  # same cores: training holds the device lock (shared)
        ("ort-cpu", "cuda", False),  # GPU training while the CPU measures: they overlap
        ("trt", "cuda:0", True),
        ("trt", "cpu", False),
    ],
)
def test_training_holds_the_lock_only_where_latency_is_measured(target, device, shares):
    from types import SimpleNamespace

    from search.trainer import Trainer

    trainer = Trainer(SimpleNamespace(device=device), None, SimpleNamespace(name=target), None)
    assert trainer._shares_device() is shares


def test_a_reference_read_slow_once_is_measured_again_not_left_untrained(
    tmp_path, tiny_space, shapes, fake_target, fake_training, monkeypatch
):
    from tests.search.conftest import fake_latency_ms, latency_result

    seen: list[str] = []

    def first_reading_slow(self, config, timings=None):
        arch = config.architecture_hash()
        slow = 10.0 if arch not in seen else 1.0  # a slow moment of the machine, once
        seen.append(arch)
        return latency_result([fake_latency_ms(config) * slow] * 20, config.name, self.env)

    monkeypatch.setattr(fake_target, "measure", first_reading_slow)
    m0_ms = fake_latency_ms(evit.load_config("m0"))
    # the shipped accuracy space holds M0-M5, so they run as the study's first trials
    outcome = run_fake(_opts(tmp_path, None, shapes, trials=7, budget_ms=m0_ms * 1.5))
    study = _study(outcome)
    m0 = next(t for t in study.trials if t.user_attrs.get("reference") == "efficientvit_m0")
    assert m0.user_attrs["latency_median_ms"] == pytest.approx(m0_ms)  # the second reading
    assert "top1" in m0.user_attrs  # trained, and compared with the pick
    assert outcome.references[0].trained is True


def test_a_reference_budget_is_measured_once_and_the_pick_is_as_fast_as_it(
    tmp_path, shapes, fake_target, fake_training, capsys
):
    from search.cli import budget_arg
    from search.selection import within_reference
    from search.targets import BUDGET_FILE

    assert budget_arg("M0") == budget_arg("efficientvit_m0") == "efficientvit_m0"
    assert budget_arg("2.5") == 2.5
    m0 = evit.load_config("m0")
    opts = dict(budget_ms=float("nan"), budget_reference="efficientvit_m0", trials=24)
    outcome = run_fake(_opts(tmp_path, None, shapes, **opts))
    # M0 measured on the target, with the slack one reading's drift needs
    assert outcome.budget_ms == pytest.approx(fake_latency_ms(m0) * 1.1)
    assert "-m0-accuracy" in outcome.study_name and "M0's latency" in outcome.budget_choice
    assert "M0's latency" in capsys.readouterr().err  # said at start-up
    ref = next(r for r in outcome.references if r.reference == "efficientvit_m0")
    assert ref.trained is True  # the reference that sets the budget is always trained
    assert outcome.best is not None and outcome.best.reference is None
    assert within_reference(outcome.best, ref, outcome.interleaved)  # paired: as fast as M0
    as_fast = [c for c in outcome.pareto if within_reference(c, ref, outcome.interleaved)]
    assert outcome.best.objective == max(c.objective for c in as_fast if c.trained)
    report = (outcome.out / "report.md").read_text()
    assert "Budget from a reference" in report
    # the rule the pick was held to, not "within X ms": the paired ratio, and the reading
    reading = fake_latency_ms(m0)
    assert f"M0's reading {reading:.3f} ms + 10%" in report and "at most 1" in report
    assert "to the budget" not in report and "(the rule: at most 1)" in report
    again = run_fake(_opts(tmp_path, None, shapes, **opts))  # resumed: not measured again
    assert again.budget_ms == outcome.budget_ms
    assert again.budget_choice.endswith("(measured when this study started)")
    assert (outcome.out / BUDGET_FILE).is_file()
    with pytest.raises(ValueError, match=r"--budget-ms efficientvit_m9: not a reference"):
        run_fake(_opts(tmp_path, None, shapes, budget_reference="efficientvit_m9"))


def test_a_second_worker_adopts_the_reference_budget_of_the_study(
    tmp_path, tiny_space, fake_target, monkeypatch
):
    from search.study import prepare_run
    from tests.search.conftest import latency_result

    readings = iter([1.00, 1.07, 0.5, 0.5])  # two workers never read M0 alike

    def measure(self, config, timings=None):
        return latency_result([next(readings)] * 20, config.name, self.env)

    monkeypatch.setattr(fake_target, "measure", measure)
    common = dict(
        budget_ms=float("nan"),
        budget_reference="efficientvit_m0",
        target="ort-cpu",
        trials=1,
        space=tiny_space,
        storage=f"journal://{tmp_path / 'study.log'}",
        study="shared",
    )
    from search.context import make_context, open_study

    seams = WIRING.seams()
    _, first, _ = open_study(make_context(SearchOptions(out=tmp_path / "a", **common), seams))
    second = make_context(SearchOptions(out=tmp_path / "b", **common), seams)
    assert second.budget_ms == pytest.approx(1.07 * 1.1)  # its own reading, at first
    _, joined, _ = open_study(second)  # not refused for "other settings": the study's budget
    assert joined.budget_ms == first.budget_ms == pytest.approx(1.1)
    assert "measured by the worker that started it" in joined.budget_choice
    second_run = prepare_run(SearchOptions(out=tmp_path / "b", **common), seams)
    assert second_run.measurer.prefilter.budget_ms == first.budget_ms


def test_a_time_limit_ends_the_run_confirmations_included_within_it(
    tmp_path, tiny_space, shapes, fake_target, monkeypatch
):
    """A (fake) training takes 20 s of a fake clock, a measurement 1 s: under --time-limit
    300 the trials stop when one more trial and the final phase (re-measurement, the
    confirmations' four trainings, outputs) would not fit, and the run ends within 300 s."""
    clock = on_a_fake_clock(FakeTraining(), fake_target, monkeypatch)
    outcome = run_fake(_opts(tmp_path, tiny_space, shapes, trials=500, time_limit=300.0))
    stop = outcome.stats["time_limit"]
    assert outcome.stats["trained"] >= 5 and outcome.stats["confirmed"] >= 2
    assert stop["final_estimate_s"] >= 20.0 * (outcome.stats["confirmed"])
    assert clock[0] <= 300.0  # the trainings of --confirm included
    assert outcome.stats["run_seconds"] == pytest.approx(clock[0], abs=1.0)


def test_a_resumed_run_estimates_its_time_from_the_study_s_earlier_trainings(
    tmp_path, tiny_space, shapes, fake_target, fake_training
):
    """Before a resumed run has trained anything, --time-limit's estimates (the next trial,
    the confirmations) come from the trainings the study already holds, not from zero."""
    first = run_fake(_opts(tmp_path, tiny_space, shapes, trials=8))
    assert first.stats["trained"] >= 2
    from search.study import prepare_run
    from search.timeplan import OUTPUT_SECONDS

    opts = _opts(tmp_path, tiny_space, shapes, time_limit=600.0)
    plan = prepare_run(opts, WIRING.seams()).plan
    trained = [t.user_attrs for t in _study(first).trials if "top1" in t.user_attrs]
    earlier = [a["train_seconds"] for a in trained if "train_seconds" in a]
    assert plan.times.earlier_trainings == earlier
    assert plan.times.next_trial() == pytest.approx(float(np.percentile(earlier, 75)))
    confirm = plan.after_remeasure_seconds() - OUTPUT_SECONDS
    assert confirm == pytest.approx((opts.train.confirm + 2) * max(earlier))
