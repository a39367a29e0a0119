"""One vocabulary across the four CLIs: a concept has one flag, every command the same exit codes.

The table below names each concept shared by ``python -m evit``, ``edge``, ``search`` and
``app`` (and ``search.dashboard``), with the one flag that spells it and spellings that must not
appear instead; :func:`vocabulary_problems` checks a parser tree against it, and against the
rest of the contract: ``-v/--verbose`` on every (sub)command, an epilog with an example and the
exit codes 0/1/2/130. Hidden deprecated aliases (``evit.clitools.add_alias``) are exempt: they
keep an old spelling working for one release.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Callable, Iterator

import pytest

from evit.clitools import ArgumentParser, add_alias, add_command, add_verbose, epilog

# concept: (its flag, spellings that must not name it anywhere)
VOCABULARY: dict[str, tuple[str, frozenset[str]]] = {
    "model": ("--model", frozenset({"--variant", "--arch", "--config", "--net", "--model-name"})),
    "weights loaded as they are": (
        "--weights",
        frozenset({"--checkpoint", "--ckpt", "--weights-path", "--load", "--pretrained"}),
    ),
    "weights inherited from any config": (
        "--init",
        frozenset({"--init-weights", "--inherit", "--init-from", "--from-checkpoint"}),
    ),
    "runtime": ("--runtime", frozenset({"--backend", "--engine", "--provider", "--framework"})),
    "runtime and device in one name": ("--target", frozenset({"--platform", "--hardware"})),
    "device": ("--device", frozenset({"--gpu", "--cuda"})),
    "precision": (
        "--precision",
        frozenset({"--fp16", "--int8", "--bf16", "--fp32", "--dtype", "--half", "--quantize"}),
    ),
    "measurement time": (
        "--measure-seconds",
        frozenset({"--max-seconds", "--seconds", "--measure-time", "--bench-seconds"}),
    ),
    "CPU threads": (
        "--threads",
        frozenset({"--num-threads", "--nthreads", "--jobs", "-j", "--intra-op-threads"}),
    ),
    "images per inference": ("--batch", frozenset({"--bs"})),
    "machine-readable output": ("--json", frozenset({"--as-json", "--format", "--output-format"})),
    "log details": ("--verbose", frozenset({"--debug", "--log-level", "--loglevel"})),
    "output": ("--out", frozenset({"--output", "--output-dir", "--outdir", "-o"})),
    "seed": ("--seed", frozenset({"--random-seed"})),
    "progress bars off": ("--no-progress", frozenset({"--progress", "--no-bar", "--quiet"})),
    "server address": ("--host", frozenset({"--bind", "--address"})),
}
# a positional argument that names a model is MODEL, whatever file it takes
MODEL_POSITIONAL = "model"
NOT_MODEL_POSITIONALS = frozenset({"variant", "config", "onnx", "engine", "checkpoint", "file"})
PRECISIONS = frozenset({"fp32", "fp16", "bf16", "int8"})
# where latency is measured, threads default to the same
MEASURING = ("python -m edge bench", "python -m search")
THREADS_DEFAULT = "default: all usable cores"
EXIT_LINES = {
    0: "",
    1: "failed check: ",
    2: "bad input: ",
    130: "interrupted (Ctrl-C)",
}


MAINS = {
    "evit": "evit.cli",
    "edge": "edge.cli",
    "search": "search.cli",
    "app": "app.demo",
    "search.dashboard": "search.dashboard",
}


def _parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from app.demo import build_parser as app_parser
    from edge.cli import build_parser as edge_parser
    from evit.cli import build_parser as evit_parser
    from search.cli import build_parser as search_parser
    from search.dashboard import build_parser as dashboard_parser

    return {
        "evit": evit_parser,
        "edge": edge_parser,
        "search": search_parser,
        "app": app_parser,
        "search.dashboard": dashboard_parser,
    }


def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subcommand under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from walk(sub)


def visible(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The flags ``--help`` shows (not ``-h``, not the hidden deprecated aliases)."""
    return {
        option: action
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction) and action.help != argparse.SUPPRESS
        for option in action.option_strings
    }


def examples(parser: argparse.ArgumentParser) -> list[str]:
    """The command lines of the epilog's ``example(s):`` block."""
    lines = (parser.epilog or "").splitlines()
    if not lines or not lines[0].startswith("example"):
        return []
    found = []
    for line in lines[1:]:
        if not line.startswith("  "):
            break
        found.append(line.strip())
    return found


def exit_codes(parser: argparse.ArgumentParser) -> dict[int, str]:
    """Exit code -> its meaning, from the epilog's ``exit codes:`` block."""
    parts = re.split(r"^exit codes:$", parser.epilog or "", maxsplit=1, flags=re.M)
    if len(parts) < 2:
        return {}
    codes: dict[int, str] = {}
    last = None
    for line in parts[1].splitlines():
        match = re.match(r"^  (\d+)\s+(.*)$", line)
        if match:
            last = int(match.group(1))
            codes[last] = match.group(2)
        elif last is not None and line.startswith("       "):
            codes[last] += " " + line.strip()
    return codes


def vocabulary_problems(parser: argparse.ArgumentParser) -> list[str]:
    """What in ``parser``'s tree breaks the shared vocabulary, one line each (empty: none)."""
    problems = []
    for node in walk(parser):
        where = node.prog
        flags = visible(node)
        for concept, (flag, wrong) in VOCABULARY.items():
            for option in sorted(wrong & flags.keys()):
                problems.append(f"{where}: {option} names the {concept}; spell it {flag}")
            dest = flag.lstrip("-").replace("-", "_")
            if flag in flags and flags[flag].dest != dest:
                problems.append(f"{where}: {flag} stores into {flags[flag].dest!r}, not {dest!r}")
        for action in node._actions:
            if not action.option_strings and action.dest in NOT_MODEL_POSITIONALS:
                problems.append(f"{where}: positional {action.dest!r} is a model: call it MODEL")
        precision = flags.get("--precision")
        if precision is not None and not set(precision.choices or ()) <= PRECISIONS:
            problems.append(
                f"{where}: --precision choices {sorted(precision.choices)} are not among "
                f"{sorted(PRECISIONS)}"
            )
        json_flag = flags.get("--json")
        if json_flag is not None and not re.match(r"print .* as JSON", json_flag.help or ""):
            problems.append(f"{where}: --json help should say what it prints as JSON")
        threads = flags.get("--threads")
        if threads is not None and "default" not in (threads.help or ""):
            problems.append(f"{where}: --threads help does not say its default")
        if threads is not None and where in MEASURING and THREADS_DEFAULT not in threads.help:
            problems.append(f"{where}: --threads should default to all usable cores")
        verbose = node._option_string_actions.get("-v")
        if (
            verbose is None
            or node._option_string_actions.get("--verbose") is not verbose
            or not isinstance(verbose, argparse._StoreTrueAction)
            or verbose.dest != "verbose"
        ):
            problems.append(f"{where}: no -v/--verbose")
        if not examples(node):
            problems.append(f"{where}: no example in the epilog")
        codes = exit_codes(node)
        if sorted(codes) != sorted(EXIT_LINES):
            problems.append(f"{where}: epilog exit codes {sorted(codes)}, not 0, 1, 2, 130")
        for code, start in EXIT_LINES.items():
            if code in codes and not codes[code].startswith(start):
                problems.append(f"{where}: exit code {code} should read {start!r}...")
    return problems


# --- the four CLIs -----------------------------------------------------------------------------


@pytest.mark.parametrize("cli", ["evit", "edge", "search", "app", "search.dashboard"])
def test_every_cli_speaks_the_shared_vocabulary(cli):
    assert vocabulary_problems(_parsers()[cli]()) == []


@pytest.mark.parametrize("cli", ["evit", "edge", "search", "app", "search.dashboard"])
def test_every_epilog_example_parses(cli):
    parser = _parsers()[cli]()
    prefix = f"python -m {cli} "
    for node in walk(parser):
        for line in examples(node):
            assert line.startswith(prefix), f"{node.prog}: {line}"
            parser.parse_args(shlex.split(line[len(prefix) :]))  # SystemExit fails the test


def test_a_concept_means_the_same_flag_in_every_cli_that_has_it():
    """Across the CLIs: the commands that have a concept, and that they all spell it alike."""
    users: dict[str, list[str]] = {concept: [] for concept in VOCABULARY}
    for build in _parsers().values():
        for node in walk(build()):
            flags = visible(node)
            for concept, (flag, _) in VOCABULARY.items():
                if flag in flags:
                    users[concept].append(node.prog)
    # the concepts the issue named are shared by more than one CLI
    for concept in ("model", "weights loaded as they are", "precision", "CPU threads"):
        clis = {prog.split()[2] for prog in users[concept]}
        assert len(clis) >= 2, (concept, users[concept])
    assert set(users["measurement time"]) == {"python -m edge bench", "python -m search"}
    assert set(users["machine-readable output"]) >= {"python -m edge export", "python -m search"}


def _one_line_exit_2(main: Callable[[list[str]], int], argv: list[str], capsys) -> str:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("cli", "argv", "message"),
    [
        ("evit", ["info", "m0", "--batch", "0"], "--batch=0: must be >= 1"),
        ("evit", ["info", "m0", "--batch", "two"], "argument --batch: invalid int value"),
        ("edge", ["info", "missing.onnx"], "ONNX file not found"),
        ("edge", ["bench", "m0", "--threads", "0"], "argument --threads: 0 must be >= 1"),
        ("search", ["--budget-ms", "-1"], "--budget-ms -1.0: must be a positive number"),
        ("search", ["--budget-ms", "2", "--threads", "x"], "argument --threads: invalid int"),
        ("app", ["--port", "0"], "--port 0: must be between 1 and 65535"),
        ("app", ["--port", "x"], "argument --port: invalid int value"),
        ("search.dashboard", ["no/such/folder"], "no/such/folder: no such folder"),
    ],
)
def test_bad_input_exits_2_with_one_line(cli, argv, message, capsys, tmp_path):
    import importlib

    main = importlib.import_module(MAINS[cli]).main
    if cli == "search":
        argv = [*argv, "--out", str(tmp_path / "x"), "--no-progress"]
    assert message in _one_line_exit_2(main, argv, capsys)


def test_ctrl_c_exits_130_in_every_cli(monkeypatch, capsys, tmp_path):
    import socket

    import app.demo
    import edge.cli
    import evit.cli
    import search.cli

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evit.cli, "list_variants", interrupt)
    assert evit.cli.main(["list"]) == 130
    monkeypatch.setattr(edge.cli, "read_metadata", interrupt)
    assert edge.cli.main(["info", "m0.onnx"]) == 130
    monkeypatch.setattr(search.cli, "run_search", interrupt)
    assert search.cli.main(["--budget-ms", "2", "--no-progress", "--out", str(tmp_path)]) == 130
    monkeypatch.setattr(app.demo, "choices_for", interrupt)  # loading the model
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert app.demo.main(["--port", str(port)]) == 130
    assert all(line.startswith("interrupted") for line in capsys.readouterr().err.splitlines())


def test_the_demo_server_stops_on_ctrl_c_with_130():
    from app.demo import serve

    class Demo:
        launched: dict | None = None
        closed = False

        def launch(self, **kwargs):
            self.launched = kwargs

        def close(self):
            self.closed = True

    def wait():
        raise KeyboardInterrupt

    demo = Demo()
    assert serve(demo, wait, server_port=7860) == 130
    assert demo.launched == {"prevent_thread_lock": True, "server_port": 7860} and demo.closed


# --- the deprecated aliases ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "dest", "value", "new"),
    [
        (["export", "m0", "--int8"], "precision", "int8", "--precision int8"),
        (["export", "m0", "--fp16"], "precision", "fp16", "--precision fp16"),
        (["trt", "m0.onnx", "--fp16"], "precision", "fp16", "--precision fp16"),
        (["bench", "m0.onnx", "--max-seconds", "3"], "measure_seconds", 3.0, "--measure-seconds"),
        (["bench", "m0.onnx", "--precision", "f32"], "precision", "fp32", "fp32"),
    ],
)
def test_old_flag_names_still_parse_and_warn(argv, dest, value, new, capsys):
    from edge.cli import build_parser

    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and f"use {new}" in err and err.count("\n") == 1


def test_old_flag_names_are_hidden_and_two_precisions_are_refused(capsys):
    from edge.cli import build_parser

    parser = build_parser()
    for node in walk(parser):
        shown = node.format_help()
        assert "--max-seconds" not in shown and "--fp16" not in shown
        assert not re.search(r"--int8\b(?!-)", shown), node.prog
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["export", "m0", "--int8", "--fp16"])
    assert info.value.code == 2
    assert "--fp16 and --precision int8 exclude each other" in capsys.readouterr().err


# --- the checker rejects what it should ------------------------------------------------------


def _tiny(epilog_text: str | None) -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m tiny", epilog=epilog_text)
    sub = parser.add_subparsers(dest="command", required=True)
    bench = add_command(sub, "bench", help="time it", examples="python -m tiny bench x.onnx")
    bench.add_argument("model")
    bench.add_argument("--measure-seconds", type=float, default=2.0)
    add_alias(bench, "--max-seconds", "--measure-seconds")  # hidden: allowed
    bench.add_argument("--threads", type=int, help="CPU threads (default: 1)")
    return parser


def test_the_checker_passes_a_parser_that_keeps_the_vocabulary():
    parser = _tiny(epilog("python -m tiny bench x.onnx"))
    add_verbose(parser)
    assert vocabulary_problems(parser) == []


def test_the_checker_rejects_another_name_a_missing_verbose_and_epilog():
    parser = _tiny(None)  # and no -v at the top
    bench = next(n for n in walk(parser) if n.prog.endswith("bench"))
    bench.add_argument("--checkpoint", help="weights")
    bench.add_argument("--json", action="store_true", help="machine-readable output")
    bench.add_argument("--precision", choices=("fp32", "f32"))
    other = ArgumentParser(prog="python -m other", epilog="exit codes:\n  0    done")
    other.add_argument("onnx")
    other.add_argument("--max-seconds", type=float)
    other.add_argument("--threads", type=int, help="CPU threads")

    problems = vocabulary_problems(parser) + vocabulary_problems(other)
    expected = [
        "python -m tiny: no -v/--verbose",
        "python -m tiny: no example in the epilog",
        "python -m tiny: epilog exit codes [], not 0, 1, 2, 130",
        "python -m tiny bench: --checkpoint names the weights loaded as they are; spell it "
        "--weights",
        "python -m tiny bench: --precision choices ['f32', 'fp32'] are not among "
        "['bf16', 'fp16', 'fp32', 'int8']",
        "python -m tiny bench: --json help should say what it prints as JSON",
        "python -m other: --max-seconds names the measurement time; spell it --measure-seconds",
        "python -m other: positional 'onnx' is a model: call it MODEL",
        "python -m other: --threads help does not say its default",
        "python -m other: no -v/--verbose",
        "python -m other: no example in the epilog",
        "python -m other: epilog exit codes [0], not 0, 1, 2, 130",
    ]
    assert sorted(problems) == sorted(expected)


def test_an_alias_of_a_switch_and_of_a_valued_flag(capsys):
    parser = ArgumentParser(prog="python -m tiny")
    parser.add_argument("--no-progress", action="store_true", help="no bars")
    add_alias(parser, "--no-bar", "--no-progress")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="p")
    add_alias(parser, "--int8", "--precision", value="int8")
    args = parser.parse_args(["--no-bar", "--int8"])
    assert args.no_progress is True and args.precision == "int8"
    assert capsys.readouterr().err.count("warning: ") == 2
    assert parser.parse_args([]).precision == "fp32"
    assert "--no-bar" not in parser.format_help() and "--int8" not in parser.format_help()
