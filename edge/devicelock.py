"""One latency measurement per device at a time, across processes.

Two search workers on one 2-core machine each measuring on all cores corrupt each other's
readings, and so does one worker exporting or training while another measures. A measurement
therefore holds the device *exclusively*; heavy work that is not a measurement (export, proxy
scoring, training) holds it *shared*: heavy jobs run side by side, but never while a measurement
runs, and a measurement waits for them to finish. The lock is an advisory ``flock`` on a file
named after the device (``EVIT_LOCK_DIR``, default the system temp folder), so it holds between
any processes of this machine, and is released by the kernel when a process dies.

Example:
    >>> with device_lock(device_key("cpu")) as held:  # doctest: +SKIP
    ...     result = measure_latency(...)
    >>> held.waited_s, held.start, held.end  # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def device_key(device: str = "cpu") -> str:
    """The device a measurement occupies: this host's CPU, or one GPU of this host."""
    return f"{device}@{socket.gethostname()}"


def lock_path(key: str) -> Path:
    folder = Path(os.environ.get("EVIT_LOCK_DIR") or Path(tempfile.gettempdir()) / "evit-locks")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock"


@dataclass
class Held:
    """When the lock was held (``time.time()`` seconds) and how long it took to get it."""

    key: str
    exclusive: bool
    waited_s: float = 0.0
    start: float = 0.0
    end: float = 0.0


@contextmanager
def device_lock(key: str, exclusive: bool = True) -> Iterator[Held]:
    """Hold the device ``key``: exclusively (a measurement) or shared (other heavy work)."""
    path = lock_path(key)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    held = Held(key, exclusive)
    asked = time.perf_counter()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        held.waited_s = time.perf_counter() - asked
        if held.waited_s > 1.0:
            log.info("waited %.1f s for %s (%s)", held.waited_s, key, path)
        held.start = time.time()
        try:
            yield held
        finally:
            held.end = time.time()
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
