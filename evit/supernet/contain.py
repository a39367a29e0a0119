"""Which configs a supernet holds: the containment rule, and the smallest config holding a set.

A config is *contained* in the supernet's largest config when it has as many stages, the same
input channels and classes, and in every stage no more blocks, heads, channels per head, key
channels, FFN hidden channels or window (after clipping to its own resolution) than the largest,
and each head's Q kernel no larger than the largest's kernel for that head. The input size is
free: weights do not depend on it, and the supernet keeps its attention-bias tables at the full
window.

Example:
    >>> from evit.config import load_config
    >>> largest = enclosing_config([load_config(f"m{i}") for i in range(6)])
    >>> [(s.num_heads, s.head_dim) for s in largest.stages]
    [(4, 64), (4, 96), (4, 112)]
    >>> check_contained(largest, load_config("m2").at_img_size(64)).img_size
    64
"""

from __future__ import annotations

from collections.abc import Iterable

from evit.config import PATCH_SIZE, ModelConfig, StageConfig


def check_contained(max_config: ModelConfig, config: ModelConfig) -> ModelConfig:
    """Validate ``config`` and check that it is a sub-network of ``max_config``.

    Returns:
        ``config``, validated.

    Raises:
        ValueError: ``config`` is invalid, or a field exceeds the largest config's (the message
            names the field, its value and the supernet's maximum).
    """
    config.validate()
    outside = f"{config.name!r} is not contained in the supernet {max_config.name!r}"
    if len(config.stages) != len(max_config.stages):
        raise ValueError(
            f"stages: {len(config.stages)} stages, the supernet has {len(max_config.stages)} "
            f"({outside})"
        )
    for name in ("in_chans", "num_classes"):
        value, fixed = getattr(config, name), getattr(max_config, name)
        if value != fixed:
            raise ValueError(f"{name}={value}: the supernet has {name}={fixed} ({outside})")
    resolutions = config.stage_resolutions()
    for i, (s, m, res) in enumerate(zip(config.stages, max_config.stages, resolutions)):
        window = min(s.window_size, res)  # what the model runs (and the bias table it needs)
        limits = [
            ("depth", s.depth, m.depth),
            ("num_heads", s.num_heads, m.num_heads),
            ("head_dim", s.head_dim, m.head_dim),
            ("key_dim", s.key_dim, m.key_dim),
            ("ffn_dim", s.ffn_dim, m.ffn_dim),
            ("window_size", window, m.window_size),
        ]
        for name, value, maximum in limits:
            if value > maximum:
                raise ValueError(
                    f"stages[{i}].{name}={value} exceeds the supernet's maximum {maximum} "
                    f"({outside})"
                )
        for head in range(s.num_heads):
            if s.kernel_sizes[head] > m.kernel_sizes[head]:
                raise ValueError(
                    f"stages[{i}].kernel_sizes[{head}]={s.kernel_sizes[head]} exceeds the "
                    f"supernet's maximum {m.kernel_sizes[head]} for head {head} ({outside})"
                )
    return config


def enclosing_config(configs: Iterable[ModelConfig], name: str = "supernet") -> ModelConfig:
    """The smallest config that contains every one of ``configs``: field-wise maxima per stage.

    Heads and channels per head are maximized separately (so the width is their product), and
    the Q kernel of head i is the largest any config uses for head i. A search space's largest
    config is not always enough: its kernel choice is one of the listed tuples, while a
    supernet needs the per-head maximum over all of them.

    Raises:
        ValueError: no configs, or configs that differ in stage count, input channels or classes.
    """
    configs = list(configs)
    if not configs:
        raise ValueError("enclosing_config needs at least one config")
    first = configs[0]
    for c in configs[1:]:
        for field in ("in_chans", "num_classes"):
            if getattr(c, field) != getattr(first, field):
                raise ValueError(
                    f"{field}: {c.name!r} has {getattr(c, field)}, {first.name!r} has "
                    f"{getattr(first, field)}; a supernet holds one value"
                )
        if len(c.stages) != len(first.stages):
            raise ValueError(
                f"stages: {c.name!r} has {len(c.stages)}, {first.name!r} has "
                f"{len(first.stages)}; a supernet holds one stage count"
            )
    stages = tuple(
        _enclosing_stage([c.stages[i] for c in configs], first_stage=i == 0)
        for i in range(len(first.stages))
    )
    img_size = max(c.img_size for c in configs)
    return ModelConfig(
        name, stages, img_size=img_size, in_chans=first.in_chans, num_classes=first.num_classes
    ).validate()


def _enclosing_stage(column: list[StageConfig], first_stage: bool) -> StageConfig:
    heads = max(s.num_heads for s in column)
    head_dim = max(s.head_dim for s in column)
    while first_stage and heads * head_dim % 8:  # the stem needs a width divisible by 8
        head_dim += 1
    kernels = tuple(max(s.kernel_sizes[h] for s in column if s.num_heads > h) for h in range(heads))
    return StageConfig(
        embed_dim=heads * head_dim,
        depth=max(s.depth for s in column),
        num_heads=heads,
        key_dim=max(s.key_dim for s in column),
        window_size=max(s.window_size for s in column),
        kernel_sizes=kernels,
        ffn_ratio=max(s.ffn_ratio for s in column),  # the widest stage has the widest FFN
    )


def full_window_img_size(config: ModelConfig) -> int:
    """The smallest input size (at least ``config.img_size``) at which no stage clips its window.

    The supernet's weights are built at this size, so that its attention-bias tables cover the
    full window of every stage and a sub-network at any input size finds its offsets in them.
    """
    img_size = config.img_size
    while any(
        res < s.window_size
        for s, res in zip(config.stages, config.replace(img_size=img_size).stage_resolutions())
    ):
        img_size += PATCH_SIZE
    return img_size
