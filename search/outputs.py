"""Search outputs: trials.csv, pareto.yaml, best.yaml, best.pth, best.onnx, summary.json,
report.md, the Pareto plots and the regenerated family S0-S5.

Every file is written atomically (temp file, then rename); ``report.md`` is removed first and
written last, so a run that died part-way never leaves a report that looks complete.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from edge.export import VerificationError, export_onnx
from evit.config import save_yaml
from evit.files import atomic_write_text
from search import keys
from search.options import SearchOutcome
from search.plots import write_plots
from search.report import TIMING_KEYS, objective_cell, report_markdown, stage_lists
from search.space import SearchSpace
from search.storage import pid_alive

log = logging.getLogger(__name__)


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


def _latency_row(t: optuna.trial.FrozenTrial, budget_ms: float) -> dict[str, Any]:
    a = t.user_attrs
    row: dict[str, Any] = {
        "objective": t.values[0],
        "latency_source": a.get(keys.LATENCY_SOURCE, ""),
        **{k: a.get(k) for k in (keys.PARAMS, keys.MACS, keys.ACTIVATION_BYTES, keys.ARCH_HASH)},
    }
    if keys.was_measured(a):
        row.update(
            latency_ms=a[keys.LATENCY_MEDIAN],
            latency_ci_low_ms=a[keys.LATENCY_CI_LOW],
            latency_ci_high_ms=a[keys.LATENCY_CI_HIGH],
            latency_runs=a[keys.LATENCY_RUNS],
            feasible=a[keys.LATENCY_MEDIAN] <= budget_ms,
        )
    else:
        row.update(
            feasible=False,
            note=f"not measured: {a.get(keys.PREFILTER_REASON)} (latency >= {t.values[1]:.3f} ms)",
        )
    row.update({k: f"{v:.3f}" for k, v in a.get(keys.TIMINGS, {}).items() if k in TIMING_KEYS})
    if a.get(keys.ACCURACY_SOURCE, "trained") != "trained":
        row["note"] = a[keys.ACCURACY_SOURCE]
    return row


def _note(t: optuna.trial.FrozenTrial) -> str | None:
    """Why a trial has no values: its early stop, shape rule or failure."""
    a = t.user_attrs
    if t.state == TrialState.PRUNED:
        if keys.EARLY_STOPPED in a:
            return f"early stop: {a[keys.EARLY_STOPPED]}"
        return f"shape rule: {a.get(keys.REJECTED)}"
    if t.state == TrialState.FAIL and keys.FAIL_REASON in a:
        return a[keys.FAIL_REASON]
    return None


def trials_csv(study: optuna.Study, space: SearchSpace, budget_ms: float) -> str:
    """Every trial of the study, one row each (``CSV_FIELDS``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "reference": a.get(keys.REFERENCE, ""),
        }
        if t.params:
            try:
                row.update(stage_lists(space.config_from_params(t.params)))
            except ValueError:  # a worker killed while sampling left partial parameters
                row["note"] = "partial parameters (its worker died while sampling)"
        if t.state == TrialState.COMPLETE:
            row.update(_latency_row(t, budget_ms))
        row.update(
            top1=a.get(keys.TOP1),
            early_top1=a.get(keys.EARLY_TOP1),
            train_img_size=a.get(keys.TRAIN_IMG_SIZE),
            train_s=f"{a[keys.TRAIN_SECONDS]:.1f}" if keys.TRAIN_SECONDS in a else None,
        )
        note = _note(t)
        if note is not None:
            row["note"] = note
        writer.writerow(row)
    return buf.getvalue()


def write_outputs(outcome: SearchOutcome, study: optuna.Study) -> None:
    out = outcome.out
    tmp = out / "tmp"
    for leftover in tmp.iterdir() if tmp.is_dir() else ():  # probes of killed workers
        pid = leftover.stem.rpartition("-")[2]
        if not (pid.isdigit() and pid_alive(int(pid))):
            leftover.unlink(missing_ok=True)
    if tmp.is_dir() and not any(tmp.iterdir()):
        tmp.rmdir()
    (out / "report.md").unlink(missing_ok=True)  # never leave a stale report looking current
    atomic_write_text(out / "trials.csv", trials_csv(study, outcome.space, outcome.budget_ms))
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
    files += write_plots(outcome, study, out)
    family_md = ""
    if outcome.family:
        family_md = _write_family(outcome, out)
        files += [f"S{i}.yaml" for i in range(len(outcome.family))] + ["family.md"]
    atomic_write_text(out / "summary.json", json.dumps(summary(outcome), indent=2))
    files.append("summary.json")
    atomic_write_text(out / "report.md", report_markdown(outcome, files, onnx_note, family_md))


def _export_int8(outcome: SearchOutcome, source: Any, out: Path, files: list[str]) -> str:
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


def _write_family(outcome: SearchOutcome, out: Path) -> str:
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
            f"{objective_cell(ref.objective, outcome.objective.name)} / "
            f"{objective_cell(s.objective, outcome.objective.name)} |"
        )
    table = "\n".join(lines)
    atomic_write_text(out / "family.md", "# Regenerated family\n\n" + table + "\n")
    return table


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
        "inherited": c.inherited,
        "trained": c.trained,
        "train_img_size": c.train_img_size,
        "params": c.params,
        "macs": c.macs,
        "first_latency": _latency_dict(c.latency),
        "remeasured": _latency_dict(c.remeasured),
        "latency_vs_m0": c.vs_first.to_dict() if c.vs_first else None,
        "config": c.config.to_dict(),
    }


def summary(outcome: SearchOutcome) -> dict[str, Any]:
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
        "supernet": outcome.supernet,
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
