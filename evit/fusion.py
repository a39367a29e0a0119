"""Deploy transform: ``fuse(model)`` returns a new, inference-only module.

What changes, all computed once here so that eager PyTorch, ONNX and TensorRT see one graph:
- every BatchNorm is folded into the conv or linear before it;
- a residual depthwise conv ``x + BN(DWConv(x))`` becomes one depthwise conv (identity added to
  the kernel centre), removing the add;
- the relative-position attention biases are gathered into one constant (N, N) table per head
  (no Gather in the graph);
- the attention scale ``key_dim ** -0.5`` is folded into the query's depthwise conv, which
  runs on q, k and v together (identity on k and v) so that one Reshape flattens all three.

:data:`GRAPH_VERSION` names the form of the deployed graph: latencies measured on one form are
not those of another (the search keys its measurement cache by it).

Example:
    >>> import torch, evit
    >>> model = evit.create_model("m0").eval()
    >>> deployed = evit.fuse(model)
    >>> x = torch.randn(1, 3, 224, 224)
    >>> bool(torch.allclose(model(x), deployed(x), rtol=1e-4, atol=1e-4))
    True
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from evit.model import (
    CascadedGroupAttention,
    ConvMlp,
    ConvNorm,
    EfficientViT,
    NormLinear,
    Residual,
)

# 2: Q's depthwise conv over the whole qkv tensor (1: over q alone)
GRAPH_VERSION = 2


@torch.no_grad()
def fuse_conv_norm(module: ConvNorm) -> nn.Conv2d:
    """Fold the BN of a :class:`ConvNorm` into a biased Conv2d."""
    conv, bn = module.conv, module.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    fused.weight.copy_(conv.weight * scale[:, None, None, None])
    fused.bias.copy_(bn.bias - bn.running_mean * scale)
    return fused


@torch.no_grad()
def fuse_norm_linear(module: NormLinear) -> nn.Linear:
    """Fold the BN1d in front of a linear layer into that layer."""
    bn, linear = module.bn, module.linear
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    fused = nn.Linear(
        linear.in_features,
        linear.out_features,
        device=linear.weight.device,
        dtype=linear.weight.dtype,
    )
    fused.weight.copy_(linear.weight * scale[None, :])
    fused.bias.copy_(linear.bias + linear.weight @ shift)
    return fused


@torch.no_grad()
def fuse_residual_dwconv(module: Residual) -> nn.Conv2d:
    """``x + DWConvBN(x)`` as one depthwise conv: add 1 at each kernel's centre."""
    conv = fuse_conv_norm(module.branch)
    k = conv.kernel_size[0]
    conv.weight[:, 0, k // 2, k // 2] += 1.0
    return conv


def _is_residual_dwconv(module: nn.Module) -> bool:
    if not isinstance(module, Residual) or not isinstance(module.branch, ConvNorm):
        return False
    conv = module.branch.conv
    return (
        conv.groups == conv.in_channels == conv.out_channels
        and conv.stride == (1, 1)
        and conv.kernel_size[0] % 2 == 1
        and conv.kernel_size[0] == conv.kernel_size[1]
    )


class FusedFFN(nn.Module):
    """``x + pw2(relu(pw1(x)))`` with both BNs folded."""

    def __init__(self, mlp: ConvMlp) -> None:
        super().__init__()
        self.pw1 = fuse_conv_norm(mlp.pw1)
        self.act = nn.ReLU()
        self.pw2 = fuse_conv_norm(mlp.pw2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw2(self.act(self.pw1(x)))


class FusedAttentionHead(nn.Module):
    """One head with folded BN, the scale folded into Q's conv, and a constant bias table.

    ``wide_query_conv``: Q's depthwise conv runs on the whole qkv tensor, with identity kernels
    on K's and V's channels (exact: a 1 at the centre, 0 elsewhere, no bias), so that q, k and
    v are flattened by one Reshape after one Split, instead of a Split, a conv on q and three
    Reshapes. Measured against the conv on q alone (docs/benchmarks.md §15): OpenVINO fp32,
    bf16 and int8 4-26 % and ONNX Runtime fp32 0-3 % faster; ONNX Runtime's int8 graph 1-3 %
    slower. ``wide_query_conv=False`` builds the conv on q alone (the previous form).
    """

    def __init__(
        self, attn: CascadedGroupAttention, index: int, wide_query_conv: bool = True
    ) -> None:
        super().__init__()
        self.key_dim, self.value_dim = attn.key_dim, attn.value_dim
        self.resolution = attn.resolution
        self.wide_query_conv = wide_query_conv
        self.qkv = fuse_conv_norm(attn.qkvs[index])
        query = fuse_conv_norm(attn.dws[index])
        with torch.no_grad():
            query.weight.mul_(attn.scale)
            query.bias.mul_(attn.scale)
            bias = attn.attention_biases[index, attn.attention_bias_idxs].detach().clone()
        self.register_buffer("attention_bias", bias)  # (N, N)
        self.dw = _widened(query, 2 * self.key_dim + self.value_dim) if wide_query_conv else query

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kd, vd, n = self.key_dim, self.value_dim, self.resolution * self.resolution
        if self.wide_query_conv:
            qkv = self.dw(self.qkv(x)).reshape(-1, 2 * kd + vd, n)
            q, k, v = qkv.split([kd, kd, vd], dim=1)  # q already scaled
        else:
            q, k, v = self.qkv(x).split([kd, kd, vd], dim=1)
            q = self.dw(q).reshape(-1, kd, n)  # (B, kd, N), already scaled
            k = k.reshape(-1, kd, n)
            v = v.reshape(-1, vd, n)
        attn = q.transpose(1, 2) @ k + self.attention_bias  # (B, N, N)
        attn = attn.softmax(dim=-1)
        out = v @ attn.transpose(1, 2)  # (B, vd, N)
        return out.view(-1, vd, self.resolution, self.resolution)


@torch.no_grad()
def _widened(query: nn.Conv2d, channels: int) -> nn.Conv2d:
    """``query``'s depthwise conv over ``channels`` channels: identity past its own."""
    k = query.kernel_size[0]
    wide = nn.Conv2d(
        channels,
        channels,
        k,
        padding=query.padding,
        groups=channels,
        device=query.weight.device,
        dtype=query.weight.dtype,
    )
    wide.weight.zero_()
    wide.bias.zero_()
    own = query.out_channels
    wide.weight[:own].copy_(query.weight)
    wide.bias[:own].copy_(query.bias)
    wide.weight[own:, 0, k // 2, k // 2] = 1.0
    return wide


class FusedCascadedGroupAttention(nn.Module):
    def __init__(self, attn: CascadedGroupAttention, wide_query_conv: bool = True) -> None:
        super().__init__()
        self.head_dim = attn.qkvs[0].conv.in_channels
        self.heads = nn.ModuleList(
            FusedAttentionHead(attn, i, wide_query_conv) for i in range(attn.num_heads)
        )
        self.act = nn.ReLU()
        self.proj = fuse_conv_norm(attn.proj[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        splits = x.split(self.head_dim, dim=1)  # heads x (B, C/heads, w, w)
        outputs = []
        feat = splits[0]
        for i, head in enumerate(self.heads):
            if i > 0:
                feat = feat + splits[i]
            feat = head(feat)
            outputs.append(feat)
        return self.proj(self.act(torch.cat(outputs, dim=1)))


def _fuse_children(module: nn.Module, wide_query_conv: bool) -> None:
    for name, child in module.named_children():
        if _is_residual_dwconv(child):
            replacement: nn.Module = fuse_residual_dwconv(child)
        elif isinstance(child, Residual) and isinstance(child.branch, ConvMlp):
            replacement = FusedFFN(child.branch)
        elif isinstance(child, ConvNorm):
            replacement = fuse_conv_norm(child)
        elif isinstance(child, NormLinear):
            replacement = fuse_norm_linear(child)
        elif isinstance(child, CascadedGroupAttention):
            replacement = FusedCascadedGroupAttention(child, wide_query_conv)
        else:
            _fuse_children(child, wide_query_conv)
            continue
        setattr(module, name, replacement)


def fuse(model: EfficientViT, wide_query_conv: bool = True) -> EfficientViT:
    """Return a fused, eval-mode copy of ``model``; ``model`` itself is left unchanged.

    ``wide_query_conv=False`` keeps Q's depthwise conv on q alone, the previous form (see
    :class:`FusedAttentionHead`)."""
    if not isinstance(model, EfficientViT):
        raise TypeError(f"fuse expects an evit EfficientViT, got {type(model).__name__}")
    fused = copy.deepcopy(model).eval()
    _fuse_children(fused, wide_query_conv)
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused
