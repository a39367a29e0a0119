"""EfficientViT: Memory Efficient Vision Transformer with Cascaded Group Attention.

Paper: Liu, Peng, Zheng, Yang, Hu, Yuan, CVPR 2023 (arXiv 2305.07027).
Reference code: microsoft/Cream (EfficientViT/classification/model/efficientvit.py) and timm's
rewrite (timm/models/efficientvit_msra.py). Module names follow timm's layout so that timm and
official checkpoints map onto this model by renaming keys alone (see ``evit.weights``).

Deliberate deviations from the reference code:
- Any number of stages, and per-stage q-dwconv kernels and FFN ratios (the reference shares one
  kernel list and ratio 2 across stages); M0-M5 are the special case of their YAML configs.
- A residual branch is held as ``Residual.branch`` (timm: ``.m``).
- No attention-bias cache inside ``forward``/``train()``: the bias gather runs every call here and
  is removed once, explicitly, by ``evit.fuse``.

Layers are listed leaf to root: conv/linear with norm, FFN, attention, blocks, stage, model.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from evit.config import ModelConfig, StageConfig


class ConvNorm(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_chs)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)


class NormLinear(nn.Sequential):
    """BatchNorm1d followed by Linear: the classifier head."""

    def __init__(self, in_features: int, out_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.drop = nn.Dropout(drop)
        self.linear = nn.Linear(in_features, out_features)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)


class Residual(nn.Module):
    """``x + branch(x)``, with optional stochastic depth while training."""

    def __init__(self, branch: nn.Module, drop: float = 0.0) -> None:
        super().__init__()
        self.branch = branch
        self.drop = drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop > 0:
            keep = torch.rand(x.size(0), 1, 1, 1, device=x.device).ge_(self.drop)
            return x + self.branch(x) * keep.div(1 - self.drop)
        return x + self.branch(x)


class ConvMlp(nn.Module):
    """FFN of 1x1 convolutions: expand, ReLU, project (the projection's BN starts at 0)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.pw1 = ConvNorm(dim, hidden_dim)
        self.act = nn.ReLU()
        self.pw2 = ConvNorm(hidden_dim, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.act(self.pw1(x)))


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor`` (timm's rule with ``round_limit=0``)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """Channel gating: global mean -> 1x1 reduce -> ReLU -> 1x1 expand -> sigmoid."""

    def __init__(self, channels: int, rd_ratio: float = 0.25) -> None:
        super().__init__()
        rd_channels = make_divisible(channels * rd_ratio)
        self.fc1 = nn.Conv2d(channels, rd_channels, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(rd_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))  # (B, C, 1, 1)
        return x * gate.sigmoid()


class PatchMerging(nn.Module):
    """Downsampling by 2: 1x1 expand x4, ReLU, 3x3 stride-2 depthwise, ReLU, SE, 1x1 project."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        hidden_dim = 4 * dim
        self.conv1 = ConvNorm(dim, hidden_dim)
        self.act = nn.ReLU()
        self.conv2 = ConvNorm(hidden_dim, hidden_dim, 3, stride=2, groups=hidden_dim)
        self.se = SqueezeExcite(hidden_dim, 0.25)
        self.conv3 = ConvNorm(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))  # (B, 4C, H, W)
        x = self.act(self.conv2(x))  # (B, 4C, H/2, W/2)
        return self.conv3(self.se(x))  # (B, C', H/2, W/2)


def attention_bias_index(resolution: int) -> torch.Tensor:
    """(N, N) index of the relative offset (|dy|, |dx|) between every pair of window tokens."""
    points = list(itertools.product(range(resolution), range(resolution)))
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(offset, len(offsets)))
    n = len(points)
    return torch.tensor(idxs, dtype=torch.long).view(n, n)


class CascadedGroupAttention(nn.Module):
    """Cascaded group attention over one window of ``resolution`` x ``resolution`` tokens.

    Head i sees its own channel split plus the output of head i-1; Q passes a depthwise conv.
    Attention logits get a learned bias per relative offset.
    """

    def __init__(
        self,
        dim: int,
        key_dim: int,
        num_heads: int,
        value_dim: int,
        resolution: int,
        kernel_sizes: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.scale = key_dim**-0.5
        self.resolution = resolution
        self.qkvs = nn.ModuleList(
            ConvNorm(dim // num_heads, 2 * key_dim + value_dim) for _ in range(num_heads)
        )
        self.dws = nn.ModuleList(
            ConvNorm(key_dim, key_dim, kernel_sizes[i], groups=key_dim) for i in range(num_heads)
        )
        self.proj = nn.Sequential(
            nn.ReLU(), ConvNorm(value_dim * num_heads, dim, bn_weight_init=0.0)
        )
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self.register_buffer(
            "attention_bias_idxs", attention_bias_index(resolution), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, N, N)
        splits = x.chunk(self.num_heads, dim=1)  # heads x (B, C/heads, H, W)
        outputs = []
        feat = splits[0]
        for i, (qkv, dw) in enumerate(zip(self.qkvs, self.dws)):
            if i > 0:
                feat = feat + splits[i]
            q, k, v = qkv(feat).split([self.key_dim, self.key_dim, self.value_dim], dim=1)
            q = dw(q)
            q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)  # (B, d, N)
            attn = (q * self.scale).transpose(-2, -1) @ k  # (B, N, N)
            attn = (attn + bias[i]).softmax(dim=-1)
            feat = (v @ attn.transpose(-2, -1)).view(
                -1, self.value_dim, self.resolution, self.resolution
            )
            outputs.append(feat)
        return self.proj(torch.cat(outputs, dim=1))  # (B, C, H, W)


def window_partition(x: torch.Tensor, channels: int, resolution: int, window: int) -> torch.Tensor:
    """(B, C, R, R) -> (B*n*n, C, w, w), zero-padding R up to n*w.

    Sizes are Python ints fixed by the config, so exported graphs hold constant shapes.
    """
    n = -(-resolution // window)
    pad = n * window - resolution
    if pad:
        x = F.pad(x, (0, pad, 0, pad))
    x = x.view(-1, channels, n, window, n, window).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(-1, channels, window, window)


def window_reverse(x: torch.Tensor, channels: int, resolution: int, window: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B*n*n, C, w, w) -> (B, C, R, R)."""
    n = -(-resolution // window)
    x = x.view(-1, n, n, channels, window, window).permute(0, 3, 1, 4, 2, 5)
    x = x.reshape(-1, channels, n * window, n * window)
    if n * window != resolution:
        x = x[:, :, :resolution, :resolution]
    return x.contiguous()


class LocalWindowAttention(nn.Module):
    """Attention inside non-overlapping windows; the window is clipped to the feature size."""

    def __init__(self, dim: int, stage: StageConfig, resolution: int) -> None:
        super().__init__()
        self.dim = dim
        self.resolution = resolution
        self.window = min(stage.window_size, resolution)
        self.attn: nn.Module = CascadedGroupAttention(
            dim, stage.key_dim, stage.num_heads, stage.value_dim, self.window, stage.kernel_sizes
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resolution == self.window:
            return self.attn(x)
        windows = window_partition(x, self.dim, self.resolution, self.window)  # (B*nW, C, w, w)
        return window_reverse(self.attn(windows), self.dim, self.resolution, self.window)


def residual_dwconv(dim: int, bn_weight_init: float = 1.0) -> Residual:
    """``x + BN(DWConv3x3(x))``: the token interaction layer."""
    return Residual(ConvNorm(dim, dim, 3, groups=dim, bn_weight_init=bn_weight_init))


class EfficientVitBlock(nn.Module):
    """The sandwich: DWConv, FFN, cascaded group attention, DWConv, FFN, each residual."""

    def __init__(self, stage: StageConfig, resolution: int) -> None:
        super().__init__()
        dim = stage.embed_dim
        self.dw0 = residual_dwconv(dim, bn_weight_init=0.0)
        self.ffn0 = Residual(ConvMlp(dim, stage.ffn_dim))
        self.mixer = Residual(LocalWindowAttention(dim, stage, resolution))
        self.dw1 = residual_dwconv(dim, bn_weight_init=0.0)
        self.ffn1 = Residual(ConvMlp(dim, stage.ffn_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ffn0(self.dw0(x))
        x = self.mixer(x)
        return self.ffn1(self.dw1(x))


class Subsample(nn.Sequential):
    """Between stages: [DWConv, FFN] at the old width, PatchMerging, [DWConv, FFN] at the new."""

    def __init__(self, prev: StageConfig, stage: StageConfig) -> None:
        super().__init__()
        self.res1 = nn.Sequential(
            residual_dwconv(prev.embed_dim), Residual(ConvMlp(prev.embed_dim, prev.ffn_dim))
        )
        self.patchmerge = PatchMerging(prev.embed_dim, stage.embed_dim)
        self.res2 = nn.Sequential(
            residual_dwconv(stage.embed_dim), Residual(ConvMlp(stage.embed_dim, stage.ffn_dim))
        )


class EfficientVitStage(nn.Module):
    def __init__(self, stage: StageConfig, prev: StageConfig | None, resolution: int) -> None:
        super().__init__()
        self.downsample = Subsample(prev, stage) if prev is not None else nn.Identity()
        self.blocks = nn.Sequential(
            *(EfficientVitBlock(stage, resolution) for _ in range(stage.depth))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class PatchEmbedding(nn.Sequential):
    """Stem: four 3x3 stride-2 ConvNorms (C/8, C/4, C/2, C) with ReLU between."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(in_chans, dim // 8, 3, stride=2)
        self.relu1 = nn.ReLU()
        self.conv2 = ConvNorm(dim // 8, dim // 4, 3, stride=2)
        self.relu2 = nn.ReLU()
        self.conv3 = ConvNorm(dim // 4, dim // 2, 3, stride=2)
        self.relu3 = nn.ReLU()
        self.conv4 = ConvNorm(dim // 2, dim, 3, stride=2)


class EfficientViT(nn.Module):
    """EfficientViT classifier built from a :class:`~evit.config.ModelConfig`.

    Example:
        >>> from evit.config import load_config
        >>> model = EfficientViT(load_config("m0")).eval()
        >>> model(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
    """

    def __init__(
        self, config: ModelConfig, drop_rate: float = 0.0, drop_path_rate: float = 0.0
    ) -> None:
        super().__init__()
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate={drop_path_rate}: must be in [0, 1)")
        config.validate()
        self.config = config
        self.patch_embed = PatchEmbedding(config.in_chans, config.stages[0].embed_dim)
        resolutions = config.stage_resolutions()
        self.stages = nn.Sequential(
            *(
                EfficientVitStage(stage, config.stages[i - 1] if i > 0 else None, resolutions[i])
                for i, stage in enumerate(config.stages)
            )
        )
        self.set_drop_path(drop_path_rate)
        self.num_features = config.stages[-1].embed_dim
        self.drop_rate = drop_rate
        self.head: nn.Module = (
            NormLinear(self.num_features, config.num_classes, drop_rate)
            if config.num_classes > 0
            else nn.Identity()
        )

    def set_drop_path(self, rate: float) -> None:
        """Stochastic depth on every residual of the stages' blocks, rising linearly to ``rate``.

        The downsampling residuals keep their full depth (as in DeiT/LeViT-style schedules,
        which drop only inside the repeated blocks).
        """
        residuals = [
            m for stage in self.stages for m in stage.blocks.modules() if isinstance(m, Residual)
        ]
        for i, residual in enumerate(residuals):
            residual.drop = rate * i / max(len(residuals) - 1, 1)

    def no_weight_decay(self) -> set[str]:
        """Parameter names kept out of weight decay besides norms and biases (timm's hook)."""
        return {name for name, _ in self.named_parameters() if name.endswith("attention_biases")}

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialized one for ``num_classes`` outputs."""
        self.config = self.config.replace(num_classes=num_classes)
        self.head = (
            NormLinear(self.num_features, num_classes, self.drop_rate)
            if num_classes > 0
            else nn.Identity()
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, C0, H/16, W/16)
        return self.stages(x)  # (B, C_last, H/64 rounded up, ...)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean((2, 3)))  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
