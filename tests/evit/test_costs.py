from __future__ import annotations

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import evit
from evit.config import ModelConfig, load_config
from evit.costs import model_costs
from tests.conftest import VARIANTS, random_config

OFFICIAL = {  # parameters, MACs of the released models (see shared REFERENCE §1)
    "efficientvit_m0": (2_349_436, 79.2e6),
    "efficientvit_m1": (2_980_560, 167.1e6),
    "efficientvit_m2": (4_187_554, 201.0e6),
    "efficientvit_m3": (6_900_722, 262.7e6),
    "efficientvit_m4": (8_804_228, 299.3e6),
    "efficientvit_m5": (12_473_772, 521.6e6),
}


def _measured(config: ModelConfig, batch: int = 1) -> tuple[int, int]:
    model = evit.create_model(config).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(batch, config.in_chans, config.img_size, config.img_size))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


@pytest.mark.parametrize("name", VARIANTS)
def test_official_counts(name):
    costs = model_costs(load_config(name))
    params, macs = OFFICIAL[name]
    assert costs.params == params
    assert round(costs.macs / 1e6, 1) == macs / 1e6
    assert (costs.params, costs.macs) == _measured(load_config(name))
    assert sum(p.params for p in costs.breakdown.values()) == costs.params


@pytest.mark.parametrize("seed", range(8))
def test_counts_equal_the_built_model_for_random_configs(seed):
    config = random_config(random.Random(seed))
    costs = model_costs(config, batch=2)
    assert (costs.params, costs.macs) == _measured(config, batch=2)


def test_activation_bytes_grow_with_batch_and_width():
    small = model_costs(load_config("m0"))
    assert model_costs(load_config("m0"), batch=4).activation_bytes == 4 * small.activation_bytes
    assert model_costs(load_config("m5")).activation_bytes > small.activation_bytes
