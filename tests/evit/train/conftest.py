"""Small generated datasets and a tiny two-stage config for training tests."""

from __future__ import annotations

import pytest

from evit.config import save_yaml
from evit.train.synthetic import write_synthetic
from tests.conftest import tiny_config


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """4 classes x (32 train + 8 val) images of 64 px."""
    root = tmp_path_factory.mktemp("data") / "shapes"
    write_synthetic(root, num_classes=4, per_class=32, size=64, seed=1, val_per_class=8)
    return root


@pytest.fixture(scope="session")
def tiny_yaml(tmp_path_factory):
    return save_yaml(tiny_config(), tmp_path_factory.mktemp("cfg") / "tiny.yaml")


def train_argv(model, data, out, *extra: str) -> list[str]:
    """A fast CLI training run: tiny epochs, no progress bars, deterministic threads."""
    return [
        "train",
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(out),
        "--batch-size",
        "16",
        "--lr",
        "2e-3",
        "--no-progress",
        "--threads",
        "1",
        *extra,
    ]
