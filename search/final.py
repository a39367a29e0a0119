"""The final phase: the candidates, one side-by-side re-measurement, second seeds, the pick.

After the trials, :func:`finish` collects the measured candidates and M0-M5, re-measures the
ones worth it with the references in one interleaved run (again while the machine runs at
another speed than during the trials: :func:`remeasure_steady`), measures the candidates that
run cannot place against a reference budget again beside it (:func:`focus_undecided`), trains
the contenders again (``--confirm``), picks by one rule (``search.selection``), compares
precisions, and returns the :class:`~search.options.SearchOutcome`. Each step returns new
candidates; nothing is changed in place.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import TrialState

import evit
from edge.latency import InterleavedResult, LatencyResult
from search import keys
from search.cache import MeasurementLog
from search.candidates import Candidate
from search.context import RunContext, trains
from search.measure import Measurer
from search.options import PrecisionRow
from search.selection import (
    FOCUS_CANDIDATES,
    FOCUS_ROUNDS,
    choose_remeasure,
    focused,
    pick_best,
    pick_family,
    undecided,
)
from search.space import reference_configs
from search.timeplan import TimePlan
from search.trainer import Confirmation, Scorer

log = logging.getLogger(__name__)

DRIFT_LIMIT = 1.25  # re-measured / first latency of the references, either way


def collect_candidates(study: optuna.Study, ctx: RunContext) -> list[Candidate]:
    """Every measured architecture of the study once (references by name), as candidates."""
    # re-read the log: other workers may have measured trials since this one started
    measured = MeasurementLog(ctx.out / "measurements.jsonl", ctx.target.fingerprint)
    out, seen = [], set()
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for t in sorted(trials, key=lambda t: t.number):
        attrs = t.user_attrs
        if not keys.was_measured(attrs):
            continue
        try:
            config = ctx.space.config_from_params(t.params)
        except ValueError as e:
            log.warning("trial %d left out: %s", t.number, e)
            continue
        reference = attrs.get(keys.REFERENCE)
        key = attrs[keys.ARCH_HASH] + (reference or "")
        if key in seen:
            continue
        seen.add(key)
        latency = measured.get(attrs[keys.ARCH_HASH])
        if latency is None and keys.LATENCY in attrs:  # measured by a worker on another host
            latency = LatencyResult.from_dict(attrs[keys.LATENCY])
        if latency is None:
            log.warning("trial %d has no readable latency; left out", t.number)
            continue
        checkpoint = ctx.out / attrs[keys.CHECKPOINT] if keys.CHECKPOINT in attrs else None
        out.append(
            Candidate(
                config=config.replace(name=reference or f"searched_{attrs[keys.ARCH_HASH][:8]}"),
                objective=t.values[0],
                latency=latency,
                params=attrs[keys.PARAMS],
                macs=attrs[keys.MACS],
                trial=t.number,
                reference=reference,
                trained=keys.was_trained(attrs) if trains(ctx) else None,
                train_img_size=attrs.get(keys.TRAIN_IMG_SIZE),
                checkpoint=checkpoint if checkpoint is not None and checkpoint.is_file() else None,
            )
        )
    return out


def to_remeasure(
    ctx: RunContext, cands: list[Candidate], references: list[Candidate]
) -> list[Candidate]:
    """The candidates the final re-measurement takes besides the references: the best within
    the budget, ``--confirm``'s contenders, and the best under each reference's latency (every
    reference with ``--family``, the trained ones with accuracy)."""
    compared = references if ctx.opts.family else [r for r in references if r.trained]
    return choose_remeasure(
        cands,
        ctx.budget_ms,
        ctx.opts.remeasure,
        [r.latency.median_ms for r in compared] or None,
        ctx.train.confirm if ctx.train is not None else 0,
    )


def remeasure_count(study: optuna.Study, ctx: RunContext) -> int:
    """How many models the final re-measurement would take if the trials stopped now."""
    cands = collect_candidates(study, ctx)
    chosen = to_remeasure(ctx, cands, [c for c in cands if c.reference])
    return len(reference_configs()) + len(chosen)


def all_references(
    ctx: RunContext, cands: list[Candidate], measurer: Measurer, measure_missing: bool
) -> list[Candidate]:
    """M0-M5 as the trials measured them; those outside the space or never run are measured
    here (``measure_missing``; not after Ctrl-C, to exit fast)."""
    refs = {c.reference: c for c in cands if c.reference}
    for name, config in reference_configs().items():
        if name in refs or not measure_missing:
            continue
        config = config.replace(num_classes=ctx.space.num_classes)
        costs = evit.model_costs(config)
        refs[name] = Candidate(
            config=config,
            objective=0.0 if trains(ctx) else ctx.objective.evaluate(config),
            latency=measurer.measure_alone(config),
            params=costs.params,
            macs=costs.macs,
            reference=name,
            trained=False if trains(ctx) else None,
        )
    return [refs[name] for name in reference_configs() if name in refs]


def reference_drift(references: list[Candidate]) -> tuple[float, Candidate] | None:
    """The median over the references of re-measured / first latency, and the reference whose
    own ratio is closest to it; None without re-measured references."""
    pairs = [
        (r, r.remeasured.median_ms / r.latency.median_ms)
        for r in references
        if r.remeasured is not None and r.latency.median_ms > 0
    ]
    if not pairs:
        return None
    ratio = float(np.median([x for _, x in pairs]))
    return ratio, min(pairs, key=lambda p: abs(p[1] - ratio))[0]


def drifted(ratio: float) -> bool:
    return not 1 / DRIFT_LIMIT <= ratio <= DRIFT_LIMIT


def drift_warning(references: list[Candidate], attempts: int = 1) -> str | None:
    """A one-line warning when the references' re-measured latencies differ from their first
    readings by more than :data:`DRIFT_LIMIT` (median over the references): the machine ran at
    another speed during the final re-measurement than during the trials (a slow phase,
    docs/benchmarks.md §5), so the absolute budget check compares times from two machines."""
    found = reference_drift(references)
    if found is None or not drifted(found[0]):
        return None
    ratio, ref = found
    speed = "slower" if ratio > 1 else "faster"
    tries = f" (the closest of {attempts} final re-measurements)" if attempts > 1 else ""
    return (
        f"the machine ran {max(ratio, 1 / ratio):.2f}x {speed} during the final re-measurement "
        f"than during the trials{tries} ({ref.config.name}: {ref.latency.median_ms:.3f} ms, "
        f"then {ref.remeasured.median_ms:.3f} ms), so the budget check mixes two speeds; run the "
        "same command again to redo it (the study resumes, measured configs are reused), or "
        "give the budget relative to a reference (--budget-ms m0)"
    )


@dataclass(frozen=True)
class Steady:
    """The kept final re-measurement: the references and candidates re-measured, the run, and
    each attempt's drift (re-measured / first latency of the references, median)."""

    references: list[Candidate]
    candidates: list[Candidate]
    run: InterleavedResult | None
    drifts: list[float]


def remeasure_steady(
    measurer: Measurer,
    plan: TimePlan,
    ctx: RunContext,
    references: list[Candidate],
    cands: list[Candidate],
    sleep: Callable[[float], None],
) -> Steady:
    """The final re-measurement of ``references + cands``, repeated up to
    ``--drift-retries`` times (after ``drift_wait_seconds`` each) while the references show the
    machine at another speed than during the trials; the attempt closest to the trials' speed
    is kept."""
    opts, target = ctx.opts, dataclasses.replace(ctx.target, build_level=None)  # final builds
    kept: Steady | None = None
    drifts: list[float] = []
    took = 0.0
    for attempt in range(opts.drift_retries + 1):
        if attempt:
            left = plan.time_left()
            need = opts.drift_wait_seconds + took + plan.after_remeasure_seconds()
            if left is not None and left < need:
                log.warning(
                    "final re-measurement: the machine ran %.2fx the trials' latency; no time "
                    "for another within --time-limit (%.0f s left, %.0f s needed)",
                    drifts[-1],
                    left,
                    need,
                )
                break
            log.warning(
                "final re-measurement %d: the machine ran %.2fx the trials' latency; "
                "measuring again in %.0f s",
                attempt,
                drifts[-1],
                opts.drift_wait_seconds,
            )
            sleep(opts.drift_wait_seconds)
        began = plan.clock()
        done = measurer.remeasure(references + cands, target)
        took = plan.clock() - began
        refs, others = done.candidates[: len(references)], done.candidates[len(references) :]
        found = reference_drift(refs)
        drifts.append(found[0] if found else 1.0)
        if kept is None or abs(math.log(drifts[-1])) < abs(math.log(kept.drifts[-1])):
            kept = Steady(refs, others, done.run, list(drifts))
        if not drifted(drifts[-1]):
            break
    assert kept is not None
    return dataclasses.replace(kept, drifts=drifts)


def focus_undecided(
    measurer: Measurer,
    plan: TimePlan,
    ctx: RunContext,
    references: list[Candidate],
    chosen: list[Candidate],
    run: InterleavedResult | None,
) -> InterleavedResult | None:
    """With ``--budget-ms m0``: the reference and the most accurate candidates the final run
    could not place against it (``search.selection.undecided``) measured again, side by side
    in a run of their own; returns ``run`` with it (``search.selection.Focused``). On a noisy
    machine the final run of ten-odd models gets ~20 rounds, too few to confirm even a
    candidate at 0.7x the reference (docs/benchmarks.md §18)."""
    ref = _budget_reference(ctx, references)
    if ref is None or run is None:
        return run
    todo = undecided(chosen, ref, run, FOCUS_CANDIDATES)
    if not todo:
        return run
    left = plan.time_left()
    need = plan.remeasure_seconds(len(todo) + 1) + plan.after_remeasure_seconds()
    if left is not None and left < need:
        log.warning(
            "final re-measurement: %d candidate(s) could not be told from %s; no time for a "
            "focused run within --time-limit (%.0f s left, %.0f s needed)",
            len(todo),
            ref.reference,
            left,
            need,
        )
        return run
    target = dataclasses.replace(ctx.target, build_level=None)
    log.warning(
        "final re-measurement: %s could not be told from %s in %d rounds; measuring them "
        "side by side again",
        ", ".join(c.config.name for c in todo),
        ref.reference,
        run.rounds,
    )
    again = measurer.remeasure([ref, *todo], target, max_rounds=FOCUS_ROUNDS)
    if again.run is None:
        return run
    return focused(run, again.run, [ref.slot, *[c.slot for c in todo]])


@dataclass(frozen=True)
class Final:
    """What the final phase found (see :func:`finish`)."""

    best: Candidate | None
    chosen: list[Candidate]
    references: list[Candidate]
    fastest: Candidate | None
    run: InterleavedResult | None
    drifts: list[float]
    drift_warning: str | None
    iso_latency: list[tuple[Candidate, Candidate]]
    family: list[tuple[Candidate, Candidate]]
    precision_rows: list[PrecisionRow]
    confirmation: Confirmation | None
    interrupted: bool


def _budget_reference(ctx: RunContext, references: list[Candidate]) -> Candidate | None:
    """The reference whose latency is the budget (``--budget-ms m0``), if it is one."""
    name = ctx.budget_reference
    return next((r for r in references if name and r.reference == name), None)


def _fastest(
    cands: list[Candidate], chosen: list[Candidate], references: list[Candidate]
) -> Candidate | None:
    """The fastest model measured, by its re-measured latency where it has one (a first
    reading can be far below what the final paired run found)."""
    again = {c.config.architecture_hash(): c for c in chosen}
    measured = [
        again.get(c.config.architecture_hash(), c) for c in cands if c.reference is None
    ] + references
    return min(measured, key=lambda c: (c.remeasured or c.latency).median_ms, default=None)


def _iso_latency(
    chosen: list[Candidate], references: list[Candidate], run: InterleavedResult | None
) -> list[tuple[Candidate, Candidate]]:
    """The most accurate candidate within each trained reference's latency; with
    ``--confirm``, M0's rival among the confirmed, so that both sides have two seeds."""
    confirmed = [c for c in chosen if c.seeds]
    return [
        pair
        for ref in references
        if ref.trained
        for pair in pick_family(confirmed if ref.seeds else chosen, [ref], run, distinct=False)
    ]


def finish(
    ctx: RunContext,
    study: optuna.Study,
    measurer: Measurer,
    trainer: Scorer | None,
    plan: TimePlan,
    sleep: Callable[[float], None],
    interrupted: bool,
) -> Final:
    """The final phase (see the module docstring); a Ctrl-C in it keeps what was done."""
    cands = collect_candidates(study, ctx)
    references = all_references(ctx, cands, measurer, measure_missing=not interrupted)
    chosen = to_remeasure(ctx, cands, references)
    run, drifts, confirmation = None, [], None
    try:
        if not interrupted:
            steady = remeasure_steady(measurer, plan, ctx, references, chosen, sleep)
            references, chosen, run, drifts = (
                steady.references,
                steady.candidates,
                steady.run,
                steady.drifts,
            )
            run = focus_undecided(measurer, plan, ctx, references, chosen, run)
        if not interrupted and trainer is not None:
            ref = _budget_reference(ctx, references)
            confirmation = trainer.confirm(chosen, references, run, ctx.budget_ms, ref)
    except KeyboardInterrupt:
        interrupted = True
    if confirmation is not None:
        chosen, references = confirmation.apply(chosen), confirmation.apply(references)
        for seconds in confirmation.seconds:
            plan.trained(seconds)
    contenders = (
        [c for c in chosen if c.config.architecture_hash() in confirmation.contenders]
        if confirmation is not None
        else chosen
    )
    best = pick_best(contenders, ctx.budget_ms, _budget_reference(ctx, references), run)
    rows: list[PrecisionRow] = []
    if ctx.target.precision != "fp32" and best is not None and not interrupted:
        try:
            final_target = dataclasses.replace(ctx.target, build_level=None)
            rows = measurer.compare_fp32([*references, best], final_target)
        except KeyboardInterrupt:
            interrupted = True
    done = not interrupted
    return Final(
        best=best,
        chosen=chosen,
        references=references,
        fastest=_fastest(cands, chosen, references),
        run=run,
        drifts=drifts,
        drift_warning=drift_warning(references, attempts=len(drifts)) if done else None,
        iso_latency=_iso_latency(chosen, references, run) if done else [],
        family=pick_family(chosen, references, run) if ctx.opts.family and done else [],
        precision_rows=rows,
        confirmation=confirmation,
        interrupted=interrupted,
    )
