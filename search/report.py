"""The search report in words: ``report.md``, and the lines the CLI prints from the outcome.

Every figure names where it comes from (first measurement, re-measured in the final paired
run, one seed or the mean of two), and the verdicts say what the run can and cannot tell apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evit.config import ModelConfig
from search.options import SearchOutcome

TIMING_KEYS = (  # per measured trial (``Target.prepare``/``measure``), in seconds
    "build_s",
    "export_s",
    "quantize_s",
    "engine_s",
    "session_s",
    "measure_s",
    "objective_s",
)


def stage_lists(config: ModelConfig) -> dict[str, str]:
    s = config.stages
    return {
        "embed_dims": "/".join(str(x.embed_dim) for x in s),
        "depths": "/".join(str(x.depth) for x in s),
        "num_heads": "/".join(str(x.num_heads) for x in s),
        "key_dims": "/".join(str(x.key_dim) for x in s),
        "ffn_ratios": "/".join(f"{x.ffn_ratio:g}" for x in s),
        "windows": "/".join(str(x.window_size) for x in s),
        "kernels": "/".join(",".join(map(str, x.kernel_sizes)) for x in s),
    }


def _fmt_lat(r: Any) -> str:
    if r is None:
        return "-"
    return f"{r.median_ms:.3f} [{r.ci_low_ms:.3f}, {r.ci_high_ms:.3f}]"


def _ratio_words(r: Any) -> str:
    """A paired ratio with its 95 % CI: ``0.69 [0.63, 0.85]``."""
    return f"{r.ratio:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"


def _fmt_ratio(c: Any) -> str:
    if c.vs_first is not None:
        return _ratio_words(c.vs_first)
    return "1 (reference)" if c.remeasured is not None else "-"


def objective_cell(value: float, name: str) -> str:
    if name in ("params", "macs"):
        return f"{value / 1e6:.2f} M"
    return f"{value:.3g}"


def _objective_of(c: Any, name: str) -> str:
    if c.trained is False:
        return "not trained (over budget)"
    if name == "accuracy":
        return _top1(c)
    return objective_cell(c.objective, name)


def _top1(c: Any) -> str:
    """Validation top-1; for a confirmed candidate the mean and each seed's."""
    inherited = f", inherited {c.inherited:.1f}" if c.inherited is not None else ""
    if c.seeds:
        seeds = " / ".join(f"{v:.1f}" for v in c.seeds)
        return f"{c.objective:.1f} % (seeds {seeds}{inherited})"
    return f"{c.objective:.1f} %"


def candidate_table(rows: list[Any], objective: str) -> str:
    lines = [
        f"| model | objective ({objective}) | params | MACs | first latency ms | re-measured ms "
        "[95% CI] | latency / M0 [95% CI] | widths | depths | heads |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        s = stage_lists(c.config)
        lines.append(
            f"| {c.config.name} | {_objective_of(c, objective)} | "
            f"{c.params / 1e6:.2f} M | {c.macs / 1e6:.1f} M | "
            f"{c.latency.median_ms:.3f} | {_fmt_lat(c.remeasured)} | {_fmt_ratio(c)} | "
            f"{s['embed_dims']} | {s['depths']} | {s['num_heads']} |"
        )
    return "\n".join(lines)


def _time_limit_line(stats: dict[str, Any], interrupted: bool) -> str:
    """``--time-limit``: when the trials stopped, what the final phase was expected to take
    and what the run took (up to its outputs)."""
    limit = stats["time_limit_s"]
    took = f"this run took {stats.get('run_seconds', 0):.0f} s of {limit:.0f} s before its outputs"
    stop = stats.get("time_limit")
    if interrupted:
        return f"{took}; it was interrupted."
    if not stop:
        return f"{took}; the trials ended before the limit needed them to."
    return (
        f"{took}; the trials stopped at {stop['trials_stopped_at_s']:.0f} s to leave the final "
        f"phase its expected {stop['final_estimate_s']:.0f} s (it took "
        f"{stats.get('final_seconds', 0):.0f} s)."
    )


def _timing_summary(stats: dict[str, Any]) -> str:
    timings = stats.get("timings", [])
    if not timings:
        return "no new measurements in this run"
    keys = [k for k in TIMING_KEYS if any(k in t for t in timings)]
    means = {k: sum(t.get(k, 0.0) for t in timings) / len(timings) for k in keys}
    return (
        ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in means.items())
        + f" (mean of {len(timings)} measured trials)"
    )


def _precision_table(outcome: SearchOutcome) -> str:
    p = outcome.target.precision
    lines = [
        f"Every row measured in fp32 and in {p} in one interleaved run (one session at a time); "
        f"speed-up = fp32 time / {p} time, paired, with its 95 % CI.",
        "",
        f"| model | {p} ms [95% CI] | fp32 ms [95% CI] | speed-up [95% CI] | params | MACs |",
        "|---|---|---|---|---|---|",
    ]
    for row in outcome.precision_rows:
        c, r = row.candidate, row.speedup
        name = c.reference or f"{c.config.name} (pick)"
        lines.append(
            f"| {name} | {_fmt_lat(row.this)} | {_fmt_lat(row.fp32)} | "
            f"{r.ratio:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}] | {c.params / 1e6:.2f} M | "
            f"{c.macs / 1e6:.1f} M |"
        )
    return "\n".join(lines)


def _weight_sharing_line(outcome: SearchOutcome) -> str:
    """``--weight-sharing``: how the supernet trained, how many candidates it scored, and how
    the contenders were fine-tuned."""
    t, stats, s = outcome.training, outcome.stats, outcome.supernet or {}
    scored = stats.get("inherited", 0)
    per = stats.get("inherit_seconds", 0.0) / scored if scored else 0.0
    stopped = (
        f", {s['epochs']} of the {s['planned_epochs']} asked for fitting the time limit"
        if s.get("epochs", 0) < s.get("planned_epochs", 0)
        else ""
    )
    return (
        f"Weight sharing: one supernet of the space trained {s.get('epochs')} epoch(s) "
        f"({s.get('steps', 0)} sandwich steps{stopped}) "
        f"on `{t['data']}/train` in {s.get('seconds', 0):.0f} s (validation top-1 of its largest "
        f"config {s.get('largest_top1', float('nan')):.1f} %, smallest "
        f"{s.get('smallest_top1', float('nan')):.1f} %, BatchNorm re-estimated); this run scored "
        f"{scored} candidates by their inherited weights ({per:.1f} s each, the whole "
        f"validation set). The pick's contenders, M0 and the best candidate within M0's latency "
        f"were fine-tuned from their inherited weights for {t['epochs']} epoch(s) with seeds "
        f"{t['seed']} and {t['seed'] + 1} ({stats.get('confirmed', 0)} trainings, "
        f"{stats.get('confirm_seconds', 0):.0f} s): accuracies with seeds are the fine-tuned "
        "means (inherited score in brackets), the others inherited scores."
    )


def _training_line(outcome: SearchOutcome) -> str:
    if outcome.supernet is not None:
        return _weight_sharing_line(outcome)
    t, stats = outcome.training, outcome.stats
    size = (
        f"at {t['train_img_size']} px for a 224-px candidate (others in proportion), a proxy for "
        "the candidate's own resolution"
        if t["train_img_size"]
        else "at the candidate's own resolution"
    )
    init = f", weights inherited from `{t['init']}`" if t["init"] else ""
    lr = f"lr {t['lr']:g}" if t.get("lr") else "evit train's short recipe"
    return (
        f"Each candidate within the budget trained {t['epochs']} epoch(s) on `{t['data']}/train` "
        f"{size} (batch {t['batch_size']}, {lr}, seed {t['seed']}{init}) and was "
        f"scored on `{t['data']}/val`; candidates over the budget were not trained. This run "
        f"trained {stats.get('trained', 0)} ({stats.get('train_seconds', 0):.0f} s of training); "
        f"the early-stop rule stopped {stats.get('early_stopped', 0)}, saving about "
        f"{stats.get('early_saved_s', 0):.0f} s."
        + (
            f" The pick's {t['confirm']} contenders, M0 and the best candidate within M0's "
            f"latency trained again with seed {t['seed'] + 1} ({stats['confirmed']} trainings, "
            f"{stats['confirm_seconds']:.0f} s; earlier ones reused): accuracies marked with "
            "seeds are means of both (the others are seed 0's), and the pick is the best "
            "contender."
            if stats.get("confirmed") is not None and t.get("confirm")
            else ""
        )
    )


MIN_SEED_PAIRS = 2  # seed pairs needed to estimate the noise of a comparison


LEAD_SIGMAS = 2.0  # a lead counts when it exceeds this many standard deviations of the noise


def lead_verdict(outcome: SearchOutcome) -> str | None:
    """Whether the pick beats the reference it replaces by more than the noise, in one line.

    The reference is the budget's (``--budget-ms m0``) or M0. The noise is estimated from the
    run's own seed pairs (``--confirm``): with d the difference of a config's two seeds,
    a single score varies with variance var(d) / 2, and so does the difference of two two-seed
    means. A lead within :data:`LEAD_SIGMAS` standard deviations says the reference is as good.
    None without an accuracy objective, a pick, the reference's and the pick's second seeds, or
    :data:`MIN_SEED_PAIRS` seed pairs.
    """
    best = outcome.best
    if best is None or not outcome.training:
        return None
    name = getattr(outcome, "budget_reference", None) or "efficientvit_m0"
    ref = next((r for r in outcome.references if r.reference == name), None)
    pairs = [c.seeds for c in [*outcome.pareto, *outcome.references] if _two_seeds(c)]
    if ref is None or not _two_seeds(best) or not _two_seeds(ref) or len(pairs) < MIN_SEED_PAIRS:
        return None
    noise = float(np.std([a - b for a, b in pairs], ddof=1) / np.sqrt(2))
    lead = best.objective - ref.objective
    short = name.removeprefix("efficientvit_").upper()
    faster = (
        f"; the pick's latency is {_paired(outcome, best, ref, 'pick')} of {short}'s"
        if outcome.interleaved is not None and best.slot is not None and ref.slot is not None
        else ""
    )
    measured = (
        f"{LEAD_SIGMAS:g} x {noise:.1f} points, the noise of comparing two-seed means "
        f"estimated from this run's {len(pairs)} seed pairs"
    )
    if lead > LEAD_SIGMAS * noise:
        return f"the pick leads {short} by {lead:+.1f} points, beyond {measured}{faster}"
    if lead < -LEAD_SIGMAS * noise:
        return f"{short} is better than the pick by {-lead:.1f} points, beyond {measured}{faster}"
    return (
        f"{short} is as good as the pick: its lead of {lead:+.1f} points is within {measured}"
        f"{faster}"
    )


def _two_seeds(c: Any) -> bool:
    return c.seeds is not None and len(c.seeds) == 2


def _accuracy_comparison(outcome: SearchOutcome) -> str:
    """The pick's accuracy next to every trained reference's, with the paired latency ratio."""
    best = outcome.best
    parts = []
    for ref in outcome.references:
        if ref.trained is False:
            continue
        cell = f"{ref.reference} {_top1(ref)}"
        if outcome.interleaved is not None and ref.slot is not None and best.slot is not None:
            cell += f" (latency {_paired(outcome, best, ref, 'pick')})"
        parts.append(cell)
    iso = [
        f"{ref.reference} {_top1(ref)} vs {c.config.name} {_top1(c)} "
        f"(latency {_paired(outcome, c, ref)})"
        for ref, c in outcome.iso_latency
    ]
    untrained = [r for r in outcome.references if r.trained is False]
    over = [r.reference for r in untrained if r.latency.median_ms > outcome.budget_ms]
    outside = [r.reference for r in untrained if r.latency.median_ms <= outcome.budget_ms]
    how = "fine-tuned from the supernet" if outcome.supernet else "under the same short training"
    text = (
        f"Validation top-1 {how}: **pick {_top1(best)}**"
        + (", " + ", ".join(parts) if parts else "")
        + f" ({precisions_note(outcome)})."
    )
    verdict = lead_verdict(outcome)
    if verdict:
        text += f" **Verdict: {verdict}.**"
    if over:
        text += f" Over the budget, so not trained: {', '.join(over)}."
    if outside:
        text += f" Outside the search space, so not trained: {', '.join(outside)}."
    if iso:
        text += (
            " At each trained reference's own latency (the most accurate candidate whose paired "
            "latency ratio to it has its 95 % CI upper end <= 1): " + "; ".join(iso) + "."
        )
    return text


def precisions_note(outcome: SearchOutcome) -> str:
    """Which precision each figure is in: the scores come from fp32 PyTorch trainings and
    evaluations, the latencies from the target's precision (int8/bf16/fp16 with ``--precision``
    or ``--target auto``)."""
    precision = outcome.target.precision or "fp32"
    if not outcome.training:
        return f"latency in {precision}"
    if precision == "fp32":
        return "accuracy and latency in fp32"
    return (
        f"accuracy of the fp32 model (PyTorch), latency in {precision}: the deployed "
        f"{precision} file's accuracy may be lower (docs/benchmarks.md §11)"
    )


def budget_rule(outcome: SearchOutcome) -> str:
    """The budget as the pick was held to it, in words: a number of milliseconds, or (with
    ``--budget-ms m0``) the paired ratio to the reference, with the reading that admitted
    trials."""
    from search.targets import REFERENCE_BUDGET_SLACK

    if not getattr(outcome, "budget_reference", None):
        return (
            f"{outcome.budget_ms:g} ms (a config fits when the upper end of its re-measured "
            "95 % CI is within it)"
        )
    short = outcome.budget_reference.removeprefix("efficientvit_").upper()
    reading = outcome.budget_ms / (1 + REFERENCE_BUDGET_SLACK)
    return (
        f"as fast as {short} (a config fits when the upper end of the 95 % CI of its paired "
        f"latency ratio to {short} in the final interleaved run is at most 1, or in the "
        f"focused run of {short} and the candidates that run could not tell from it; trials were "
        f"admitted up to {outcome.budget_ms:.3f} ms, {short}'s reading {reading:.3f} ms + "
        f"{REFERENCE_BUDGET_SLACK:.0%})"
    )


def focus_words(outcome: SearchOutcome) -> str | None:
    """The focused re-measurement (``search.final.focus_undecided``) in one line, if one ran."""
    run = outcome.interleaved
    focus = getattr(run, "focused", None)
    if run is None or focus is None:
        return None
    slots = run.focused_slots
    ref = slots[0]
    pairs = ", ".join(
        f"{run.results[s].model} {_ratio_words(run.ratio(s, ref))}" for s in slots[1:]
    )
    return (
        f"the final run ({run.rounds} rounds) could not tell {len(slots) - 1} candidate(s) from "
        f"{run.results[ref].model}; measured again side by side ({focus.rounds} rounds): "
        f"{pairs}"
    )


def short_budget(outcome: SearchOutcome) -> str:
    """The budget in a few words: ``2 ms on ort-cpu``, or ``as fast as M0 on ort-cpu in the
    final paired run``."""
    reference = getattr(outcome, "budget_reference", None)
    if not reference:
        return f"{outcome.budget_ms:g} ms on {outcome.target.name}"
    short = reference.removeprefix("efficientvit_").upper()
    return f"as fast as {short} on {outcome.target.name} in the final paired run"


def fastest_words(outcome: SearchOutcome) -> str:
    """The fastest model measured, by its re-measured latency where it has one, with its paired
    ratio to M0: ``searched_ab12cd34 at 4.732 ms, 1.03x M0 [0.93, 1.30]``."""
    f = outcome.fastest
    if f is None:
        return "nothing measured"
    lat = f.remeasured or f.latency
    words = f"{f.config.name} at {lat.median_ms:.3f} ms"
    if f.vs_first is not None and f.reference != "efficientvit_m0":
        run = outcome.interleaved  # vs_first is the ratio to slot 0 (M0); a focused run's if any
        r = run.ratio(f.slot, 0) if run is not None and f.slot is not None else f.vs_first
        words += f", {_ratio_words(r).replace(' ', 'x M0 ', 1)}"
    return words


def _budget_margin(outcome: SearchOutcome, best: Any) -> str:
    """How the pick stands against the rule :func:`budget_rule` states."""
    ref = next(
        (
            r
            for r in outcome.references
            if r.reference == getattr(outcome, "budget_reference", None)
        ),
        None,
    )
    if ref is not None and outcome.interleaved is not None and best.slot is not None:
        return f"paired latency ratio {_paired(outcome, best, ref)} (the rule: at most 1)"
    return f"margin {outcome.budget_ms - best.remeasured.median_ms:.3f} ms to the budget"


def _paired(outcome: SearchOutcome, c: Any, ref: Any, label: str | None = None) -> str:
    """``c``'s latency over ``ref``'s, paired in the final interleaved run, with its 95 % CI."""
    r = outcome.interleaved.ratio(c.slot, ref.slot)
    return f"{label or c.config.name}/{ref.reference} {_ratio_words(r)}"


def _settings_lines(outcome: SearchOutcome) -> list[str]:
    """The report's first section: budget, target, objective, trials and timings."""
    t, stats = outcome.target, outcome.stats
    versions = ", ".join(f"{k} {v}" for k, v in t.env.get("versions", {}).items())
    precision = f" in {t.precision}" if t.precision != "fp32" else ""
    rejected = (
        f", rejected {stats['rejected']} by the space's shape rules before anything ran"
        if stats.get("rejected")
        else ""
    )
    optional = [
        ("Target", outcome.auto_choice),
        ("Budget from a reference", outcome.budget_choice),
        ("Focused re-measurement", focus_words(outcome)),
        ("**Warning**", outcome.drift_warning),
    ]
    return [
        f"- Budget: **{outcome.budget_ms:g} ms** per batch of {t.batch} on `{t.name}`{precision} "
        f"({t.env.get('cpu')}, threads {t.threads}, {versions})",
        *[f"- {label}: {text}" for label, text in optional if text],
        f"- Objective: `{outcome.objective.name}`: {outcome.objective.description}. "
        + (_training_line(outcome) if outcome.training else "No accuracy was measured."),
        f"- Trials: {stats.get('trials')} in the study; this run measured "
        f"{stats.get('measured')}, reused {stats.get('cache')} cached measurements, "
        f"pre-filtered {stats.get('prefiltered')}, failed {stats.get('failed')}{rejected}; "
        f"search {stats.get('search_seconds', 0):.0f} s, final re-measurement "
        f"{stats.get('final_seconds', 0):.0f} s.",
        *(
            [f"- Time limit: {_time_limit_line(stats, outcome.interrupted)}"]
            if stats.get("time_limit_s")
            else []
        ),
        f"- Time per measured trial: {_timing_summary(stats)}.",
        "- Latencies: median [95% CI] ms. 'first' is the trial's own measurement; "
        "'re-measured' comes from one interleaved run of all candidates and M0-M5, the "
        f"number used for the budget check: {budget_rule(outcome)}. 'latency / M0' is the "
        "paired ratio from that run: absolute times on a shared machine drift, this ratio "
        "does not.",
        "",
    ]


def _pick_lines(outcome: SearchOutcome, onnx_note: str) -> list[str]:
    """The pick with its figures, or the fastest model measured when nothing fits."""
    best = outcome.best
    if best is None:
        return [
            "## No configuration fits the budget",
            "",
            f"No configuration fits {short_budget(outcome)}. Fastest measured: "
            f"{fastest_words(outcome)}.",
            "",
        ]
    lines = [
        "## Best",
        "",
        f"**{best.config.name}**: objective ({outcome.objective.name}) "
        f"{_objective_of(best, outcome.objective.name)}, "
        f"{best.params / 1e6:.2f} M params, {best.macs / 1e6:.1f} M MACs, "
        f"re-measured {_fmt_lat(best.remeasured)} ms (first {best.latency.median_ms:.3f} ms); "
        f"{_budget_margin(outcome, best)}.",
        "",
        f"Config: `best.yaml` (load with `evit.create_model('best.yaml')`). {onnx_note}",
        "",
    ]
    return lines + ([_accuracy_comparison(outcome), ""] if outcome.training else [])


def report_markdown(
    outcome: SearchOutcome, files: list[str], onnx_note: str, family_md: str
) -> str:
    """``report.md``: settings, the pick, the candidates and references, precisions, family."""
    lines = [f"# Search report: {outcome.study_name}", ""]
    if outcome.interrupted:
        lines += [
            "**Interrupted**: finished trials are kept in the study; re-run the same "
            "command to resume. Candidates below were not all re-measured.",
            "",
        ]
    lines += _settings_lines(outcome) + _pick_lines(outcome, onnx_note)
    objective = outcome.objective.name
    lines += [
        "## Pareto candidates (re-measured)",
        "",
        candidate_table(outcome.pareto, objective),
        "",
        "## References, measured in the same run",
        "",
        candidate_table(outcome.references, objective),
        "",
    ]
    if outcome.precision_rows:
        title = f"## {outcome.target.precision} vs fp32, the pick and M0-M5"
        lines += [title, "", _precision_table(outcome), ""]
    if family_md:
        proxy = "." if outcome.training else " (a proxy: accuracy unverified)."
        lines += [
            "## Regenerated family (S0-S5)",
            "",
            "Each S replaces the M whose re-measured latency it does not exceed, "
            f"chosen by the objective{proxy}",
            "",
            family_md,
            "",
        ]
    lines += [
        "## Files",
        "",
        ", ".join(f"`{f}`" for f in [*files, "report.md"]),
        f"; the study itself: `{outcome.study_name}` in the study storage.",
        "",
    ]
    return "\n".join(lines)
