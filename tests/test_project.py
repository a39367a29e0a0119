"""The README's commands and CI stay in step."""

from __future__ import annotations

from pathlib import Path

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
