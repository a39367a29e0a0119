"""torchrun with 2 CPU processes (gloo) against 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from evit.cli import main
from tests.evit.train.conftest import train_argv


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one_process_with_the_same_global_batch(
    shapes, tiny_yaml, tmp_path, capsys
):
    common = ("--epochs", "3", "--aug", "mild")
    one = tmp_path / "one"
    argv = train_argv(tiny_yaml, shapes, one, *common)
    argv[argv.index("--batch-size") + 1] = "16"
    assert main(argv) == 0
    capsys.readouterr()

    two = tmp_path / "two"
    argv = train_argv(tiny_yaml, shapes, two, *common)
    argv[argv.index("--batch-size") + 1] = "8"  # per process: 2 x 8 = 16
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    run = subprocess.run(
        [*cmd, "-m", "evit", *argv], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("best validation top-1") == 1  # rank 0 reports, alone

    a, b = _metrics(one), _metrics(two)
    assert [m["step"] for m in a] == [m["step"] for m in b]  # same steps of the same batch
    assert [m["lr"] for m in a] == pytest.approx([m["lr"] for m in b])
    for x, y in zip(a, b):
        # BatchNorm normalizes over 8 images per process instead of 16 (SyncBatchNorm does not
        # run on the CPU): the only difference, and a small one
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=0.01)
        assert y["val_loss"] == pytest.approx(x["val_loss"], rel=0.02)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
