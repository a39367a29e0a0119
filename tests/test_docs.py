"""The README and docs/ stay in step with the committed results and with the CLIs.

- The README's results block is what ``docs/make_readme_results.py`` renders from
  ``docs/results/results.json``, and every figure in that file is recorded in
  ``docs/benchmarks.md``: a number edited in one place alone fails here.
- Every command in the README's and the guides' code blocks parses with its CLI's own parser,
  and the walkthroughs only read folders an earlier command wrote (no clash on a fresh clone).
- ``docs/cli.md`` lists exactly the flags each command accepts; relative links resolve.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
BENCHMARKS = DOCS / "benchmarks.md"
RESULTS = DOCS / "results" / "results.json"
FIGURE = DOCS / "results" / "results.svg"
# the pages whose code blocks are commands to copy (history.md and benchmarks.md quote commands
# inline, with placeholders)
QUOTING = ("history.md", "benchmarks.md")
GUIDES = [README, *sorted(p for p in DOCS.glob("*.md") if p.name not in QUOTING)]
CLIS = ("search", "evit", "edge", "app")
COMMAND = re.compile(r"^(?:\.venv/bin/)?python3? -m (search|evit|edge|app)(?: (.*))?$")


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_readme_results", DOCS / "make_readme_results.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results() -> dict[str, Any]:
    return json.loads(RESULTS.read_text())


# --- the results block -------------------------------------------------------------------------


def test_the_readme_results_block_is_rendered_from_the_committed_results():
    script = _script()
    problems = script.check(README.read_text(), _results())
    assert not problems, (
        "README's results block differs from docs/results/results.json; run "
        "`.venv/bin/python docs/make_readme_results.py`:\n" + "\n".join(problems)
    )


def test_a_changed_result_or_a_hand_edited_readme_fails_the_check():
    script = _script()
    readme, results = README.read_text(), _results()
    changed = copy.deepcopy(results)
    changed["search_vs_m0"]["reference"]["top1"] = "19.2"  # M0's score, edited in the JSON only
    problems = script.check(readme, changed)
    assert problems and any("19.2" in p for p in problems)

    block = script.readme_block(readme)
    assert "| 0.72 [0.69, 0.79] |" in block
    edited = readme.replace(block, block.replace("| 0.72 [0.69, 0.79] |", "| 0.70 [0.69, 0.79] |"))
    problems = script.check(edited, results)
    assert problems and any("0.70 [0.69, 0.79]" in p for p in problems)

    with pytest.raises(ValueError, match="results:begin"):
        script.readme_block("# a README without the block\n")


def _leaves(node: Any, skip: frozenset[str], key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k not in skip:
                yield from _leaves(v, skip, k)
    elif isinstance(node, list):
        for v in node:
            yield from _leaves(v, skip, key)
    elif isinstance(node, str):
        yield key, node


# a measured figure: "13 min 12 s", "116 s", "6.5 GB", or any decimal number
FIGURE_TOKEN = re.compile(r"\d+ min \d+ s|\d+(?:\.\d+)? (?:s|min|GB|GiB)\b|\d+\.\d+")


def test_every_figure_in_the_results_is_recorded_in_benchmarks_md():
    """results.json transcribes docs/benchmarks.md; it adds no number of its own."""
    text = BENCHMARKS.read_text()
    skip = frozenset({"about", "recorded", "reproduce", "reproduce_note", "section"})
    missing = []
    for key, value in _leaves(_results(), skip):
        for token in FIGURE_TOKEN.findall(value):
            if not re.search(rf"(?<![\d.]){re.escape(token)}(?![\d])", text):
                missing.append(f"{key}: {token!r} (in {value!r})")
    assert not missing, "not in docs/benchmarks.md:\n" + "\n".join(missing)


def test_every_figure_names_its_cpu_kind_commit_and_command():
    results = _results()
    for name in ("search_vs_m0", "cpu_paths"):
        figure = results[name]
        assert "AMD EPYC" in figure["cpu"] and figure["section"].startswith("docs/benchmarks.md")
        assert figure["reproduce"] and all(c.startswith("python -m ") for c in figure["reproduce"])
        for rec in figure["recorded"]:
            assert re.fullmatch(r"[0-9a-f]{7}", rec["commit"]), rec
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", rec["date"]), rec


README_TOKEN = re.compile(r"\d+ min \d+ s|\d+(?:\.\d+)? ?(?:%|ms|min|s|GB|GiB|x)(?![\w-])")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and without the generated results block."""
    start, end = text.find("<!-- results:begin -->"), text.find("<!-- results:end -->")
    if start >= 0 and end > start:
        text = text[:start] + text[end:]
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def test_the_readme_prose_quotes_only_committed_results():
    """A measured figure in the README outside the generated block is in results.json too."""
    committed = RESULTS.read_text()
    numbers = set(re.findall(r"\d+(?:\.\d+)?", committed))
    strays = []
    for token in README_TOKEN.findall(_prose(README.read_text())):
        number = re.match(r"\d+(?:\.\d+)?", token).group()
        found = number in numbers if "." in number else token in committed
        if not found:
            strays.append(token)
    assert not strays, f"README figures not in docs/results/results.json: {strays}"


def test_the_readme_is_short_and_leads_with_the_results():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150
    text = "\n".join(lines)
    assert text.index("results.svg") < text.index("<!-- results:begin -->") < text.index("## ")


def test_the_figure_is_committed_small_and_names_its_cpu_kinds():
    svg = FIGURE.read_text()
    assert FIGURE.stat().st_size < 100_000
    assert "AVX2" in svg and "AVX-512" in svg


# --- the commands ------------------------------------------------------------------------------


def _code_lines(path: Path) -> Iterator[str]:
    """The lines of ``path``'s fenced code blocks, in order."""
    inside = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            yield line


def _commands(path: Path) -> list[tuple[str, list[str]]]:
    """``(cli, argv)`` of every ``python -m <cli>`` command in ``path``'s code blocks."""
    found = []
    for line in _code_lines(path):
        code = re.split(r"\s#\s", line)[0].strip()
        for part in code.split("&&"):
            match = COMMAND.match(part.strip())
            if match:
                found.append((match.group(1), shlex.split(match.group(2) or "")))
    return found


def _parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from app.demo import build_parser as app_parser
    from edge.cli import build_parser as edge_parser
    from evit.cli import build_parser as evit_parser
    from search.cli import build_parser as search_parser

    return {"search": search_parser, "evit": evit_parser, "edge": edge_parser, "app": app_parser}


def test_every_command_in_the_readme_and_the_guides_parses():
    parsers = _parsers()
    seen = {cli: 0 for cli in CLIS}
    failures = []
    for page in GUIDES:
        for cli, argv in _commands(page):
            seen[cli] += 1
            try:
                parsers[cli]().parse_args(argv)
            except SystemExit:
                failures.append(f"{page.relative_to(ROOT)}: python -m {cli} {shlex.join(argv)}")
    assert not failures, "commands their CLI refuses:\n" + "\n".join(failures)
    assert all(seen.values()), seen
    assert {cli for cli, _ in _commands(README)} == set(CLIS)  # the quick starts use all four


def _walk(commands: list[tuple[str, list[str]]]) -> None:
    """Follow ``commands`` as a fresh clone would, on the folders they write and read.

    Raises AssertionError when a command writes a data folder that an earlier one wrote (``evit
    data synthetic`` refuses a non-empty folder) or overlaps one, trains into a folder an earlier
    command trained into, or reads a path no earlier command wrote.
    """
    parsers = _parsers()
    written: list[Path] = []
    data_dirs: list[Path] = []

    def read(path: str | Path | None, what: str) -> None:
        if path is None or "/" not in str(path):  # a variant name such as m0, or not given
            return
        p = Path(path)
        assert any(p == w or w in p.parents for w in written), f"{what} {path}: nothing wrote it"

    def write(path: str | Path, what: str) -> None:
        p = Path(path)
        assert p not in written, f"{what} {path}: an earlier command wrote it"
        written.append(p)

    for cli, argv in commands:
        args = parsers[cli]().parse_args(argv)
        if cli == "evit" and args.command == "data":
            p = Path(args.dir)
            clash = [d for d in data_dirs if d == p or d in p.parents or p in d.parents]
            assert not clash, f"data folder {p} overlaps {clash}"
            data_dirs.append(p)
            write(args.dir, "evit data synthetic")
        elif cli == "evit" and args.command == "train":
            read(args.data, "evit train --data")
            write(args.out, "evit train --out")
        elif cli == "evit" and args.command == "eval":
            read(args.data, "evit eval --data")
            read(args.weights, "evit eval --weights")
        elif cli == "edge" and args.command == "export":
            read(args.model, "edge export")
            write(args.out or f"{args.model}.onnx", "edge export --out")
        elif cli == "search":
            read(args.data, "search --data")
        elif cli == "app":
            read(args.model, "app --model")


@pytest.mark.parametrize("page", [README, DOCS / "getting-started.md"], ids=lambda p: p.name)
def test_the_walkthrough_runs_top_to_bottom_without_a_folder_clash(page):
    _walk(_commands(page))


def test_the_walkthrough_check_catches_a_clash_and_a_missing_input():
    data = ("evit", ["data", "synthetic", "data/shapes", "--size", "64"])
    train = ("evit", ["train", "--model", "m0", "--data", "data/shapes", "--out", "runs/a"])
    _walk([data, train])
    with pytest.raises(AssertionError, match="overlaps"):
        _walk([data, data])
    with pytest.raises(AssertionError, match="nothing wrote it"):
        _walk([train])
    with pytest.raises(AssertionError, match="an earlier command wrote it"):
        _walk([data, train, train])


# --- the CLI reference and the links -----------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    """The flags ``--help`` shows: not ``-h``, not the hidden deprecated aliases."""
    return {
        option
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction) and action.help != argparse.SUPPRESS
        for option in action.option_strings
    }


def test_the_cli_reference_lists_exactly_the_flags_of_every_command():
    parsers = {cli: build() for cli, build in _parsers().items()}
    sections = re.split(r"^## `python -m ([^`]+)`$", (DOCS / "cli.md").read_text(), flags=re.M)
    documented = {}
    for title, body in zip(sections[1::2], sections[2::2]):
        cells = re.findall(r"^\| `([^`]+)` \|", body, flags=re.M)
        documented[title] = {w.rstrip(",") for c in cells for w in c.split() if w.startswith("-")}
    expected = {}
    for cli, parser in parsers.items():
        subs = _subparsers(parser)
        if not subs or _flags(parser):
            expected[cli] = _flags(parser)
        for name, sub in subs.items():
            inner = _subparsers(sub)
            for inner_name, leaf in inner.items():
                expected[f"{cli} {name} {inner_name}"] = _flags(leaf)
            if not inner:
                expected[f"{cli} {name}"] = _flags(sub)
    assert documented == expected


LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of ``path``."""
    slugs = set()
    for heading in re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


def test_relative_links_in_the_readme_and_docs_resolve():
    broken = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for target in LINK.findall(_prose(page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            if not dest.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
