"""Model configurations as data.

An EfficientViT is fully described by a :class:`ModelConfig`: a stem width (the first stage's
width), a tuple of :class:`StageConfig` and the input/output sizes. Configs are frozen
dataclasses, validated on demand, and round-trip through YAML. The published M0-M5 ship as YAML
files in ``evit/configs/`` and resolve by name (``efficientvit_m0``), alias (``m0``) or path.

Example:
    >>> cfg = load_config("m0")
    >>> [s.embed_dim for s in cfg.stages]
    [64, 128, 192]
    >>> cfg.replace(num_classes=10).num_classes
    10
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from evit.files import atomic_write_text

CONFIG_DIR = Path(__file__).parent / "configs"
PATCH_SIZE = 16  # the stem is four stride-2 convolutions
# the input normalization every model here is trained and exported with (ImageNet statistics)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class StageConfig:
    """One stage: an optional downsample (every stage but the first) and ``depth`` blocks.

    Attributes:
        embed_dim: channel width C of the stage.
        depth: number of sandwich blocks.
        num_heads: heads of the cascaded group attention; each head sees C / num_heads channels.
        key_dim: channels of Q and K per head.
        window_size: local attention window; clipped to the stage resolution when larger.
        kernel_sizes: depthwise kernel on Q of head i is ``kernel_sizes[i]`` (odd sizes).
        ffn_ratio: FFN hidden width = int(C * ffn_ratio).
        value_ratio: V channels per head as a multiple of the head's input split C / num_heads.
            The cascade adds head i-1's output (V width) to head i's input split, so only 1.0
            is buildable; the field exists so that configs state the choice explicitly.
    """

    embed_dim: int
    depth: int
    num_heads: int
    key_dim: int = 16
    window_size: int = 7
    kernel_sizes: tuple[int, ...] = (5, 5, 5, 5)
    ffn_ratio: float = 2.0
    value_ratio: float = 1.0

    @property
    def head_dim(self) -> int:
        """Input split (and value width) of one head."""
        return self.embed_dim // self.num_heads

    @property
    def value_dim(self) -> int:
        return round(self.value_ratio * self.head_dim)

    @property
    def ffn_dim(self) -> int:
        return int(self.embed_dim * self.ffn_ratio)


@dataclass(frozen=True)
class ModelConfig:
    """A whole model.

    Attributes:
        name: free-form identifier, used in reports and file metadata.
        stages: the stages, first to last; every stage after the first halves the resolution.
        img_size: square input size in pixels (a multiple of 16).
        in_chans: input channels.
        num_classes: classifier outputs; 0 gives a feature extractor (pooled features).
    """

    name: str
    stages: tuple[StageConfig, ...]
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000

    def replace(self, **changes: Any) -> ModelConfig:
        """Return a copy with fields changed (not validated)."""
        return dataclasses.replace(self, **changes)

    def at_img_size(self, img_size: int) -> ModelConfig:
        """This architecture at another input size, windows clipped to the stage resolutions.

        A window larger than its stage's feature map is clipped to it (the model does the same
        at run time); writing the clipped value into the config keeps the config valid at small
        inputs (``m0`` at 64 px) and makes the attention-bias table sizes explicit.

        Example:
            >>> [s.window_size for s in load_config("m0").at_img_size(64).stages]
            [4, 2, 1]
        """
        resized = self.replace(img_size=img_size)
        _check_int(img_size, "img_size", minimum=PATCH_SIZE)
        _check(
            img_size % PATCH_SIZE == 0,
            "img_size",
            img_size,
            f"must be a multiple of {PATCH_SIZE} (the stem downsamples by {PATCH_SIZE})",
        )
        stages = tuple(
            dataclasses.replace(s, window_size=min(s.window_size, res))
            for s, res in zip(self.stages, resized.stage_resolutions())
        )
        return resized.replace(stages=stages)

    def stage_resolutions(self) -> list[int]:
        """Feature-map side length of each stage (14, 7, 4 at 224 px)."""
        resolution = self.img_size // PATCH_SIZE
        out = []
        for i in range(len(self.stages)):
            if i > 0:
                resolution = (resolution - 1) // 2 + 1
            out.append(resolution)
        return out

    def validate(self) -> ModelConfig:
        """Check every rule; raise ``ValueError`` naming the field, the value and the rule.

        Returns:
            self, so that ``cfg = load(...).validate()`` reads naturally.
        """
        _check(
            isinstance(self.name, str) and self.name != "",
            "name",
            self.name,
            "must be a non-empty string",
        )
        _check_int(self.img_size, "img_size", minimum=PATCH_SIZE)
        _check(
            self.img_size % PATCH_SIZE == 0,
            "img_size",
            self.img_size,
            f"must be a multiple of {PATCH_SIZE} (the stem downsamples by {PATCH_SIZE})",
        )
        _check_int(self.in_chans, "in_chans", minimum=1)
        _check_int(self.num_classes, "num_classes", minimum=0)
        _check(
            isinstance(self.stages, tuple) and len(self.stages) >= 1,
            "stages",
            self.stages,
            "must list at least one stage",
        )
        first_resolution = self.img_size // PATCH_SIZE
        for i, stage in enumerate(self.stages):
            _validate_stage(stage, f"stages[{i}]", first_resolution)
        _check(
            self.stages[0].embed_dim % 8 == 0,
            "stages[0].embed_dim",
            self.stages[0].embed_dim,
            "must be divisible by 8 (stem widths C/8, C/4, C/2)",
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, numbers, strings) in a stable key order."""
        return {
            "name": self.name,
            "img_size": self.img_size,
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "stages": [
                {
                    "embed_dim": s.embed_dim,
                    "depth": s.depth,
                    "num_heads": s.num_heads,
                    "key_dim": s.key_dim,
                    "window_size": s.window_size,
                    "kernel_sizes": list(s.kernel_sizes),
                    "ffn_ratio": float(s.ffn_ratio),
                    "value_ratio": float(s.value_ratio),
                }
                for s in self.stages
            ],
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def architecture_hash(self) -> str:
        """Hash of everything that shapes the network (the name is left out)."""
        data = self.to_dict()
        data.pop("name")
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> ModelConfig:
        """Build from plain data; unknown or missing keys raise ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError(
                f"{source}: expected a mapping at the top level, got {type(data).__name__}"
            )
        _check_keys(data, _MODEL_FIELDS, {"stages"}, source)
        stages_data = data["stages"]
        if not isinstance(stages_data, list) or not stages_data:
            raise ValueError(f"{source}: 'stages' must be a non-empty list, got {stages_data!r}")
        stages = []
        for i, s in enumerate(stages_data):
            where = f"{source}: stages[{i}]"
            if not isinstance(s, dict):
                raise ValueError(f"{where}: expected a mapping, got {s!r}")
            _check_keys(s, _STAGE_FIELDS, {"embed_dim", "depth", "num_heads"}, where)
            s = dict(s)
            if "kernel_sizes" in s:
                ks = s["kernel_sizes"]
                if not isinstance(ks, (list, tuple)):
                    raise ValueError(
                        f"{where}.kernel_sizes: expected a list of odd integers, got {ks!r}"
                    )
                s["kernel_sizes"] = tuple(ks)
            stages.append(StageConfig(**s))
        top = {k: v for k, v in data.items() if k != "stages"}
        top.setdefault("name", "custom")
        return cls(stages=tuple(stages), **top)


_STAGE_FIELDS = {f.name for f in dataclasses.fields(StageConfig)}
_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def _check(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r}: {rule}")


def _check_int(value: Any, name: str, minimum: int) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool), name, value, "must be an integer"
    )
    _check(value >= minimum, name, value, f"must be >= {minimum}")


def _check_keys(data: dict, allowed: set[str], required: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    missing = sorted(required - set(data))
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")


def _validate_stage(s: StageConfig, where: str, first_resolution: int) -> None:
    _check_int(s.embed_dim, f"{where}.embed_dim", minimum=1)
    _check_int(s.depth, f"{where}.depth", minimum=1)
    _check_int(s.num_heads, f"{where}.num_heads", minimum=1)
    _check_int(s.key_dim, f"{where}.key_dim", minimum=1)
    _check_int(s.window_size, f"{where}.window_size", minimum=1)
    _check(
        s.embed_dim % s.num_heads == 0,
        f"{where}.embed_dim",
        s.embed_dim,
        f"must be divisible by num_heads={s.num_heads}",
    )
    _check(
        isinstance(s.kernel_sizes, tuple) and len(s.kernel_sizes) >= 1,
        f"{where}.kernel_sizes",
        s.kernel_sizes,
        "must be a non-empty list",
    )
    for k in s.kernel_sizes:
        _check(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 and k % 2 == 1,
            f"{where}.kernel_sizes",
            list(s.kernel_sizes),
            "must hold odd positive integers (same-size depthwise convs on Q)",
        )
    _check(
        s.num_heads <= len(s.kernel_sizes),
        f"{where}.num_heads",
        s.num_heads,
        f"must be <= the number of kernel_sizes ({len(s.kernel_sizes)}): head i uses "
        "kernel_sizes[i]",
    )
    _check(
        s.window_size <= first_resolution,
        f"{where}.window_size",
        s.window_size,
        f"must be <= the first stage's resolution {first_resolution} (img_size/16); "
        "larger stages clip it to their own resolution",
    )
    _check(
        isinstance(s.ffn_ratio, (int, float))
        and not isinstance(s.ffn_ratio, bool)
        and int(s.embed_dim * s.ffn_ratio) >= 1,
        f"{where}.ffn_ratio",
        s.ffn_ratio,
        "must be a positive number with int(embed_dim * ffn_ratio) >= 1",
    )
    _check(
        isinstance(s.value_ratio, (int, float)) and float(s.value_ratio) == 1.0,
        f"{where}.value_ratio",
        s.value_ratio,
        "must be 1.0: the cascade adds head i-1's value output to head i's input split "
        "(embed_dim/num_heads channels), so the two widths must agree",
    )


# --- YAML files and the variant registry -------------------------------------------------------

VARIANTS: dict[str, str] = {f"efficientvit_m{i}": f"efficientvit_m{i}.yaml" for i in range(6)}
ALIASES: dict[str, str] = {f"m{i}": f"efficientvit_m{i}" for i in range(6)}


def list_variants() -> list[str]:
    """Names of the shipped configs."""
    return sorted(VARIANTS)


def load_yaml(path: str | os.PathLike) -> ModelConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"cannot read config {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: invalid YAML ({first})") from None
    return ModelConfig.from_dict(data, source=str(path)).validate()


def save_yaml(config: ModelConfig, path: str | os.PathLike) -> Path:
    """Write ``config`` as YAML atomically (temp file, then rename)."""
    path = Path(path)
    atomic_write_text(path, config.to_yaml())
    return path


def load_config(spec: str | os.PathLike | ModelConfig) -> ModelConfig:
    """Resolve a variant name, alias, YAML path or config object to a validated config.

    Raises:
        ValueError: unknown name (the message lists the known ones) or an invalid file.
    """
    if isinstance(spec, ModelConfig):
        return spec.validate()
    text = str(spec)
    key = ALIASES.get(text.lower(), text.lower())
    if key in VARIANTS:
        return load_yaml(CONFIG_DIR / VARIANTS[key])
    if text.endswith((".yaml", ".yml")) or os.sep in text or Path(text).exists():
        if not Path(text).exists():
            raise ValueError(f"config file not found: {text}")
        return load_yaml(text)
    known = ", ".join(list_variants() + sorted(ALIASES))
    raise ValueError(f"unknown model {text!r}; known names: {known}; or give a .yaml path")
