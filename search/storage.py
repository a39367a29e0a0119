"""Where a study lives: Optuna storages, worker identity, and dead workers' trials.

``sqlite:///…``, ``postgresql://…``, ``mysql://…`` (RDB, with heartbeats so a killed worker's
trial is failed and retried on any host), or ``journal:///path`` (JournalStorage: several
processes on one machine). Passwords in URLs never reach messages or reports
(:func:`redact_url`).
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.keys import REFERENCE

log = logging.getLogger(__name__)


def redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """Open the storage a URL names (see the module docstring); bad URLs raise ValueError."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix("journal://").removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    if "://" not in url:
        raise ValueError(
            f"--storage {redact_url(url)!r}: give an RDB URL (sqlite:///study.db, "
            "postgresql://user@host/db) or journal:///path/study.log"
        )
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    try:
        for attempt in range(3):
            try:
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=10,
                    grace_period=40,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=1
                    ),
                )
            except ImportError:
                raise
            except Exception as e:
                # two workers starting on an empty database race to create its tables; the
                # loser finds them made on the next attempt
                if attempt == 2 or (
                    "already exists" not in str(e) and "duplicate key" not in str(e)
                ):
                    raise
                time.sleep(0.5 + random.random())
        raise AssertionError("unreachable")
    except ImportError as e:
        raise ValueError(
            f"--storage {redact_url(url)}: database driver missing ({e}); for PostgreSQL "
            "pip install '.[postgres]'"
        ) from None
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(
            f"--storage {redact_url(url)}: cannot open ({redact_url(first)[:200]})"
        ) from None


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_PRESENCE: dict[Path, WorkerPresence] = {}  # one per folder and process


class WorkerPresence:
    """An exclusive ``flock`` on ``folder/<host>-<pid>.lock``, held while the worker lives.

    The kernel releases it when the process dies, however it dies, so another worker can tell
    whether anyone else is still at work on this machine.
    """

    @classmethod
    def acquire(cls, folder: Path) -> WorkerPresence:
        """This process's presence in ``folder`` (taken once, kept for the process's life)."""
        key = folder.resolve()
        if key not in _PRESENCE:
            _PRESENCE[key] = cls(folder)
        return _PRESENCE[key]

    def __init__(self, folder: Path) -> None:
        import fcntl

        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.path = folder / f"{socket.gethostname()}-{os.getpid()}.lock"
        self.file = open(self.path, "w")  # noqa: SIM115 (held for the process's life)
        fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def others_alive(self) -> bool:
        """True if another live process holds its presence lock in the same folder."""
        import fcntl

        alive = False
        for path in self.folder.glob("*.lock"):
            if path == self.path:
                continue
            with open(path, "a") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    alive = True
                    continue
                fcntl.flock(f, fcntl.LOCK_UN)
            path.unlink(missing_ok=True)  # a dead worker's: tidy up
        return alive


def _worker_gone(worker: str, orphans_are_dead: bool) -> bool:
    """Whether the worker that signed a RUNNING trial is known to be dead.

    An unsigned trial (created, killed before its signature) counts as dead when nobody else
    on the machine is running; a signed one when its process on this host is gone.
    """
    if not worker:
        return orphans_are_dead
    name, _, pid = worker.rpartition(":")
    return name == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


def reap_dead_workers(study: optuna.Study, presence: WorkerPresence | None = None) -> int:
    """Fail RUNNING trials whose worker process on this host is gone, and queue them again.

    RDB storages also do this through heartbeats (any host); this covers JournalStorage and
    makes a restart after ``kill -9`` immediate. A trial killed between its creation and the
    moment its worker signed it carries no worker name: with ``presence`` (one machine), such
    a trial is failed when no other worker is alive.
    """
    orphans_are_dead = presence is not None and not presence.others_alive()
    reaped = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        if not _worker_gone(worker, orphans_are_dead):
            continue
        study.tell(trial.number, state=TrialState.FAIL)
        log.warning("trial %d failed: its worker %s is gone", trial.number, worker or "(unsigned)")
        if trial.params:
            study.enqueue_trial(
                trial.params,
                user_attrs={k: v for k, v in trial.user_attrs.items() if k == REFERENCE},
            )
        reaped += 1
    if reaped:
        log.warning("failed and re-queued %d trial(s) left running by a dead worker", reaped)
    return reaped
