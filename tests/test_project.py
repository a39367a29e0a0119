"""The README's commands and CI stay in step."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _commands(text: str) -> list[str]:
    return [
        line.strip() for line in text.splitlines() if line.strip().startswith("python3 -m venv")
    ]


def test_ci_runs_the_readme_test_command():
    readme = _commands((ROOT / "README.md").read_text())
    ci = _commands((ROOT / ".ci/run").read_text())
    tests = [c for c in readme if c.endswith("-m pytest")]
    assert len(tests) == 1 and ci == tests


@pytest.mark.parametrize(
    ("available", "message"),
    [
        ("300000", ".ci/run: 292 MiB free in {dir}; the environment needs 7 GiB"),
        ("-", ".ci/run: cannot read the free space here from df (got '-')"),
    ],
)
def test_ci_stops_with_one_line_when_the_disk_is_too_full(tmp_path, available, message):
    """.ci/run refuses up front, before apt or pip, when the venv cannot fit or df's answer
    cannot be read."""
    import subprocess

    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci/run").write_text((ROOT / ".ci/run").read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in {
        # df -P layout: a header, then filesystem, size, used, available, capacity, mount point
        "df": 'echo "Filesystem 1024-blocks Used Available Capacity Mounted on"\n'
        f'echo "/dev/vda 264241152 263241152 {available} 99% /"',
        "python3": 'echo "python3 ran" >&2; exit 3',
        "apt-get": 'echo "apt-get ran" >&2; exit 3',
    }.items():
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(
        ["bash", str(tmp_path / ".ci/run")], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.strip() == message.format(dir=tmp_path)


def test_the_code_passes_the_linter(tmp_path):
    """ruff with the project's settings (part of the suite, so CI's exit status covers it)."""
    import subprocess
    import sys

    def ruff(*paths):
        cmd = [sys.executable, "-m", "ruff", "check", "--no-cache", "--config"]
        return subprocess.run(
            [*cmd, str(ROOT / "pyproject.toml"), *map(str, paths)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )

    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    rejected = ruff(bad)
    assert rejected.returncode == 1 and "F401" in rejected.stdout
    done = ruff(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_readme_main_command_runs_the_search():
    main = [c for c in _commands((ROOT / "README.md").read_text()) if not c.endswith("pytest")]
    assert main == [main[0]] and main[0].endswith(".venv/bin/python -m search --budget-ms 2")


PACKAGES = ("evit", "edge", "search", "app")
# evit <- edge <- {search, app}: what each package may import of its siblings
ALLOWED = {"evit": set(), "edge": {"evit"}, "search": {"evit", "edge"}, "app": {"evit", "edge"}}


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """Modules of this project that ``path`` imports (module level only, or anywhere)."""
    import ast

    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def test_imports_flow_one_way_as_the_readme_says():
    for package, allowed in ALLOWED.items():
        for path in (ROOT / package).rglob("*.py"):
            siblings = {m.split(".")[0] for m in _imports(path, top_level_only=False)}
            wrong = siblings - allowed - {package}
            assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"
    readme = (ROOT / "README.md").read_text()
    assert "`evit` <- `edge` <- {`search`, `app`}" in readme


def test_no_import_cycles_between_modules():
    graph = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            graph[name] = {m for m in _imports(path, top_level_only=False) if m != name}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(
        f"{a} <-> {b}"
        for a in graph
        for b in graph[a]
        if b in graph
        and not b.endswith("__init__")
        and a < b
        and reaches(b, a, {b})
        and a.count(".")
        and b.count(".")
    )
    assert not cycles, cycles


def test_every_search_command_in_the_readme_parses():
    """Each ``python -m search ...`` line of the README and of the search guides is accepted
    by the CLI's own parser (a renamed or removed flag fails here, not in a user's shell); a
    misspelt flag does not. tests/test_docs.py parses every other command of the docs."""
    import shlex

    from search.cli import build_parser

    starts = ("python -m search", ".venv/bin/python -m search", "python3 -m venv")

    def search_lines(page: str) -> list[str]:
        return [
            line.split("#")[0].strip()
            for line in (ROOT / page).read_text().splitlines()
            if "-m search --" in line and line.strip().startswith(starts)  # code, not prose
        ]

    readme = search_lines("README.md")
    lines = readme + search_lines("docs/getting-started.md") + search_lines("docs/search.md")
    commands = [shlex.split(line.split("-m search", 1)[1]) for line in lines]
    assert len(readme) >= 2 and any("--time-limit" in line for line in readme)
    assert len(commands) >= 8 and any("--time-limit" in c for c in commands)
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)
    with pytest.raises(SystemExit):
        parser.parse_args(["--budget-ms", "2", "--time-limt", "840"])
