"""Which candidates to re-measure, and which ones to pick.

One rule decides every pick: a candidate is within a bound when the upper end of the 95 %
confidence interval of its comparison with that bound is within it. Against a budget in
milliseconds the comparison is its re-measured median latency; against a reference model
(the family's S_i vs M_i) it is the paired ratio of the two, measured side by side in the same
interleaved rounds, so that a difference smaller than the noise never decides a pick.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.latency import InterleavedResult, Ratio
from search.candidates import Candidate

FALLBACK_MARGIN = 0.85  # re-measure a few candidates this far under the budget too
FOCUS_CANDIDATES = 3  # undecided candidates measured again beside the budget's reference
FOCUS_ROUNDS = 80  # at most, in the focused run (the final run of ~10 models gets ~20)


def front_indices(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (objective, latency) points no other point beats: at least as good in
    both, better in one (objective up, latency down). Equal points are all on the front."""
    return [
        i
        for i, (obj, lat) in enumerate(points)
        if not any(
            o >= obj and ms <= lat and (o > obj or ms < lat) for j, (o, ms) in enumerate(points)
        )
    ]


def pareto_front(cands: list[Candidate]) -> list[Candidate]:
    """Non-dominated candidates (objective up, first-measured latency down), fastest first."""
    points = [(c.objective, c.latency.median_ms) for c in cands]
    front = [cands[i] for i in front_indices(points)]
    return sorted(front, key=lambda c: c.latency.median_ms)


def choose_remeasure(
    cands: list[Candidate],
    budget_ms: float,
    limit: int,
    family_latencies: list[float] | None = None,
    contenders: int = 0,
) -> list[Candidate]:
    """Pareto candidates worth re-measuring: the best few within the budget, plus the best few
    with a 15 % margin (a first measurement of a winner is optimistic, so the top ones may not
    fit when re-measured); in family mode, the best three under each reference latency. A
    noisy objective (trained accuracy) adds its ``contenders`` best within the budget, on the
    front or not: a lucky score elsewhere may have dominated them."""
    searched = [c for c in cands if c.reference is None]
    front = pareto_front(searched)
    feasible = [c for c in front if c.latency.median_ms <= budget_ms]
    by_objective = sorted(feasible, key=lambda c: -c.objective)
    chosen = by_objective[:limit]
    fitting = sorted(
        (c for c in searched if c.latency.median_ms <= budget_ms), key=lambda c: -c.objective
    )
    for c in fitting[:contenders]:
        if c not in chosen:
            chosen.append(c)
    fallbacks = [c for c in by_objective if c.latency.median_ms <= FALLBACK_MARGIN * budget_ms]
    for c in fallbacks[: max(1, limit // 3)]:
        if c not in chosen:
            chosen.append(c)
    if not chosen and searched:  # nothing fits: re-measure the fastest to report it honestly
        chosen = sorted(searched, key=lambda c: c.latency.median_ms)[:1]
    for lat in family_latencies or []:
        under = sorted((c for c in front if c.latency.median_ms <= lat), key=lambda c: -c.objective)
        for c in under[:3]:
            if c not in chosen:
                chosen.append(c)
    return chosen


@dataclass
class Focused(InterleavedResult):
    """The final interleaved run, in which the budget's reference and the candidates its
    rounds could not tell from it (:func:`undecided`) were then measured again in a run of
    their own (fewer models: more rounds in the time). A ratio between two of those comes from
    the focused run; every other figure from the final run."""

    focused: InterleavedResult | None = None
    focused_slots: tuple[int, ...] = ()  # the final run's slot of each model of the focused one

    def ratio(self, other: int, reference: int) -> Ratio:
        slots = self.focused_slots
        if self.focused is not None and other in slots and reference in slots:
            return self.focused.ratio(slots.index(other), slots.index(reference))
        return super().ratio(other, reference)

    def to_dict(self) -> dict:
        focused = self.focused.to_dict() if self.focused is not None else None
        return {**super().to_dict(), "focused": focused, "focused_slots": list(self.focused_slots)}


def focused(run: InterleavedResult, focus: InterleavedResult, slots: list[int]) -> Focused:
    """``run`` with ``focus`` (a run of the models at ``slots`` of ``run``, in that order)."""
    fields = {k: getattr(run, k) for k in ("results", "ratios", "rounds", "block_seconds")}
    return Focused(
        **fields, block_medians=run.block_medians, focused=focus, focused_slots=tuple(slots)
    )


def undecided(
    chosen: list[Candidate], reference: Candidate, run: InterleavedResult, k: int
) -> list[Candidate]:
    """The ``k`` most accurate candidates that ``run`` cannot place against ``reference``:
    their paired ratio's median is below 1 and its 95 % CI's upper end above. A candidate the
    accuracy objective never trained is left out, as :func:`pick_best` leaves it out."""
    if reference.slot is None:
        return []

    def open_(c: Candidate) -> bool:
        r = run.ratio(c.slot, reference.slot)
        return r.ratio < 1.0 < r.ci_high

    todo = [c for c in chosen if c.trained is not False and c.slot is not None and open_(c)]
    return sorted(todo, key=lambda c: -c.objective)[:k]


def within_budget(c: Candidate, budget_ms: float) -> bool:
    """The upper end of the re-measured median's 95 % CI is within the budget."""
    return c.remeasured is not None and c.remeasured.ci_high_ms <= budget_ms


def within_reference(c: Candidate, ref: Candidate, run: InterleavedResult) -> bool:
    """The upper end of the 95 % CI of the paired ratio c / ref is at most 1."""
    if c.slot is None or ref.slot is None:
        return False
    return run.ratio(c.slot, ref.slot).ci_high <= 1.0


def fits_budget(
    c: Candidate,
    budget_ms: float,
    reference: Candidate | None = None,
    run: InterleavedResult | None = None,
) -> bool:
    """Within the budget: a number of milliseconds (:func:`within_budget`), or, when the budget
    is a reference's latency (``--budget-ms m0``), that reference's paired latency in the final
    interleaved run (:func:`within_reference`)."""
    if reference is not None:
        return run is not None and within_reference(c, reference, run)
    return within_budget(c, budget_ms)


def pick_best(
    chosen: list[Candidate],
    budget_ms: float,
    reference: Candidate | None = None,
    run: InterleavedResult | None = None,
) -> Candidate | None:
    """The highest objective among the candidates within the budget (see :func:`fits_budget`).

    A candidate the accuracy objective never trained (``trained is False``: it was over the
    budget when first measured, so its objective is a placeholder 0) is never picked, even when
    it re-measures within the budget: its accuracy is a number nobody measured."""
    fits = [
        c for c in chosen if c.trained is not False and fits_budget(c, budget_ms, reference, run)
    ]
    return max(fits, key=lambda c: c.objective) if fits else None


def pick_family(
    chosen: list[Candidate],
    references: list[Candidate],
    run: InterleavedResult | None,
    distinct: bool = True,
) -> list[tuple[Candidate, Candidate]]:
    """S_i for each M_i: the highest objective within M_i's latency, distinct where possible
    (``distinct=False``: simply the highest objective within each M_i's latency)."""
    family: list[tuple[Candidate, Candidate]] = []
    if run is None:
        return family
    used: set[str] = set()
    for ref in references:
        under = [c for c in chosen if within_reference(c, ref, run)]
        fresh = [c for c in under if not distinct or c.config.architecture_hash() not in used]
        if fresh or under:  # six distinct configs where the front allows it
            pick = max(fresh or under, key=lambda c: c.objective)
            used.add(pick.config.architecture_hash())
            family.append((ref, pick))
    return family
