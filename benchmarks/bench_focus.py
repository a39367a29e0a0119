"""Does a focused run decide what the final run of a `--budget-ms m0` search could not?

    python -m benchmarks.bench_focus --repeats 3

Each repeat does what the search's final phase does (``search.final``): M0-M5 and
``--candidates`` configs of the default space (drawn at random, seed 0, between 0.5x and 1x M0's
MACs) re-measured in one interleaved run as ``Measurer.remeasure`` measures them, then M0 and
the same candidates in a run of their own, as ``search.final.focus_undecided`` measures the
undecided ones (``search.selection.FOCUS_ROUNDS``). For each candidate: its paired ratio to M0
in both runs, each with its 95 % CI and rounds, and whether the rule (CI upper end at most 1)
places it. Every candidate is measured in the focused run, undecided or not, so that both runs'
interval widths can be compared.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import save


def candidates(count: int, seed: int) -> list:
    """``count`` configs of the default space between 0.5x and 1x M0's MACs."""
    import evit
    from evit.supernet.space import read_space
    from search.space import DEFAULT_SPACE, reference_configs

    m0 = evit.model_costs(reference_configs()["efficientvit_m0"]).macs
    space, rng, found = read_space(DEFAULT_SPACE), np.random.default_rng(seed), []
    while len(found) < count:
        config = space.sample(rng, num_classes=1000)
        if 0.5 * m0 <= evit.model_costs(config).macs <= m0:
            found.append(config.replace(name=f"c{len(found)}"))
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--threads", type=int, default=None, help="as the search's default")
    args = p.parse_args(argv)

    from search.options import SearchOptions
    from search.selection import FOCUS_ROUNDS
    from search.space import reference_configs
    from search.targets import Target, measure_side_by_side

    block = SearchOptions(budget_ms=1.0).remeasure_block_seconds
    refs = list(reference_configs().values())
    cands = candidates(args.candidates, 0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        target = Target("ort-cpu", threads=args.threads, workdir=Path(tmp))
        for repeat in range(args.repeats):
            final = refs + cands
            main_run = measure_side_by_side(
                [(target, c) for c in final], [c.name for c in final], block_seconds=block
            )
            focus = [refs[0], *cands]
            focus_run = measure_side_by_side(
                [(target, c) for c in focus],
                [c.name for c in focus],
                max_rounds=FOCUS_ROUNDS,
                block_seconds=block,
            )
            for i, c in enumerate(cands):
                before = main_run.ratio(len(refs) + i, 0)
                after = focus_run.ratio(1 + i, 0)
                rows.append(
                    {
                        "repeat": repeat,
                        "candidate": c.name,
                        "final": before.to_dict(),
                        "focused": after.to_dict(),
                    }
                )
                print(
                    f"repeat {repeat} {c.name}: final {before.ratio:.2f} [{before.ci_low:.2f}, "
                    f"{before.ci_high:.2f}] ({before.rounds} rounds) -> focused {after.ratio:.2f} "
                    f"[{after.ci_low:.2f}, {after.ci_high:.2f}] ({after.rounds} rounds)",
                    flush=True,
                )
    widths = {k: [r[k]["ci_high"] - r[k]["ci_low"] for r in rows] for k in ("final", "focused")}
    decided = {
        k: sum(r[k]["ci_high"] <= 1.0 or r[k]["ci_low"] > 1.0 for r in rows)
        for k in ("final", "focused")
    }
    summary = {
        "median_ci_width": {k: float(np.median(v)) for k, v in widths.items()},
        "decided": decided,
        "pairs": len(rows),
    }
    print(summary)
    print(f"saved {save('focus', {'rows': rows, 'summary': summary})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
