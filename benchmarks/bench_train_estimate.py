"""How close is a training's estimate from a few timed steps to the training itself?

    python -m benchmarks.bench_train_estimate     # ~5 min on 2 cores; nothing else running

``search --weight-sharing`` plans the supernet's share of ``--time-limit`` after setting aside
M0's fine-tunings and the final phase, each fine-tuning estimated before anything has trained
(``search.accuracy.estimate_training``: a few optimizer steps, their batches' loading included,
and one evaluation, scaled to the run). For each ``--models`` entry this estimates the search's
short training on the README's data (``--data``, written unless present) and then runs it
(``search.accuracy.train_candidate``), ``--repeats`` times in alternation, and reports
training / estimate.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from benchmarks.bench_supernet_rank import cpu_kind, ensure_data
from benchmarks.common import save

NAME = "train_estimate"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("data/shapes-search"))
    p.add_argument("--models", nargs="+", default=["efficientvit_m0", "efficientvit_m1"])
    p.add_argument("--img-size", type=int, default=64, help="training size (64)")
    p.add_argument("--epochs", type=int, default=3, help="the search's training epochs (3)")
    p.add_argument("--repeats", type=int, default=2, help="estimate + training pairs (2)")
    args = p.parse_args(argv)

    import evit
    from search.accuracy import TrainBudget, estimate_training, train_candidate

    data = ensure_data(args.data, 10, 300, 100, 64)
    budget = TrainBudget(data=data, epochs=args.epochs, img_size=args.img_size)
    rows = []
    for model in args.models:
        config = evit.load_config(model).replace(num_classes=10)
        pairs = []
        for _ in range(args.repeats):
            estimate = estimate_training(config, budget)
            with tempfile.TemporaryDirectory() as tmp:
                actual = train_candidate(config, budget, tmp, None).seconds
            pairs.append((estimate, actual))
            print(f"{model}: estimate {estimate:.1f} s, training {actual:.1f} s", flush=True)
        ratios = [a / e for e, a in pairs]
        rows.append({"model": model, "pairs": pairs, "median_ratio": statistics.median(ratios)})
    save(NAME, {"cpu_kind": cpu_kind(), "settings": vars(args) | {"data": str(data)}, "rows": rows})
    print(f"CPU: {cpu_kind()}; {args.epochs} epochs at {args.img_size} px, batch 64")
    print("| model | estimate s | training s | training / estimate (median) |")
    print("|---|---|---|---|")
    for r in rows:
        est = ", ".join(f"{e:.0f}" for e, _ in r["pairs"])
        act = ", ".join(f"{a:.0f}" for _, a in r["pairs"])
        print(f"| {r['model']} | {est} | {act} | {r['median_ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
