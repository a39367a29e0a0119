"""Search outputs: trials.csv, pareto.yaml, best.yaml, best.onnx, report.md, Pareto plots,
and the regenerated family S0-S5.

Every file is written atomically (temp file, then rename); ``report.md`` is written last, so a
run that died part-way never leaves a report that looks complete.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from optuna.trial import TrialState

from edge.export import VerificationError, export_onnx
from evit.config import save_yaml
from evit.files import atomic_path, atomic_write_text
from search.storage import pid_alive

log = logging.getLogger(__name__)

TIMING_KEYS = (  # per measured trial (``Target.prepare``/``measure``), in seconds
    "build_s",
    "export_s",
    "quantize_s",
    "engine_s",
    "session_s",
    "measure_s",
    "objective_s",
)
CSV_FIELDS = [
    "number",
    "state",
    "reference",
    "objective",
    "latency_ms",
    "latency_ci_low_ms",
    "latency_ci_high_ms",
    "latency_runs",
    "latency_source",
    "feasible",
    "params",
    "macs",
    "activation_bytes",
    "embed_dims",
    "depths",
    "num_heads",
    "key_dims",
    "ffn_ratios",
    "windows",
    "kernels",
    "arch_hash",
    *TIMING_KEYS,
    "top1",
    "early_top1",
    "train_img_size",
    "train_s",
    "note",
]


def _stage_lists(config: Any) -> dict[str, str]:
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


def trials_csv(study: optuna.Study, run: Any) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "reference": a.get("reference", ""),
        }
        if t.params:
            try:
                row.update(_stage_lists(run.space.config_from_params(t.params)))
            except ValueError:  # a worker killed while sampling left partial parameters
                row["note"] = "partial parameters (its worker died while sampling)"
        if t.state == TrialState.COMPLETE:
            source = a.get("latency_source", "")
            row.update(
                objective=t.values[0],
                latency_source=source,
                params=a.get("params"),
                macs=a.get("macs"),
                activation_bytes=a.get("activation_bytes"),
                arch_hash=a.get("arch_hash"),
            )
            if source in ("measured", "cache"):
                row.update(
                    latency_ms=a["latency_median_ms"],
                    latency_ci_low_ms=a["latency_ci_low_ms"],
                    latency_ci_high_ms=a["latency_ci_high_ms"],
                    latency_runs=a["latency_runs"],
                    feasible=a["latency_median_ms"] <= run.opts.budget_ms,
                )
            else:
                row.update(
                    feasible=False,
                    note=f"not measured: {a.get('prefilter_reason')} "
                    f"(latency >= {t.values[1]:.3f} ms)",
                )
            timings = a.get("timings", {}).items()
            row.update({k: f"{v:.3f}" for k, v in timings if k in TIMING_KEYS})
            if a.get("accuracy_source", "trained") != "trained":
                row["note"] = a["accuracy_source"]
        row.update(
            top1=a.get("top1"),
            early_top1=a.get("early_top1"),
            train_img_size=a.get("train_img_size"),
            train_s=f"{a['train_seconds']:.1f}" if "train_seconds" in a else None,
        )
        if t.state == TrialState.PRUNED:
            reason = a.get("early_stopped") or a.get("rejected")
            row["note"] = (
                f"early stop: {reason}" if "early_stopped" in a else f"shape rule: {reason}"
            )
        elif t.state == TrialState.FAIL and "fail_reason" in a:
            row["note"] = a["fail_reason"]
        writer.writerow(row)
    return buf.getvalue()


def _latency_dict(r: Any) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "median_ms": round(r.median_ms, 4),
        "ci_low_ms": round(r.ci_low_ms, 4),
        "ci_high_ms": round(r.ci_high_ms, 4),
        "runs": r.runs,
    }


def _candidate_dict(c: Any) -> dict[str, Any]:
    return {
        "name": c.config.name,
        "reference": c.reference,
        "trial": c.trial,
        "objective": c.objective,
        "seeds": c.seeds,
        "trained": c.trained,
        "train_img_size": c.train_img_size,
        "params": c.params,
        "macs": c.macs,
        "first_latency": _latency_dict(c.latency),
        "remeasured": _latency_dict(c.remeasured),
        "latency_vs_m0": c.vs_first.to_dict() if c.vs_first else None,
        "config": c.config.to_dict(),
    }


def _fmt_lat(r: Any) -> str:
    if r is None:
        return "-"
    return f"{r.median_ms:.3f} [{r.ci_low_ms:.3f}, {r.ci_high_ms:.3f}]"


def _fmt_ratio(c: Any) -> str:
    if c.vs_first is not None:
        r = c.vs_first
        return f"{r.ratio:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"
    return "1 (reference)" if c.remeasured is not None else "-"


def _objective_cell(value: float, name: str) -> str:
    if name in ("params", "macs"):
        return f"{value / 1e6:.2f} M"
    return f"{value:.3g}"


def _objective_of(c: Any, name: str) -> str:
    if c.trained is False:
        return "not trained (over budget)"
    if name == "accuracy":
        return _top1(c)
    return _objective_cell(c.objective, name)


def _top1(c: Any) -> str:
    """Validation top-1; for a confirmed candidate the mean and each seed's."""
    if c.seeds:
        return f"{c.objective:.1f} % (seeds {' / '.join(f'{v:.1f}' for v in c.seeds)})"
    return f"{c.objective:.1f} %"


def candidate_table(rows: list[Any], objective: str) -> str:
    lines = [
        f"| model | objective ({objective}) | params | MACs | first latency ms | re-measured ms "
        "[95% CI] | latency / M0 [95% CI] | widths | depths | heads |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        s = _stage_lists(c.config)
        lines.append(
            f"| {c.config.name} | {_objective_of(c, objective)} | "
            f"{c.params / 1e6:.2f} M | {c.macs / 1e6:.1f} M | "
            f"{c.latency.median_ms:.3f} | {_fmt_lat(c.remeasured)} | {_fmt_ratio(c)} | "
            f"{s['embed_dims']} | {s['depths']} | {s['num_heads']} |"
        )
    return "\n".join(lines)


def _plots(outcome: Any, study: optuna.Study, run: Any, out: Path) -> list[str]:
    """Pareto plot as PNG (matplotlib) and interactive HTML (plotly), references marked."""
    written = []
    pts = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("latency_source") in ("measured", "cache") and (
            outcome.objective.name != "accuracy" or "top1" in t.user_attrs
        ):
            pts.append((t.values[1], t.values[0], t.number, t.user_attrs.get("reference")))
    if not pts:
        return written
    budget = outcome.budget_ms
    # every point on one basis: the first measurement (re-measured values are in the report)
    scale, unit = (1e6, " (M)") if outcome.objective.name in ("params", "macs") else (1.0, "")
    label = (
        "validation top-1 % (short training)"
        if outcome.objective.name == "accuracy"
        else f"{outcome.objective.name}{unit} (proxy, not accuracy)"
    )
    pts = [(x, y / scale, n, r) for x, y, n, r in pts]
    shown = [c for c in outcome.references if c.trained is not False]
    refs = [c.latency.median_ms for c in shown]
    ref_obj = [c.objective / scale for c in shown]
    front = [(c.latency.median_ms, c.objective / scale) for c in outcome.pareto]
    pick = outcome.best
    title = (
        f"{outcome.study_name}: budget {budget:g} ms on {outcome.target.name} "
        f"(batch {outcome.target.batch})"
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, alpha=0.4, label="trials")
        ax.scatter(
            [f[0] for f in front],
            [f[1] for f in front],
            s=28,
            marker="D",
            label="Pareto candidates",
        )
        ax.scatter(refs, ref_obj, s=60, marker="*", color="black", label="M0-M5")
        for c, x, y in zip(shown, refs, ref_obj):
            ax.annotate(
                c.reference.replace("efficientvit_", "").upper(),
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
        if pick is not None:
            ax.scatter(
                [pick.latency.median_ms],
                [pick.objective / scale],
                s=160,
                facecolors="none",
                edgecolors="red",
                linewidths=2,
                label=f"pick ({pick.config.name})",
            )
        ax.axvline(budget, color="red", linestyle="--", label=f"budget {budget:g} ms")
        ax.set_xlabel(f"latency ms, first measurement ({outcome.target.name})")
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=9)
        ax.set_xscale("log")
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(out / "pareto.png") as tmp:  # a unique temp name per worker
            fig.savefig(tmp, format="png")
        plt.close(fig)
        written.append("pareto.png")
    except ImportError:
        log.warning("matplotlib missing: no pareto.png")
    try:
        import plotly.graph_objects as go

        fig = go.Figure()
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                mode="markers",
                name="trials",
                text=[f"trial {p[2]}" for p in pts],
                marker={"size": 5, "opacity": 0.5},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[f[0] for f in front],
                y=[f[1] for f in front],
                mode="markers",
                name="Pareto candidates",
                text=[c.config.name for c in outcome.pareto],
                marker={"symbol": "diamond", "size": 9},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=refs,
                y=ref_obj,
                mode="markers+text",
                name="M0-M5",
                text=[c.reference.replace("efficientvit_", "").upper() for c in shown],
                textposition="top right",
                marker={"symbol": "star", "size": 13, "color": "black"},
            )
        )
        if pick is not None:
            fig.add_trace(
                go.Scatter(
                    x=[pick.latency.median_ms],
                    y=[pick.objective / scale],
                    mode="markers",
                    name=f"pick ({pick.config.name})",
                    marker={
                        "size": 18,
                        "color": "rgba(0,0,0,0)",
                        "line": {"color": "red", "width": 2},
                    },
                )
            )
        fig.add_vline(x=budget, line_dash="dash", line_color="red")
        fig.update_layout(
            xaxis_title=f"latency ms, first measurement ({outcome.target.name})",
            yaxis_title=label,
            xaxis_type="log",
            title=title,
        )
        # plotly.js embedded: the page works offline and on machines without a CDN
        atomic_write_text(out / "pareto.html", fig.to_html(include_plotlyjs=True))
        written.append("pareto.html")
    except ImportError:
        log.warning("plotly missing: no pareto.html")
    return written


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


def write_outputs(outcome: Any, study: optuna.Study, run: Any) -> None:
    out = outcome.out
    tmp = out / "tmp"
    for leftover in tmp.iterdir() if tmp.is_dir() else ():  # probes of killed workers
        pid = leftover.stem.rpartition("-")[2]
        if not (pid.isdigit() and pid_alive(int(pid))):
            leftover.unlink(missing_ok=True)
    if tmp.is_dir() and not any(tmp.iterdir()):
        tmp.rmdir()
    (out / "report.md").unlink(missing_ok=True)  # never leave a stale report looking current
    atomic_write_text(out / "trials.csv", trials_csv(study, run))
    atomic_write_text(
        out / "pareto.yaml",
        yaml.safe_dump(
            {
                "budget_ms": outcome.budget_ms,
                "objective": outcome.objective.name,
                "target": outcome.target.name,
                "candidates": [_candidate_dict(c) for c in outcome.pareto],
                "references": [_candidate_dict(c) for c in outcome.references],
            },
            sort_keys=False,
        ),
    )
    files = ["trials.csv", "pareto.yaml", "measurements.jsonl"]
    best = outcome.best
    onnx_note = ""
    for stale in ("best.yaml", "best.onnx", "best.pth"):
        (out / stale).unlink(missing_ok=True)
    if best is not None:
        save_yaml(best.config, out / "best.yaml")
        files.append("best.yaml")
        source: Any = best.config
        if best.checkpoint is not None:  # the accuracy objective: the trained weights
            shutil.copyfile(best.checkpoint, out / ".best.pth.part")
            (out / ".best.pth.part").replace(out / "best.pth")
            files.append("best.pth")
            source = out / "best.pth"
        try:
            result = export_onnx(source, out / "best.onnx", batch=outcome.target.batch)
            files.append("best.onnx")
            v = result.verification
            weights = (
                f"the trained weights of `best.pth` ({best.train_img_size} px input, class "
                "names included)"
                if best.checkpoint is not None
                else "random weights"
            )
            onnx_note = (
                f"`best.onnx`: {weights}, verified against PyTorch (max rel. "
                f"error {v.max_rel_error:.1e}, top-1 agreement "
                f"{v.top1_agreement:.0%}) on {v.exercised}."
            )
        except VerificationError as e:
            onnx_note = f"best.onnx failed verification: {e}"
        if outcome.target.precision == "int8":
            onnx_note += " " + _export_int8(outcome, source, out, files)
    files += _plots(outcome, study, run, out)
    family_md = ""
    if outcome.family:
        family_md = _write_family(outcome, out)
        files += [f"S{i}.yaml" for i in range(len(outcome.family))] + ["family.md"]
    atomic_write_text(out / "summary.json", json.dumps(summary(outcome), indent=2))
    files.append("summary.json")
    atomic_write_text(out / "report.md", report_markdown(outcome, files, onnx_note, family_md))


def _export_int8(outcome: Any, source: Any, out: Path, files: list[str]) -> str:
    """``best.int8.onnx``: the pick as the search measured it (Q/DQ, calibrated like the
    trials, or on more images), verified against fp32."""
    from edge.export import Int8Options

    target = outcome.target
    options = Int8Options(
        calib=target.calib, activations="int8" if target.name == "trt" else "uint8"
    )
    (out / "best.int8.onnx").unlink(missing_ok=True)
    try:
        result = export_onnx(source, out / "best.int8.onnx", batch=target.batch, int8=options)
    except VerificationError as e:
        return f"best.int8.onnx failed verification: {e}"
    files.append("best.int8.onnx")
    from edge.onnxfile import read_metadata

    meta = read_metadata(result.path)
    check, calib = meta["int8_verification"], meta["calibration"]
    return (
        f"`best.int8.onnx`: the same weights in Q/DQ int8 ({options.activations} activations, "
        f"calibrated on {calib['source']}); against fp32 on "
        f"{check['samples']} other images: top-1 agreement {check['top1_agreement']:.2f}, "
        f"logit cosine {check['cosine']:.4f}, relative error {check.get('rel_error', 0):.3f}"
        + (
            "."
            if outcome.best.checkpoint is not None
            else " (random weights: recorded, not a measure of a trained model's int8 accuracy)."
        )
    )


def _precision_table(outcome: Any) -> str:
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


def _write_family(outcome: Any, out: Path) -> str:
    lines = [
        "| replaces | S | latency ms (M / S, re-measured) | params (M / S) | "
        "MACs (M / S) | objective (M / S) |",
        "|---|---|---|---|---|---|",
    ]
    for i, (ref, s) in enumerate(outcome.family):
        config = s.config.replace(name=f"S{i}")
        save_yaml(config, out / f"S{i}.yaml")
        r_lat = (ref.remeasured or ref.latency).median_ms
        s_lat = (s.remeasured or s.latency).median_ms
        lines.append(
            f"| {ref.reference} | S{i} ({s.config.name}) | {r_lat:.3f} / {s_lat:.3f} | "
            f"{ref.params / 1e6:.2f} / {s.params / 1e6:.2f} | "
            f"{ref.macs / 1e6:.1f} / {s.macs / 1e6:.1f} | "
            f"{_objective_cell(ref.objective, outcome.objective.name)} / "
            f"{_objective_cell(s.objective, outcome.objective.name)} |"
        )
    table = "\n".join(lines)
    atomic_write_text(out / "family.md", "# Regenerated family\n\n" + table + "\n")
    return table


def summary(outcome: Any) -> dict[str, Any]:
    return {
        "study": outcome.study_name,
        "budget_ms": outcome.budget_ms,
        "target": outcome.target.name,
        "objective": outcome.objective.name,
        "interrupted": outcome.interrupted,
        "best": _candidate_dict(outcome.best) if outcome.best else None,
        "fastest": _candidate_dict(outcome.fastest) if outcome.fastest else None,
        "references": [_candidate_dict(c) for c in outcome.references],
        "stats": {k: v for k, v in outcome.stats.items() if k != "timings"},
        "training": outcome.training,
        "iso_latency": [
            {"reference": ref.reference, "candidate": _candidate_dict(c)}
            for ref, c in outcome.iso_latency
        ],
        "precision": outcome.target.precision,
        "auto_choice": outcome.auto_choice,
        "budget_choice": outcome.budget_choice,
        "drift_warning": outcome.drift_warning,
        "precision_vs_fp32": [
            {
                "model": row.candidate.config.name,
                "reference": row.candidate.reference,
                outcome.target.precision: _latency_dict(row.this),
                "fp32": _latency_dict(row.fp32),
                "speedup": row.speedup.to_dict(),
            }
            for row in outcome.precision_rows
        ],
    }


def _training_line(outcome: Any) -> str:
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


def lead_verdict(outcome: Any) -> str | None:
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


def _accuracy_comparison(outcome: Any) -> str:
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
    over = [r.reference for r in outcome.references if r.trained is False]
    text = (
        f"Validation top-1 under the same short training: **pick {_top1(best)}**"
        + (", " + ", ".join(parts) if parts else "")
        + f" ({precisions_note(outcome)})."
    )
    verdict = lead_verdict(outcome)
    if verdict:
        text += f" **Verdict: {verdict}.**"
    if over:
        text += f" Over the budget, so not trained: {', '.join(over)}."
    if iso:
        text += (
            " At each trained reference's own latency (the most accurate candidate whose paired "
            "latency ratio to it has its 95 % CI upper end <= 1): " + "; ".join(iso) + "."
        )
    return text


def precisions_note(outcome: Any) -> str:
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


def budget_rule(outcome: Any) -> str:
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
        f"latency ratio to {short} in the final interleaved run is at most 1; trials were "
        f"admitted up to {outcome.budget_ms:.3f} ms, {short}'s reading {reading:.3f} ms + "
        f"{REFERENCE_BUDGET_SLACK:.0%})"
    )


def _budget_margin(outcome: Any, best: Any) -> str:
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


def _paired(outcome: Any, c: Any, ref: Any, label: str | None = None) -> str:
    """``c``'s latency over ``ref``'s, paired in the final interleaved run, with its 95 % CI."""
    r = outcome.interleaved.ratio(c.slot, ref.slot)
    name = label or c.config.name
    return f"{name}/{ref.reference} {r.ratio:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"


def report_markdown(outcome: Any, files: list[str], onnx_note: str, family_md: str) -> str:
    t = outcome.target
    env = t.env
    stats = outcome.stats
    lines = [f"# Search report: {outcome.study_name}", ""]
    if outcome.interrupted:
        lines += [
            "**Interrupted**: finished trials are kept in the study; re-run the same "
            "command to resume. Candidates below were not all re-measured.",
            "",
        ]
    lines += [
        f"- Budget: **{outcome.budget_ms:g} ms** per batch of {t.batch} on `{t.name}`"
        + (f" in {t.precision}" if t.precision != "fp32" else "")
        + " "
        f"({env.get('cpu')}, threads {t.threads}, "
        f"{', '.join(f'{k} {v}' for k, v in env.get('versions', {}).items())})",
        *([f"- Target: {outcome.auto_choice}"] if outcome.auto_choice else []),
        *([f"- Budget from a reference: {outcome.budget_choice}"] if outcome.budget_choice else []),
        *([f"- **Warning**: {outcome.drift_warning}"] if outcome.drift_warning else []),
        f"- Objective: `{outcome.objective.name}`: {outcome.objective.description}. "
        + (_training_line(outcome) if outcome.training else "No accuracy was measured."),
        f"- Trials: {stats.get('trials')} in the study; this run measured "
        f"{stats.get('measured')}, reused {stats.get('cache')} cached measurements, "
        f"pre-filtered {stats.get('prefiltered')}, failed {stats.get('failed')}"
        + (
            f", rejected {stats['rejected']} by the space's shape rules before anything ran"
            if stats.get("rejected")
            else ""
        )
        + "; "
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
    best = outcome.best
    if best is not None:
        r = best.remeasured
        lines += [
            "## Best",
            "",
            f"**{best.config.name}**: objective ({outcome.objective.name}) "
            f"{_objective_of(best, outcome.objective.name)}, "
            f"{best.params / 1e6:.2f} M params, {best.macs / 1e6:.1f} M MACs, "
            f"re-measured {_fmt_lat(r)} ms (first {best.latency.median_ms:.3f} ms); "
            f"{_budget_margin(outcome, best)}.",
            "",
            f"Config: `best.yaml` (load with `evit.create_model('best.yaml')`). {onnx_note}",
            "",
        ]
        if outcome.training:
            lines += [_accuracy_comparison(outcome), ""]
    else:
        fastest = outcome.fastest
        lat = (fastest.remeasured or fastest.latency) if fastest else None
        lines += [
            "## No configuration fits the budget",
            "",
            f"Fastest configuration measured: **{fastest.config.name}** at {_fmt_lat(lat)} ms."
            if fastest
            else "Nothing was measured.",
            "",
        ]
    lines += [
        "## Pareto candidates (re-measured)",
        "",
        candidate_table(outcome.pareto, outcome.objective.name),
        "",
        "## References, measured in the same run",
        "",
        candidate_table(outcome.references, outcome.objective.name),
        "",
    ]
    if outcome.precision_rows:
        lines += [
            f"## {outcome.target.precision} vs fp32, the pick and M0-M5",
            "",
            _precision_table(outcome),
            "",
        ]
    if family_md:
        lines += [
            "## Regenerated family (S0-S5)",
            "",
            "Each S replaces the M whose re-measured latency it does not exceed, "
            "chosen by the objective"
            + ("." if outcome.training else " (a proxy: accuracy unverified)."),
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
