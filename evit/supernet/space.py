"""A search space read on the ``evit`` side: the supernet's largest and smallest configs, and
random configs of the space. Torch-free.

``evit`` imports no sibling, so the YAML of a search space is parsed here (``parse_stage``,
``parse_rules``, ``parse_sizes``, which ``search.space`` uses too), with one meaning: per stage,
the choices of ``num_heads`` and ``head_dim`` (the width is their product, so it is divisible by
the heads), ``depth``, ``key_dim``, ``ffn_ratio``, ``window_size``, ``kernel_sizes`` (a choice
is one tuple; head i uses entry i) and ``value_ratio``; the input sizes ``img_size``; shape
``rules`` that a config of the space keeps (a sampled config that breaks one is drawn again, as
the search rejects it). ``num_classes`` is read and checked but not used: a supernet has as many
classes as its data.

Deliberate differences from the search's reading, for training:

- windows are clipped to each stage's resolution (as ``evit train --img-size`` does), so a
  space can be trained at a smaller input size than it lists (:meth:`SupernetSpace.with_img_size`);
- :meth:`SupernetSpace.largest` is the space's *enclosing* config: each field's largest choice,
  and for head i the largest kernel any choice gives head i (the search's ``largest()`` picks one
  listed kernel tuple, which may not contain the others).

Example:
    >>> space = space_from_dict({
    ...     "img_size": [64],
    ...     "stages": [{"num_heads": [1, 2], "head_dim": [8, 16], "depth": [1],
    ...                 "key_dim": [4], "ffn_ratio": [1.0, 2.0], "window_size": [3],
    ...                 "kernel_sizes": [[3, 5], [5, 3]]}],
    ... })
    >>> largest = space.largest(num_classes=4)
    >>> largest.stages[0].embed_dim, largest.stages[0].kernel_sizes
    (32, (5, 5))
    >>> space.smallest(num_classes=4).stages[0].embed_dim
    8
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from evit.config import PATCH_SIZE, ModelConfig, StageConfig
from evit.supernet.contain import enclosing_config

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
RULE_FIELDS = ("non_decreasing_widths", "min_first_width", "max_width_ratio")
MAX_SAMPLE_TRIES = 1000  # draws before a space whose rules almost nothing keeps is refused


@dataclass(frozen=True)
class StageChoices:
    """The choices of one stage (see the module docstring)."""

    num_heads: tuple[int, ...]
    head_dim: tuple[int, ...]
    depth: tuple[int, ...]
    key_dim: tuple[int, ...]
    ffn_ratio: tuple[float, ...]
    window_size: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    value_ratio: tuple[float, ...] = (1.0,)


@dataclass(frozen=True)
class ShapeRules:
    """Rules on a whole config that per-stage choices cannot express; a sampled config that
    breaks one is rejected (by ``search`` before anything is measured).

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
        pairs = list(itertools.pairwise(widths))
        if self.non_decreasing_widths and any(b < a for a, b in pairs):
            return f"widths {shown} decrease"
        if self.max_width_ratio and any(b > self.max_width_ratio * a for a, b in pairs):
            return f"widths {shown} grow more than {self.max_width_ratio:g}x per stage"
        return None


@dataclass(frozen=True)
class SupernetSpace:
    """A search space's choices, as the supernet trains them.

    Attributes:
        stages: the choices of each stage.
        img_size: the input sizes.
        rules: the shape rules every config of the space keeps.
        source: where the space was read from (for messages; not part of the space).
    """

    stages: tuple[StageChoices, ...]
    img_size: tuple[int, ...]
    rules: ShapeRules = ShapeRules()
    source: str = field(default="space", compare=False)

    def largest(self, num_classes: int) -> ModelConfig:
        """The smallest config containing every config of the space: each field's largest
        choice, and per head the largest kernel (``evit.supernet.enclosing_config``), at the
        largest input size."""
        img = max(self.img_size)
        # one config per kernel choice (stages with fewer choices repeat their last), each
        # otherwise at its largest choices; the enclosing config takes per-head maxima
        count = max(len(s.kernel_sizes) for s in self.stages)
        configs = []
        for j in range(count):
            values = [
                {name: max(getattr(s, name)) for name in STAGE_FIELDS if name != "kernel_sizes"}
                | {"kernel_sizes": s.kernel_sizes[min(j, len(s.kernel_sizes) - 1)]}
                for s in self.stages
            ]
            configs.append(_build("supernet", values, img, num_classes))
        return enclosing_config(configs)

    def smallest(self, num_classes: int) -> ModelConfig:
        """The cheapest config of the space that keeps its rules, at the smallest input size:
        the smallest choice of every field, the kernel tuple of the smallest sum, and per stage
        the narrowest (heads, head_dim) the width rules allow (as the search's ``smallest``)."""
        floor = self.rules.min_first_width
        values = []
        for s in self.stages:
            pairs = [(h * d, h, d) for h in s.num_heads for d in s.head_dim]
            width, heads, head_dim = min([p for p in pairs if p[0] >= floor] or pairs)
            if self.rules.non_decreasing_widths:
                floor = width
            values.append(
                {name: min(getattr(s, name)) for name in STAGE_FIELDS if name != "kernel_sizes"}
                | {
                    "num_heads": heads,
                    "head_dim": head_dim,
                    "kernel_sizes": min(s.kernel_sizes, key=sum),
                }
            )
        return _build("smallest", values, min(self.img_size), num_classes)

    def sample(self, rng: np.random.Generator, num_classes: int) -> ModelConfig:
        """A config of the space drawn at random: every field uniformly among its choices,
        drawn again while it breaks a rule.

        Args:
            rng: the generator (the same seed draws the same config).
            num_classes: the classifier's outputs.

        Raises:
            ValueError: no draw in :data:`MAX_SAMPLE_TRIES` kept the rules.
        """

        def pick(choices: tuple) -> Any:
            return choices[int(rng.integers(len(choices)))]

        broken = None
        for _ in range(MAX_SAMPLE_TRIES):
            img = pick(self.img_size)
            values = [{name: pick(getattr(s, name)) for name in STAGE_FIELDS} for s in self.stages]
            config = _build("random", values, img, num_classes)
            broken = self.rules.violation(config)
            if broken is None:
                return config
        raise ValueError(
            f"{self.source}: no config of {MAX_SAMPLE_TRIES} random draws keeps the rules "
            f"(last: {broken})"
        )

    def with_img_size(self, img_size: tuple[int, ...]) -> SupernetSpace:
        """The same choices at other input sizes (windows clip to the stage resolutions)."""
        return dataclasses.replace(self, img_size=parse_sizes(list(img_size), self.source))

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the YAML format ``read_space`` reads."""
        return {
            "img_size": list(self.img_size),
            "rules": dataclasses.asdict(self.rules),
            "stages": [
                {
                    name: (
                        [list(k) for k in s.kernel_sizes]
                        if name == "kernel_sizes"
                        else list(getattr(s, name))
                    )
                    for name in STAGE_FIELDS
                }
                for s in self.stages
            ],
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def fingerprint(self) -> str:
        """Hash of the stage choices and rules: what decides a supernet's weights and the
        sub-networks it was trained on. The input sizes are left out (weights do not depend on
        them, and any input size runs), so are comments and key order."""
        data = self.to_dict()
        data.pop("img_size")
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _build(name: str, values: list[dict[str, Any]], img: int, num_classes: int) -> ModelConfig:
    """The config of one value per field, windows clipped to the stage resolutions."""
    stages = tuple(
        StageConfig(
            embed_dim=v["num_heads"] * v["head_dim"],
            depth=v["depth"],
            num_heads=v["num_heads"],
            key_dim=v["key_dim"],
            window_size=v["window_size"],
            kernel_sizes=v["kernel_sizes"],
            ffn_ratio=v["ffn_ratio"],
            value_ratio=v["value_ratio"],
        )
        for v in values
    )
    config = ModelConfig(name, stages, img_size=img, num_classes=num_classes)
    return config.at_img_size(img).validate()


# --- reading -----------------------------------------------------------------------------------


def read_space(path: str | os.PathLike) -> SupernetSpace:
    """Read and check a search-space YAML.

    Raises:
        ValueError: the file cannot be read, is not YAML, or is not a valid space (one line
            naming the file and the field).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read search space {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{path}: invalid YAML ({first})") from None
    return space_from_dict(data, str(path))


def space_from_dict(data: Any, source: str = "space") -> SupernetSpace:
    """A space from plain data (the YAML's content); see :func:`read_space`."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping with 'stages', got {type(data).__name__}")
    _check_keys(data, ("img_size", "num_classes", "rules", "stages"), source)
    if not isinstance(data.get("stages"), list) or not data["stages"]:
        raise ValueError(f"{source}: 'stages' must be a non-empty list of per-stage choices")
    stages = tuple(parse_stage(s, f"{source}: stages[{i}]") for i, s in enumerate(data["stages"]))
    num_classes = data.get("num_classes", 1000)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise ValueError(f"{source}: num_classes={num_classes!r} must be an integer >= 0")
    space = SupernetSpace(
        stages,
        parse_sizes(data.get("img_size", [224]), source),
        parse_rules(data.get("rules"), source),
        source,
    )
    _check_buildable(space)
    return space


def _check_keys(data: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: "
            f"{', '.join(sorted(allowed))}"
        )


def parse_choices(value: Any, where: str, kind: type) -> tuple:
    """One field's choices (a value or a list) as a tuple of positive ``kind``s, first
    occurrences kept; ``ValueError`` names ``where``. The space YAML's parsers, here and in
    ``search.space``."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if kind is float and isinstance(item, (int, float)) and not isinstance(item, bool):
            if item <= 0:
                raise ValueError(f"{where}: choice {item!r} must be a positive number")
            out.append(float(item))
        elif kind is int and isinstance(item, int) and not isinstance(item, bool) and item > 0:
            out.append(item)
        else:
            raise ValueError(f"{where}: choice {item!r} must be a positive {kind.__name__}")
    if not out:
        raise ValueError(f"{where}: needs at least one choice")
    return tuple(dict.fromkeys(out))


def parse_stage(data: Any, where: str) -> StageChoices:
    """One entry of the space YAML's ``stages``."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {data!r}")
    _check_keys(data, STAGE_FIELDS, where)
    missing = sorted(set(STAGE_FIELDS) - set(data) - {"value_ratio"})
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
    kernels = data["kernel_sizes"]
    if (
        not isinstance(kernels, list)
        or not kernels
        or not all(isinstance(k, list) for k in kernels)
    ):
        raise ValueError(
            f"{where}.kernel_sizes: expected a list of kernel lists, e.g. "
            f"[[5, 5, 5, 5], [7, 5, 3, 3]], got {kernels!r}"
        )
    kernel_choices = []
    for k in kernels:
        items = [parse_choices(size, f"{where}.kernel_sizes", int)[0] for size in k]
        if not items or any(size % 2 == 0 for size in items):
            raise ValueError(f"{where}.kernel_sizes: {k!r} must hold odd positive integers")
        kernel_choices.append(tuple(items))
    return StageChoices(
        num_heads=parse_choices(data["num_heads"], f"{where}.num_heads", int),
        head_dim=parse_choices(data["head_dim"], f"{where}.head_dim", int),
        depth=parse_choices(data["depth"], f"{where}.depth", int),
        key_dim=parse_choices(data["key_dim"], f"{where}.key_dim", int),
        ffn_ratio=parse_choices(data["ffn_ratio"], f"{where}.ffn_ratio", float),
        window_size=parse_choices(data["window_size"], f"{where}.window_size", int),
        kernel_sizes=tuple(dict.fromkeys(kernel_choices)),
        value_ratio=parse_choices(data.get("value_ratio", [1.0]), f"{where}.value_ratio", float),
    )


def parse_sizes(value: Any, source: str) -> tuple[int, ...]:
    """The space YAML's ``img_size`` choices (multiples of the patch size)."""
    sizes = parse_choices(value, f"{source}: img_size", int)
    for size in sizes:
        if size % PATCH_SIZE:
            raise ValueError(f"{source}: img_size {size} must be a multiple of {PATCH_SIZE}")
    return sizes


def parse_rules(data: Any, source: str) -> ShapeRules:
    """The space YAML's ``rules`` (None: no rules)."""
    if data is None:
        return ShapeRules()
    if not isinstance(data, dict):
        raise ValueError(f"{source}: rules: expected a mapping, got {data!r}")
    _check_keys(data, RULE_FIELDS, f"{source}: rules")
    flag = data.get("non_decreasing_widths", False)
    minimum = data.get("min_first_width", 0)
    ratio = data.get("max_width_ratio", 0.0)
    if not isinstance(flag, bool):
        raise ValueError(f"{source}: rules.non_decreasing_widths={flag!r} must be true or false")
    if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
        raise ValueError(f"{source}: rules.min_first_width={minimum!r} must be an integer >= 0")
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or ratio < 0 or 0 < ratio < 1:
        raise ValueError(
            f"{source}: rules.max_width_ratio={ratio!r} must be >= 1 (or 0 for no limit)"
        )
    return ShapeRules(flag, minimum, float(ratio))


def _check_buildable(space: SupernetSpace) -> None:
    """Every combination of choices is a valid config: the rules of ``ModelConfig.validate``
    that involve the choices, checked once per field; then the two extreme configs built."""
    source = space.source
    for i, s in enumerate(space.stages):
        where = f"{source}: stages[{i}]"
        fewest = min(len(k) for k in s.kernel_sizes)
        if max(s.num_heads) > fewest:
            raise ValueError(
                f"{where}: num_heads up to {max(s.num_heads)} but a kernel_sizes choice has "
                f"{fewest} entries; every choice needs one kernel per head"
            )
        if any(v != 1.0 for v in s.value_ratio):
            raise ValueError(f"{where}.value_ratio: only 1.0 builds (see evit.config)")
        narrowest = min(s.num_heads) * min(s.head_dim)
        if int(narrowest * min(s.ffn_ratio)) < 1:
            raise ValueError(
                f"{where}.ffn_ratio: {min(s.ffn_ratio)} x the narrowest width {narrowest} "
                "leaves no hidden channel"
            )
        if i == 0:
            for heads, head_dim in itertools.product(s.num_heads, s.head_dim):
                if heads * head_dim % 8:
                    raise ValueError(
                        f"{where}: width {heads} x {head_dim} is not divisible by 8 (the "
                        "stem's widths are C/8, C/4, C/2)"
                    )
    try:
        smallest = space.smallest(num_classes=1)
        space.largest(num_classes=1)
    except ValueError as e:
        raise ValueError(f"{source}: a combination of choices is invalid ({e})") from None
    broken = space.rules.violation(smallest)
    if broken:
        raise ValueError(f"{source}: no config of the space keeps the rules ({broken})")
