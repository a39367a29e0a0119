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
