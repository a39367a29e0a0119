from __future__ import annotations

import random

import numpy as np
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


def _graph_activation_bytes(config: ModelConfig, batch: int) -> int:
    """Independent count: fp32 bytes read and written by every node of the exported graph
    (weights excluded), from ONNX shape inference on the fused model's export."""
    import onnx

    from edge.export import torchscript_export

    proto = torchscript_export(evit.fuse(evit.create_model(config).eval()), config, batch, 17)
    proto = onnx.shape_inference.infer_shapes(proto)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*proto.graph.value_info, *proto.graph.input, *proto.graph.output]
    }
    weights = {init.name for init in proto.graph.initializer}
    moves = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Constant"}  # no data moved
    total = 0
    for node in proto.graph.node:
        if node.op_type in moves:
            continue
        for name in [*node.input, *node.output]:
            if name and name not in weights and name in shapes:
                size = 1
                for d in shapes[name]:
                    size *= d
                total += 4 * size
    return total


@pytest.mark.parametrize("name", ["efficientvit_m0", "efficientvit_m2", "efficientvit_m5"])
def test_activation_bytes_agree_with_the_exported_graph(name):
    config = load_config(name)
    estimate = model_costs(config, batch=2).activation_bytes
    graph = _graph_activation_bytes(config, batch=2)
    assert 0.6 <= estimate / graph <= 1.4, (estimate, graph)


def test_activation_bytes_rank_configs_as_the_graph_does():
    configs = [load_config(f"m{i}") for i in (0, 1, 3, 5)] + [
        random_config(random.Random(seed)) for seed in range(3)
    ]
    estimates = [model_costs(c).activation_bytes for c in configs]
    graphs = [_graph_activation_bytes(c, 1) for c in configs]
    assert np.argsort(estimates).tolist() == np.argsort(graphs).tolist()
