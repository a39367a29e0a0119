from __future__ import annotations

import pytest
import timm
import torch
from torch.overrides import TorchFunctionMode

import evit
from evit.config import ModelConfig, StageConfig
from tests.conftest import VARIANTS, max_rel_error, randomize, tiny_config


@pytest.mark.parametrize("name", VARIANTS)
def test_parity_with_timm(name, tmp_path):
    reference = randomize(timm.create_model(name), seed=1).eval()
    path = tmp_path / "timm.pth"
    torch.save(reference.state_dict(), path)
    model = evit.create_model(name, weights=path).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(x)
        assert max_rel_error(model(x), expected) == 0.0  # the same operations, bit for bit
        assert max_rel_error(evit.fuse(model)(x), expected) <= 1e-5


@pytest.mark.parametrize("window", [3, 4, 5])
def test_padded_windows_match_timm(window, tmp_path):
    """Windows that do not tile the feature map are zero-padded exactly as in timm."""
    kwargs = dict(
        img_size=224,
        embed_dim=[32, 48],
        depth=[1, 1],
        num_heads=[2, 2],
        key_dim=[8, 8],
        window_size=[window, window],
        kernels=[3, 5],
        down_ops=(("", 1), ("subsample", 2)),
    )
    reference = randomize(timm.models.efficientvit_msra.EfficientVitMsra(**kwargs)).eval()
    path = tmp_path / "timm.pth"
    torch.save(reference.state_dict(), path)
    stages = tuple(
        StageConfig(
            embed_dim=d, depth=1, num_heads=2, key_dim=8, window_size=window, kernel_sizes=(3, 5)
        )
        for d in (32, 48)
    )
    model = evit.create_model(ModelConfig("padded", stages), weights=path).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert max_rel_error(model(x), reference(x)) <= 1e-6  # padding: another summation order


def test_any_stage_count_builds_and_runs():
    stages = tuple(
        StageConfig(
            embed_dim=16 * (i + 1),
            depth=1 + i % 2,
            num_heads=2,
            key_dim=4,
            window_size=2,
            kernel_sizes=(3, 3),
        )
        for i in range(4)
    )
    model = evit.create_model(ModelConfig("four", stages, img_size=128, num_classes=7)).eval()
    assert model(torch.randn(1, 3, 128, 128)).shape == (1, 7)


def test_feature_extractor_without_head():
    model = evit.create_model(tiny_config(num_classes=0)).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 24)


def test_fused_equals_unfused_and_leaves_input_untouched(tiny_model):
    x = torch.randn(3, 3, 64, 64)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    fused = evit.fuse(tiny_model)
    with torch.no_grad():
        assert max_rel_error(fused(x), tiny_model(x)) <= 1e-5
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert fused is not tiny_model


def _flat(items):
    for item in items:
        yield from _flat(item) if isinstance(item, (tuple, list)) else (item,)


class _RecordCalls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name == "__getitem__" and any(isinstance(a, torch.Tensor) for a in _flat(args[1:])):
            name = "gather"  # indexing with a tensor: what the attention-bias lookup does
        self.names.append(name)
        return func(*args, **(kwargs or {}))


def test_fused_forward_has_no_gather_and_no_scale_multiply(tiny_model):
    fused = evit.fuse(tiny_model)
    with torch.no_grad(), _RecordCalls() as calls:
        fused(torch.randn(1, 3, 64, 64))
    assert "batch_norm" not in calls.names
    assert "gather" not in calls.names
    # the only multiplies left are the squeeze-excite gates, one per downsample
    merges = sum(isinstance(m, evit.model.PatchMerging) for m in fused.modules())
    assert calls.names.count("mul") == merges == 1


def test_a_fused_head_runs_two_convs_one_split_and_one_reshape_for_q_k_v(tiny_model):
    """Q's depthwise conv runs over the whole qkv tensor (identity on K and V), so one Reshape
    flattens all three: fewer, larger ops for the runtimes (docs/benchmarks.md §15)."""
    from evit.fusion import FusedAttentionHead

    head = next(m for m in evit.fuse(tiny_model).modules() if isinstance(m, FusedAttentionHead))
    x = torch.randn(1, head.qkv.in_channels, head.resolution, head.resolution)
    with torch.no_grad(), _RecordCalls() as calls:
        head(x)
    assert calls.names.count("conv2d") == 2
    assert calls.names.count("split") == 1 and calls.names.count("reshape") == 1
    assert torch.all(head.dw.bias[head.key_dim :] == 0)  # K and V pass unchanged
    narrow = evit.fuse(tiny_model, wide_query_conv=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_rel_error(evit.fuse(tiny_model)(x), narrow(x)) <= 1e-6  # the same numbers


def test_unfused_forward_gathers_biases_and_scales(tiny_model):
    """The counterpart of the test above, so that it cannot pass vacuously."""
    with torch.no_grad(), _RecordCalls() as calls:
        tiny_model(torch.randn(1, 3, 64, 64))
    assert "gather" in calls.names
    assert calls.names.count("mul") > 1


def test_backward_reaches_every_parameter(tiny):
    model = randomize(evit.create_model(tiny)).train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_fuse_rejects_other_modules():
    with pytest.raises(TypeError, match="EfficientViT"):
        evit.fuse(torch.nn.Linear(2, 2))
