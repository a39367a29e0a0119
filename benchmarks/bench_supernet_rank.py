"""Does a weight-sharing supernet's inherited accuracy rank configs as stand-alone training does?

    nice -n 10 python -m benchmarks.bench_supernet_rank --threads 1   # ~45 min, 2 shared AVX2 cores
    python -m benchmarks.bench_supernet_rank --report    # the tables again, from the saved results

On a machine shared with other jobs give ``--threads 1``: two threads beside another process on
two cores stalled an epoch tenfold (docs/benchmarks.md §17).

Issue 23 item 4(a)+(b). On one generated synthetic set (``--data``, written unless present),
``--configs`` configurations (M0-M5 and random ones of the accuracy space, ``--sample-seed``,
shape rules kept) are scored two ways at the same proxy size (``--img-size`` px for a 224-px
candidate, ``search.accuracy.TrainBudget``):

- stand-alone: each config trained by the search's own short training
  (``search.accuracy.train_candidate``, ``--epochs``) with seeds 0 and 1;
- inherited: one supernet of the space trained once on the same data as ``--weight-sharing``
  trains it (``search.inherited.train_supernet_for``, ``--supernet-epochs``), then each config's
  sub-network scored as the search scores it (``InheritedScorer.inherited_top1``: weights sliced
  out, BN statistics re-estimated on fixed training batches, whole validation set).

Reports Kendall's tau-b (``benchmarks.bench_proxies.kendall_tau``, as §12) between the inherited
top-1 and the stand-alone mean, with a seeded bootstrap 95 % interval over configs; each single
seed against the inherited top-1 and against the other seed (the short-training score's own
noise); all of them overall, among the top half by stand-alone mean, and within MAC bins
(thirds by MACs at the candidate's own input size: MACs stand in for latency, which on a shared
CPU would need a measurement of its own). Costs: the supernet's training time against one
stand-alone training, and candidates scored per minute by inheritance. Every result is saved as
it comes (``benchmarks/results/supernet_rank.json``, the supernet in
``benchmarks/results/supernet_rank/``), so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_proxies import (
    bootstrap_interval,
    kendall_tau,
    short_training,
    tau_within_bins,
)
from benchmarks.common import RESULTS, save

NAME = "supernet_rank"
SEEDS = (0, 1)
INHERITED = "inherited"


# --- set-up ----------------------------------------------------------------------------------


def cpu_kind() -> str:
    """The instruction sets that tell the machines of docs/benchmarks.md apart."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        return "unknown"
    if "amx_tile" in flags:
        return "AMX"
    if "avx512_vnni" in flags:
        return "AVX-512 VNNI"
    if "avx512f" in flags:
        return "AVX-512"
    return "AVX2" if "avx2" in flags else "no AVX2"


def ensure_data(path: Path, classes: int, per_class: int, val_per_class: int, size: int) -> Path:
    """The synthetic set (seed 0), written unless ``path/val`` exists."""
    if not (path / "val").is_dir():
        from evit.train.synthetic import write_synthetic

        write_synthetic(
            path,
            num_classes=classes,
            per_class=per_class,
            size=size,
            seed=0,
            val_per_class=val_per_class,
        )
    return path


def sample_configs(count: int, seed: int, classes: int, budget: Any) -> dict[str, Any]:
    """M0-M5 and random configs of the accuracy space (shape rules kept), ``count`` in all,
    distinct as trained: at a small proxy size the input-size and window choices collapse."""
    from search.space import ACCURACY_SPACE, load_space, reference_configs

    space = load_space(ACCURACY_SPACE)
    rng = random.Random(seed)

    class _Random:
        def suggest_categorical(self, name: str, choices: list) -> Any:
            return rng.choice(choices)

    def trained_hash(config: Any) -> str:
        return config.at_img_size(budget.train_img_size(config.img_size)).architecture_hash()

    configs = {n: c.replace(num_classes=classes) for n, c in reference_configs().items()}
    seen = {trained_hash(c) for c in configs.values()}
    while len(configs) < count:
        c = space.sample(_Random()).replace(num_classes=classes)
        if space.rules.violation(c) is not None or trained_hash(c) in seen:
            continue
        seen.add(trained_hash(c))
        name = f"random_{c.architecture_hash()[:8]}"
        configs[name] = c.replace(name=name)
    return configs


# --- the two scores --------------------------------------------------------------------------


def train_supernet(budget: Any, folder: Path, epochs: int) -> Any:
    """The supernet as ``--weight-sharing`` trains it (resumed from ``folder`` if there)."""
    from search.inherited import train_supernet_for

    return train_supernet_for(budget, None, folder, epochs, lambda: None)


def supernet_summary(report: Any, wall: float) -> dict[str, Any]:
    """The report's figures, with the training time summed over the epochs' records (a resumed
    run's wall time covers only its own epochs)."""
    from evit.train.loop import METRICS

    lines = (Path(report.checkpoint).parent / METRICS).read_text().splitlines()
    history = [json.loads(line) for line in lines if line.strip()]
    return {
        **report.as_dict(),
        "seconds": sum(h["epoch_seconds"] for h in history),
        "seconds_this_call": wall,
        "history": history,
    }


def score_inherited(scorer: Any, config: Any) -> dict[str, float]:
    """``config``'s inherited top-1 and the seconds it took (the search's per-trial cost)."""
    start = time.perf_counter()
    top1 = scorer.inherited_top1(config)
    return {"top1": top1, "seconds": time.perf_counter() - start}


# --- analysis --------------------------------------------------------------------------------


def tau_row(
    x: list[float],
    y: list[float],
    macs: list[float],
    top: list[int],
    bins: int,
    resamples: int,
) -> dict[str, Any]:
    """Tau overall with its bootstrap interval, among ``top``, and within MAC bins."""
    tau = kendall_tau(x, y)
    nan = float("nan")  # a constant list (every config at chance) has no tau
    lo, hi = (nan, nan) if tau != tau else bootstrap_interval(x, y, resamples, seed=0)
    in_bins, per_bin = tau_within_bins(macs, x, y, bins)
    return {
        "tau": tau,
        "ci": [lo, hi],
        "tau_top_half": kendall_tau([x[i] for i in top], [y[i] for i in top]),
        "tau_within_mac_bins": in_bins,
        "per_bin": per_bin,
    }


def best_index(score: list[float], allowed: list[bool]) -> int:
    """The highest score among the allowed (the first on a tie)."""
    return max((i for i in range(len(score)) if allowed[i]), key=lambda i: score[i])


def picks(rows: dict[str, dict], m0_macs: float) -> dict[str, Any]:
    """What each score would pick (overall and within M0's MACs), judged by seed 1's
    stand-alone top-1: independent of the inherited score and of seed 0's."""
    names = list(rows)
    macs = [rows[n]["macs"] for n in names]
    judge = [rows[n]["standalone"]["1"]["top1"] for n in names]
    scores = {
        INHERITED: [rows[n][INHERITED]["top1"] for n in names],
        "stand-alone seed 0": [rows[n]["standalone"]["0"]["top1"] for n in names],
    }
    out: dict[str, Any] = {"m0_seed1": rows["efficientvit_m0"]["standalone"]["1"]["top1"]}
    for scope, allowed in (
        ("all", [True] * len(names)),
        ("within M0's MACs", [m <= m0_macs for m in macs]),
    ):
        best = best_index(judge, allowed)
        out[scope] = {"candidates": sum(allowed), "best_seed1": judge[best]}
        for label, score in scores.items():
            i = best_index(score, allowed)
            out[scope][label] = {"pick": names[i], "seed1": judge[i]}
    return out


def analyse(state: dict, bins: int, resamples: int) -> dict[str, Any]:
    rows = {
        n: state["configs"][n]
        for n in state["names"]
        if INHERITED in state["configs"][n]
        and all(str(s) in state["configs"][n]["standalone"] for s in SEEDS)
    }
    names = list(rows)
    s0, s1 = ([rows[n]["standalone"][str(s)]["top1"] for n in names] for s in SEEDS)
    mean = [(a + b) / 2 for a, b in zip(s0, s1)]
    inherited = [rows[n][INHERITED]["top1"] for n in names]
    macs = [rows[n]["macs"] for n in names]
    median = statistics.median(mean)
    top = [i for i, a in enumerate(mean) if a >= median]
    pairs = {
        "inherited vs stand-alone mean": (inherited, mean),
        "inherited vs seed 0": (inherited, s0),
        "inherited vs seed 1": (inherited, s1),
        "seed 0 vs seed 1": (s0, s1),
        "params vs stand-alone mean": ([rows[n]["params"] for n in names], mean),
        "MACs vs stand-alone mean": (macs, mean),
    }
    table = {k: tau_row(x, y, macs, top, bins, resamples) for k, (x, y) in pairs.items()}
    standalone_seconds = [rows[n]["standalone"][str(s)]["seconds"] for n in names for s in SEEDS]
    score_seconds = [rows[n][INHERITED]["seconds"] for n in names]
    # the median epoch times the epochs: robust to an epoch stalled by a neighbour's load
    epoch_seconds = [h["epoch_seconds"] for h in state["supernet"]["history"]]
    supernet_seconds = statistics.median(epoch_seconds) * len(epoch_seconds)
    one_training = statistics.mean(standalone_seconds)
    return {
        "configs": len(names),
        "top1_range": {
            "stand-alone mean": [min(mean), max(mean)],
            INHERITED: [min(inherited), max(inherited)],
        },
        "table": table,
        "mac_bins": [sorted(macs)[round(b * len(macs) / bins)] for b in range(bins)],
        "picks": picks(rows, rows["efficientvit_m0"]["macs"]) if "efficientvit_m0" in rows else {},
        "cost": {
            "supernet_seconds": supernet_seconds,
            "supernet_seconds_summed": sum(epoch_seconds),
            "supernet_epoch_seconds": epoch_seconds,
            "standalone_seconds_mean": one_training,
            "supernet_over_one_training": supernet_seconds / one_training,
            "standalone_seconds_total": sum(standalone_seconds),
            "inherit_seconds_median": statistics.median(score_seconds),
            "inherit_seconds_mean": statistics.mean(score_seconds),
            "inherited_per_minute": 60 / statistics.mean(score_seconds),
            "standalone_per_minute_one_seed": 60 / one_training,
            "break_even_candidates": supernet_seconds
            / (one_training - statistics.mean(score_seconds)),
        },
    }


def markdown(state: dict, result: dict) -> str:
    r = result
    lines = [
        f"{r['configs']} configs; top-1 range: stand-alone mean "
        f"{r['top1_range']['stand-alone mean'][0]:.1f}-{r['top1_range']['stand-alone mean'][1]:.1f}"
        f" %, inherited {r['top1_range'][INHERITED][0]:.1f}-{r['top1_range'][INHERITED][1]:.1f} %",
        "",
        "| pair | tau [95% CI] | tau, top half | tau within MAC thirds | per third |",
        "|---|---|---|---|---|",
    ]
    for name, t in r["table"].items():
        per_bin = " / ".join(f"{x:.2f}" for x in t["per_bin"])
        lines.append(
            f"| {name} | {t['tau']:.2f} [{t['ci'][0]:.2f}, {t['ci'][1]:.2f}] | "
            f"{t['tau_top_half']:.2f} | {t['tau_within_mac_bins']:.2f} | {per_bin} |"
        )
    c = r["cost"]
    s = state["supernet"]
    lines += [
        "",
        f"Supernet: {s['epochs']} epochs in {c['supernet_seconds']:.0f} s (median epoch x "
        f"epochs; summed {c['supernet_seconds_summed']:.0f} s) "
        f"= {c['supernet_over_one_training']:.1f}x one stand-alone training of "
        f"{c['standalone_seconds_mean']:.0f} s (mean); largest / smallest top-1 "
        f"{s['largest_top1']:.1f} / {s['smallest_top1']:.1f} %.",
        f"Inherited scoring: {c['inherit_seconds_median']:.1f} s per config (median), "
        f"{c['inherited_per_minute']:.1f} candidates per minute against "
        f"{c['standalone_per_minute_one_seed']:.2f} by one-seed training; the supernet pays "
        f"for itself from {c['break_even_candidates']:.0f} candidates.",
    ]
    p = r["picks"]
    for scope in ("all", "within M0's MACs"):
        if scope not in p:
            continue
        q = p[scope]
        picked = "; ".join(
            f"{label}: {q[label]['pick']} {q[label]['seed1']:.1f} %"
            for label in (INHERITED, "stand-alone seed 0")
        )
        lines.append(
            f"Picks ({scope}, {q['candidates']} configs; seed 1's top-1, M0 "
            f"{p['m0_seed1']:.1f} %, best {q['best_seed1']:.1f} %): {picked}."
        )
    return "\n".join(lines)


# --- the run ---------------------------------------------------------------------------------


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """What makes two runs' scores comparable: a change starts the results afresh, except
    ``epochs`` (drops the stand-alone scores) and ``supernet_epochs`` (drops the supernet's
    scores). ``--configs`` only adds or leaves out configs."""
    return {
        "data": str(args.data.resolve()),
        "sample_seed": args.sample_seed,
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "supernet_epochs": args.supernet_epochs,
    }


def load_state(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The saved results that ``settings`` can reuse (see :func:`settings_of`)."""
    state = json.loads(path.read_text()) if path.is_file() else None
    fresh = {"settings": settings, "configs": {}}
    if state is None:
        return fresh
    old = state.get("settings", {})
    shared = [k for k in settings if k not in ("epochs", "supernet_epochs")]
    if any(old.get(k) != settings[k] for k in shared):
        print(f"{path}: other data or sizes; starting afresh", flush=True)
        return fresh
    if old.get("epochs") != settings["epochs"]:
        print("other --epochs: the stand-alone trainings run again", flush=True)
        for row in state["configs"].values():
            row["standalone"] = {}
    if old.get("supernet_epochs") != settings["supernet_epochs"]:
        print("other --supernet-epochs: the supernet is trained on and scored again", flush=True)
        state.pop("supernet", None)
        for row in state["configs"].values():
            row.pop(INHERITED, None)
    for key in ("environment", "argv", "analysis"):  # save() writes this run's
        state.pop(key, None)
    state["settings"] = settings
    return state


def run(args: argparse.Namespace, state: dict[str, Any]) -> None:
    import evit
    from search.accuracy import TrainBudget, train_candidate
    from search.inherited import InheritedScorer, SupernetReport

    data = ensure_data(args.data, args.classes, args.per_class, args.val_per_class, args.data_size)
    budget = TrainBudget(
        data=data,
        epochs=args.epochs,
        img_size=args.img_size,
        batch_size=args.batch_size,
        seed=0,
        threads=args.threads,
    )
    classes = len(budget.check())
    state["cpu_kind"] = cpu_kind()
    configs = sample_configs(args.configs, args.sample_seed, classes, budget)
    state["names"] = list(configs)
    for name, config in configs.items():
        costs = evit.model_costs(config)
        row = state["configs"].setdefault(name, {"standalone": {}})
        row.update(config=config.to_dict(), params=costs.params, macs=costs.macs)
    start = time.perf_counter()

    def done(what: str) -> None:
        print(f"[{(time.perf_counter() - start) / 60:5.1f} min] {what}", flush=True)
        save(NAME, state)

    # a resumed supernet keeps its own recipe, so another --supernet-epochs needs another folder
    of_supernet = {k: v for k, v in state["settings"].items() if k != "epochs"}
    blob = json.dumps(of_supernet, sort_keys=True).encode()
    folder = RESULTS / NAME / hashlib.sha256(blob).hexdigest()[:8]
    if "supernet" not in state:
        t = time.perf_counter()
        report = train_supernet(budget, folder, args.supernet_epochs)
        state["supernet"] = supernet_summary(report, time.perf_counter() - t)
        done(f"supernet trained: {state['supernet']['seconds']:.0f} s")
    fields = {f.name for f in dataclasses.fields(SupernetReport)}
    s = {k: v for k, v in state["supernet"].items() if k in fields}
    report = SupernetReport(**{**s, "checkpoint": Path(s["checkpoint"])})
    scorer = InheritedScorer(budget, folder, report, train_candidate)
    for name, config in configs.items():
        row = state["configs"][name]
        if INHERITED not in row:
            if not scorer.contains(config):
                raise SystemExit(f"{name} is not a sub-network of the supernet")
            row[INHERITED] = score_inherited(scorer, config)
            done(f"{name} inherited top-1 {row[INHERITED]['top1']:.1f} %")
    for seed in SEEDS:
        seeded = dataclasses.replace(budget, seed=seed)
        for name, config in configs.items():
            row = state["configs"][name]
            if str(seed) not in row["standalone"]:
                row["standalone"][str(seed)] = short_training(config, seeded)
                got = row["standalone"][str(seed)]
                done(f"{name} seed {seed}: top-1 {got['top1']:.1f} % ({got['seconds']:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", type=int, default=20, help="configs in all, M0-M5 included (20)")
    p.add_argument("--epochs", type=int, default=4, help="stand-alone training epochs (4)")
    p.add_argument("--supernet-epochs", type=int, default=8, help="supernet epochs (8)")
    p.add_argument(
        "--img-size", type=int, default=48, help="training size of a 224-px candidate (48)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per step, both (64)")
    p.add_argument(
        "--data", type=Path, default=Path("data/shapes-supernet-rank"), help="dataset folder"
    )
    p.add_argument("--classes", type=int, default=10, help="classes of a generated set (10)")
    p.add_argument("--per-class", type=int, default=100, help="training images per class (100)")
    p.add_argument("--val-per-class", type=int, default=30, help="validation per class (30)")
    p.add_argument("--data-size", type=int, default=48, help="generated images' size (48)")
    p.add_argument("--sample-seed", type=int, default=0, help="the random configs (0)")
    p.add_argument("--bins", type=int, default=3, help="MAC bins (3)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (1000)")
    p.add_argument("--threads", type=int, help="PyTorch CPU threads (default: its own)")
    p.add_argument("--report", action="store_true", help="only print the saved results")
    args = p.parse_args(argv)
    if args.configs < 8:
        print(f"--configs {args.configs}: need >= 8 (M0-M5 and some random)")
        return 2
    path = RESULTS / f"{NAME}.json"
    if args.report:
        if not path.is_file():
            print(f"no results in {path}; run without --report first")
            return 2
        state = json.loads(path.read_text())
    else:
        state = load_state(path, settings_of(args))
        run(args, state)
    state["analysis"] = analyse(state, args.bins, args.resamples)
    if not args.report:
        save(NAME, state)
    print(f"CPU kind: {state.get('cpu_kind')}")
    print(markdown(state, state["analysis"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
