"""The measurement log: every latency measured in a study's folder, one JSON line each.

It doubles as a cache (architecture hash + target fingerprint -> result). Trials also carry
their measurement in their own attributes, so a study shared over an RDB works across hosts
without this file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from edge.latency import LatencyResult
from search.storage import worker_id


class MeasurementLog:
    """Append-only JSONL of every latency measurement; doubles as the latency cache."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.cache: dict[str, LatencyResult] = {}
        self._offset = 0
        self.refresh()

    def refresh(self) -> None:
        """Read the lines other workers appended since the last read."""
        if not self.path.is_file():
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
        self._offset += len(complete)
        for line in complete.decode().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a killed process
            if row.get("fingerprint") == self.fingerprint and row.get("phase") == "search":
                self.cache[row["arch_hash"]] = LatencyResult.from_dict(row["result"])

    def get(self, arch_hash: str) -> LatencyResult | None:
        return self.cache.get(arch_hash)

    def append(
        self, arch_hash: str, result: LatencyResult, phase: str, extra: dict[str, Any] | None = None
    ) -> None:
        if phase == "search":
            self.cache[arch_hash] = result
        row = {
            "time": time.time(),
            "worker": worker_id(),
            "phase": phase,
            "arch_hash": arch_hash,
            "fingerprint": self.fingerprint,
            **(extra or {}),
            "result": result.to_dict(),
        }
        with open(self.path, "a") as f:  # one write per line: appends from workers interleave
            f.write(json.dumps(row) + "\n")
