"""Render the README's results block and figure from the committed results.

The README shows measured figures only through this script: it reads
``docs/results/results.json`` (figures transcribed from ``docs/benchmarks.md``, each with its
section, CPU kind, commit and the command that reproduces it) and writes

- the block between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in ``README.md``;
- ``docs/results/results.svg``, the figure at the top of the README (with ``--figure``).

Usage::

    .venv/bin/python docs/make_readme_results.py            # rewrite the README block
    .venv/bin/python docs/make_readme_results.py --figure   # ... and the SVG
    .venv/bin/python docs/make_readme_results.py --check    # exit 1 if the block is stale

``tests/test_docs.py`` runs the check, so a number edited in the README alone, or in the JSON
without re-rendering, fails the suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "results.json"
FIGURE = ROOT / "docs" / "results" / "results.svg"
README = ROOT / "README.md"
BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
MISSING = "–"  # a figure docs/benchmarks.md does not record


def load_results(path: Path = RESULTS) -> dict[str, Any]:
    """The committed results, as written in ``results.json``."""
    return json.loads(path.read_text())


def _or_missing(value: str | None, unit: str = "") -> str:
    return MISSING if value is None else f"{value}{unit}"


def _shape(entry: dict[str, Any]) -> str:
    if entry["widths"] is None:
        return MISSING
    return f"{entry['widths']} / {entry['depths']}"


def _ratio(entry: dict[str, Any]) -> str:
    if entry["ci"] is None:
        return entry["ratio"]
    low, high = entry["ci"]
    return f"{entry['ratio']} [{low}, {high}]"


def _top1(entry: dict[str, Any]) -> str:
    seed0, seed1 = entry["seeds"]
    return f"{entry['top1']} ({seed0} / {seed1})"


def _recorded(figure: dict[str, Any]) -> str:
    return ", ".join(f"{r['commit']} ({r['date']}, {r['runs']})" for r in figure["recorded"])


def _search_table(search: dict[str, Any]) -> list[str]:
    runs = {r["run"]: r for r in search["runs"]}
    m, k, el, j = runs["M"], runs["K"], runs["L"], runs["J"]
    ref = search["reference"]
    lines = [
        f"**Does it pay off?** Searching for the most accurate model as fast as M0 (quick start "
        f"2, `--budget-ms m0`), both recorded runs found one that beat M0 with each seed: run M "
        f"by {m['lead']} points at {m['ratio']}x M0's latency, run K by {k['lead']} points at "
        f"{k['ratio']}x (the noise of comparing two-seed means here is {search['noise']} "
        f"points). With `--budget-ms 2`, run L's pick led by {el['lead']} points at "
        f"{el['ratio']}x M0's latency (a CI that straddles 1) and run J's pick sat at "
        f"{j['ratio']}x.",
        "",
        "| model | budget | widths / depths | params | MACs | latency / M0 [95 % CI] "
        "| top-1 % (seed 0 / seed 1) |",
        "|---|---|---|---|---|---|---|",
        f"| {ref['name']} | (reference) | {_shape(ref)} | {ref['params']} M | {ref['macs']} M "
        f"| {_ratio(ref)} | {_top1(ref)} |",
    ]
    for run in search["runs"]:
        lines.append(
            f"| pick, run {run['run']} | `{run['budget']}` | {_shape(run)} "
            f"| {_or_missing(run['params'], ' M')} | {_or_missing(run['macs'], ' M')} "
            f"| {_ratio(run)} | {_top1(run)} |"
        )
    first, second = search["reproduce"]
    lines += [
        "",
        f"Accuracy: {search['accuracy']}, on {search['data']} (not ImageNet), after "
        f"{search['training']}. Latency: {search['latency']}. CPU: {search['cpu']}. "
        f"Recorded in {_recorded(search)}; {search['section']}. {MISSING}: not recorded. "
        f"Reproduce with `{first}`, then `{second}` ({search['reproduce_note']}).",
    ]
    return lines


def _paths_table(paths: dict[str, Any]) -> list[str]:
    names = " | ".join(paths["paths"])
    lines = [
        f"| M0-M5, ms at 1 / 2 threads | params | MACs | {names} |",
        "|---|---|---|" + "---|" * len(paths["paths"]),
    ]
    for model in paths["models"]:
        one, two = model["ms"]["1"], model["ms"]["2"]
        cells = " | ".join(f"{a} / {b}" for a, b in zip(one, two))
        lines.append(f"| {model['name']} | {model['params']} M | {model['macs']} M | {cells} |")
    lines += [
        "",
        f"Latency: {paths['latency']}. CPU: {paths['cpu']}. Recorded in {_recorded(paths)}; "
        f"{paths['section']}; params and MACs: {paths['costs_section']}. "
        f"Reproduce with `{paths['reproduce'][0]}`. Other CPU kinds rank the paths differently: "
        "docs/benchmarks.md §14.",
    ]
    return lines


def render_block(results: dict[str, Any]) -> str:
    """The README's results block, markers included."""
    lines = [
        BEGIN,
        "<!-- generated by docs/make_readme_results.py from docs/results/results.json -->",
        "",
        *_search_table(results["search_vs_m0"]),
        "",
        *_paths_table(results["cpu_paths"]),
        "",
        END,
    ]
    return "\n".join(lines)


def readme_block(readme: str) -> str:
    """The results block of ``readme``, markers included (ValueError without markers)."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {BEGIN} ... {END} block")
    return readme[start : end + len(END)]


def replace_block(readme: str, block: str) -> str:
    """``readme`` with its results block replaced by ``block``."""
    old = readme_block(readme)
    return readme.replace(old, block, 1)


def check(readme: str, results: dict[str, Any]) -> list[str]:
    """What differs between the README's block and the block ``results`` render to."""
    problems = []
    expected = render_block(results).splitlines()
    actual = readme_block(readme).splitlines()
    for i, (want, got) in enumerate(zip(expected, actual)):
        if want != got:
            problems.append(f"block line {i + 1}: README has {got!r}, results give {want!r}")
    if len(expected) != len(actual):
        problems.append(f"block has {len(actual)} lines, results give {len(expected)}")
    return problems


def render_figure(results: dict[str, Any], path: Path = FIGURE) -> Path:
    """The README's figure: the picks against M0, and M0-M5 on each CPU path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "evit-edge", "font.size": 9})
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))

    search = results["search_vs_m0"]
    ref = search["reference"]
    ref_top1 = float(ref["top1"])
    left.axvline(1.0, color="0.6", linestyle="--", linewidth=0.8)
    left.axhline(ref_top1, color="0.6", linestyle=":", linewidth=0.8)
    seeds = sorted(float(s) for s in ref["seeds"])
    left.errorbar(
        [1.0],
        [ref_top1],
        yerr=[[ref_top1 - seeds[0]], [seeds[1] - ref_top1]],
        fmt="k*",
        markersize=11,
        capsize=3,
        label="M0",
    )
    colors = {"m0": "tab:blue", "2 ms": "tab:orange"}
    labelled = set()
    for run in search["runs"]:
        x, y = float(run["ratio"]), float(run["top1"])
        low, high = (float(v) for v in run["ci"])
        s0, s1 = sorted(float(s) for s in run["seeds"])
        budget = run["budget"]
        left.errorbar(
            [x],
            [y],
            xerr=[[x - low], [high - x]],
            yerr=[[y - s0], [s1 - y]],
            fmt="o",
            color=colors[budget],
            capsize=3,
            label=None if budget in labelled else f"pick, --budget-ms {budget.split()[0]}",
        )
        labelled.add(budget)
        left.annotate(run["run"], (x, y), textcoords="offset points", xytext=(6, 4))
    left.set_xlabel("latency / M0 (paired, 95 % CI)")
    left.set_ylabel("top-1 % (mean of 2 seeds; bars: the seeds)")
    left.set_title(
        "Search picks vs M0: generated shapes, 3 epochs at 64 px\n"
        "AMD EPYC AVX-512 VNNI (family 26), ORT fp32, 2 threads",
        fontsize=9,
    )
    left.legend(loc="lower right", fontsize=8)

    paths = results["cpu_paths"]
    names = [m["name"] for m in paths["models"]]
    for i, label in enumerate(paths["paths"]):
        ms = [float(m["ms"]["1"][i]) for m in paths["models"]]
        right.plot(names, ms, marker="o", label=label)
    right.set_ylabel("ms per image (median, batch 1, 1 thread)")
    right.set_title(
        "M0-M5 on each CPU path (random weights, 224 px)\nAMD EPYC AVX2 only (family 25), 1 thread",
        fontsize=9,
    )
    right.legend(fontsize=8)
    right.grid(axis="y", color="0.9")

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the block is stale")
    parser.add_argument("--figure", action="store_true", help="also write the SVG figure")
    args = parser.parse_args(argv)
    results = load_results()
    readme = README.read_text()
    if args.check:
        problems = check(readme, results)
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    README.write_text(replace_block(readme, render_block(results)))
    print(f"wrote the results block of {README.relative_to(ROOT)}")
    if args.figure:
        out = render_figure(results)
        print(f"wrote {out.relative_to(ROOT)} ({out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
