"""Shared fixtures: small deterministic inputs and fully randomized models."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from torch import nn

import evit
from evit.config import ModelConfig, StageConfig

VARIANTS = [f"efficientvit_m{i}" for i in range(6)]


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter a random value and every BN layer real statistics.

    The official init zeroes some BN weights (residual branches start at 0), which would hide
    bugs in those branches from a parity test. Statistics are estimated on random images (not
    drawn at random): with random statistics activations are not normalized, and the output of
    a deep random network stops depending on its input, so that two different graphs agree on
    every image and a parity test checks nothing.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in norms:  # scales that keep the signal alive through a deep network
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batches below
        was_training = model.training
        model.train()
        size = getattr(getattr(model, "config", None), "img_size", None) or 224
        chans = getattr(getattr(model, "config", None), "in_chans", None) or 3
        for _ in range(2):
            model(torch.randn(4, chans, size, size, generator=gen))
        for m in norms:
            m.momentum = 0.1
            m.running_var.add_(0.05)  # BN folding must cope with any variance, not just ~1
        model.train(was_training)
    return model


def output_spread(model: nn.Module, x: torch.Tensor) -> float:
    """How much the output changes across the images of ``x``, relative to its size."""
    with torch.no_grad():
        y = model(x)
    return ((y - y.mean(0)).abs().max() / y.abs().max()).item()


def max_rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def tiny_config(**overrides) -> ModelConfig:
    """A two-stage model that builds and runs in milliseconds."""
    stages = (
        StageConfig(
            embed_dim=16, depth=1, num_heads=2, key_dim=4, window_size=3, kernel_sizes=(3, 5)
        ),
        StageConfig(
            embed_dim=24, depth=1, num_heads=3, key_dim=4, window_size=3, kernel_sizes=(3, 3, 3)
        ),
    )
    fields = {"name": "tiny", "stages": stages, "img_size": 64, "num_classes": 10}
    fields.update(overrides)
    return ModelConfig(**fields).validate()


@pytest.fixture
def tiny() -> ModelConfig:
    return tiny_config()


@pytest.fixture
def tiny_model(tiny) -> evit.EfficientViT:
    return randomize(evit.create_model(tiny)).eval()


def random_config(rng: random.Random) -> ModelConfig:
    """A valid config drawn at random: 1-4 stages, padded windows, odd kernels."""
    img = rng.choice([64, 96, 128, 160])
    stages = []
    for i in range(rng.randint(1, 4)):
        heads = rng.randint(1, 4)
        dim = heads * rng.choice([8, 16, 24]) if i else 8 * heads * rng.randint(1, 3)
        stages.append(
            StageConfig(
                embed_dim=dim,
                depth=rng.randint(1, 2),
                num_heads=heads,
                key_dim=rng.choice([4, 8, 16]),
                window_size=rng.randint(1, img // 16),
                kernel_sizes=tuple(
                    rng.choice([1, 3, 5, 7]) for _ in range(heads + rng.randint(0, 1))
                ),
                ffn_ratio=rng.choice([1.0, 1.5, 2.0, 3.0]),
            )
        )
    return ModelConfig(
        "random", tuple(stages), img_size=img, num_classes=rng.choice([0, 10])
    ).validate()


def _postgres_bin(name: str) -> str | None:
    import glob
    import shutil

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A throw-away PostgreSQL server on a free loopback port, for the RDB storage tests.

    ``EVIT_TEST_POSTGRES_URL`` points the tests at an existing server instead. Started with
    Debian's ``initdb``/``pg_ctl`` (``.ci/run`` installs the package when missing); as root,
    the server runs as the ``postgres`` user, since PostgreSQL refuses to run as root.
    """
    import os
    import pwd
    import shutil
    import socket
    import subprocess

    url = os.environ.get("EVIT_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="pip install '.[postgres]' for the PostgreSQL tests")
    import tempfile

    # not under pytest's 0700 base folder: the server user must be able to reach it
    root = Path(tempfile.mkdtemp(prefix="evit-test-postgres-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the server as")
        shutil.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    run(initdb, "-D", str(data), "-U", "evit", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    try:
        run(
            _postgres_bin("createdb") or "createdb",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "evit",
            "evit",
        )
        yield f"postgresql://evit:not-a-secret@127.0.0.1:{port}/evit"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)
