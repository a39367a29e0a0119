"""Optuna Dashboard over a search's study: its trials, Pareto front and per-trial attributes.

One command, given the run folder that ``python -m search`` wrote (or any storage URL)::

    python -m search.dashboard runs/my-study                 # reads runs/my-study/study.db
    python -m search.dashboard journal:///tmp/study.log --port 8081

then open the printed address. The dashboard is the packaged `optuna-dashboard
<https://github.com/optuna/optuna-dashboard>`_ (``pip install -e '.[dashboard]'``), imported
only here; its "Trials" tab lists each trial's user attributes (``latency_median_ms``,
``latency_ci_low_ms``/``latency_ci_high_ms``, ``top1``, ``reference``, ...), its "Analytics"
tab the Pareto front of objective against latency.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from evit.clitools import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    ArgumentParser,
    add_verbose,
    configure_logging,
    epilog,
)
from search.storage import make_storage, redact_url

STUDY_FILE = "study.db"  # what ``python -m search`` writes in its --out folder
INSTALL_HINT = "pip install -e '.[dashboard]'"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request: the page fetches several API routes at once."""

    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    """No access-log line on stderr for every API poll."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def resolve_storage(target: str) -> str:
    """The storage URL for a run folder (``<folder>/study.db``) or a URL, checked to exist.

    Raises:
        ValueError: the folder or the file a URL names does not exist, or the folder holds no
            ``study.db``; the message names the path.
    """
    if "://" not in target:
        folder = Path(target)
        if not folder.is_dir():
            raise ValueError(
                f"{target}: no such folder; give a run folder (runs/<study>) or a storage URL "
                "(sqlite:///f.db, journal:///f.log, postgresql://...)"
            )
        if not (folder / STUDY_FILE).is_file():
            raise ValueError(
                f"{target}: no {STUDY_FILE} in this folder; give the --out folder of "
                "`python -m search` or the --storage URL it was run with"
            )
        return f"sqlite:///{folder / STUDY_FILE}"
    scheme, _, rest = target.partition("://")
    # a file-backed storage that is not there would be created empty: refuse instead
    if scheme in ("sqlite", "journal") and rest.startswith("/") and rest != "/:memory:":
        path = Path(rest[1:])
        if not path.is_file():
            raise ValueError(f"{redact_url(target)}: no such file {path}")
    return target


def open_storage(url: str) -> tuple[optuna.storages.BaseStorage, list[optuna.study.FrozenStudy]]:
    """The storage at ``url`` and its studies; ValueError when it cannot open or holds none."""
    storage = make_storage(url)
    studies = storage.get_all_studies()
    if not studies:
        raise ValueError(f"{redact_url(url)}: holds no study")
    return storage, studies


def dashboard_app(storage: optuna.storages.BaseStorage) -> Any:
    """Optuna Dashboard's WSGI application over ``storage``.

    Raises:
        RuntimeError: optuna-dashboard is not installed (the message says how to install it).
    """
    try:
        import optuna_dashboard
    except ImportError:
        raise RuntimeError(f"the dashboard needs optuna-dashboard: {INSTALL_HINT}") from None
    return optuna_dashboard.wsgi(storage)


def make_dashboard_server(
    storage: optuna.storages.BaseStorage, host: str = "127.0.0.1", port: int = 8080
) -> WSGIServer:
    """A server bound to ``host:port`` (0: a free port), not yet serving.

    Call ``serve_forever()`` on it (in a thread if need be), then ``shutdown()`` and
    ``server_close()``; ``server.server_address[1]`` is the port it got.

    Example::

        storage, _ = open_storage(resolve_storage("runs/my-study"))
        server = make_dashboard_server(storage, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    """
    return make_server(
        host, port, dashboard_app(storage), server_class=ThreadingServer, handler_class=QuietHandler
    )


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m search.dashboard",
        description="Serve Optuna Dashboard over a search's study: its trials, their "
        "attributes (latency and its confidence interval, accuracy, reference) and the "
        "Pareto front. Ctrl-C stops it.",
        epilog=epilog(
            [
                "python -m search.dashboard runs/my-study",
                "python -m search.dashboard journal:///tmp/study.log --port 8081",
            ],
            done="never: the server runs until interrupted",
            bad_input="a one-line error (no such folder or file, no study in it, "
            "optuna-dashboard not installed, a port in use)",
            interrupted="the server is stopped",
        ),
    )
    p.add_argument(
        "run",
        metavar="RUN_DIR_OR_STORAGE_URL",
        help=f"the --out folder of `python -m search` (reads its {STUDY_FILE}), or the "
        "--storage URL it ran with (sqlite:///f.db, journal:///f.log, postgresql://...)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 exposes the "
        "study, and the dashboard's note editing, to the network)",
    )
    p.add_argument(
        "--port", type=int, default=8080, help="port to listen on (default 8080; 0: a free one)"
    )
    add_verbose(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        url = resolve_storage(args.run)
        storage, studies = open_storage(url)
        server = make_dashboard_server(storage, args.host, args.port)
    except (ValueError, RuntimeError) as e:
        print(f"error: {(str(e).splitlines() or [type(e).__name__])[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # the port is taken, or the host is not this machine's
        print(f"error: cannot listen on {args.host}:{args.port} ({e.strerror})", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # while opening the storage
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.host not in LOOPBACK:
        print(f"warning: serving on {args.host}, reachable from other machines", file=sys.stderr)
    host = f"[{args.host}]" if ":" in args.host else args.host
    address = f"http://{host}:{server.server_address[1]}/dashboard/"
    print(f"dashboard for {redact_url(url)} on {address} (Ctrl-C stops it)", flush=True)
    for study in studies:
        study_id = storage.get_study_id_from_name(study.study_name)
        print(f"  {study.study_name}: {address}studies/{study_id}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
