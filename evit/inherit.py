"""Weight inheritance: initialize any config from a checkpoint of another config.

The source may be official M-weights, timm's, or this project's. Tensors are matched by name
(the layouts are the same, so leading stages, blocks and heads keep their names) and cut to the
target's shape by the role of each dimension:

- a stage's embedding channels: when the target's heads split into chunks no wider than the
  source's, the leading channels *of each head's chunk* are kept (so every head still sees the
  channels it was trained on, and the cascade's value-into-next-chunk sum stays aligned);
  otherwise the leading channels;
- Q/K/V of a head: the leading key channels of Q and of K, and the leading value channels,
  each taken from its own block of the fused projection;
- the projection after attention: the leading value channels of each head;
- depthwise kernels of another size: the centre of the larger kernel;
- attention-bias tables (one entry per relative offset (dy, dx) inside a window): the offsets
  both windows share are copied, offsets only the larger target window has repeat the nearest
  edge, so a bias keeps meaning the same pixel distance;
- everything else: the leading entries.

Blocks, heads or stages the source lacks, and a classifier for another class count, stay at
their initialization. :class:`InheritReport` counts what was copied whole, sliced, resized or
left at init.

Example:
    >>> import evit
    >>> teacher = evit.create_model("m1")
    >>> child = evit.create_model("m0", num_classes=10)
    >>> report = inherit_state_dict(child, teacher.state_dict(), teacher.config)
    >>> report.initialized
    ['head.linear.bias', 'head.linear.weight']
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from evit.config import ModelConfig
from evit.model import EfficientViT
from evit.weights import load_state_dict_file

log = logging.getLogger(__name__)


@dataclass
class InheritReport:
    """Target tensor names by what happened to them."""

    copied: list[str] = field(default_factory=list)  # same shape
    sliced: list[str] = field(default_factory=list)  # cut from a larger source tensor
    resized: list[str] = field(default_factory=list)  # partly copied, rest at init/edge values
    initialized: list[str] = field(default_factory=list)  # no source tensor

    def summary(self) -> str:
        return (
            f"{len(self.copied)} tensors copied whole, {len(self.sliced)} sliced, "
            f"{len(self.resized)} resized, {len(self.initialized)} left at init"
        )


@dataclass(frozen=True)
class _Stage:
    embed_dim: int
    num_heads: int
    key_dim: int

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


def inherit_weights(
    model: EfficientViT, source: str | os.PathLike, *, ema: bool = False
) -> InheritReport:
    """Initialize ``model`` in place from the checkpoint file ``source`` (any format)."""
    sd, config, _ = load_state_dict_file(source, ema=ema)
    try:
        return inherit_state_dict(model, sd, config)
    except ValueError as e:
        raise ValueError(f"--init {source}: {e}") from None


def inherit_state_dict(
    model: EfficientViT,
    source: dict[str, torch.Tensor],
    source_config: ModelConfig | None = None,
) -> InheritReport:
    """Initialize ``model`` in place from a state dict in this project's key layout.

    Args:
        model: the target; keeps its own initialization where the source has nothing.
        source: state dict (as returned by ``evit.weights.load_state_dict_file``).
        source_config: the source's config when known; otherwise read from tensor shapes.

    Raises:
        ValueError: the source shares no tensor with the target (not an EfficientViT).
    """
    src_stages = (
        [_Stage(s.embed_dim, s.num_heads, s.key_dim) for s in source_config.stages]
        if source_config is not None
        else _stages_from_shapes(source)
    )
    dst_stages = [_Stage(s.embed_dim, s.num_heads, s.key_dim) for s in model.config.stages]
    plan = _Plan(src_stages, dst_stages, source)
    same_stage_count = len(src_stages) == len(dst_stages)
    report = InheritReport()
    target = model.state_dict()
    new_state = {}
    for key, init in target.items():
        value = source.get(key)
        if value is None or (key.startswith("head.") and not same_stage_count):
            report.initialized.append(key)
            continue
        if value.dim() == 2 and init.dim() == 4 and init.shape[2:] == (1, 1):
            value = value[:, :, None, None]  # official files store some 1x1 convs as 2-D
        if key.startswith("head.linear.") and value.shape[0] != init.shape[0]:
            report.initialized.append(key)  # another class count: a fresh classifier
            continue
        if value.shape == init.shape:
            new_state[key] = value.to(init.dtype)
            report.copied.append(key)
            continue
        if value.dim() != init.dim():
            raise ValueError(
                f"tensor {key}: source shape {tuple(value.shape)} cannot be inherited into "
                f"{tuple(init.shape)} (different number of dimensions)"
            )
        out, whole = plan.transfer(key, value, init.clone())
        new_state[key] = out
        (report.sliced if whole else report.resized).append(key)
    if not report.copied and not report.sliced and not report.resized:
        raise ValueError("no tensor matches the target model; is it an EfficientViT checkpoint?")
    model.load_state_dict({**target, **new_state})
    report.initialized.sort()
    return report


def _stages_from_shapes(sd: dict[str, torch.Tensor]) -> list[_Stage]:
    stages = []
    s = 0
    while f"stages.{s}.blocks.0.dw0.branch.conv.weight" in sd:
        prefix = f"stages.{s}.blocks.0.mixer.branch.attn."
        heads = sum(
            1 for k in sd if re.fullmatch(re.escape(prefix) + r"qkvs\.\d+\.conv\.weight", k)
        )
        embed = sd[f"stages.{s}.blocks.0.dw0.branch.conv.weight"].shape[0]
        key_dim = sd[prefix + "dws.0.conv.weight"].shape[0]
        stages.append(_Stage(embed, heads, key_dim))
        s += 1
    return stages


class _Plan:
    """Which source entries go where, dimension by dimension."""

    def __init__(
        self, src: list[_Stage], dst: list[_Stage], source: dict[str, torch.Tensor]
    ) -> None:
        self.src, self.dst, self.source = src, dst, source

    def transfer(
        self, key: str, value: torch.Tensor, init: torch.Tensor
    ) -> tuple[torch.Tensor, bool]:
        """Copy the matching part of ``value`` into ``init``; True when ``init`` is all filled."""
        if key.endswith("attention_biases"):
            return self._bias_table(key, value, init)
        whole = True
        index_src, index_dst = [], []
        for dim in range(init.dim()):
            s_idx, d_idx = self._dim_map(key, dim, value.shape[dim], init.shape[dim])
            whole &= len(d_idx) == init.shape[dim]
            index_src.append(s_idx)
            index_dst.append(d_idx)
        part = value
        for dim, idx in enumerate(index_src):
            part = part.index_select(dim, idx)
        out = init
        grid = torch.meshgrid(*index_dst, indexing="ij") if index_dst else ()
        out[grid] = part.to(out.dtype)
        return out, whole

    def _dim_map(
        self, key: str, dim: int, n_src: int, n_dst: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(source positions, target positions) along one dimension."""
        stage = _stage_of(key)
        role = _role(key, dim)
        if role == "embed" and stage is not None and stage < min(len(self.src), len(self.dst)):
            return self._embed(stage, n_src, n_dst)
        if role == "qkv" and stage is not None:
            s, d = self.src[stage], self.dst[stage]
            return _blocks([d.key_dim, d.key_dim, d.head_dim], [s.key_dim, s.key_dim, s.head_dim])
        if role == "proj_in" and stage is not None:
            s, d = self.src[stage], self.dst[stage]
            heads = min(s.num_heads, d.num_heads)
            return _blocks([d.head_dim] * heads, [s.head_dim] * heads)
        group = _hidden_group(key, dim)
        if group is not None and n_dst < n_src:
            return self._most_important(group, n_dst), torch.arange(n_dst)
        if role == "spatial":
            n = min(n_src, n_dst)
            return torch.arange(n) + (n_src - n) // 2, torch.arange(n) + (n_dst - n) // 2
        n = min(n_src, n_dst)
        return torch.arange(n), torch.arange(n)

    def _most_important(self, bn_prefix: str, n: int) -> torch.Tensor:
        """The ``n`` channels with the largest BN scale |gamma| / sigma, in their order.

        A hidden layer's channels (stem, FFN, patch merging) mean nothing by position, so the
        ones the source weighs most are kept (the BN-scale criterion of network slimming).
        """
        gamma = self.source[f"{bn_prefix}.weight"]
        sigma = (self.source[f"{bn_prefix}.running_var"] + 1e-5).sqrt()
        return (gamma.abs() / sigma).topk(n).indices.sort().values

    def _embed(self, stage: int, n_src: int, n_dst: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, d = self.src[stage], self.dst[stage]
        if (s.embed_dim, d.embed_dim) == (n_src, n_dst) and (
            d.num_heads <= s.num_heads and d.head_dim <= s.head_dim
        ):
            src = torch.cat([torch.arange(d.head_dim) + i * s.head_dim for i in range(d.num_heads)])
            return src, torch.arange(n_dst)
        n = min(n_src, n_dst)
        return torch.arange(n), torch.arange(n)

    def _bias_table(
        self, key: str, value: torch.Tensor, init: torch.Tensor
    ) -> tuple[torch.Tensor, bool]:
        """(heads, w*w) tables indexed by offset dy*w + dx: crop, or extend by the edge."""
        heads = min(value.shape[0], init.shape[0])
        ws, wd = round(value.shape[1] ** 0.5), round(init.shape[1] ** 0.5)
        table = value[:heads].reshape(heads, ws, ws)
        if wd <= ws:
            table = table[:, :wd, :wd]
        else:
            table = F.pad(table[None], (0, wd - ws, 0, wd - ws), mode="replicate")[0]
        out = init
        out[:heads] = table.reshape(heads, wd * wd).to(out.dtype)
        return out, heads == init.shape[0] and wd <= ws


def _blocks(dst_sizes: list[int], src_sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading entries of each consecutive block (e.g. Q | K | V), in both layouts."""
    src, dst = [], []
    s_off = d_off = 0
    for d_size, s_size in zip(dst_sizes, src_sizes):
        n = min(d_size, s_size)
        src.append(torch.arange(n) + s_off)
        dst.append(torch.arange(n) + d_off)
        s_off += s_size
        d_off += d_size
    return torch.cat(src), torch.cat(dst)


_STAGE = re.compile(r"stages\.(\d+)\.")


def _stage_of(key: str) -> int | None:
    """The stage whose embedding a tensor's channels belong to (-1: the last stage)."""
    if key.startswith("patch_embed.conv4."):
        return 0
    if key.startswith("head."):
        return -1
    m = _STAGE.match(key)
    if m is None:
        return None
    stage = int(m.group(1))
    if ".downsample.res1." in key or ".patchmerge.conv1." in key:
        return stage - 1
    return stage


_BN = r"bn\.(weight|bias|running_mean|running_var)"
_ROLES: list[tuple[re.Pattern, dict[int, str]]] = [
    (re.compile(r"patch_embed\.conv4\.(conv\.weight|" + _BN + ")$"), {0: "embed"}),
    (re.compile(r"head\." + _BN + "$"), {0: "embed"}),
    (re.compile(r"head\.linear\.weight$"), {1: "embed"}),
    (re.compile(r"(dw0|dw1|res1\.0|res2\.0)\.branch\.(conv\.weight|" + _BN + ")$"), {0: "embed"}),
    (re.compile(r"branch\.pw1\.conv\.weight$"), {1: "embed"}),
    (re.compile(r"branch\.pw2\.(conv\.weight|" + _BN + ")$"), {0: "embed"}),
    (re.compile(r"attn\.proj\.1\.conv\.weight$"), {0: "embed", 1: "proj_in"}),
    (re.compile(r"attn\.proj\.1\." + _BN + "$"), {0: "embed"}),
    (re.compile(r"attn\.qkvs\.\d+\.(conv\.weight|" + _BN + ")$"), {0: "qkv"}),
    (re.compile(r"attn\.dws\.\d+\.conv\.weight$"), {2: "spatial", 3: "spatial"}),
    (re.compile(r"patchmerge\.conv1\.conv\.weight$"), {1: "embed"}),
    (re.compile(r"patchmerge\.conv3\.(conv\.weight|" + _BN + ")$"), {0: "embed"}),
]


_HIDDEN: list[tuple[re.Pattern, int, str]] = [
    # (tensor, dimension, BN that scales those channels): the groups of a hidden layer
    (re.compile(r"^(patch_embed)\.conv([123])\.(conv\.weight|" + _BN + ")$"), 0, "out"),
    (re.compile(r"^(patch_embed)\.conv([234])\.conv\.weight$"), 1, "in"),
    (re.compile(r"^(.*\.branch)\.pw1\.(conv\.weight|" + _BN + ")$"), 0, "ffn"),
    (re.compile(r"^(.*\.branch)\.pw2\.conv\.weight$"), 1, "ffn"),
    (re.compile(r"^(.*\.patchmerge)\.(conv1|conv2)\.(conv\.weight|" + _BN + ")$"), 0, "pm"),
    (re.compile(r"^(.*\.patchmerge)\.se\.fc1\.weight$"), 1, "pm"),
    (re.compile(r"^(.*\.patchmerge)\.se\.fc2\.(weight|bias)$"), 0, "pm"),
    (re.compile(r"^(.*\.patchmerge)\.conv3\.conv\.weight$"), 1, "pm"),
]


def _hidden_group(key: str, dim: int) -> str | None:
    """The BN prefix whose scales rank the channels of ``key``'s ``dim``, if hidden."""
    for pattern, d, kind in _HIDDEN:
        m = pattern.match(key)
        if m is None or d != dim:
            continue
        if kind == "out":
            return f"patch_embed.conv{m.group(2)}.bn"
        if kind == "in":
            return f"patch_embed.conv{int(m.group(2)) - 1}.bn"
        if kind == "ffn":
            return f"{m.group(1)}.pw1.bn"
        return f"{m.group(1)}.conv2.bn"
    return None


def _role(key: str, dim: int) -> str:
    for pattern, roles in _ROLES:
        if pattern.search(key):
            return roles.get(dim, "leading")
    return "leading"


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate every BatchNorm's running statistics on ``batches`` (no weight changes).

    Slicing a network changes the statistics its later layers see; re-estimating them with a
    few forward passes (as once-for-all and slimmable networks do after taking a sub-network)
    restores much of the inherited accuracy before any training step.

    Returns:
        The number of images used.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    was_training = model.training
    model.train()
    seen = 0
    for x in batches:
        model(x)
        seen += len(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return seen
