"""The Pareto plots of a search: PNG (matplotlib) and interactive HTML (plotly), M0-M5 marked.

Every point is on one basis, the first measurement (re-measured values are in the report).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from evit.files import atomic_path, atomic_write_text
from search import keys
from search.candidates import Candidate
from search.options import SearchOutcome

log = logging.getLogger(__name__)

Point = tuple[float, float]  # (latency ms, objective)


@dataclass(frozen=True)
class ParetoPlot:
    """What both plots show."""

    title: str
    x_label: str
    y_label: str
    budget_ms: float
    trials: list[tuple[float, float, int]]  # (latency, objective, trial number)
    front: list[tuple[float, float, str]]  # (latency, objective, name)
    references: list[tuple[float, float, str]]  # (latency, objective, "M0")
    pick: tuple[float, float, str] | None


def plot_data(outcome: SearchOutcome, study: optuna.Study) -> ParetoPlot | None:
    """The plotted points (None when no trial has a measured, scored point)."""
    name = outcome.objective.name
    scale, unit = (1e6, " (M)") if name in ("params", "macs") else (1.0, "")
    trials = [
        (t.values[1], t.values[0] / scale, t.number)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if keys.was_measured(t.user_attrs)
        and (name != "accuracy" or keys.was_trained(t.user_attrs))
    ]
    if not trials:
        return None

    def point(c: Candidate, label: str) -> tuple[float, float, str]:
        return c.latency.median_ms, c.objective / scale, label

    shown = [c for c in outcome.references if c.trained is not False]
    pick = outcome.best
    return ParetoPlot(
        title=f"{outcome.study_name}: budget {outcome.budget_ms:g} ms on {outcome.target.name} "
        f"(batch {outcome.target.batch})",
        x_label=f"latency ms, first measurement ({outcome.target.name})",
        y_label="validation top-1 % (short training)"
        if name == "accuracy"
        else f"{name}{unit} (proxy, not accuracy)",
        budget_ms=outcome.budget_ms,
        trials=trials,
        front=[point(c, c.config.name) for c in outcome.pareto],
        references=[
            point(c, (c.reference or "").replace("efficientvit_", "").upper()) for c in shown
        ],
        pick=point(pick, f"pick ({pick.config.name})") if pick is not None else None,
    )


def _png(plot: ParetoPlot, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    trial_x, trial_y = [p[0] for p in plot.trials], [p[1] for p in plot.trials]
    ax.scatter(trial_x, trial_y, s=10, alpha=0.4, label="trials")
    front_x, front_y = [f[0] for f in plot.front], [f[1] for f in plot.front]
    ax.scatter(front_x, front_y, s=28, marker="D", label="Pareto candidates")
    ref_x, ref_y = [r[0] for r in plot.references], [r[1] for r in plot.references]
    ax.scatter(ref_x, ref_y, s=60, marker="*", color="black", label="M0-M5")
    for x, y, label in plot.references:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if plot.pick is not None:
        x, y, label = plot.pick
        ring = {"facecolors": "none", "edgecolors": "red", "linewidths": 2}
        ax.scatter([x], [y], s=160, label=label, **ring)
    budget = plot.budget_ms
    ax.axvline(budget, color="red", linestyle="--", label=f"budget {budget:g} ms")
    ax.set_xlabel(plot.x_label)
    ax.set_ylabel(plot.y_label)
    ax.set_title(plot.title, fontsize=9)
    ax.set_xscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:  # a unique temp name per worker
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _html(plot: ParetoPlot, path: Path) -> None:
    import plotly.graph_objects as go

    def scatter(points, name, text, mode="markers", **marker):
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return go.Scatter(x=xs, y=ys, mode=mode, name=name, text=text, marker=marker)

    fig = go.Figure()
    trials = [f"trial {p[2]}" for p in plot.trials]
    fig.add_trace(scatter(plot.trials, "trials", trials, size=5, opacity=0.5))
    names = [p[2] for p in plot.front]
    fig.add_trace(scatter(plot.front, "Pareto candidates", names, symbol="diamond", size=9))
    refs = [p[2] for p in plot.references]
    star = {"symbol": "star", "size": 13, "color": "black"}
    fig.add_trace(scatter(plot.references, "M0-M5", refs, "markers+text", **star))
    if plot.pick is not None:
        ring = {"size": 18, "color": "rgba(0,0,0,0)", "line": {"color": "red", "width": 2}}
        fig.add_trace(scatter([plot.pick], plot.pick[2], None, **ring))
    fig.add_vline(x=plot.budget_ms, line_dash="dash", line_color="red")
    fig.update_layout(
        xaxis_title=plot.x_label, yaxis_title=plot.y_label, xaxis_type="log", title=plot.title
    )
    # plotly.js embedded: the page works offline and on machines without a CDN
    atomic_write_text(path, fig.to_html(include_plotlyjs=True))


def write_plots(outcome: SearchOutcome, study: optuna.Study, out: Path) -> list[str]:
    """``pareto.png`` and ``pareto.html`` in ``out``; returns the names written."""
    plot = plot_data(outcome, study)
    if plot is None:
        return []
    written = []
    renderers = (("pareto.png", _png, "matplotlib"), ("pareto.html", _html, "plotly"))
    for name, render, package in renderers:
        try:
            render(plot, out / name)
            written.append(name)
        except ImportError:
            log.warning("%s missing: no %s", package, name)
    return written
