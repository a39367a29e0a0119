"""Do shape rules give a better pick at equal latency? And is the default search's pick sane?

    python -m benchmarks.bench_space accuracy --rules on  --timeout 720   # ~14 min each
    python -m benchmarks.bench_space accuracy --rules off --timeout 720
    python -m benchmarks.bench_space default --objective params           # ~8 min
    python -m benchmarks.bench_space --report

``accuracy``: runs ``python -m search --budget-ms B --objective accuracy`` on the synthetic data
(the README's command) with the accuracy space's shape rules on or off (all else equal), then
trains the pick and M0 again with ``--retrain-seeds`` other seeds under the same budget, so the
comparison does not rest on the one validation score the search maximized (a maximum of many
noisy scores is optimistic). ``default``: runs the default search (proxy objective, no data)
and trains its pick and M0 the same way. Latency ratios are the search's paired pick / M0 ratio
from its final interleaved run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import RESULTS, save

NAME = "space"


def retrain(config: Any, data: Path, img_size: int, epochs: int, seeds: list[int]) -> list[float]:
    from benchmarks.bench_proxies import train_one

    return [train_one(config, data, epochs, img_size, s)["top1"] for s in seeds]


def _row(outcome: Any, args: argparse.Namespace, data: Path, seconds: float) -> dict[str, Any]:
    import evit

    best = outcome.best
    m0 = next(r for r in outcome.references if r.reference == "efficientvit_m0")
    run = outcome.interleaved
    ratio = run.ratio(best.slot, m0.slot) if run is not None else None
    row: dict[str, Any] = {
        "seconds": seconds,
        "stats": {k: v for k, v in outcome.stats.items() if k != "timings"},
        "pick": {
            "config": best.config.to_dict(),
            "widths": [s.embed_dim for s in best.config.stages],
            "depths": [s.depth for s in best.config.stages],
            "heads": [s.num_heads for s in best.config.stages],
            "img_size": best.config.img_size,
            "params": best.params,
            "objective": best.objective,
            "latency_ms": best.remeasured.median_ms,
        },
        "m0": {"objective": m0.objective, "latency_ms": m0.remeasured.median_ms},
        "latency_pick_over_m0": ratio.to_dict() if ratio else None,
    }
    seeds = args.retrain_seeds
    row["retrain_seeds"] = seeds
    at_m0 = next((c for ref, c in outcome.iso_latency if ref.reference == m0.reference), None)
    if at_m0 is not None:  # the most accurate candidate within M0's latency (paired ratio)
        r = run.ratio(at_m0.slot, m0.slot)
        row["at_m0_latency"] = {
            "widths": [s.embed_dim for s in at_m0.config.stages],
            "depths": [s.depth for s in at_m0.config.stages],
            "img_size": at_m0.config.img_size,
            "objective": at_m0.objective,
            "latency_over_m0": r.to_dict(),
            "retrained_top1": retrain(at_m0.config, data, 64, args.epochs, seeds),
        }
    row["pick"]["retrained_top1"] = retrain(best.config, data, 64, args.epochs, seeds)
    # the training sets the class count from the data
    row["m0"]["retrained_top1"] = retrain(evit.load_config("m0"), data, 64, args.epochs, seeds)
    return row


def run_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.bench_proxies import ensure_data
    from search.accuracy import TrainBudget
    from search.options import SearchOptions
    from search.space import ACCURACY_SPACE
    from search.study import run_search

    data = ensure_data(args.data)
    space = yaml.safe_load(ACCURACY_SPACE.read_text())
    if args.rules == "off":
        space.pop("rules", None)
    out = RESULTS / f"space-accuracy-rules-{args.rules}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    space_path = out / "space.yaml"
    space_path.write_text(yaml.safe_dump(space))
    start = time.perf_counter()
    outcome = run_search(
        SearchOptions(
            budget_ms=args.budget_ms,
            timeout=args.timeout,
            objective="accuracy",
            space=str(space_path),
            out=out,
            train=TrainBudget(data=data, epochs=args.epochs, img_size=64),
        )
    )
    return _row(outcome, args, data, time.perf_counter() - start)


def run_default(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.bench_proxies import ensure_data
    from search.options import SearchOptions
    from search.study import run_search

    data = ensure_data(args.data)
    out = RESULTS / f"space-default-{args.objective}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    outcome = run_search(
        SearchOptions(budget_ms=args.budget_ms, timeout=330, out=out, objective=args.objective)
    )
    row = _row(outcome, args, data, time.perf_counter() - start)
    row["objective_name"] = outcome.objective.name
    return row


def markdown(state: dict[str, Any]) -> str:
    lines = [
        "| run | pick widths / depths / heads, img | params | pick top-1 in the search | "
        "M0 top-1 in the search | pick / M0 latency [95% CI] | retrained pick / M0 (seeds) | "
        "trained | early-stopped | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in state.get("runs", {}).items():
        p, m = r["pick"], r["m0"]
        ratio = r["latency_pick_over_m0"]
        cell = (
            f"{ratio['ratio']:.2f} [{ratio['ci_low']:.2f}, {ratio['ci_high']:.2f}]"
            if ratio
            else "-"
        )
        objective = (
            f"{p['objective']:.1f} %"
            if name.startswith("accuracy")
            else f"{p['objective']:.3g} (proxy)"
        )
        m0_obj = f"{m['objective']:.1f} %" if name.startswith("accuracy") else "-"
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        lines.append(
            f"| {name} | {'/'.join(map(str, p['widths']))} / {'/'.join(map(str, p['depths']))} / "
            f"{'/'.join(map(str, p['heads']))}, {p['img_size']} | {p['params'] / 1e6:.2f} M | "
            f"{objective} | {m0_obj} | {cell} | "
            f"{mean(p['retrained_top1']):.1f} / {mean(m['retrained_top1']):.1f} % "
            f"({', '.join(map(str, r['retrain_seeds']))}) | {r['stats'].get('trained', '-')} | "
            f"{r['stats'].get('early_stopped', '-')} | {r['seconds'] / 60:.1f} |"
        )
    for name, r in state.get("runs", {}).items():
        a = r.get("at_m0_latency")
        if a:
            x = a["latency_over_m0"]
            lines.append(
                f"\n{name}: at M0's latency, {'/'.join(map(str, a['widths']))} / "
                f"{'/'.join(map(str, a['depths']))}, {a['img_size']} px: {a['objective']:.1f} % "
                f"in the search, latency / M0 {x['ratio']:.2f} "
                f"[{x['ci_low']:.2f}, {x['ci_high']:.2f}], "
                f"retrained {sum(a['retrained_top1']) / len(a['retrained_top1']):.1f} %"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", nargs="?", choices=("accuracy", "default"))
    p.add_argument("--rules", choices=("on", "off"), default="on")
    p.add_argument("--budget-ms", type=float, default=2.0)
    p.add_argument("--objective", default="params", help="proxy of the default run (params)")
    p.add_argument("--timeout", type=float, default=720.0, help="trial loop seconds (720)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--retrain-seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--data", type=Path, default=Path("data/shapes-bench"))
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    path = RESULTS / f"{NAME}.json"
    state = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    if not args.report:
        if args.what is None:
            p.error("give accuracy or default (or --report)")
        if args.what == "accuracy":
            state["runs"][f"accuracy, rules {args.rules}"] = run_accuracy(args)
        else:
            state["runs"][f"default search, {args.objective}"] = run_default(args)
        save(NAME, {k: v for k, v in state.items() if k not in ("environment", "argv")})
    print(markdown(state))


if __name__ == "__main__":
    main()
