"""How much larger is the int8 pick than the fp32 pick at one budget? Both precisions, one run.

    python -m benchmarks.bench_int8_pick runs/fp32 runs/int8 [...] --budget-ms 2
    python -m benchmarks.bench_int8_pick --report        # the table again, from the saved results

Two searches (``python -m search --budget-ms 2 --target ort-cpu`` with and without
``--precision int8``) answer the question only as well as the machine held still through both:
each search's pick depends on its own trials' absolute readings, and a slow phase during one of
them shrinks its pick. This script takes the candidates the searches found along their Pareto
fronts (``pareto.yaml`` of each run folder: the largest configs per latency), the largest
``--per-run`` of each that are not far below the budget, and measures every one in fp32 and in
int8 (the search's own export and quantization, ``search.targets.Target``) in **one interleaved
run**, so both precisions see the same machine. Each precision's pick is then the candidate with
the most parameters whose latency CI upper end is within the budget (the search's own rule).
Reports both picks, their parameter and MAC ratios and every candidate's paired speed-up.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import RESULTS, save

NAME = "int8_pick"
SHAPE = ("widths", "depths", "heads")


def front_configs(runs: list[Path], budget_ms: float, per_run: int) -> list[Any]:
    """The largest ``per_run`` configs of each run's Pareto front that the run measured at or
    above half the budget, without duplicates (by architecture)."""
    from evit.config import ModelConfig

    seen: dict[str, Any] = {}
    for run in runs:
        path = run / "pareto.yaml"
        if not path.is_file():
            raise SystemExit(f"{run}: no pareto.yaml (a finished search's output folder)")
        rows = [
            c
            for c in yaml.safe_load(path.read_text())["candidates"]
            if c.get("reference") is None
            and (c.get("remeasured") or c["first_latency"])["median_ms"] >= budget_ms / 2
        ]
        rows.sort(key=lambda c: -c["params"])
        for c in rows[:per_run]:
            config = ModelConfig.from_dict(c["config"]).validate()
            seen.setdefault(config.architecture_hash(), config)
    return list(seen.values())


def fits(result: Any, budget_ms: float) -> bool:
    return result.ci_high_ms <= budget_ms


def main(argv: list[str] | None = None) -> None:
    import evit
    from edge.devicelock import device_lock
    from edge.latency import measure_interleaved
    from search.targets import Target

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", type=Path, help="search output folders (with pareto.yaml)")
    p.add_argument("--budget-ms", type=float, default=2.0)
    p.add_argument("--per-run", type=int, default=8, help="largest front configs per run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=600.0)
    p.add_argument("--report", action="store_true", help="print the saved results' table")
    args = p.parse_args(argv)
    if args.report:
        print(report(json.loads((RESULTS / f"{NAME}.json").read_text())))
        return

    if not args.runs:
        p.error("give the search output folders to compare (or --report)")
    configs = front_configs(args.runs, args.budget_ms, args.per_run)
    if not configs:
        raise SystemExit("no front config at or above half the budget in these runs")
    work = Path(tempfile.mkdtemp(prefix="bench-int8-pick-"))
    try:
        targets = {
            prec: Target("ort-cpu", threads=args.threads, precision=prec, workdir=work)
            for prec in ("fp32", "int8")
        }
        factories, labels = [], []
        for i, config in enumerate(configs):
            for prec, target in targets.items():
                factories.append(target.prepare(config))
                labels.append(f"{config.name} {prec}")
            print(f"prepared {i + 1}/{len(configs)}: {config.name}", flush=True)
        with device_lock(targets["fp32"].device_key):
            res = measure_interleaved(
                factories,
                labels=labels,
                min_rounds=10,
                max_rounds=40,
                max_seconds=args.max_seconds,
                block_seconds=0.12,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for i, config in enumerate(configs):
        costs = evit.model_costs(config)
        fp32, int8 = res.results[2 * i], res.results[2 * i + 1]
        rows.append(
            {
                "name": config.name,
                "widths": [s.embed_dim for s in config.stages],
                "depths": [s.depth for s in config.stages],
                "heads": [s.num_heads for s in config.stages],
                "img_size": config.img_size,
                "params": costs.params,
                "macs": costs.macs,
                "fp32": fp32.to_dict(),
                "int8": int8.to_dict(),
                "speedup": res.ratio(2 * i, 2 * i + 1).to_dict(),  # fp32 / int8
            }
        )
    picks = {}
    for slot, prec in enumerate(("fp32", "int8")):  # each config's fp32 result, then its int8
        within = [r for i, r in enumerate(rows) if fits(res.results[2 * i + slot], args.budget_ms)]
        picks[prec] = max(within, key=lambda r: r["params"]) if within else None
    data = {"budget_ms": args.budget_ms, "threads": args.threads, "rows": rows, "picks": picks}
    save(NAME, data)
    print(report(data))


def report(data: dict[str, Any]) -> str:
    lines = [
        "| widths / depths / heads | params | MACs | fp32 ms | int8 ms | speed-up [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(data["rows"], key=lambda r: -r["params"]):
        s = r["speedup"]
        lines.append(
            f"| {' / '.join('/'.join(map(str, r[k])) for k in SHAPE if k in r)} | "
            f"{r['params'] / 1e6:.2f} M | {r['macs'] / 1e6:.1f} M | "
            f"{r['fp32']['median_ms']:.3f} | {r['int8']['median_ms']:.3f} | "
            f"{s['ratio']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}] |"
        )
    f, q = data["picks"]["fp32"], data["picks"]["int8"]
    for prec, pick in (("fp32", f), ("int8", q)):
        if pick is None:
            lines.append(f"\n{prec}: nothing within {data['budget_ms']} ms")
        else:
            lines.append(
                f"\n{prec} pick at {data['budget_ms']} ms: {pick['name']} "
                f"({pick['params'] / 1e6:.2f} M params, {pick['macs'] / 1e6:.1f} M MACs, "
                f"{pick[prec]['median_ms']:.3f} ms)"
            )
    if f and q:
        lines.append(
            f"\nint8 pick / fp32 pick: {q['params'] / f['params']:.2f}x params, "
            f"{q['macs'] / f['macs']:.2f}x MACs"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
