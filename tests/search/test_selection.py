"""One pick rule: the upper end of the 95 % CI of the comparison with the bound."""

from __future__ import annotations

import dataclasses

import numpy as np

from edge.latency import InterleavedResult
from evit.config import load_config
from search.candidates import Candidate
from search.selection import pick_best, pick_family, within_reference
from tests.search.conftest import latency_result


def _run(
    rounds: dict[str, list[float]], samples: dict[str, list[float]] | None = None
) -> tuple[InterleavedResult, list[Candidate]]:
    """Candidates re-measured in one interleaved run: per-round block medians, and the pooled
    samples each model's median comes from (by default the block medians themselves)."""
    names = list(rounds)
    samples = samples or rounds
    results = [latency_result(samples[n], n) for n in names]
    run = InterleavedResult(
        results=results,
        ratios=[],
        rounds=len(rounds[names[0]]),
        block_seconds=0.1,
        block_medians=[list(r) for r in rounds.values()],
    )
    configs = ["m0", "m1", "m2", "m3"]
    cands = [
        Candidate(
            config=load_config(configs[i]).replace(name=n),
            objective=float(i),
            latency=results[i],
            params=0,
            macs=0,
            reference=n if n.startswith("M") else None,
            remeasured=results[i],
            slot=i,
        )
        for i, n in enumerate(names)
    ]
    return run, cands


def test_a_pick_is_decided_by_the_paired_ratio_not_by_medians_within_noise():
    rng = np.random.default_rng(0)
    m = 2.0 * (1 + 0.8 * rng.random(15))  # the machine's speed changes from round to round
    a = m * rng.choice([0.9, 1.04], size=15)  # as often slower as faster than M
    b = m * 0.95  # faster than M in every round
    # pooled samples: A's happen to sit low, B's fell in slow phases and sit high
    samples = {"M": list(m), "A": list(a * 0.9), "B": list(b * 1.2)}
    run, (ref, cand_a, cand_b) = _run({"M": list(m), "A": list(a), "B": list(b)}, samples)
    assert cand_a.remeasured.median_ms < ref.remeasured.median_ms  # medians would pick A...
    assert cand_b.remeasured.median_ms > ref.remeasured.median_ms  # ...and reject B
    assert not within_reference(cand_a, ref, run)
    assert within_reference(cand_b, ref, run)
    assert pick_family([cand_a, cand_b], [ref], run) == [(ref, cand_b)]


def test_best_pick_uses_the_upper_end_of_the_ci():
    run, (_, a, b, c) = _run(
        {"M": [1.0] * 12, "A": [1.9, 2.1] * 6, "B": [1.5] * 12, "C": [3.0] * 12}
    )
    assert pick_best([a, b, c], budget_ms=2.0) is b  # A's median is 2.0 but its CI reaches 2.1
    assert pick_best([a, b, c], budget_ms=1.0) is None


def test_a_candidate_that_was_never_trained_is_never_the_pick():
    """Nothing fit at first measurement, so the fallback re-measured the fastest candidate;
    it was over the budget then and never trained (objective 0): re-measured within the budget,
    it must still not become a pick with an accuracy nobody measured."""
    run, (_, untrained, trained, _) = _run(
        {"M": [1.0] * 12, "A": [1.5] * 12, "B": [3.0] * 12, "C": [3.0] * 12}
    )
    untrained.trained, untrained.objective = False, 0.0
    trained.trained = True
    assert pick_best([untrained, trained], budget_ms=2.0) is None
    untrained.trained = None  # a proxy objective: nothing to train, the pick stands
    assert pick_best([untrained, trained], budget_ms=2.0) is untrained


def test_iso_latency_picks_may_repeat_where_family_picks_stay_distinct():
    """Without ``distinct``, each reference gets the best candidate within its own latency."""
    run, (ref_a, ref_b, x, y) = _run(
        {"MA": [1.0] * 12, "MB": [2.0] * 12, "x": [0.5] * 12, "y": [1.5] * 12}
    )
    x.objective, y.objective = 10.0, 5.0  # x is the most accurate, and within both latencies
    distinct = pick_family([x, y], [ref_a, ref_b], run)
    assert [c.config.name for _, c in distinct] == ["x", "y"]
    same = pick_family([x, y], [ref_a, ref_b], run, distinct=False)
    assert [c.config.name for _, c in same] == ["x", "x"]


def test_a_pick_whose_lead_is_within_the_noise_says_that_m0_is_as_good():
    """The README's accuracy command on a held-out real dataset reported "pick 13.2 % (seeds
    14.3 / 12.1), efficientvit_m0 13.4 % (13.1 / 13.7)" and exported the pick as the result."""
    from types import SimpleNamespace

    from search.report import lead_verdict

    def cand(seeds, reference=None):
        return SimpleNamespace(
            objective=sum(seeds) / 2, seeds=seeds, reference=reference, slot=None
        )

    m0 = cand([13.1, 13.7], "efficientvit_m0")
    pick = cand([14.3, 12.1])
    others = [cand([14.0, 12.9]), cand([12.5, 13.6])]

    def outcome(best, budget_reference="efficientvit_m0"):
        return SimpleNamespace(
            best=best,
            training={"epochs": 3},
            references=[m0],
            pareto=[best, *others],
            interleaved=None,
            budget_reference=budget_reference,
        )

    line = lead_verdict(outcome(pick))
    assert line.startswith("M0 is as good as the pick: its lead of -0.2 points is within")
    assert "from this run's 4 seed pairs" in line
    clear = cand([24.0, 23.0])
    assert lead_verdict(outcome(clear)).startswith("the pick leads M0 by +10.1 points, beyond")
    worse = lead_verdict(outcome(cand([5.0, 6.0])))
    assert worse.startswith("M0 is better than the pick by 7.9 points, beyond")
    one_seed = SimpleNamespace(objective=14.0, seeds=None, reference=None, slot=None)
    assert lead_verdict(outcome(one_seed)) is None  # not confirmed: no two-seed mean
    assert lead_verdict(SimpleNamespace(best=pick, training=None)) is None  # a proxy


def _focus_case():
    """A final run of 12 rounds in which A reads 0.7x M in most rounds but M fell in two fast
    phases, B reads 0.8x M in every round and C 1.2x M."""
    m = [2.0] * 12
    a = [1.4] * 9 + [2.4, 2.6, 2.2]  # slow phases for A alone: the CI reaches above 1
    run, (ref, cand_a, cand_b, cand_c) = _run({"M": m, "A": a, "B": [1.6] * 12, "C": [2.4] * 12})
    cand_a.objective, cand_b.objective, cand_c.objective = 30.0, 20.0, 40.0
    return run, ref, cand_a, cand_b, cand_c


def test_a_candidate_the_final_run_cannot_place_is_decided_by_a_focused_run():
    from search.selection import Focused, focused, undecided

    run, ref, a, b, c = _focus_case()
    r = run.ratio(a.slot, ref.slot)
    assert r.ratio < 1.0 < r.ci_high  # undecided by the final run
    assert undecided([a, b, c], ref, run, 3) == [a]  # B is within, C is over
    assert pick_best([a, b, c], 0.0, ref, run) is b
    rng = np.random.default_rng(0)
    again = InterleavedResult(
        results=[run.results[0], run.results[1]],
        ratios=[],
        rounds=60,
        block_seconds=0.1,
        block_medians=[[2.0] * 60, list(1.4 * np.exp(rng.normal(0, 0.05, 60)))],
    )
    both = focused(run, again, [ref.slot, a.slot])
    assert isinstance(both, Focused) and both.rounds == run.rounds
    assert both.ratio(a.slot, ref.slot).ci_high < 1.0 and both.ratio(a.slot, ref.slot).rounds == 60
    assert both.ratio(b.slot, ref.slot) == run.ratio(b.slot, ref.slot)  # not in the focused run
    assert pick_best([a, b, c], 0.0, ref, both) is a
    assert both.to_dict()["focused"]["rounds"] == 60 and both.to_dict()["focused_slots"] == [0, 1]
    # a focused run that still cannot tell them apart decides nothing
    still = InterleavedResult(
        results=again.results,
        ratios=[],
        rounds=60,
        block_seconds=0.1,
        block_medians=[[2.0] * 60, [1.4] * 31 + [2.6] * 29],
    )
    assert pick_best([a, b, c], 0.0, ref, focused(run, still, [ref.slot, a.slot])) is b
    a.trained = False  # never trained: never the pick, so not worth measuring again
    assert undecided([a, b, c], ref, run, 3) == []


def test_the_final_phase_measures_undecided_candidates_again_when_the_budget_is_m0(caplog):
    """``search.final.focus_undecided``: M and the undecided A in a run of their own, only
    with a reference budget, and only when --time-limit leaves the time for it."""
    from types import SimpleNamespace

    from search.final import focus_undecided
    from search.measure import Remeasured
    from search.selection import Focused
    from search.targets import Target
    from search.timeplan import TimePlan

    run, ref, a, b, c = _focus_case()
    asked: list[list[str]] = []

    class Measurer:
        def remeasure(self, cands, target, max_rounds=40):
            asked.append([x.config.name for x in cands])
            assert target.build_level is None and max_rounds > 40
            return Remeasured(cands, run)

    ctx = SimpleNamespace(budget_reference="M", target=Target("ort-cpu", threads=1))
    ref = dataclasses.replace(ref, reference="M")
    clock = {"now": 0.0}
    plan = TimePlan(limit=None, started=0.0, clock=lambda: clock["now"])
    done = focus_undecided(Measurer(), plan, ctx, [ref], [a, b, c], run)
    assert asked == [["M", "A"]] and isinstance(done, Focused) and done.focused_slots == (0, 1)
    in_ms = SimpleNamespace(budget_reference=None, target=ctx.target)
    assert focus_undecided(Measurer(), plan, in_ms, [ref], [a, b, c], run) is run
    short = TimePlan(limit=100.0, started=0.0, clock=lambda: 90.0)  # 10 s left
    assert focus_undecided(Measurer(), short, ctx, [ref], [a, b, c], run) is run
    assert len(asked) == 1 and "no time for a focused run" in caplog.text
    # the time limit plans for it: a reference budget's final phase is longer
    plain = TimePlan(limit=1000.0, started=0.0, clock=lambda: 0.0)
    focus = TimePlan(limit=1000.0, started=0.0, clock=lambda: 0.0, focus=True)
    assert focus.final_seconds(10) > plain.final_seconds(10)


def test_the_report_says_what_the_focused_run_found():
    from types import SimpleNamespace

    from search.report import focus_words
    from search.selection import focused

    run, ref, a, *_ = _focus_case()
    assert focus_words(SimpleNamespace(interleaved=run)) is None
    again = InterleavedResult(
        results=run.results[:2],
        ratios=[],
        rounds=60,
        block_seconds=0.1,
        block_medians=[[2.0] * 60, [1.4] * 60],
    )
    both = focused(run, again, [0, 1])
    line = focus_words(SimpleNamespace(interleaved=both))
    assert line.startswith("the final run (12 rounds) could not tell 1 candidate(s) from M")
    assert "(60 rounds): A 0.70 [0.70, 0.70]" in line
    # with nothing within the budget, the fastest is named by the focused run's ratio too
    from search.report import fastest_words

    a = dataclasses.replace(a, remeasured=a.latency, vs_first=run.ratio(a.slot, 0))
    assert a.vs_first.ci_high > 1.0
    words = fastest_words(SimpleNamespace(fastest=a, interleaved=both))
    assert words.endswith(", 0.70x M0 [0.70, 0.70]"), words
