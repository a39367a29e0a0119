"""How often does the pre-filter skip a configuration that would in fact have fitted?

    python -m benchmarks.bench_prefilter --margin 1.3 --margin 2.0   # ~6 min per margin

For each dominance margin: run the default search (``--budget-ms``, ORT CPU, ``--timeout``
seconds of trials) with that margin, then measure every configuration it pre-filtered (up to
``--sample``, chosen at random) with the search's own target and lock, and count how many fit
(re-measured median, and the upper end of its 95 % CI, within the budget). A pre-filter that
is conservative under this machine's noise skips none that fit.
"""

from __future__ import annotations

import argparse
import random
import shutil

import optuna
from optuna.trial import TrialState

import search.prefilter
from benchmarks.common import RESULTS, save
from edge.devicelock import device_lock
from search.options import SearchOptions
from search.study import run_search


def one_margin(margin: float, args: argparse.Namespace) -> dict:
    search.prefilter.DOMINANCE_MARGIN = margin
    out = RESULTS / f"prefilter-{margin:g}"
    shutil.rmtree(out, ignore_errors=True)  # a fresh study, not a resumed one
    opts = SearchOptions(
        budget_ms=args.budget_ms, target="ort-cpu", timeout=args.timeout, out=out, seed=args.seed
    )
    outcome = run_search(opts)
    study = optuna.load_study(
        study_name=outcome.study_name, storage=f"sqlite:///{out / 'study.db'}"
    )
    skipped = [
        t
        for t in study.get_trials(states=(TrialState.COMPLETE,))
        if t.user_attrs.get("latency_source") == "prefilter-bound"
    ]
    rules = {"MAC floor": 0, "dominance": 0}
    for t in skipped:
        rules["MAC floor" if "MAC floor" in t.user_attrs["prefilter_reason"] else "dominance"] += 1
    sample = random.Random(0).sample(skipped, min(args.sample, len(skipped)))
    fit_median = fit_ci = 0
    rows = []
    for t in sample:
        config = outcome.space.config_from_params(t.params)
        with device_lock(outcome.target.device_key):
            r = outcome.target.measure(config)
        fit_median += r.median_ms <= args.budget_ms
        fit_ci += r.ci_high_ms <= args.budget_ms
        rows.append(
            {
                "trial": t.number,
                "reason": t.user_attrs["prefilter_reason"],
                "measured_ms": r.median_ms,
                "ci_high_ms": r.ci_high_ms,
            }
        )
    trials = len(study.get_trials(states=(TrialState.COMPLETE,)))
    print(
        f"margin {margin:g}: {len(skipped)} of {trials} trials pre-filtered "
        f"({rules['MAC floor']} MAC floor, {rules['dominance']} dominance); measured "
        f"{len(sample)}: {fit_median} fit by median, {fit_ci} by the upper CI; "
        f"fastest measured {min((r['measured_ms'] for r in rows), default=float('nan')):.3f} ms",
        flush=True,
    )
    return {
        "margin": margin,
        "trials": trials,
        "prefiltered": len(skipped),
        "rules": rules,
        "sampled": len(sample),
        "fit_by_median": fit_median,
        "fit_by_ci_high": fit_ci,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--margin", type=float, action="append", required=True)
    parser.add_argument("--budget-ms", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = [one_margin(m, args) for m in args.margin]
    save("prefilter", {"budget_ms": args.budget_ms, "timeout": args.timeout, "runs": results})


if __name__ == "__main__":
    main()
