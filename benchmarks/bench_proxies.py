"""Which cheap objective ranks architectures as trained accuracy does? Kendall tau, with evidence.

    python -m benchmarks.bench_proxies               # ~40 min on 2 cores (30 configs x 2 seeds)
    python -m benchmarks.bench_proxies --report      # the tables again, from the saved results

Samples ``--configs`` configurations at random from the default search space (M0-M5 added),
measures their latency (ONNX Runtime CPU, 224 px, batch 1, one interleaved run), computes every
training-free objective of ``search.objectives`` (params, MACs, DSS, ZiCo), and trains each under
one fixed budget (``search.accuracy.TrainBudget``: ``--epochs`` on the synthetic dataset at
``--img-size`` px, the accuracy objective's own training) with two seeds. Reports Kendall's
tau-b between mean validation top-1 and each objective (95 % bootstrap interval over configs),
among the top half, and within latency bins (configs of similar measured latency: what matters
for a pick under a budget); tau between the two seeds (the noise ceiling); and an offline replay
of the early-stop rule. Results are saved after every training, and a re-run resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, save

NAME = "proxies"
PROXY_NAMES = ("params", "macs", "dss", "zico")


# --- statistics ------------------------------------------------------------------------------


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties in either list handled); nan when undefined."""
    concordant = discordant = ties_x = ties_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else float("nan")


def bootstrap_interval(
    x: list[float], y: list[float], resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile interval of tau over configs resampled with replacement."""
    rng = random.Random(seed)
    n = len(x)
    values = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        t = kendall_tau([x[i] for i in idx], [y[i] for i in idx])
        if not math.isnan(t):
            values.append(t)
    values.sort()
    return values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]


def tau_within_bins(
    latency: list[float], x: list[float], y: list[float], bins: int
) -> tuple[float, list[float]]:
    """Tau inside each latency quantile bin, and their mean weighted by pairs per bin."""
    order = sorted(range(len(latency)), key=lambda i: latency[i])
    size = len(order) / bins
    per_bin, weights = [], []
    for b in range(bins):
        idx = order[round(b * size) : round((b + 1) * size)]
        t = kendall_tau([x[i] for i in idx], [y[i] for i in idx])
        per_bin.append(t)
        weights.append(len(idx) * (len(idx) - 1) / 2 if not math.isnan(t) else 0)
    total = sum(weights)
    mean = sum(t * w for t, w in zip(per_bin, weights) if w) / total if total else float("nan")
    return mean, per_bin


# --- the experiment ----------------------------------------------------------------------


def sample_configs(n: int, seed: int, classes: int) -> dict[str, Any]:
    from search.space import load_space, reference_configs

    space = load_space()
    rng = random.Random(seed)

    class _Random:
        def suggest_categorical(self, name: str, choices: list) -> Any:
            return rng.choice(choices)

    configs = {n: c.replace(num_classes=classes) for n, c in reference_configs().items()}
    seen = {c.architecture_hash() for c in configs.values()}
    while len(configs) < n + len(reference_configs()):
        c = space.sample(_Random()).replace(num_classes=classes)
        h = c.architecture_hash()
        if h not in seen:
            seen.add(h)
            configs[f"random_{h[:8]}"] = c.replace(name=f"random_{h[:8]}")
    return configs


def measure_latencies(configs: dict[str, Any], threads: int | None) -> dict[str, dict]:
    from edge.latency import measure_interleaved
    from search.targets import Target

    target = Target("ort-cpu", batch=1, threads=threads)
    target.workdir = Path(tempfile.mkdtemp(prefix="bench-proxies-"))
    names = list(configs)
    factories = [target.prepare(configs[n]) for n in names]
    run = measure_interleaved(
        factories, labels=names, min_rounds=10, max_rounds=30, max_seconds=240, block_seconds=0.12
    )
    shutil.rmtree(target.workdir, ignore_errors=True)
    out = {}
    for n, r in zip(names, run.results):
        out[n] = {"median_ms": r.median_ms, "ci_low_ms": r.ci_low_ms, "ci_high_ms": r.ci_high_ms}
    return {"threads": target.threads, "cpu": target.env.get("cpu"), "results": out}


def proxies(config: Any) -> dict[str, float]:
    from search.objectives import OBJECTIVES

    return {name: OBJECTIVES[name].evaluate(config) for name in PROXY_NAMES}


def short_training(config: Any, budget: Any) -> dict[str, Any]:
    """``config``'s top-1, per-epoch curve and seconds after the search's own short training
    (``search.accuracy.train_candidate`` under ``budget``, its seed), from random weights."""
    from search.accuracy import epoch_top1, train_candidate

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        outcome = train_candidate(config, budget, Path(tmp) / "run", None)
    return {
        "top1": outcome.top1,
        "curve": [epoch_top1(h) for h in outcome.history],
        "seconds": outcome.seconds,
    }


def train_one(config: Any, data: Path, epochs: int, img_size: int, seed: int) -> dict[str, Any]:
    from search.accuracy import TrainBudget

    budget = TrainBudget(data=data, epochs=epochs, img_size=img_size, seed=seed)
    return short_training(config, budget)


def ensure_data(path: Path, val_per_class: int = 50) -> Path:
    """The README's synthetic dataset (10 classes, 300 training images each, 64 px, seed 0)
    with ``val_per_class`` validation images per class, written unless present."""
    if not (path / "val").is_dir():
        from evit.train.synthetic import write_synthetic

        write_synthetic(
            path, num_classes=10, per_class=300, size=64, seed=0, val_per_class=val_per_class
        )
    return path


# --- analysis --------------------------------------------------------------------------------


def replay_early_stop(
    rows: list[dict], check_epoch: int, margin: float, orders: int = 200
) -> dict[str, float]:
    """The early-stop rule replayed over random trial orders (seed 0's curves).

    A stop is *wrong* when the stopped config's final top-1 beats the final top-1 of every
    config finished before it at lower or equal latency (it would have joined the front).
    """
    rng = random.Random(0)
    stops = wrong = 0
    saved = total = 0.0
    for _ in range(orders):
        order = rows[:]
        rng.shuffle(order)
        finished: list[dict] = []
        for r in order:
            run = r["train"]["0"]
            total += run["seconds"]
            lat = r["latency_ms"]
            early = run["curve"][check_epoch - 1]
            leaders = [
                f
                for f in finished
                if f["latency_ms"] <= lat
                and f["train"]["0"]["curve"][check_epoch - 1] > early + margin
            ]
            if leaders:
                stops += 1
                epochs = len(run["curve"])
                saved += run["seconds"] * (epochs - check_epoch) / epochs
                faster = [f["train"]["0"]["top1"] for f in finished if f["latency_ms"] <= lat]
                if run["top1"] > max(faster):
                    wrong += 1
                continue
            finished.append(r)
    return {
        "check_epoch": check_epoch,
        "margin": margin,
        "stopped_share": stops / (orders * len(rows)),
        "wrong_share_of_stops": wrong / stops if stops else 0.0,
        "time_saved_share": saved / total if total else 0.0,
    }


def analyse(state: dict) -> dict[str, Any]:
    rows = [r for r in state["configs"].values() if len(r.get("train", {})) == len(state["seeds"])]
    seeds = [str(s) for s in state["seeds"]]
    acc = [sum(r["train"][s]["top1"] for s in seeds) / len(seeds) for r in rows]
    lat = [r["latency_ms"] for r in rows]
    epochs = state["epochs"]
    objectives = {name: [r["proxies"][name] for r in rows] for name in PROXY_NAMES}
    for e in range(1, epochs):
        objectives[f"top-1 after epoch {e}"] = [
            sum(r["train"][s]["curve"][e - 1] for s in seeds) / len(seeds) for r in rows
        ]
    objectives["-latency (faster is better)"] = [-x for x in lat]
    median = sorted(acc)[len(acc) // 2]
    top = [i for i, a in enumerate(acc) if a >= median]
    table = {}
    for name, values in objectives.items():
        tau = kendall_tau(values, acc)
        lo, hi = bootstrap_interval(values, acc)
        in_bins, per_bin = tau_within_bins(lat, values, acc, state["bins"])
        table[name] = {
            "tau": tau,
            "ci": [lo, hi],
            "tau_top_half": kendall_tau([values[i] for i in top], [acc[i] for i in top]),
            "tau_within_latency_bins": in_bins,
            "per_bin": per_bin,
        }
    per_seed = {}
    if len(seeds) == 2:
        a, b = ([r["train"][s]["top1"] for r in rows] for s in seeds)
        lo, hi = bootstrap_interval(a, b)
        per_seed["tau_seed_vs_seed"] = {"tau": kendall_tau(a, b), "ci": [lo, hi]}
        per_seed["tau_seed_vs_seed_within_bins"] = tau_within_bins(lat, a, b, state["bins"])[0]
        for name in PROXY_NAMES:
            per_seed[name] = [kendall_tau(objectives[name], x) for x in (a, b)]
    rules = rules_split(rows, acc, lat, state["bins"])
    replay = [replay_early_stop(rows, e, m) for e in range(1, epochs) for m in (0.0, 2.0, 3.0, 4.0)]
    return {
        "configs": len(rows),
        "accuracy_range": [min(acc), max(acc)],
        "table": table,
        "seeds": per_seed,
        "early_stop_replay": replay,
        "rules": rules,
    }


def rules_split(rows: list[dict], acc: list[float], lat: list[float], bins: int) -> list[dict]:
    """Per latency bin: mean top-1 of configs that keep the accuracy space's shape rules vs
    configs that break them."""
    from evit.config import ModelConfig
    from search.space import ACCURACY_SPACE, load_space

    rules = load_space(ACCURACY_SPACE).rules
    keeps = [rules.violation(ModelConfig.from_dict(r["config"])) is None for r in rows]
    order = sorted(range(len(rows)), key=lambda i: lat[i])
    size = len(order) / bins
    out = []
    for b in range(bins):
        idx = order[round(b * size) : round((b + 1) * size)]
        kept = [acc[i] for i in idx if keeps[i]]
        broken = [acc[i] for i in idx if not keeps[i]]
        out.append(
            {
                "latency_ms": [lat[idx[0]], lat[idx[-1]]],
                "keep": len(kept),
                "keep_top1": sum(kept) / len(kept) if kept else None,
                "break": len(broken),
                "break_top1": sum(broken) / len(broken) if broken else None,
            }
        )
    return out


def markdown(state: dict, result: dict) -> str:
    lines = [
        f"{result['configs']} configs, mean validation top-1 over seeds {state['seeds']} from "
        f"{result['accuracy_range'][0]:.1f} to {result['accuracy_range'][1]:.1f} %",
        "",
        "| objective | tau [95% CI] | tau, top half | tau within latency bins |",
        "|---|---|---|---|",
    ]
    for name, r in result["table"].items():
        lines.append(
            f"| {name} | {r['tau']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}] | "
            f"{r['tau_top_half']:.2f} | {r['tau_within_latency_bins']:.2f} |"
        )
    s = result["seeds"]
    if s:
        t = s["tau_seed_vs_seed"]
        lines += [
            "",
            f"Seed vs seed: tau {t['tau']:.2f} [{t['ci'][0]:.2f}, {t['ci'][1]:.2f}], within "
            f"latency bins {s['tau_seed_vs_seed_within_bins']:.2f}.",
            "Per seed: " + ", ".join(f"{n} {s[n][0]:.2f} / {s[n][1]:.2f}" for n in PROXY_NAMES),
        ]
    lines += [
        "",
        "| latency bin ms | keep the rules: n, mean top-1 | break them: n, mean top-1 |",
        "|---|---|---|",
    ]
    for r in result.get("rules", []):
        keep = f"{r['keep']}, {r['keep_top1']:.1f} %" if r["keep"] else "0"
        brk = f"{r['break']}, {r['break_top1']:.1f} %" if r["break"] else "0"
        lines.append(f"| {r['latency_ms'][0]:.2f}-{r['latency_ms'][1]:.2f} | {keep} | {brk} |")
    lines += ["", "| early stop after epoch | margin | stopped | wrong stops | training saved |"]
    lines.append("|---|---|---|---|---|")
    for r in result["early_stop_replay"]:
        lines.append(
            f"| {r['check_epoch']} | {r['margin']:g} | {r['stopped_share']:.0%} | "
            f"{r['wrong_share_of_stops']:.0%} | {r['time_saved_share']:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", type=int, default=24, help="random configs besides M0-M5 (24)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (0 1)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per config (3)")
    p.add_argument("--img-size", type=int, default=64, help="training size of 224-px configs (64)")
    p.add_argument("--data", type=Path, default=Path("data/shapes-bench"), help="dataset folder")
    p.add_argument("--threads", type=int, help="ORT threads for the latencies (default: all)")
    p.add_argument("--bins", type=int, default=4, help="latency bins (4)")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--report", action="store_true", help="only print the saved results")
    p.add_argument(
        "--latency-again",
        action="store_true",
        help="measure the latencies again (e.g. if something else ran meanwhile) and re-analyse",
    )
    args = p.parse_args()
    path = RESULTS / f"{NAME}.json"
    state = json.loads(path.read_text()) if path.is_file() else None
    if not args.report:
        keys = {"epochs": args.epochs, "img_size": args.img_size, "seeds": args.seeds}
        if state is None or any(state.get(k) != v for k, v in keys.items()):
            state = {**keys, "bins": args.bins, "sample_seed": args.sample_seed, "configs": {}}
        data = ensure_data(args.data)
        from evit.train.data import find_classes

        classes = len(find_classes(data / "train"))
        configs = sample_configs(args.configs, args.sample_seed, classes)
        import evit

        if "latency" not in state or args.latency_again:
            state["latency"] = measure_latencies(configs, args.threads)
            for name, row in state["configs"].items():
                row["latency_ms"] = state["latency"]["results"][name]["median_ms"]
            print(f"latencies measured ({state['latency']['cpu']})", flush=True)
        for name, config in configs.items():
            row = state["configs"].setdefault(name, {})
            if "proxies" not in row:
                costs = evit.model_costs(config)
                row.update(
                    config=config.to_dict(),
                    params=costs.params,
                    macs=costs.macs,
                    latency_ms=state["latency"]["results"][name]["median_ms"],
                    proxies=proxies(config),
                    train={},
                )
                save(NAME, state)
        for seed in args.seeds:
            for name, config in configs.items():
                row = state["configs"][name]
                if str(seed) in row["train"]:
                    continue
                row["train"][str(seed)] = train_one(config, data, args.epochs, args.img_size, seed)
                print(
                    f"{name} seed {seed}: top-1 {row['train'][str(seed)]['top1']:.1f} % "
                    f"({row['train'][str(seed)]['seconds']:.0f} s)",
                    flush=True,
                )
                save(NAME, state)
        state["analysis"] = analyse(state)
        save(NAME, state)
    if state is None or "analysis" not in state:
        raise SystemExit(f"no results in {path}; run without --report first")
    print(markdown(state, state["analysis"]))


if __name__ == "__main__":
    main()
