"""Does the accuracy search's pick beat M0, with and without ``--weight-sharing``?

    python -m benchmarks.bench_search_e2e            # ~40 min on 2 cores; nothing else running
    python -m benchmarks.bench_search_e2e --report   # the table again, from the saved results

Issue 23 item 4(c). For each ``--modes`` entry the search runs as a user runs it (a subprocess,
the README's accuracy command at ``--budget-ms m0`` within ``--time-limit``; ``weight-sharing``
adds ``--weight-sharing``). Then its pick and M0 are each trained from scratch with the
search's own short training (``search.accuracy.train_candidate``: the same recipe, epochs and
size for both) with seeds 0 and 1. Per mode it reports the pick against M0 on those stand-alone
means, the paired latency ratio of the search's final re-measurement, the search's own scores
(short-training seeds, or inherited and fine-tuned top-1) and the wall time.

A search folder with a complete ``summary.json`` is reused, and every training is saved as it
ends (``benchmarks/results/search_e2e.json``, the runs in ``benchmarks/results/search_e2e/``),
so a killed run resumes where it stopped. The latency figures need a machine with nothing else
running: one latency measurement per device at a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_proxies import short_training
from benchmarks.bench_supernet_rank import cpu_kind, ensure_data
from benchmarks.common import RESULTS, save

NAME = "search_e2e"
SEEDS = (0, 1)
MODES = {"default": [], "weight-sharing": ["--weight-sharing"]}


def search_command(args: argparse.Namespace, mode: str, out: Path) -> list[str]:
    """The README's accuracy command (with the mode's flags), writing to ``out``."""
    return [
        sys.executable,
        "-m",
        "search",
        "--budget-ms",
        "m0",
        "--objective",
        "accuracy",
        "--data",
        str(args.data),
        "--train-img-size",
        str(args.img_size),
        "--target",
        "ort-cpu",
        "--time-limit",
        str(args.time_limit),
        "--out",
        str(out),
        *MODES[mode],
    ]


def run_search(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """The mode's search summary; the search runs (or resumes) unless it finished before."""
    out = RESULTS / NAME / mode
    summary = out / "summary.json"
    if summary.is_file() and not json.loads(summary.read_text()).get("interrupted"):
        return {"summary": json.loads(summary.read_text()), "wall_s": None, "reused": True}
    command = search_command(args, mode, out)
    print("$", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    code = subprocess.run(command).returncode
    wall = time.perf_counter() - start
    if code not in (0, 1):  # 1: nothing fits, a result too
        raise SystemExit(f"the {mode} search exited {code}")
    return {"summary": json.loads(summary.read_text()), "wall_s": wall, "reused": False}


def m0_of(summary: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in summary["references"] if r["reference"] == "efficientvit_m0")


def train_from_scratch(config: dict[str, Any], budget: Any, seed: int) -> dict[str, Any]:
    """``config``'s top-1 after the search's short training from random weights."""
    import dataclasses

    from evit.config import ModelConfig

    return short_training(ModelConfig.from_dict(config), dataclasses.replace(budget, seed=seed))


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def analyse(state: dict[str, Any]) -> dict[str, Any]:
    """Per mode: the pick and M0 from scratch, the paired ratio, the search's own scores."""
    rows = {}
    for mode, got in state["modes"].items():
        s = got["search"]["summary"]
        best, m0 = s["best"], m0_of(s)
        if best is None:
            f = s["fastest"] or {}
            rows[mode] = {"pick": None, "fastest": f.get("name"), "vs_m0": f.get("latency_vs_m0")}
            rows[mode].update(supernet=s.get("supernet"), wall_s=got["search"]["wall_s"])
            continue
        if "scratch" not in got:
            continue
        pick = [got["scratch"]["pick"][str(seed)]["top1"] for seed in SEEDS]
        ref = [got["scratch"]["m0"][str(seed)]["top1"] for seed in SEEDS]
        rows[mode] = {
            "pick": best["name"],
            "pick_is_m0": best["name"] == "efficientvit_m0",
            "params": best["params"],
            "macs": best["macs"],
            "latency_vs_m0": best["latency_vs_m0"],
            "scratch_pick": pick,
            "scratch_m0": ref,
            "scratch_gain": mean(pick) - mean(ref),
            "search_pick": {k: best[k] for k in ("objective", "seeds", "inherited")},
            "search_m0": {k: m0[k] for k in ("objective", "seeds", "inherited")},
            "supernet": s.get("supernet"),
            "stats": {k: v for k, v in s["stats"].items() if isinstance(v, int | float)},
            "wall_s": got["search"]["wall_s"],
        }
    return rows


def _pct(values: list[float] | None) -> str:
    if not values:
        return "-"
    return f"{mean(values):.1f} ({' / '.join(f'{v:.1f}' for v in values)})"


def markdown(state: dict[str, Any], rows: dict[str, Any]) -> str:
    lines = [
        f"CPU: {state.get('cpu_kind')}; --time-limit {state['settings']['time_limit']} s, "
        f"{state['settings']['img_size']} px",
        "",
        "| mode | pick | pick / M0 latency [95% CI] | from scratch: pick vs M0, mean (seeds) "
        "| gain | the search's own: pick / M0 | wall |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r in rows.items():
        if r["pick"] is None:
            v = r["vs_m0"] or {}
            near = f"{v['ratio']:.2f} [{v['ci_low']:.2f}, {v['ci_high']:.2f}]" if v else "-"
            dashes = " - |" * 4
            lines.append(f"| {mode} | none fits (fastest: {r['fastest']}) | {near} |{dashes}")
            continue
        ratio = r["latency_vs_m0"] or {}
        ratio_cell = (
            f"{ratio['ratio']:.2f} [{ratio['ci_low']:.2f}, {ratio['ci_high']:.2f}]"
            if ratio
            else "-"
        )
        own = []
        for who in ("search_pick", "search_m0"):
            x = r[who]
            inherited = (
                f"inherited {x['inherited']:.1f}, " if x.get("inherited") is not None else ""
            )
            own.append(f"{inherited}{_pct(x.get('seeds'))}")
        wall = f"{r['wall_s'] / 60:.1f} min" if r["wall_s"] else "reused"
        lines.append(
            f"| {mode} | {r['pick']} ({r['params'] / 1e6:.2f} M params, {r['macs'] / 1e6:.0f} M "
            f"MACs) | {ratio_cell} | {_pct(r['scratch_pick'])} vs {_pct(r['scratch_m0'])} "
            f"| {r['scratch_gain']:+.1f} | {own[0]} / {own[1]} | {wall} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, state: dict[str, Any]) -> None:
    from search.accuracy import TrainBudget

    ensure_data(args.data, 10, 300, 100, 64)
    budget = TrainBudget(data=args.data, epochs=args.epochs, img_size=args.img_size, seed=0)
    state["cpu_kind"] = cpu_kind()
    for mode in args.modes:
        got = state["modes"].setdefault(mode, {})
        if "search" not in got or got["search"]["summary"].get("interrupted"):
            got["search"] = run_search(args, mode)
            save(NAME, state)
        s = got["search"]["summary"]
        if s["best"] is None:
            print(f"{mode}: nothing fits the budget", flush=True)
            continue
        scratch = got.setdefault("scratch", {"pick": {}, "m0": {}})
        for who, config in (("pick", s["best"]["config"]), ("m0", m0_of(s)["config"])):
            for seed in SEEDS:
                if str(seed) not in scratch[who]:
                    scratch[who][str(seed)] = train_from_scratch(config, budget, seed)
                    print(f"{mode} {who} seed {seed}: {scratch[who][str(seed)]}", flush=True)
                    save(NAME, state)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--modes",
        nargs="+",
        choices=list(MODES),
        default=list(MODES),
        help="searches to run (both)",
    )
    p.add_argument("--time-limit", type=int, default=840, help="each search's --time-limit (840)")
    p.add_argument("--img-size", type=int, default=64, help="--train-img-size (64)")
    p.add_argument("--epochs", type=int, default=3, help="the search's --train-epochs (3)")
    p.add_argument(
        "--data", type=Path, default=Path("data/shapes-search"), help="the README's data set"
    )
    p.add_argument("--report", action="store_true", help="only print the saved results")
    args = p.parse_args(argv)
    path = RESULTS / f"{NAME}.json"
    settings = {"time_limit": args.time_limit, "img_size": args.img_size, "epochs": args.epochs}
    state = json.loads(path.read_text()) if path.is_file() else {}
    if state.get("settings") != settings:
        state = {"settings": settings, "modes": {}}
    for key in ("environment", "argv"):
        state.pop(key, None)
    if not args.report:
        run(args, state)
    state["analysis"] = analyse(state)
    save(NAME, state)
    print(markdown(state, state["analysis"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
