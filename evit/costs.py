"""Exact parameter and MAC counts, and an activation-traffic estimate, from a config alone.

No weights are allocated: the search calls this for thousands of candidates. Counts follow the
unfused model (conv + BN): parameters as ``sum(p.numel())``; multiply-accumulates of every
convolution, linear layer and matrix product, as ``torch.utils.flop_counter.FlopCounterMode``
counts them, divided by 2 (the paper's "FLOPs" are MACs). Attention runs on zero-padded windows
when the feature map is not a multiple of the window, and those padded tokens are counted.

``activation_bytes`` estimates the memory traffic of the deployed (fused) graph at fp32: for each
operator, the bytes of the activations it reads plus those it writes. It is an estimate (a runtime
may fuse elementwise ops into their producer), meant to rank configs by memory-boundness, the
paper's point: reshapes, splits, softmax and elementwise ops cost time without MACs.

Example:
    >>> from evit.config import load_config
    >>> c = model_costs(load_config("m0"))
    >>> c.params, round(c.macs / 1e6, 1)
    (2349436, 79.2)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from evit.config import PATCH_SIZE, ModelConfig, StageConfig
from evit.model import make_divisible

BYTES = 4  # fp32


@dataclass
class Cost:
    """Counts for one part of the network."""

    params: int = 0
    macs: int = 0
    activation_bytes: int = 0

    def add(self, params: int = 0, macs: int = 0, reads: int = 0, writes: int = 0) -> None:
        self.params += params
        self.macs += macs
        self.activation_bytes += BYTES * (reads + writes)

    def conv_norm(
        self,
        c_in: int,
        c_out: int,
        k: int,
        out_hw: int,
        in_hw: int,
        groups: int = 1,
        bn: bool = True,
    ) -> None:
        """A conv (+ BN) whose output is ``out_hw`` pixels from ``in_hw`` input pixels."""
        self.add(
            params=c_in // groups * c_out * k * k + (2 * c_out if bn else c_out),
            macs=out_hw * c_out * (c_in // groups) * k * k,
            reads=c_in * in_hw,
            writes=c_out * out_hw,
        )

    def elementwise(self, elements: int, inputs: int = 1) -> None:
        self.add(reads=inputs * elements, writes=elements)


@dataclass
class ModelCosts:
    """Totals and a per-part breakdown (``stem``, ``stage0`` ..., ``head``)."""

    params: int
    macs: int
    activation_bytes: int
    breakdown: dict[str, Cost] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "params": self.params,
            "macs": self.macs,
            "activation_bytes": self.activation_bytes,
            "breakdown": {k: dataclasses.asdict(v) for k, v in self.breakdown.items()},
        }


def _ffn(cost: Cost, dim: int, hidden: int, hw: int) -> None:
    cost.conv_norm(dim, hidden, 1, hw, hw)
    cost.elementwise(hidden * hw)  # ReLU
    cost.conv_norm(hidden, dim, 1, hw, hw)
    cost.elementwise(dim * hw, inputs=2)  # residual add


def _residual_dwconv(cost: Cost, dim: int, hw: int) -> None:
    cost.conv_norm(dim, dim, 3, hw, hw, groups=dim)  # the add is folded into the kernel


def _attention(cost: Cost, s: StageConfig, resolution: int) -> None:
    dim, heads, kd, vd = s.embed_dim, s.num_heads, s.key_dim, s.value_dim
    window = min(s.window_size, resolution)
    padded = -(-resolution // window) * window
    tokens = padded * padded  # all windows together
    n = window * window  # tokens per window
    windows = tokens // n
    partitioned = padded != window
    if partitioned:  # pad + partition copy, reverse copy
        cost.elementwise(dim * tokens)
        cost.elementwise(dim * tokens)
    cost.add(params=heads * n)  # attention bias table (offsets = window^2)
    for i in range(heads):
        if i > 0:
            cost.elementwise(s.head_dim * tokens, inputs=2)  # cascade add
        cost.conv_norm(s.head_dim, 2 * kd + vd, 1, tokens, tokens)
        cost.conv_norm(kd, kd, s.kernel_sizes[i], tokens, tokens, groups=kd)
        cost.add(macs=windows * n * n * kd, reads=2 * kd * tokens, writes=windows * n * n)
        cost.elementwise(windows * n * n, inputs=2)  # + bias
        cost.elementwise(windows * n * n)  # softmax
        cost.add(macs=windows * vd * n * n, reads=windows * n * n + vd * tokens, writes=vd * tokens)
    cost.elementwise(vd * heads * tokens)  # concat
    cost.elementwise(vd * heads * tokens)  # ReLU
    cost.conv_norm(vd * heads, dim, 1, tokens, tokens)
    cost.elementwise(dim * resolution * resolution, inputs=2)  # residual add


def _subsample(
    cost: Cost, prev: StageConfig, s: StageConfig, resolution: int, new_resolution: int
) -> None:
    hw, new_hw = resolution * resolution, new_resolution * new_resolution
    _residual_dwconv(cost, prev.embed_dim, hw)
    _ffn(cost, prev.embed_dim, prev.ffn_dim, hw)
    hidden = 4 * prev.embed_dim
    cost.conv_norm(prev.embed_dim, hidden, 1, hw, hw)
    cost.elementwise(hidden * hw)
    cost.conv_norm(hidden, hidden, 3, new_hw, hw, groups=hidden)
    cost.elementwise(hidden * new_hw)
    rd = make_divisible(hidden * 0.25)
    cost.elementwise(hidden * new_hw)  # global mean read
    cost.add(params=hidden * rd + rd + rd * hidden + hidden, macs=hidden * rd + rd * hidden)
    cost.elementwise(hidden * new_hw, inputs=2)  # gate multiply
    cost.conv_norm(hidden, s.embed_dim, 1, new_hw, new_hw)
    _residual_dwconv(cost, s.embed_dim, new_hw)
    _ffn(cost, s.embed_dim, s.ffn_dim, new_hw)


def model_costs(config: ModelConfig, batch: int = 1) -> ModelCosts:
    """Count parameters, MACs and activation bytes of ``config`` at ``batch`` images.

    Parameters do not scale with the batch; MACs and bytes do.
    """
    stem = Cost()
    size = config.img_size
    chans = [config.in_chans] + [config.stages[0].embed_dim // d for d in (8, 4, 2, 1)]
    for i in range(4):
        out = (size - 1) // 2 + 1
        stem.conv_norm(chans[i], chans[i + 1], 3, out * out, size * size)
        if i < 3:
            stem.elementwise(chans[i + 1] * out * out)
        size = out
    assert size == config.img_size // PATCH_SIZE
    parts = {"stem": stem}
    resolutions = config.stage_resolutions()
    for i, s in enumerate(config.stages):
        cost = Cost()
        if i > 0:
            _subsample(cost, config.stages[i - 1], s, resolutions[i - 1], resolutions[i])
        hw = resolutions[i] ** 2
        for _ in range(s.depth):
            _residual_dwconv(cost, s.embed_dim, hw)
            _ffn(cost, s.embed_dim, s.ffn_dim, hw)
            _attention(cost, s, resolutions[i])
            _residual_dwconv(cost, s.embed_dim, hw)
            _ffn(cost, s.embed_dim, s.ffn_dim, hw)
        parts[f"stage{i}"] = cost
    head = Cost()
    dim, nc = config.stages[-1].embed_dim, config.num_classes
    head.elementwise(dim * resolutions[-1] ** 2)  # global average pool read
    if nc > 0:
        head.add(params=2 * dim + dim * nc + nc, macs=dim * nc, reads=dim, writes=nc)
    parts["head"] = head
    for part in parts.values():
        part.macs *= batch
        part.activation_bytes *= batch
    return ModelCosts(
        params=sum(p.params for p in parts.values()),
        macs=sum(p.macs for p in parts.values()),
        activation_bytes=sum(p.activation_bytes for p in parts.values()),
        breakdown=parts,
    )
