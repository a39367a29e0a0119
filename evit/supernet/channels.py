"""Channel sorting: put the most important hidden channels first, where first-k slicing keeps them.

As once-for-all (Cai et al., ICLR 2020) does before shrinking the width, the channels of each
hidden layer are ranked by the L1 norm of the weights that read them (the next layer's input
weights) and every tensor indexed by those channels is permuted the same way, so the largest
network computes the same function and a narrower sub-network keeps the strongest channels.

Sorted: the stem's three hidden widths, each FFN's hidden layer, each patch merging's x4
hidden layer, and each squeeze-excite's reduction. Not sorted: a stage's embedding channels and
the attention's key channels. The embedding is the residual stream of a whole stage (every
DWConv, FFN, projection and the next stage's downsampling read and write it) and, inside the
cascaded group attention, head i's channel chunk is summed with head i-1's value output, which
ties each chunk's order to the previous head's V channels and to the projection's inputs; one
importance for a channel read by that many layers is not well defined. Those keep the first k
(of each head's chunk, as :mod:`evit.inherit` slices them).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch import nn

from evit.model import ConvMlp, ConvNorm, PatchEmbedding, PatchMerging, SqueezeExcite
from evit.supernet.network import Supernet

# (tensor, dimension indexed by the hidden channels)
Members = list[tuple[torch.Tensor, int]]


@torch.no_grad()
def sort_channels(supernet: Supernet) -> int:
    """Reorder every hidden layer's channels in place, most important first.

    The largest network's function is unchanged. Call it between training phases, before an
    optimizer is built: an optimizer's per-parameter state (momentum) is not permuted.

    Returns:
        The number of hidden layers sorted.
    """
    count = 0
    for reader, members in _hidden_layers(supernet.largest):
        tensor, dim = reader
        others = [d for d in range(tensor.dim()) if d != dim]
        importance = tensor.abs().sum(dim=others)  # (channels,)
        order = importance.argsort(descending=True, stable=True)
        for member, member_dim in members:
            member.copy_(member.index_select(member_dim, order))
        count += 1
    return count


def _outputs(layer: ConvNorm) -> Members:
    bn = layer.bn
    return [
        (layer.conv.weight, 0),
        (bn.weight, 0),
        (bn.bias, 0),
        (bn.running_mean, 0),
        (bn.running_var, 0),
    ]


def _hidden_layers(model: nn.Module) -> Iterator[tuple[tuple[torch.Tensor, int], Members]]:
    """(the weight that reads the channels and its input dimension, every tensor to permute)."""
    for m in model.modules():
        if isinstance(m, ConvMlp):
            yield (m.pw2.conv.weight, 1), [*_outputs(m.pw1), (m.pw2.conv.weight, 1)]
        elif isinstance(m, PatchMerging):
            se = m.se
            yield (
                (m.conv3.conv.weight, 1),
                [
                    *_outputs(m.conv1),
                    *_outputs(m.conv2),  # depthwise: one filter per channel, moved along
                    (se.fc1.weight, 1),
                    (se.fc2.weight, 0),
                    (se.fc2.bias, 0),
                    (m.conv3.conv.weight, 1),
                ],
            )
        elif isinstance(m, SqueezeExcite):
            yield (m.fc2.weight, 1), [(m.fc1.weight, 0), (m.fc1.bias, 0), (m.fc2.weight, 1)]
        elif isinstance(m, PatchEmbedding):
            convs = [m.conv1, m.conv2, m.conv3, m.conv4]
            for layer, reader in itertools.pairwise(convs):
                yield (reader.conv.weight, 1), [*_outputs(layer), (reader.conv.weight, 1)]
