"""Search spaces as data: per-stage choices, sampled into valid configs by construction.

A space lists, for each stage, the choices of ``num_heads``, ``head_dim`` (so the width
``num_heads * head_dim`` is always divisible by the heads), ``depth``, ``key_dim``,
``ffn_ratio``, ``window_size``, ``kernel_sizes`` and ``value_ratio``; and the input sizes.
:meth:`SearchSpace.validate` proves once, when the space is loaded, that every combination is a
valid :class:`~evit.config.ModelConfig`, so sampling never needs to catch an exception.

Example:
    >>> space = load_space()  # the shipped default
    >>> space.contains(evit.load_config("m0"))
    True
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import evit
from evit.config import ModelConfig, StageConfig
from evit.supernet.space import (  # the space YAML's format, shared with the supernet
    STAGE_FIELDS,
    ShapeRules,
    StageChoices,
    parse_rules,
    parse_sizes,
    parse_stage,
)

DEFAULT_SPACE = Path(__file__).parent / "default_space.yaml"
ACCURACY_SPACE = Path(__file__).parent / "accuracy_space.yaml"  # --objective accuracy


def kernels_key(kernels: tuple[int, ...]) -> str:
    """Optuna categorical choices must be scalars: kernel tuples travel as '7,5,3,3'."""
    return ",".join(str(k) for k in kernels)


@dataclass(frozen=True)
class SearchSpace:
    stages: tuple[StageChoices, ...]
    img_size: tuple[int, ...] = (224,)
    num_classes: int = 1000
    rules: ShapeRules = field(default_factory=ShapeRules)

    def validate(self, source: str = "space") -> SearchSpace:
        """Check that every combination of choices builds; ``ValueError`` names the field."""
        if not self.stages:
            raise ValueError(f"{source}: 'stages' must list at least one stage")
        for i, s in enumerate(self.stages):
            for name in STAGE_FIELDS:
                if not getattr(s, name):
                    raise ValueError(f"{source}: stages[{i}].{name} needs at least one choice")
            if max(s.num_heads) > min(len(k) for k in s.kernel_sizes):
                raise ValueError(
                    f"{source}: stages[{i}]: num_heads up to {max(s.num_heads)} "
                    "but a kernel_sizes choice has fewer entries; every choice "
                    "needs one kernel per head"
                )
        # every (heads, head_dim, kernels) product is probed (divisibility, first-stage width,
        # kernels per head); the remaining rules involve one field each (plus the width, taken
        # at its smallest), so probing each of their choices covers every combination
        for img in self.img_size:
            for i, s in enumerate(self.stages):
                for heads, head_dim, kernels in itertools.product(
                    s.num_heads, s.head_dim, s.kernel_sizes
                ):
                    self._probe(img, i, heads, head_dim, kernels, source)
                for ratio, window, depth, key_dim, value in itertools.product(
                    s.ffn_ratio, s.window_size, s.depth, s.key_dim, s.value_ratio
                ):
                    self._probe(
                        img,
                        i,
                        min(s.num_heads),
                        min(s.head_dim),
                        s.kernel_sizes[0],
                        source,
                        ffn_ratio=ratio,
                        window_size=window,
                        depth=depth,
                        key_dim=key_dim,
                        value_ratio=value,
                    )
        broken = self.rules.violation(self.smallest())
        if broken:
            raise ValueError(f"{source}: no config of the space keeps the rules ({broken})")
        return self

    def _probe(
        self,
        img: int,
        index: int,
        heads: int,
        head_dim: int,
        kernels: tuple[int, ...],
        source: str,
        **fields: Any,
    ) -> None:
        stages = []
        for j, s in enumerate(self.stages):
            stage_heads = heads if j == index else max(s.num_heads)
            stage_head_dim = head_dim if j == index else min(s.head_dim)
            stages.append(
                StageConfig(
                    embed_dim=stage_heads * stage_head_dim,
                    depth=min(s.depth),
                    num_heads=stage_heads,
                    key_dim=min(s.key_dim),
                    window_size=max(s.window_size),
                    kernel_sizes=kernels if j == index else s.kernel_sizes[0],
                    ffn_ratio=min(s.ffn_ratio),
                    value_ratio=s.value_ratio[0],
                )
            )
            if j == index and fields:
                stages[-1] = StageConfig(**{**stages[-1].__dict__, **fields})
        try:
            ModelConfig(
                "probe", tuple(stages), img_size=img, num_classes=self.num_classes
            ).validate()
        except ValueError as e:
            raise ValueError(f"{source}: a combination of choices is invalid ({e})") from None

    def sample(self, trial: Any) -> ModelConfig:
        """Draw a config with Optuna ``trial.suggest_categorical`` (valid by construction)."""
        img = (
            trial.suggest_categorical("img_size", list(self.img_size))
            if len(self.img_size) > 1
            else self.img_size[0]
        )
        stages = []
        for i, s in enumerate(self.stages):

            def pick(name: str, choices: tuple, i: int = i) -> Any:
                return trial.suggest_categorical(f"s{i}_{name}", list(choices))

            heads = pick("num_heads", s.num_heads)
            kernels = pick("kernel_sizes", tuple(kernels_key(k) for k in s.kernel_sizes))
            stages.append(
                StageConfig(
                    embed_dim=heads * pick("head_dim", s.head_dim),
                    depth=pick("depth", s.depth),
                    num_heads=heads,
                    key_dim=pick("key_dim", s.key_dim),
                    window_size=pick("window_size", s.window_size),
                    kernel_sizes=tuple(int(k) for k in kernels.split(",")),
                    ffn_ratio=float(pick("ffn_ratio", s.ffn_ratio)),
                    value_ratio=float(pick("value_ratio", s.value_ratio)),
                )
            )
        return ModelConfig("searched", tuple(stages), img_size=img, num_classes=self.num_classes)

    def params_of(self, config: ModelConfig) -> dict[str, Any] | None:
        """Optuna parameters that sample exactly ``config``, or None if it is outside."""
        if len(config.stages) != len(self.stages) or config.img_size not in self.img_size:
            return None
        params: dict[str, Any] = {}
        if len(self.img_size) > 1:
            params["img_size"] = config.img_size
        for i, (c, s) in enumerate(zip(config.stages, self.stages)):
            values = {
                "num_heads": c.num_heads,
                "head_dim": c.embed_dim // c.num_heads,
                "depth": c.depth,
                "key_dim": c.key_dim,
                "ffn_ratio": c.ffn_ratio,
                "window_size": c.window_size,
                "kernel_sizes": c.kernel_sizes,
                "value_ratio": c.value_ratio,
            }
            for name, value in values.items():
                if value not in getattr(s, name):
                    return None
                params[f"s{i}_{name}"] = kernels_key(value) if name == "kernel_sizes" else value
        return params

    def smallest(self) -> ModelConfig:
        """The cheapest config of the space that keeps its rules: the smallest choice of every
        size field, and per stage the narrowest (heads, head_dim) the rules allow."""
        return self._extreme(min)

    def largest(self) -> ModelConfig:
        """The config with the largest choice of every field (rules aside)."""
        return self._extreme(max)

    def _extreme(self, pick: Any) -> ModelConfig:
        widths: dict[str, int] = {}
        floor = self.rules.min_first_width if pick is min else 0
        for i, s in enumerate(self.stages):
            fitting = [
                (h * d, h, d) for h in s.num_heads for d in s.head_dim if h * d >= floor
            ] or [(h * d, h, d) for h in s.num_heads for d in s.head_dim]
            width, heads, head_dim = pick(fitting)
            widths[f"s{i}_num_heads"], widths[f"s{i}_head_dim"] = heads, head_dim
            if pick is min and self.rules.non_decreasing_widths:
                floor = width

        class _Extreme:
            def suggest_categorical(self, name: str, choices: list) -> Any:
                if name in widths:
                    return widths[name]
                if name.endswith("kernel_sizes"):
                    return pick(choices, key=lambda k: sum(int(x) for x in k.split(",")))
                return pick(choices)

        return self.sample(_Extreme())

    def contains(self, config: ModelConfig) -> bool:
        return self.params_of(config) is not None

    def config_from_params(self, params: dict[str, Any]) -> ModelConfig:
        """Rebuild the config of a finished trial from its parameters.

        A field with a single choice may be absent from a trial's parameters (a trial retried
        from a killed worker's partial parameters); it can only have had that value.

        Raises:
            ValueError: a field with several choices is missing.
        """

        class _Fixed:
            def suggest_categorical(self, name: str, choices: list) -> Any:
                if name in params:
                    return params[name]
                if len(choices) == 1:
                    return choices[0]
                raise ValueError(f"trial parameters lack {name!r} (choices {choices})")

        return self.sample(_Fixed())


def space_from_dict(data: Any, source: str = "space") -> SearchSpace:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping with 'stages', got {type(data).__name__}")
    unknown = sorted(set(data) - {"stages", "img_size", "num_classes", "rules"})
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {', '.join(unknown)}; allowed: img_size, num_classes, "
            "rules, stages"
        )
    if not isinstance(data.get("stages"), list) or not data["stages"]:
        raise ValueError(f"{source}: 'stages' must be a non-empty list of per-stage choices")
    stages = tuple(parse_stage(s, f"{source}: stages[{i}]") for i, s in enumerate(data["stages"]))
    img = parse_sizes(data.get("img_size", [224]), source)
    num_classes = data.get("num_classes", 1000)
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"{source}: num_classes={num_classes!r} must be an integer >= 0")
    return SearchSpace(stages, img, num_classes, parse_rules(data.get("rules"), source)).validate(
        source
    )


def load_space(path: str | os.PathLike | None = None) -> SearchSpace:
    """Load and validate a space YAML (the shipped default when ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_SPACE
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read search space {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{path}: invalid YAML ({first})") from None
    return space_from_dict(data, str(path))


REFERENCES = tuple(f"efficientvit_m{i}" for i in range(6))


def reference_configs() -> dict[str, ModelConfig]:
    return {name: evit.load_config(name) for name in REFERENCES}
