from __future__ import annotations

import dataclasses
import random
import re

import pytest
import torch
from torch import nn

import evit
from evit.config import ModelConfig, StageConfig, load_config
from evit.inherit import _hidden_group, inherit_state_dict
from evit.supernet import (
    Supernet,
    check_contained,
    enclosing_config,
    recalibrate_bn,
    sandwich_step,
    sort_channels,
)
from tests.conftest import output_spread, randomize

M_CONFIGS = [load_config(f"m{i}") for i in range(6)]
S = StageConfig


def small_max_config() -> ModelConfig:
    """Two stages, windows up to 5: a supernet that builds and runs in milliseconds."""
    stages = (
        S(48, 2, 3, 8, 5, (5, 3, 3), 2.0),  # heads 3 x 16 channels
        S(64, 2, 4, 8, 5, (7, 5, 3, 3), 2.0),  # heads 4 x 16 channels
    )
    return ModelConfig("small", stages, img_size=96, num_classes=10).validate()


def random_contained(rng: random.Random, largest: ModelConfig, img: int = 96) -> ModelConfig:
    """A config of the small space drawn at random, at ``img`` pixels (any input size)."""
    stages = []
    for i, m in enumerate(largest.stages):
        heads = rng.randint(1, m.num_heads)
        head_dim = rng.choice([8, 16]) if i == 0 else rng.choice([4, 8, 12, 16])
        stages.append(
            S(
                embed_dim=heads * head_dim,
                depth=rng.randint(1, m.depth),
                num_heads=heads,
                key_dim=rng.choice([4, 8]),
                window_size=rng.randint(1, min(m.window_size, img // 16)),
                kernel_sizes=tuple(rng.choice(range(1, k + 1, 2)) for k in m.kernel_sizes),
                ffn_ratio=rng.choice([1.0, 1.5, 2.0]),
            )
        )
    return ModelConfig("random", tuple(stages), img_size=img, num_classes=10).validate()


def live(supernet: Supernet, img_size: int) -> Supernet:
    """Random parameters and real BN statistics of the largest network (see conftest)."""
    randomize(supernet.subnet(supernet.max_config.at_img_size(img_size)), seed=1)
    return supernet.eval()


@pytest.fixture(scope="module")
def m_supernet() -> Supernet:
    return live(Supernet(enclosing_config(M_CONFIGS)), 64)


@pytest.fixture(scope="module")
def small_supernet() -> Supernet:
    return live(Supernet(small_max_config()), 96)


def assert_extract_matches(supernet: Supernet, config: ModelConfig, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    size = config.img_size
    sub = supernet.subnet(config)
    # statistics for this sub-network, so that its output depends on the input
    recalibrate_bn(sub, [torch.randn(4, 3, size, size, generator=gen) for _ in range(2)])
    x = torch.randn(3, 3, size, size, generator=gen)
    extracted_config, state = supernet.extract(config)
    model = evit.create_model(extracted_config)
    model.load_state_dict(state)
    with torch.no_grad():
        expected = model.eval()(x)
        actual = sub.eval()(x)
    assert output_spread(model, x) > 0.05  # the comparison is not between constants
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_enclosing_config_of_m0_to_m5_takes_field_maxima_and_contains_each():
    largest = enclosing_config(M_CONFIGS)
    assert [(s.num_heads, s.head_dim, s.depth) for s in largest.stages] == [
        (4, 64, 1),
        (4, 96, 3),
        (4, 112, 4),
    ]
    assert all(s.kernel_sizes == (7, 5, 5, 5) for s in largest.stages)  # per head, not a tuple
    for config in M_CONFIGS:
        assert check_contained(largest, config) is config


@pytest.mark.parametrize("config", M_CONFIGS, ids=lambda c: c.name)
def test_m_variants_extracted_from_the_supernet_compute_its_logits(m_supernet, config):
    assert_extract_matches(m_supernet, config.at_img_size(64))


@pytest.mark.parametrize(("seed", "img"), [(0, 64), (1, 96), (2, 128), (3, 128)])
def test_random_contained_configs_extracted_compute_the_supernet_logits(small_supernet, seed, img):
    """Above the max config's 96 px too: 8x8 maps in 5x5 windows (padded), cropped bias tables."""
    config = random_contained(random.Random(seed), small_supernet.max_config, img)
    assert_extract_matches(small_supernet, config, seed)


def test_the_largest_config_is_the_whole_supernet(small_supernet):
    largest = small_supernet.max_config.replace(img_size=144)  # 144 px: 9x9 and 5x5 maps
    assert small_supernet.largest.config == largest  # built where no window is clipped
    _, state = small_supernet.extract(largest)
    shared = small_supernet.largest.state_dict()
    assert state.keys() == shared.keys()
    assert all(torch.equal(state[k], shared[k]) for k in state)


def test_extract_slices_as_weight_inheritance_does_outside_hidden_layers(m_supernet):
    """Per-head channels, Q|K|V blocks, kernel centres and bias offsets: evit.inherit's rules."""
    config = load_config("m0").at_img_size(64)  # 4 heads x 16 of 4 x 64; kernels 5 in 7
    _, state = m_supernet.extract(config)
    inherited = evit.create_model(config)
    largest = m_supernet.largest
    inherit_state_dict(inherited, largest.state_dict(), largest.config)
    compared = 0
    for key, value in inherited.state_dict().items():
        if all(_hidden_group(key, d) is None for d in range(value.dim())):
            assert torch.equal(state[key], value), key
            compared += 1
    assert compared > len(state) // 2
    key = "stages.0.blocks.0.dw0.branch.conv.weight"  # 16 leading channels of each head's 64
    full = largest.state_dict()[key]
    assert torch.equal(state[key], torch.cat([full[i * 64 : i * 64 + 16] for i in range(4)]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"depth": 3}, "stages[0].depth=3 exceeds the supernet's maximum 2"),
        (
            {"num_heads": 4, "embed_dim": 64, "kernel_sizes": (3,) * 4},
            "stages[0].num_heads=4 exceeds the supernet's maximum 3",
        ),
        ({"embed_dim": 72}, "stages[0].head_dim=24 exceeds the supernet's maximum 16"),
        ({"key_dim": 16}, "stages[0].key_dim=16 exceeds the supernet's maximum 8"),
        ({"ffn_ratio": 3.0}, "stages[0].ffn_dim=144 exceeds the supernet's maximum 96"),
        (
            {"kernel_sizes": (5, 5, 3)},
            "stages[0].kernel_sizes[1]=5 exceeds the supernet's maximum 3",
        ),
    ],
)
def test_a_config_outside_the_supernet_is_refused_naming_field_and_maximum(
    small_supernet, change, message
):
    largest = small_supernet.max_config
    stage = dataclasses.replace(largest.stages[0], **change)
    config = largest.replace(stages=(stage, largest.stages[1]))
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        small_supernet.subnet(config)


def test_windows_stage_count_and_classes_are_checked(small_supernet):
    largest = small_supernet.max_config
    wide = dataclasses.replace(largest.stages[0], window_size=6)  # at 96 px the window is 6
    with pytest.raises(ValueError, match=r"stages\[0\]\.window_size=6 exceeds .* maximum 5"):
        check_contained(largest, largest.replace(stages=(wide, largest.stages[1])))
    # in the last stage, the 3x3 map clips the same field inside the supernet
    wide = dataclasses.replace(largest.stages[1], window_size=6)
    check_contained(largest, largest.replace(stages=(largest.stages[0], wide)))
    with pytest.raises(ValueError, match="stages: 1 stages, the supernet has 2"):
        check_contained(largest, largest.replace(stages=largest.stages[:1]))
    with pytest.raises(ValueError, match="num_classes=5: the supernet has num_classes=10"):
        check_contained(largest, largest.replace(num_classes=5))
    with pytest.raises(ValueError, match=r"input of \(64, 64\) pixels"):
        small_supernet(torch.zeros(1, 3, 64, 64), largest)


def test_gradients_reach_the_used_slice_and_nothing_else(small_supernet):
    largest = small_supernet.max_config
    config = largest.replace(
        stages=(S(16, 1, 2, 4, 3, (3, 3), 1.0), S(24, 1, 2, 8, 2, (5, 3), 1.5)), img_size=64
    )
    small_supernet.zero_grad(set_to_none=True)
    logits = small_supernet.eval()(torch.randn(2, 3, 64, 64), config)
    logits.square().sum().backward()
    params = dict(small_supernet.largest.named_parameters())
    pw1 = params["stages.0.blocks.0.ffn0.branch.pw1.conv.weight"].grad  # (96, 48, 1, 1)
    embed = torch.cat([torch.arange(8), torch.arange(16, 24)])  # 8 of each head's 16 channels
    used = torch.zeros_like(pw1, dtype=torch.bool)
    used[:16, embed] = True  # hidden: 16 of 96, first k
    assert (pw1[used] != 0).float().mean() > 0.5
    assert (pw1[~used] == 0).all()
    bias = params["stages.1.blocks.0.mixer.branch.attn.attention_biases"].grad  # (4, 5*5)
    used = torch.zeros(4, 5, 5, dtype=torch.bool)
    used[:2, :2, :2] = True  # two heads, offsets of a 2x2 window
    assert (bias.view(4, 5, 5)[used] != 0).all() and (bias.view(4, 5, 5)[~used] == 0).all()
    assert params["stages.0.blocks.1.dw0.branch.conv.weight"].grad is None  # block 1 unused


def test_recalibrate_bn_leaves_each_used_bn_with_its_batch_statistics(small_supernet):
    """Cumulative average over two batches, written back into per-head (gathered) channels."""
    config = random_contained(random.Random(7), small_supernet.max_config)
    gen = torch.Generator().manual_seed(3)
    size = config.img_size
    batches = [torch.randn(4, 3, size, size, generator=gen) for _ in range(2)]
    _, state = small_supernet.extract(config)
    reference = evit.create_model(config)
    reference.load_state_dict(state)
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for name, module in reference.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):

            def record(module, args, name=name):
                x = args[0].transpose(0, 1).flatten(1)  # (C, everything else)
                seen.setdefault(name, []).append((x.mean(1), x.var(1)))  # var: unbiased

            module.register_forward_pre_hook(record)
    with torch.no_grad():
        for x in batches:
            reference.train()(x)  # batch statistics: the running ones do not matter
    assert recalibrate_bn(small_supernet.subnet(config), batches) == 8
    _, after = small_supernet.extract(config)
    for name, stats in seen.items():
        mean = torch.stack([m for m, _ in stats]).mean(0)
        var = torch.stack([v for _, v in stats]).mean(0)
        torch.testing.assert_close(after[f"{name}.running_mean"], mean, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(after[f"{name}.running_var"], var, atol=1e-4, rtol=1e-4)
    assert len(seen) == sum(k.endswith("running_mean") for k in after)


def test_sort_channels_keeps_the_function_and_puts_strong_channels_first():
    supernet = live(Supernet(small_max_config()), 96)
    config = supernet.max_config
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        before = supernet(x, config)
    key = "stages.1.blocks.0.ffn0.branch.pw2.conv.weight"  # (64, 128, 1, 1): reads the hidden
    reader = supernet.largest.state_dict()[key].clone()
    assert sort_channels(supernet) > 0
    with torch.no_grad():
        after = supernet(x, config)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    importance = supernet.largest.state_dict()[key].abs().sum((0, 2, 3))
    assert (importance[:-1] >= importance[1:]).all()
    assert torch.equal(
        importance.sort(descending=True).values,
        reader.abs().sum((0, 2, 3)).sort(descending=True).values,
    )


def test_sandwich_step_trains_the_shared_weights_and_the_smallest_slice():
    supernet = live(Supernet(small_max_config()), 96)
    smallest = supernet.max_config.replace(
        stages=(S(8, 1, 1, 4, 1, (1,), 1.0), S(4, 1, 1, 4, 1, (1,), 1.0)), img_size=64
    )
    middle = random_contained(random.Random(1), supernet.max_config, 64)
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(4, 3, 96, 96, generator=gen), torch.randint(0, 10, (4,))
    shared_before = {k: v.clone() for k, v in supernet.largest.state_dict().items()}
    _, smallest_before = supernet.extract(smallest)
    losses = sandwich_step(
        supernet, images, labels, optimizer, [smallest, middle], nn.CrossEntropyLoss()
    )
    assert len(losses.others) == 2 and all(v > 0 for v in (losses.largest, *losses.others))
    shared_after = supernet.largest.state_dict()
    changed = [k for k in shared_before if not torch.equal(shared_before[k], shared_after[k])]
    assert len(changed) > len(shared_before) // 2
    _, smallest_after = supernet.extract(smallest)
    weights = [k for k in smallest_before if k.endswith("weight")]
    moved = [k for k in weights if not torch.equal(smallest_before[k], smallest_after[k])]
    assert len(moved) == len(weights)  # every weight the smallest uses was trained
    losses = sandwich_step(
        supernet, images, labels, optimizer, [smallest], nn.CrossEntropyLoss(), distill=False
    )
    assert len(losses.others) == 1
