"""``python -m evit supernet train``: the sandwich-rule run, its checkpoint, resume and torchrun."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import evit.supernet.memory
from evit.cli import main
from evit.supernet import evaluate_subnet, load_supernet, read_space, recalibrate_bn
from evit.supernet.evaluate import extract_model
from evit.supernet.loop import CHECKPOINT
from evit.train.evaluate import eval_loader, evaluate
from evit.train.synthetic import write_synthetic

# two stages; at 32 px the maps are 2x2 and 1x1: a step of four sub-networks takes milliseconds
TINY_SPACE = """\
img_size: [32]
rules:
  non_decreasing_widths: true
stages:
  - num_heads: [1, 2]
    head_dim: [8]
    depth: [1, 2]
    key_dim: [4, 8]
    ffn_ratio: [1.0, 2.0]
    window_size: [2, 3]
    kernel_sizes: [[3, 3], [5, 3]]
  - num_heads: [1, 2, 3]
    head_dim: [4, 8]
    depth: [1]
    key_dim: [4]
    ffn_ratio: [1.0, 2.0]
    window_size: [2]
    kernel_sizes: [[3, 3, 3], [3, 5, 3]]
"""


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """4 classes x (32 train + 8 val) images of 32 px."""
    root = tmp_path_factory.mktemp("data") / "shapes"
    write_synthetic(root, num_classes=4, per_class=32, size=32, seed=1, val_per_class=8)
    return root


@pytest.fixture(scope="module")
def space_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "tiny_space.yaml"
    path.write_text(TINY_SPACE)
    return path


@pytest.fixture(scope="module")
def other_space_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "other_space.yaml"
    path.write_text(TINY_SPACE.replace("depth: [1, 2]", "depth: [1, 2, 3]"))
    return path


def supernet_argv(space, data, out, *extra: str) -> list[str]:
    return [
        "supernet",
        "train",
        "--space",
        str(space),
        "--data",
        str(data),
        "--out",
        str(out),
        "--batch-size",
        "16",
        "--lr",
        "2e-3",
        "--img-size",
        "32",
        "--bn-batches",
        "2",
        "--no-progress",
        "--threads",
        "1",
        *extra,
    ]


# mixup, cutmix, RandAugment, random erasing, stochastic depth and the EMA on: every random
# draw a resume has to repeat
RANDOM = ("--epochs", "2", "--aug", "paper", "--drop-path", "0.1", "--seed", "5")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def trained(space_yaml, shapes, tmp_path_factory):
    """A 2-epoch run through the CLI: (output folder, what it printed, what it logged)."""
    out = tmp_path_factory.mktemp("run") / "supernet"
    logger = logging.getLogger("evit.supernet.loop")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            code = main(supernet_argv(space_yaml, shapes, out, *RANDOM))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert code == 0
    return out, stdout.getvalue(), handler.lines


def test_the_cli_trains_two_epochs_into_a_checkpoint_whose_subnetworks_evaluate(
    trained, space_yaml, shapes
):
    out, printed, logged = trained
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", CHECKPOINT]
    assert "supernet after 2 epochs: validation top-1 largest" in printed
    epochs = [line for line in logged if line.startswith("epoch ")]
    assert len(epochs) == 2  # one line per epoch: both accuracies, BN re-estimated, seconds
    assert all(
        "val top-1 largest" in line and "smallest" in line and "BN re-estimated" in line
        for line in epochs
    )
    assert all(re.search(r", \d+\.\d s$", line) for line in epochs)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and metrics[-1]["step"] == 2 * 8
    for m in metrics:
        for key in ("largest_top1", "smallest_top1", "ema_largest_top1", "ema_smallest_top1"):
            assert 0 <= m[key] <= 100
        assert m["epoch_seconds"] > 0 and m["train_loss"] > 0

    space = read_space(space_yaml).with_img_size((32,))
    classes = sorted(p.name for p in (shapes / "train").iterdir())
    loaded = load_supernet(out / CHECKPOINT, space=space, class_names=classes)
    assert loaded.class_names == classes and loaded.space == space
    assert loaded.supernet.max_config == space.largest(len(classes))
    # any config of the space evaluates, from the checkpoint alone
    config = space.sample(np.random.default_rng(3), len(classes))
    train = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in (0, 1)]
    val = eval_loader(
        [(str(p), classes.index(p.parent.name)) for p in sorted(shapes.glob("val/*/*.png"))],
        32,
        16,
        0,
    )
    before = {k: v.clone() for k, v in loaded.supernet.state_dict().items()}
    top1 = evaluate_subnet(loaded.supernet, config, train, val)
    # the same as re-estimating by hand on an extracted copy; the supernet is left alone
    model = extract_model(loaded.supernet, config)
    recalibrate_bn(model, train)
    assert top1 == evaluate(model, val, classes).top1
    after = loaded.supernet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_an_interrupted_run_resumes_to_the_uninterrupted_weights_bit_for_bit(
    trained, space_yaml, shapes, tmp_path, capsys, monkeypatch
):
    import evit.supernet.loop

    def interrupt(info):  # right after the first epoch's checkpoint
        raise KeyboardInterrupt

    out = tmp_path / "cut"
    with monkeypatch.context() as patch:
        patch.setattr(evit.supernet.loop, "barrier", interrupt)
        assert main(supernet_argv(space_yaml, shapes, out, *RANDOM)) == 130
    assert "supernet.pth (continue with --resume)" in capsys.readouterr().err
    assert main(supernet_argv(space_yaml, shapes, out, *RANDOM, "--resume")) == 0

    def history(folder):
        keys = ("train_loss", "largest_top1", "smallest_top1", "ema_largest_top1", "lr", "step")
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [[json.loads(line)[k] for k in keys] for line in lines]

    assert history(out) == history(trained[0])
    a = torch.load(trained[0] / CHECKPOINT, weights_only=True)
    b = torch.load(out / CHECKPOINT, weights_only=True)
    for weights in ("state_dict", "ema_state_dict"):
        assert a[weights].keys() == b[weights].keys()
        assert all(torch.equal(a[weights][k], b[weights][k]) for k in a[weights])
    assert a["extra"]["train_state"]["global_step"] == b["extra"]["train_state"]["global_step"]


def test_a_checkpoint_of_another_space_or_class_count_is_refused_naming_both(
    trained, space_yaml, other_space_yaml, shapes, capsys
):
    path = trained[0] / CHECKPOINT
    mine = read_space(space_yaml)
    other = read_space(other_space_yaml)
    with pytest.raises(ValueError) as refused:
        load_supernet(path, space=other)
    message = str(refused.value)
    assert "\n" not in message
    assert f"space {space_yaml} ({mine.fingerprint()}) with 4 classes" in message
    assert f"asked for space {other_space_yaml} ({other.fingerprint()}) with 4 classes" in message
    with pytest.raises(ValueError, match="with 4 classes; asked for its space with 10 classes"):
        load_supernet(path, num_classes=10)
    with pytest.raises(ValueError, match="trained on other classes"):
        load_supernet(path, class_names=["a", "b", "c", "d"])
    # --resume into the run with another space
    before = path.read_bytes()
    argv = supernet_argv(other_space_yaml, shapes, trained[0], "--epochs", "3", "--resume")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(other_space_yaml) in err and str(space_yaml) in err
    assert path.read_bytes() == before


def test_every_process_samples_the_same_configs_and_the_gradients_are_averaged(
    space_yaml, shapes, tmp_path, capsys
):
    """torchrun with 2 CPU processes (gloo) against 1 process with the same global batch.

    The run itself asserts, in every step, that the processes drew the same configs and, after
    every epoch, that their weights are identical bit for bit (the gradients are averaged).
    """
    one = tmp_path / "one"
    assert main(supernet_argv(space_yaml, shapes, one, "--epochs", "1", "--aug", "mild")) == 0
    capsys.readouterr()
    two = tmp_path / "two"
    argv = supernet_argv(space_yaml, shapes, two, "--epochs", "1", "--aug", "mild")
    argv[argv.index("--batch-size") + 1] = "8"  # per process: 2 x 8 = 16
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    run = subprocess.run(
        [*cmd, "-m", "evit", *argv], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("supernet after 1 epochs") == 1  # rank 0 reports, alone

    def metrics(out):
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    a, b = metrics(one), metrics(two)
    assert [m["step"] for m in a] == [m["step"] for m in b] == [8]
    assert [m["lr"] for m in a] == pytest.approx([m["lr"] for m in b])
    for x, y in zip(a, b):
        # BatchNorm normalizes over 8 images per process instead of 16 (no SyncBatchNorm on
        # the CPU): the only difference, and a small one
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=0.01)
        assert y["train_distill_loss_smallest"] == pytest.approx(
            x["train_distill_loss_smallest"], rel=0.02
        )


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("no space file", "cannot read search space"),
        ("invalid space", "unknown key(s) stagez"),
        ("bad YAML", "invalid YAML"),
        ("no data", "data folder not found"),
        ("negative random", "--random-subnets -1 must be >= 0"),
        ("no memory", "needs about"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    case, match, space_yaml, shapes, tmp_path, capsys, monkeypatch
):
    space, data, extra = space_yaml, shapes, []
    if case == "no space file":
        space = tmp_path / "missing.yaml"
    elif case == "invalid space":
        space = tmp_path / "invalid.yaml"
        space.write_text(TINY_SPACE.replace("stages:", "stagez:"))
    elif case == "bad YAML":
        space = tmp_path / "bad.yaml"
        space.write_text("stages: [1, 2\n")
    elif case == "no data":
        data = tmp_path / "none"
    elif case == "negative random":
        extra = ["--random-subnets", "-1"]
    elif case == "no memory":
        monkeypatch.setattr(evit.supernet.memory, "available_memory", lambda device: 1 << 20)
    out = tmp_path / "run"
    assert main(supernet_argv(space, data, out, "--epochs", "1", *extra)) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1, err
    assert not out.exists()
    if case == "no memory":  # the size it needs and what there is
        assert "GiB for a training step at --batch-size 16 and 32 px" in err
        assert "0.00 GiB of RAM is available" in err


def test_a_missing_required_flag_is_exit_2(space_yaml, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["supernet", "train", "--space", str(space_yaml), "--out", str(tmp_path)])
    assert stopped.value.code == 2
    assert "--data" in capsys.readouterr().err
