"""--weight-sharing: a supernet trained first, every candidate's accuracy read from it, the
contenders fine-tuned from their inherited weights (fake latency, a real supernet trained for
one epoch on a tiny data set, fake fine-tuning)."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from search.accuracy import TrainBudget
from search.cli import main as search_main
from search.options import SearchOptions
from search.space import load_space
from tests.search.conftest import WIRING, run_fake, wire
from tests.search.test_accuracy import (  # noqa: F401 (fixtures)
    EPOCHS,
    FakeTraining,
    fake_training,
    on_a_fake_clock,
    shapes,
)


class RecordingTraining(FakeTraining):
    """Records the weights each fine-tuning starts from."""

    def __init__(self):
        super().__init__()
        self.inits = []

    def __call__(self, config, budget, out, on_epoch):
        self.inits.append((config.architecture_hash(), budget.seed, budget.init))
        return super().__call__(config, budget, out, on_epoch)


def _budget(data):
    return TrainBudget(data=data, epochs=EPOCHS, batch_size=4)


def _opts(tmp_path, space, data, **kw):
    base = dict(
        budget_ms=3.0,
        target="ort-cpu",
        trials=12,
        space=space,
        out=tmp_path / "run",
        remeasure_block_seconds=0.001,
        objective="accuracy",
        train=_budget(data),
        weight_sharing=True,
        supernet_epochs=1,
    )
    base.update(kw)
    return SearchOptions(**base)


def test_the_search_reads_accuracy_from_the_supernet_and_fine_tunes_the_pick(
    tmp_path,
    tiny_space,
    shapes,  # noqa: F811
    fake_target,
):
    from search.inherited import InheritedScorer, SupernetReport

    tuning = RecordingTraining()
    wire(train=tuning)
    outcome = run_fake(_opts(tmp_path, tiny_space, shapes))
    checkpoint = tmp_path / "run" / "supernet" / "supernet.pth"
    assert outcome.supernet["epochs"] == 1 and checkpoint.is_file()
    study = optuna.load_study(
        study_name=outcome.study_name, storage=f"sqlite:///{outcome.out / 'study.db'}"
    )
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    scored = [t for t in complete if t.user_attrs.get("accuracy_source") == "inherited"]
    assert len(scored) >= 3 and outcome.stats["inherited"] == len(scored)
    assert not [t for t in complete if t.user_attrs.get("accuracy_source") == "trained"]
    # the score is the supernet's: read again from its checkpoint, the same number
    report = SupernetReport(**{**outcome.supernet, "checkpoint": checkpoint})
    scorer = InheritedScorer(_budget(shapes), outcome.out, report, None)
    space = dataclasses.replace(load_space(tiny_space), num_classes=2)
    for t in scored[:2]:
        config = space.config_from_params(t.params)
        assert scorer.inherited_top1(config) == pytest.approx(t.user_attrs["top1"], abs=1e-9)
    # the pick was fine-tuned from its inherited weights with two seeds, and exported from them
    best = outcome.best
    assert best is not None and best.inherited is not None and len(best.seeds) == 2
    arch = best.config.architecture_hash()
    starts = [(seed, init) for a, seed, init in tuning.inits if a == arch]
    assert [seed for seed, _ in starts] == [0, 1]
    assert all(init is not None and init.name == "inherited.pth" for _, init in starts)
    assert best.checkpoint == outcome.out / "trials" / f"finetune-{arch[:8]}" / "seed0" / "best.pth"
    assert (outcome.out / "best.pth").is_file()
    report_md = (outcome.out / "report.md").read_text()
    assert "Weight sharing: one supernet of the space trained 1 epoch(s)" in report_md
    assert f"scored {len(scored)} candidates by their inherited weights" in report_md


def test_weight_sharing_without_data_is_a_one_line_error(capsys):
    assert search_main(["--budget-ms", "2", "--weight-sharing", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --weight-sharing scores candidates by a supernet") and (
        err.count("\n") == 1
    )


def test_a_short_training_study_is_never_resumed_with_weight_sharing(
    tmp_path,
    tiny_space,
    shapes,  # noqa: F811
    fake_target,
    fake_training,  # noqa: F811
):
    from search.context import default_study_name

    plain = _opts(tmp_path, tiny_space, shapes, weight_sharing=False, trials=4)
    shared = _opts(tmp_path, tiny_space, shapes)
    # the README's two commands differ by the flag alone: their default studies differ too
    assert default_study_name("ort-cpu", plain, 2) != default_study_name("ort-cpu", shared, 2)
    plain, shared = (dataclasses.replace(o, study="one") for o in (plain, shared))
    run_fake(plain)
    # the same study: inherited scores would mix with short-training ones; refused before
    # the supernet trains
    with pytest.raises(ValueError, match=r"other settings \(scorer None -> 'supernet'"):
        run_fake(shared)
    assert not (tmp_path / "run" / "supernet").exists()


def test_a_time_share_shorter_than_one_pass_trains_the_steps_that_fit(
    tmp_path,
    tiny_space,
    shapes,  # noqa: F811
):
    """One pass over the data can take longer than a whole --time-limit on a CPU: the supernet
    then trains the steps its share fits, not a pass that overruns the limit."""
    from search.inherited import train_supernet_for

    budget = _budget(shapes)  # (whole passes without a limit: tests/evit/test_supernet_plan.py)
    short = train_supernet_for(budget, tiny_space, tmp_path / "b", 2, lambda: 1e-3)
    assert (short.epochs, short.steps, short.planned_epochs) == (1, 1, 2)
    # the report says it
    assert short.as_dict()["steps"] == 1
    # the trials score the supernet's own weights: no EMA to train and evaluate
    from evit.supernet.checkpoint import load_supernet

    with pytest.raises(ValueError, match="holds no EMA"):
        load_supernet(short.checkpoint, ema=True)


def test_m0_is_fine_tuned_before_the_trials_so_the_time_limit_counts_the_fine_tunings(
    tmp_path,
    tiny_space,
    shapes,  # noqa: F811
    fake_target,
    monkeypatch,
    capsys,
):
    """The trials train nothing, so without a training time the final phase's fine-tunings
    (two seeds of the contenders and M0's rival) were estimated at 0 s and overran the limit."""
    from types import SimpleNamespace

    import search.study
    from search.study import final_trainings

    tuning = RecordingTraining()
    clock = on_a_fake_clock(tuning, fake_target, monkeypatch, measure_s=10.0)
    space = load_space(tiny_space)
    stand_in = space.smallest().replace(name="efficientvit_m0")  # the tiny space holds no M0
    monkeypatch.setattr(search.study, "reference_configs", lambda: {"efficientvit_m0": stand_in})
    short = tmp_path / "short"
    argv = ["--budget-ms", "3", "--target", "ort-cpu", "--space", str(tiny_space)]
    argv += ["--objective", "accuracy", "--data", str(shapes), "--train-epochs", str(EPOCHS)]
    argv += ["--train-batch-size", "4", "--weight-sharing", "--supernet-epochs", "1"]
    argv += ["--time-limit", "300", "--no-progress", "--out", str(short)]
    assert search_main(argv, seams=WIRING.seams()) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --time-limit 300 is too short for --weight-sharing here")
    assert err.count("\n") == 1 and "give --time-limit 420 or more" in err
    assert not (short / "supernet").exists() and not (short / "summary.json").exists()
    opts = _opts(tmp_path, tiny_space, shapes, trials=500, time_limit=600.0)
    outcome = run_fake(opts)
    arch = stand_in.replace(num_classes=2).architecture_hash()
    assert [(a, seed) for a, seed, _ in tuning.inits[:2]] == [(arch, 0), (arch, 1)]
    stop = outcome.stats["time_limit"]
    # two seeds of --confirm's 2 contenders and M0's rival, at the 20 s each M0's took
    assert final_trainings(SimpleNamespace(train=opts.train, opts=opts)) == 6
    assert stop["final_estimate_s"] >= 6 * 20.0
    assert clock[0] <= 600.0 and outcome.stats["confirmed"] >= 2
    assert outcome.stats["inherited"] >= 10  # the trials had time too (docs §18, run D: none)
