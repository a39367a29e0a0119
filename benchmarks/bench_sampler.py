"""Choosing the sampler by measurement: TPE vs NSGA-II vs random on a fixed trial budget.

    python benchmarks/bench_sampler.py runs/ort-cpu-b1-t2-2ms-params --budget-ms 2

Real latency costs a second per trial, so the comparison runs on a surrogate fitted to real
measurements: a least-squares model of the measured latencies of a previous search (its
study) in MACs, activation bytes and attention heads x depth. Each sampler then runs the
default space with the ``params`` objective and the surrogate latency as the budget constraint,
for several seeds; the score is the best feasible objective after N trials.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import optuna

import evit
from benchmarks.common import save
from search.context import make_sampler
from search.space import load_space, reference_configs


def features(config) -> list[float]:
    c = evit.model_costs(config)
    heads = sum(s.depth * s.num_heads for s in config.stages)
    return [c.macs / 1e6, c.activation_bytes / 1e6, heads, 1.0]


def fit_surrogate(run_dir: Path) -> tuple[np.ndarray, float, int]:
    """Least squares of measured latency on :func:`features`, from a search run's study."""
    space = load_space()
    name = json.loads((run_dir / "summary.json").read_text())["study"]
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{run_dir / 'study.db'}")
    xs, ys = [], []
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        if t.user_attrs.get("latency_source") == "measured":
            xs.append(features(space.config_from_params(t.params)))
            ys.append(t.user_attrs["latency_median_ms"])
    x, y = np.asarray(xs), np.asarray(ys)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    r2 = 1 - ((x @ coef - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return coef, float(r2), len(y)


def run(sampler: str, seed: int, coef: np.ndarray, budget: float, trials: int) -> float:
    space = load_space()
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=make_sampler(sampler, seed)
    )
    for config in reference_configs().values():
        study.enqueue_trial(space.params_of(config))

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        config = space.sample(trial)
        latency = float(np.dot(features(config), coef))
        trial.set_constraint("latency_ms", latency - budget)
        return float(evit.model_costs(config).params), latency

    study.optimize(objective, n_trials=trials)
    feasible = [t.values[0] for t in study.trials if t.values[1] <= budget]
    return max(feasible) if feasible else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_dir", type=Path, help="output folder of a default search run")
    p.add_argument("--budget-ms", type=float, default=2.0)
    p.add_argument("--trials", type=int, default=150)
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    coef, r2, n = fit_surrogate(args.run_dir)
    print(f"surrogate fitted on {n} measured trials: R^2 {r2:.3f}, coefficients {coef}")
    results = {}
    for sampler in ("tpe", "nsga2", "random"):
        scores = [run(sampler, s, coef, args.budget_ms, args.trials) for s in range(args.seeds)]
        results[sampler] = scores
        print(
            f"{sampler:>7}: best feasible params after {args.trials} trials: mean "
            f"{statistics.mean(scores) / 1e6:.2f} M, min {min(scores) / 1e6:.2f} M, max "
            f"{max(scores) / 1e6:.2f} M over {args.seeds} seeds",
            flush=True,
        )
    save(
        "sampler",
        {
            "r2": r2,
            "fitted_on": n,
            "coef": coef.tolist(),
            "budget_ms": args.budget_ms,
            "trials": args.trials,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
