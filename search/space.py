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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import evit
from evit.config import PATCH_SIZE, ModelConfig, StageConfig

DEFAULT_SPACE = Path(__file__).parent / "default_space.yaml"
ACCURACY_SPACE = Path(__file__).parent / "accuracy_space.yaml"  # --objective accuracy
STAGE_FIELDS = (
    "num_heads",
    "head_dim",
    "depth",
    "key_dim",
    "ffn_ratio",
    "window_size",
    "kernel_sizes",
    "value_ratio",
)


def kernels_key(kernels: tuple[int, ...]) -> str:
    """Optuna categorical choices must be scalars: kernel tuples travel as '7,5,3,3'."""
    return ",".join(str(k) for k in kernels)


@dataclass(frozen=True)
class StageSpace:
    num_heads: tuple[int, ...]
    head_dim: tuple[int, ...]
    depth: tuple[int, ...]
    key_dim: tuple[int, ...]
    ffn_ratio: tuple[float, ...]
    window_size: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    value_ratio: tuple[float, ...]


@dataclass(frozen=True)
class ShapeRules:
    """Rules on a whole config that per-stage choices cannot express; a sampled config that
    breaks one is rejected before anything is measured.

    Attributes:
        non_decreasing_widths: each stage at least as wide as the one before (as M0-M5).
        min_first_width: the first stage at least this wide (0: no minimum).
        max_width_ratio: each stage at most this many times as wide as the one before (0: no
            limit; M0-M5 stay within 2).
    """

    non_decreasing_widths: bool = False
    min_first_width: int = 0
    max_width_ratio: float = 0.0

    def violation(self, config: ModelConfig) -> str | None:
        """Which rule ``config`` breaks, in words, or None."""
        widths = [s.embed_dim for s in config.stages]
        if widths[0] < self.min_first_width:
            return f"first-stage width {widths[0]} < {self.min_first_width}"
        shown = "/".join(map(str, widths))
        if self.non_decreasing_widths and any(b < a for a, b in itertools.pairwise(widths)):
            return f"widths {shown} decrease"
        if self.max_width_ratio and any(
            b > self.max_width_ratio * a for a, b in itertools.pairwise(widths)
        ):
            return f"widths {shown} grow more than {self.max_width_ratio:g}x per stage"
        return None


@dataclass(frozen=True)
class SearchSpace:
    stages: tuple[StageSpace, ...]
    img_size: tuple[int, ...] = (224,)
    num_classes: int = 1000
    rules: ShapeRules = ShapeRules()

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


def _choices(value: Any, where: str, kind: type, unique: bool = True) -> tuple:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if kind is float and isinstance(item, (int, float)) and not isinstance(item, bool):
            out.append(float(item))
        elif kind is int and isinstance(item, int) and not isinstance(item, bool) and item > 0:
            out.append(item)
        else:
            raise ValueError(f"{where}: choice {item!r} must be a positive {kind.__name__}")
    if not out:
        raise ValueError(f"{where}: needs at least one choice")
    return tuple(dict.fromkeys(out)) if unique else tuple(out)


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
    stages = []
    for i, s in enumerate(data["stages"]):
        where = f"{source}: stages[{i}]"
        if not isinstance(s, dict):
            raise ValueError(f"{where}: expected a mapping, got {s!r}")
        unknown = sorted(set(s) - set(STAGE_FIELDS))
        missing = sorted(set(STAGE_FIELDS) - set(s) - {"value_ratio"})
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(STAGE_FIELDS)}"
            )
        if missing:
            raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
        kernels = s["kernel_sizes"]
        if (
            not isinstance(kernels, list)
            or not kernels
            or not all(isinstance(k, list) for k in kernels)
        ):
            raise ValueError(
                f"{where}.kernel_sizes: expected a list of kernel lists, e.g. "
                f"[[5, 5, 5, 5], [7, 5, 3, 3]], got {kernels!r}"
            )
        stages.append(
            StageSpace(
                num_heads=_choices(s["num_heads"], f"{where}.num_heads", int),
                head_dim=_choices(s["head_dim"], f"{where}.head_dim", int),
                depth=_choices(s["depth"], f"{where}.depth", int),
                key_dim=_choices(s["key_dim"], f"{where}.key_dim", int),
                ffn_ratio=_choices(s["ffn_ratio"], f"{where}.ffn_ratio", float),
                window_size=_choices(s["window_size"], f"{where}.window_size", int),
                kernel_sizes=tuple(
                    dict.fromkeys(
                        _choices(k, f"{where}.kernel_sizes", int, unique=False) for k in kernels
                    )
                ),
                value_ratio=_choices(s.get("value_ratio", [1.0]), f"{where}.value_ratio", float),
            )
        )
    img = _choices(data.get("img_size", [224]), f"{source}: img_size", int)
    for size in img:
        if size % PATCH_SIZE:
            raise ValueError(f"{source}: img_size {size} must be a multiple of {PATCH_SIZE}")
    num_classes = data.get("num_classes", 1000)
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"{source}: num_classes={num_classes!r} must be an integer >= 0")
    return SearchSpace(tuple(stages), img, num_classes, _rules(data.get("rules"), source)).validate(
        source
    )


def _rules(data: Any, source: str) -> ShapeRules:
    if data is None:
        return ShapeRules()
    if not isinstance(data, dict):
        raise ValueError(f"{source}: rules: expected a mapping, got {data!r}")
    unknown = sorted(set(data) - {"non_decreasing_widths", "min_first_width", "max_width_ratio"})
    if unknown:
        raise ValueError(
            f"{source}: rules: unknown key(s) {', '.join(unknown)}; allowed: "
            "max_width_ratio, min_first_width, non_decreasing_widths"
        )
    flag = data.get("non_decreasing_widths", False)
    minimum = data.get("min_first_width", 0)
    if not isinstance(flag, bool):
        raise ValueError(f"{source}: rules.non_decreasing_widths={flag!r} must be true or false")
    if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
        raise ValueError(f"{source}: rules.min_first_width={minimum!r} must be an integer >= 0")
    ratio = data.get("max_width_ratio", 0.0)
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or ratio < 0 or 0 < ratio < 1:
        raise ValueError(
            f"{source}: rules.max_width_ratio={ratio!r} must be >= 1 (or 0 for no limit)"
        )
    return ShapeRules(flag, minimum, float(ratio))


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
