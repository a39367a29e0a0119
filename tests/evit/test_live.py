"""Live weights for numeric checks (``evit.live``)."""

from __future__ import annotations

import torch

import evit
from evit.live import dead_branches, live_copy, live_model
from tests.conftest import tiny_config


def test_a_live_model_is_the_same_network_on_every_call_and_leaves_torchs_generator_alone():
    """``--target auto`` checks its int8 paths on ``live_model(M0, 0)``: a network drawn anew on
    every run made the check's outcome differ between runs (its quantization's own error read
    0.28-0.91 over the tiny config's seeds, benchmarks/bench_deployed_check.py --tiny)."""
    config = tiny_config()
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a, b = live_model(config, seed=0), live_model(config, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not a.training and dead_branches(a) == []
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    key = "patch_embed.conv1.conv.weight"
    assert not torch.equal(live_model(config, seed=1).state_dict()[key], a.state_dict()[key])
    # live_copy alone keeps the weights it is given: two fresh models give two networks
    fresh = [live_copy(evit.create_model(config).eval()).state_dict()[key] for _ in range(2)]
    assert not torch.equal(*fresh)
