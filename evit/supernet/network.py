"""The supernet: the largest config's weights, and any contained config run on slices of them.

A sub-network is the ordinary :class:`~evit.model.EfficientViT` of its config, built once on the
``meta`` device as a skeleton (no memory), and run with :func:`torch.func.functional_call` on
tensors cut from the supernet's parameters and buffers. The cuts are slices (views) or
``index_select`` gathers, so gradients flow back into the shared parameters and nothing of the
model is written twice. Which entries a cut keeps follows :mod:`evit.inherit`'s rules.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from evit.config import ModelConfig
from evit.inherit import _Plan, _Stage  # weight inheritance's slicing rules, reused as they are
from evit.model import EfficientViT, Residual, attention_bias_index
from evit.supernet.contain import check_contained, full_window_img_size

_BIAS_TABLE = "attention_biases"
_BIAS_INDEX = "attention_bias_idxs"
_RUNNING_STATS = ("running_mean", "running_var")
# non-tensor state a sub-network's modules take from the same-named module of the supernet
_SYNCED_ATTRIBUTES: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.modules.batchnorm._BatchNorm, "momentum"),  # None while BN statistics are re-estimated
    (Residual, "drop"),  # stochastic depth, as set on the supernet's largest network
    (nn.Dropout, "p"),
)


@dataclass(frozen=True)
class Cut:
    """The entries one dimension of a sub-network tensor keeps from the supernet's tensor.

    Attributes:
        dim: the dimension.
        length: how many entries are kept.
        start: first kept entry when ``gather`` is False (a slice, so a view); else where the
            kept positions start in the sub-network's ``cut_index`` buffer.
        gather: the kept entries are not contiguous (per-head channels, Q|K|V blocks, window
            offsets), so they are gathered with ``index_select``.
    """

    dim: int
    length: int
    start: int
    gather: bool


class _FirstChannels(_Plan):
    """:mod:`evit.inherit`'s rules with hidden channels fixed to the first k.

    Inheritance ranks a hidden layer's channels by the source's BN scales; in a supernet that
    rank would move with every step, so the first k are kept (``sort_channels`` can reorder
    the supernet so that the first are the most important).
    """

    def _most_important(self, bn_prefix: str, n: int) -> torch.Tensor:
        return torch.arange(n)


def _stages(config: ModelConfig) -> list[_Stage]:
    return [_Stage(s.embed_dim, s.num_heads, s.key_dim) for s in config.stages]


def _kept_positions(
    plan: _Plan, name: str, source: torch.Tensor, target_shape: torch.Size
) -> list[tuple[int, torch.Tensor]]:
    """(dimension, kept source positions) for each dimension the sub-network shrinks."""
    out = []
    for dim, (n_src, n_dst) in enumerate(zip(source.shape, target_shape)):
        if n_src == n_dst:  # containment makes an equal size an identical layout
            continue
        if name.endswith(_BIAS_TABLE) and dim == 1:
            out.append((dim, _bias_offsets(round(n_src**0.5), round(n_dst**0.5))))
            continue
        src, dst = plan._dim_map(name, dim, n_src, n_dst)
        assert torch.equal(dst, torch.arange(n_dst)), f"{name}: dimension {dim} not covered"
        out.append((dim, src))
    return out


def _bias_offsets(full: int, window: int) -> torch.Tensor:
    """Positions of the offsets (dy, dx) < ``window`` in a table indexed by dy * full + dx.

    The same crop as :mod:`evit.inherit`: a bias keeps meaning the same pixel distance.
    """
    rows = torch.arange(window)[:, None] * full
    return (rows + torch.arange(window)[None, :]).flatten()


@functools.lru_cache(maxsize=16)
def _bias_index(window: int) -> torch.Tensor:
    return attention_bias_index(window)


@dataclass(frozen=True)
class _Layout:
    """What a sub-network needs besides tensors; a plain record, so no module registers it."""

    skeleton: EfficientViT  # on the meta device: the module code, without weights
    cuts: dict[str, tuple[Cut, ...]]
    bias_windows: dict[str, int]  # skeleton buffer name -> window of its bias index
    synced: tuple[tuple[nn.Module, nn.Module, str], ...]  # (skeleton module, shared, attribute)


class SubNetwork(nn.Module):
    """One config of a :class:`Supernet`, run on slices of the supernet's tensors.

    Its parameters are the supernet's (the supernet is its only child), so an optimizer, a
    ``.to()`` or :func:`recalibrate_bn` applied to it act on the shared weights. In training
    mode, BatchNorm statistics are updated in the slices the sub-network uses.

    Attributes:
        config: the sub-network's config (validated and contained).
        supernet: the shared weights.
    """

    def __init__(self, supernet: Supernet, config: ModelConfig) -> None:
        super().__init__()
        self.config = check_contained(supernet.max_config, config)
        self.supernet = supernet
        with torch.device("meta"):
            skeleton = EfficientViT(self.config)
        shared = supernet.shared_tensors()
        plan = _FirstChannels(_stages(supernet.max_config), _stages(self.config), {})
        cuts: dict[str, tuple[Cut, ...]] = {}
        positions: list[torch.Tensor] = []
        offset = 0
        for name, tensor in skeleton.state_dict(keep_vars=True).items():
            entry = []
            for dim, kept in _kept_positions(plan, name, shared[name], tensor.shape):
                n = len(kept)
                if torch.equal(kept, torch.arange(n) + kept[0]):
                    entry.append(Cut(dim, n, int(kept[0]), gather=False))
                else:
                    entry.append(Cut(dim, n, offset, gather=True))
                    positions.append(kept)
                    offset += n
            cuts[name] = tuple(entry)
        device = next(iter(shared.values())).device
        index = torch.cat(positions) if positions else torch.zeros(0, dtype=torch.long)
        self.register_buffer("cut_index", index.to(device), persistent=False)
        self._layout = _Layout(skeleton, cuts, _bias_windows(skeleton), _synced(skeleton, supernet))

    def sliced_tensors(self) -> dict[str, torch.Tensor]:
        """Every parameter and persistent buffer of the sub-network, cut from the supernet's.

        The cuts are differentiable: a loss on them sends gradients to the shared parameters.
        """
        out = {}
        for name, tensor in self.supernet.shared_tensors().items():
            cuts = self._layout.cuts.get(name)
            if cuts is not None:
                out[name] = self._cut(tensor, cuts)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.img_size
        if tuple(x.shape[-2:]) != (size, size):
            raise ValueError(
                f"input of {tuple(x.shape[-2:])} pixels; config {self.config.name!r} "
                f"runs at {size}x{size}"
            )
        skeleton = self._layout.skeleton
        skeleton.train(self.training)
        for module, shared, attribute in self._layout.synced:
            setattr(module, attribute, getattr(shared, attribute))
        tensors = self.sliced_tensors()
        constants = {
            name: _bias_index(window).to(x.device)
            for name, window in self._layout.bias_windows.items()
        }
        logits = functional_call(skeleton, {**tensors, **constants}, (x,), strict=True)
        if self.training:
            self._write_back_statistics(tensors)
        return logits  # (B, num_classes)

    def _cut(self, tensor: torch.Tensor, cuts: tuple[Cut, ...]) -> torch.Tensor:
        for cut in cuts:
            if cut.gather:
                index = self.cut_index[cut.start : cut.start + cut.length]
                tensor = tensor.index_select(cut.dim, index)
            else:
                tensor = tensor.narrow(cut.dim, cut.start, cut.length)
        return tensor

    @torch.no_grad()
    def _write_back_statistics(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy BN statistics updated in gathered copies back into the shared buffers.

        Sliced statistics are views, already updated in place; gathered ones are copies.
        """
        shared = self.supernet.shared_tensors()
        for name, cuts in self._layout.cuts.items():
            if name.endswith(_RUNNING_STATS) and cuts and cuts[0].gather:
                (cut,) = cuts  # statistics are one-dimensional
                index = self.cut_index[cut.start : cut.start + cut.length]
                shared[name].index_copy_(0, index, tensors[name])


def _bias_windows(skeleton: EfficientViT) -> dict[str, int]:
    return {
        name: skeleton.get_submodule(name.rpartition(".")[0]).resolution
        for name, _ in skeleton.named_buffers()
        if name.endswith(_BIAS_INDEX)
    }


def _synced(
    skeleton: EfficientViT, supernet: Supernet
) -> tuple[tuple[nn.Module, nn.Module, str], ...]:
    pairs = []
    for name, module in skeleton.named_modules():
        for kind, attribute in _SYNCED_ATTRIBUTES:
            if isinstance(module, kind):
                pairs.append((module, supernet.largest.get_submodule(name), attribute))
    return tuple(pairs)


class Supernet(nn.Module):
    """An elastic EfficientViT: the largest config's weights, shared by every contained config.

    Args:
        max_config: the largest config; any config contained in it (see
            :func:`~evit.supernet.contain.check_contained`) runs on slices of its weights.

    Attributes:
        max_config: as given (validated).
        largest: the weights, as an :class:`~evit.model.EfficientViT` of ``max_config`` built
            at an input size where no stage clips its window (full attention-bias tables).

    Example:
        >>> from evit.config import load_config
        >>> from evit.supernet import enclosing_config
        >>> supernet = Supernet(enclosing_config([load_config("m0"), load_config("m1")]))
        >>> m0 = load_config("m0").at_img_size(64)
        >>> supernet.eval()(torch.zeros(1, 3, 64, 64), m0).shape
        torch.Size([1, 1000])
        >>> config, state = supernet.extract(m0)
        >>> _ = EfficientViT(config).load_state_dict(state)
    """

    def __init__(self, max_config: ModelConfig) -> None:
        super().__init__()
        self.max_config = max_config.validate()
        img_size = full_window_img_size(max_config)
        self.largest = EfficientViT(max_config.replace(img_size=img_size))

    def shared_tensors(self) -> dict[str, torch.Tensor]:
        """The largest network's parameters and persistent buffers, by name (not copies)."""
        return self.largest.state_dict(keep_vars=True)

    def subnet(self, config: ModelConfig) -> SubNetwork:
        """The sub-network of ``config`` as a module (build once, call many times).

        Raises:
            ValueError: ``config`` is invalid or not contained (the message names the field).
        """
        return SubNetwork(self, config).train(self.training)

    def forward(self, x: torch.Tensor, config: ModelConfig) -> torch.Tensor:
        """Logits of the sub-network ``config`` on ``x`` of ``config.img_size`` pixels."""
        return self.subnet(config)(x)

    @torch.no_grad()
    def extract(self, config: ModelConfig) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
        """A standalone copy of a sub-network: ``EfficientViT(config).load_state_dict(state)``.

        Returns:
            The validated config and a state dict of contiguous copies (no shared storage).
        """
        sub = self.subnet(config)
        state = {
            name: tensor.detach().clone(memory_format=torch.contiguous_format)
            for name, tensor in sub.sliced_tensors().items()
        }
        return sub.config, state
