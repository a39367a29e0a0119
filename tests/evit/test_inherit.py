from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import DataLoader

import evit
from evit.config import ModelConfig, StageConfig
from evit.inherit import inherit_state_dict, inherit_weights, recalibrate_batchnorm
from evit.train.data import ImageDataset, collate, resolve_data, train_transform
from evit.train.evaluate import eval_loader, evaluate
from evit.train.loop import TrainOptions, train
from evit.train.recipe import Recipe
from evit.train.synthetic import write_synthetic
from tests.conftest import randomize, tiny_config

S = StageConfig


def test_same_config_copies_everything_and_computes_the_same_function():
    source = randomize(evit.create_model(tiny_config()), seed=1).eval()
    target = evit.create_model(tiny_config())
    report = inherit_state_dict(target, source.state_dict(), source.config)
    assert report.copied and not (report.sliced or report.resized or report.initialized)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(target.eval()(x), source(x))


def test_official_m4_into_m0_counts_what_happened(tmp_path):
    """From a file in the official key format, without a config (shapes are read)."""
    from tests.evit.test_weights import official_state_dict

    source = randomize(evit.create_model("m4"), seed=2)  # widths 128/256/384, kernels 7,5,3,3
    path = tmp_path / "official_m4.pth"
    torch.save({"model": official_state_dict(source)}, path)
    child = evit.create_model("m0", num_classes=10)  # widths 64/128/192, kernels 5,5,5,5
    report = inherit_weights(child, path)
    assert report.initialized == ["head.linear.bias", "head.linear.weight"]
    assert report.sliced and report.copied
    # 3x3 kernels of heads 2 and 3 grow to 5x5: centred, the ring stays at init
    assert report.resized and all(".dws.2." in k or ".dws.3." in k for k in report.resized)
    key = "stages.0.blocks.0.mixer.branch.attn.dws.0.conv.weight"  # 7x7 -> centre 5x5
    assert torch.equal(child.state_dict()[key], source.state_dict()[key][:, :, 1:6, 1:6])
    total = sum(len(x) for x in (report.copied, report.sliced, report.resized, report.initialized))
    assert total == len(child.state_dict())
    assert report.summary().endswith("2 left at init")


def test_heads_keep_their_own_channels_and_q_k_v_blocks():
    parent_cfg = ModelConfig("p", (S(32, 1, 2, 8, 4, (3, 3)),), img_size=64, num_classes=4)
    child_cfg = ModelConfig("c", (S(24, 1, 2, 4, 4, (3, 3)),), img_size=64, num_classes=4)
    parent = randomize(evit.create_model(parent_cfg), seed=3)
    child = evit.create_model(child_cfg)
    inherit_state_dict(child, parent.state_dict(), parent_cfg)
    key = "stages.0.blocks.0.mixer.branch.attn.qkvs.1.conv.weight"
    p, c = parent.state_dict()[key], child.state_dict()[key]  # (2*8+16, 16) -> (2*4+12, 12)
    assert torch.equal(c[0:4], p[0:4, :12])  # leading Q channels
    assert torch.equal(c[4:8], p[8:12, :12])  # leading K channels, from K's block
    assert torch.equal(c[8:20], p[16:28, :12])  # leading V channels, from V's block
    key = "stages.0.blocks.0.dw0.branch.conv.weight"  # embedding: 12 leading of each head's 16
    expected = torch.cat([parent.state_dict()[key][:12], parent.state_dict()[key][16:28]])
    assert torch.equal(child.state_dict()[key], expected)


def test_bias_tables_keep_their_offsets_when_the_window_changes():
    big = ModelConfig("big", (S(16, 1, 2, 4, 4, (3, 3)),), img_size=64, num_classes=4)
    small = ModelConfig("small", (S(16, 1, 2, 4, 2, (3, 3)),), img_size=64, num_classes=4)
    key = "stages.0.blocks.0.mixer.branch.attn.attention_biases"
    src = randomize(evit.create_model(big), seed=4)
    dst = evit.create_model(small)
    report = inherit_state_dict(dst, src.state_dict(), big)
    table = src.state_dict()[key].reshape(2, 4, 4)  # (heads, dy, dx)
    assert torch.equal(dst.state_dict()[key].reshape(2, 2, 2), table[:, :2, :2])
    assert key in report.sliced
    back = evit.create_model(big)
    report = inherit_state_dict(back, dst.state_dict(), small)
    grown = back.state_dict()[key].reshape(2, 4, 4)
    assert torch.equal(grown[:, :2, :2], table[:, :2, :2])
    assert torch.equal(grown[:, 3, 3], table[:, 1, 1])  # beyond the source: the nearest edge
    assert key in report.resized


def test_nothing_in_common_is_an_error():
    with pytest.raises(ValueError, match="no tensor matches"):
        inherit_state_dict(evit.create_model(tiny_config()), {"fc.weight": torch.zeros(2, 2)})


@pytest.mark.slow  # trains the teacher for 25 epochs: 40 s on AVX-512 VNNI, 136 s on AVX2
def test_an_inherited_smaller_child_starts_far_above_chance(tmp_path):
    """The child is narrower and shallower than its trained teacher."""
    root = tmp_path / "shapes"
    write_synthetic(root, num_classes=4, per_class=200, size=48, seed=2, val_per_class=40)
    teacher_cfg = ModelConfig(
        "teacher",
        (S(32, 2, 2, 8, 3, (3, 3)), S(48, 2, 3, 8, 2, (3, 3, 3))),
        img_size=48,
        num_classes=4,
    )
    child_cfg = ModelConfig(
        "child",
        (S(24, 1, 2, 8, 3, (3, 3)), S(36, 1, 3, 8, 2, (3, 3, 3))),
        img_size=48,
        num_classes=4,
    )
    recipe = Recipe(epochs=25, batch_size=32, lr=3e-3, aug="mild", ema_decay=0)
    teacher = train(TrainOptions(teacher_cfg, root, tmp_path / "t", recipe, progress=False))
    split = resolve_data(root)

    def top1(model):
        return evaluate(model, eval_loader(split.val, 48, 80, 0), split.classes).top1

    fresh = top1(evit.create_model(child_cfg))
    child = evit.create_model(child_cfg)
    report = inherit_weights(child, teacher.checkpoint)
    loader = DataLoader(
        ImageDataset(split.train, train_transform(48, "mild", "", 0.0)),
        batch_size=64,
        collate_fn=collate,
    )
    recalibrate_batchnorm(child, (b.images for b in itertools.islice(loader, 8)))
    inherited = top1(child)
    chance = 25.0
    assert teacher.best_top1 >= chance + 20, teacher.best_top1
    assert fresh <= chance + 8
    assert inherited >= chance + 10, (inherited, report.summary())
