"""What the four command lines share: help layout, exit codes, ``-v``, and deprecated aliases.

``python -m evit``, ``python -m edge``, ``python -m search`` and ``python -m app`` build their
parsers from these pieces so that a concept has one flag and one behaviour everywhere
(``tests/test_cli_vocabulary.py`` holds the table of concepts and checks every parser against
it; ``docs/cli.md`` lists the flags). Torch-free and importing no sibling package, so that every
CLI can import it without breaking the one-way import rule (evit <- edge <- search, app).

Example:
    >>> parser = ArgumentParser(prog="python -m tool", epilog=epilog("python -m tool --n 3"))
    >>> _ = parser.add_argument("--measure-seconds", type=float, default=2.0)
    >>> add_alias(parser, "--max-seconds", "--measure-seconds")
    >>> add_verbose(parser)
    >>> parser.parse_args(["-v", "--measure-seconds", "5"]).measure_seconds
    5.0
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

EXIT_OK = 0
EXIT_FAILED_CHECK = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C

NO_CHECK = "none in this command"
BAD_INPUT = "a one-line error (a missing or corrupt file, an unknown name, a value out of range)"
EPILOG_WIDTH = 88


class HelpFormatter(argparse.HelpFormatter):
    """Wraps prose to the terminal, keeps indented lines (examples, exit codes) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines: list[str] = []
        paragraph: list[str] = []

        def flush() -> None:
            if paragraph:
                lines.append(
                    textwrap.fill(
                        " ".join(paragraph),
                        width,
                        initial_indent=indent,
                        subsequent_indent=indent,
                    )
                )
                paragraph.clear()

        for line in textwrap.dedent(text).strip("\n").splitlines():
            if not line.strip():
                flush()
                lines.append("")
            elif line[0].isspace():
                flush()
                lines.append(indent + line.rstrip())
            else:
                paragraph.append(line.strip())
        flush()
        return "\n".join(lines)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with this project's help layout and a one-line usage error (exit 2).

    Subcommands made with ``add_subparsers`` are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def epilog(
    examples: str | Sequence[str],
    *,
    done: str = "done",
    failed: str = NO_CHECK,
    bad_input: str = BAD_INPUT,
    interrupted: str = "",
) -> str:
    """The end of a command's ``--help``: examples, then the four exit codes and their cases.

    Args:
        examples: command lines, each a complete command (``python -m ...``) that parses.
        done: what exit code 0 means for this command.
        failed: what exit code 1 means (the work ran and failed its check), or that the command
            has no such check.
        bad_input: the cases of exit code 2.
        interrupted: what is kept after Ctrl-C (exit code 130), if anything.
    """
    examples = [examples] if isinstance(examples, str) else list(examples)
    codes = {
        EXIT_OK: done,
        EXIT_FAILED_CHECK: f"failed check: {failed}",
        EXIT_BAD_INPUT: f"bad input: {bad_input}",
        EXIT_INTERRUPTED: "interrupted (Ctrl-C)" + (f": {interrupted}" if interrupted else ""),
    }
    lines = ["examples:" if len(examples) > 1 else "example:"]
    lines += [f"  {line}" for line in examples]
    lines += ["", "exit codes:"]
    for code, meaning in codes.items():
        lines += textwrap.wrap(
            meaning,
            EPILOG_WIDTH,
            initial_indent=f"  {code:<4} ",
            subsequent_indent=" " * 7,
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def add_verbose(parser: argparse.ArgumentParser, *, subcommand: bool = False) -> None:
    """``-v/--verbose``: log INFO messages on stderr.

    A subcommand's flag leaves the value alone when not given, so that ``python -m edge -v
    export`` and ``python -m edge export -v`` both turn it on."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS if subcommand else False,
        help="log progress details (INFO messages) on stderr",
    )


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    *,
    help: str,
    examples: str | Sequence[str],
    description: str | None = None,
    **exit_codes: str,
) -> argparse.ArgumentParser:
    """A subcommand with ``-v/--verbose`` and an epilog of examples and exit codes.

    ``exit_codes`` are :func:`epilog`'s ``done``, ``failed``, ``bad_input`` and ``interrupted``.
    """
    parser = sub.add_parser(
        name,
        help=help,
        description=description or help[:1].upper() + help[1:] + ".",
        epilog=epilog(examples, **exit_codes),
    )
    add_verbose(parser, subcommand=True)
    return parser


def configure_logging(verbose: bool, fmt: str = "%(levelname)s %(name)s: %(message)s") -> None:
    """Log to stderr: INFO with ``-v``, else warnings only."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=fmt)


class _Alias(argparse.Action):
    """A deprecated spelling: warns on stderr, then does what the new flag does."""

    def __init__(
        self,
        option_strings: list[str],
        dest: str,
        *,
        target: argparse.Action,
        new: str,
        value: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.target, self.new, self.value = target, new, value

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        spelling = self.new if self.value is None else f"{self.new} {self.value}"
        print(
            f"warning: {option_string} is deprecated, use {spelling} (the old name goes in the "
            "next release)",
            file=sys.stderr,
        )
        if self.value is not None:
            current = getattr(namespace, self.dest, None)
            if current not in (None, self.target.default, self.value):
                parser.error(
                    f"{option_string} and {self.new} {current} exclude each other: choose one"
                )
            values = self.value
        self.target(parser, namespace, values, self.new)


def add_alias(parser: argparse.ArgumentParser, old: str, new: str, *, value: Any = None) -> None:
    """Accept ``old`` as a hidden, deprecated spelling of the flag ``new`` (for one release).

    ``old`` takes what ``new`` takes (its value, type and choices), prints a one-line warning on
    stderr, and is left out of ``--help`` and of ``docs/cli.md``. With ``value``, ``old`` is a
    bare switch that stands for ``new value`` (``--int8`` for ``--precision int8``); given
    together with another value of ``new`` it is a usage error.

    Raises:
        KeyError: ``new`` is not a flag of ``parser``.
    """
    target = parser._option_string_actions[new]
    switch = value is not None or target.nargs == 0
    parser.add_argument(
        old,
        action=_Alias,
        dest=target.dest,
        target=target,
        new=new,
        value=value,
        nargs=0 if switch else target.nargs,
        type=None if switch else target.type,
        choices=None if switch else target.choices,
        metavar=None if switch else target.metavar,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
