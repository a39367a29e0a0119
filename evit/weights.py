"""Checkpoints: the official Microsoft release, timm state dicts, and this project's own format.

Formats recognised by :func:`load_state_dict_file`:
- official (microsoft/Cream): ``{'model': sd}`` (and/or ``model_ema``), keys
  ``patch_embed.{0,2,4,6}.c``, ``blocksN.i``, ``.c.``/``.l.``, ``attention_bias_idxs``; a
  distillation ``head_dist`` is merged exactly into ``head`` (the eval output is their mean);
- timm (``efficientvit_m*``): keys ``stages.i.downsample.res1...``, ``.m.`` for residual branches;
- evit: ``{'format': 'evit', 'config': {...}, 'state_dict': sd}`` written by
  :func:`save_checkpoint` (the config travels with the weights).

Files are read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from evit.config import ModelConfig, load_config
from evit.files import atomic_path
from evit.model import EfficientViT

FORMAT = "evit"
FORMAT_VERSION = 1
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def _read(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/corrupt/pickled files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read checkpoint {path}: {reason[:200]}") from None


def _is_tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


_OFFICIAL_STEM = {"0": "conv1", "2": "conv2", "4": "conv3", "6": "conv4"}
_DOWNSAMPLE_PARTS = ("res1", "patchmerge", "res2")


def _official_key(key: str) -> str:
    """Map one official (microsoft/Cream) key to this model's key."""
    m = re.match(r"patch_embed\.(\d)\.(.*)", key)
    if m:
        key = f"patch_embed.{_OFFICIAL_STEM[m.group(1)]}.{m.group(2)}"
    m = re.match(r"blocks(\d+)\.(\d+)\.(.*)", key)
    if m:
        stage, index, rest = int(m.group(1)) - 1, int(m.group(2)), m.group(3)
        if stage == 0:
            key = f"stages.0.blocks.{index}.{rest}"
        elif index < 3:
            key = f"stages.{stage}.downsample.{_DOWNSAMPLE_PARTS[index]}.{rest}"
        else:
            key = f"stages.{stage}.blocks.{index - 3}.{rest}"
    key = re.sub(r"\.c\.", ".conv.", key)
    key = re.sub(r"^(head|head_dist)\.l\.", r"\1.linear.", key)
    key = key.replace(".se.conv_reduce.", ".se.fc1.").replace(".se.conv_expand.", ".se.fc2.")
    return key.replace(".m.", ".branch.")


def _timm_key(key: str) -> str:
    return key.replace(".m.", ".branch.")


def _merge_distillation_head(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold ``head_dist`` into ``head`` so the single head computes (head + head_dist) / 2.

    Each BN1d+Linear is an affine map in eval; their mean is stored as a Linear behind an
    identity BN (weight 1, bias 0, mean 0, var 1 - eps), which is exact in eval mode.
    """

    def affine(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        eps = 1e-5
        scale = sd[f"{prefix}.bn.weight"] / torch.sqrt(sd[f"{prefix}.bn.running_var"] + eps)
        shift = sd[f"{prefix}.bn.bias"] - sd[f"{prefix}.bn.running_mean"] * scale
        w, b = sd[f"{prefix}.linear.weight"], sd[f"{prefix}.linear.bias"]
        return w * scale[None, :], b + w @ shift

    w1, b1 = affine("head")
    w2, b2 = affine("head_dist")
    out = {k: v for k, v in sd.items() if not k.startswith("head_dist.")}
    dim = w1.shape[1]
    out["head.bn.weight"] = torch.ones(dim)
    out["head.bn.bias"] = torch.zeros(dim)
    out["head.bn.running_mean"] = torch.zeros(dim)
    out["head.bn.running_var"] = torch.full((dim,), 1.0 - 1e-5)
    out["head.linear.weight"] = (w1 + w2) / 2
    out["head.linear.bias"] = (b1 + b2) / 2
    return out


def load_state_dict_file(
    path: str | os.PathLike, ema: bool = False
) -> tuple[dict[str, torch.Tensor], ModelConfig | None, str]:
    """Read a checkpoint in any supported format.

    Args:
        path: the file.
        ema: for official training checkpoints, take ``model_ema`` instead of ``model``.

    Returns:
        (state dict in this model's key format, config if the file carries one, format name).
    """
    obj = _read(path)
    config = None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        config = ModelConfig.from_dict(obj.get("config"), source=f"{path} config").validate()
        obj = obj.get("state_dict")
    elif isinstance(obj, dict) and ("model" in obj or "model_ema" in obj):
        wanted = "model_ema" if ema or "model" not in obj else "model"
        if wanted not in obj:
            raise ValueError(
                f"{path}: ema weights requested but the file has no 'model_ema' "
                f"(keys: {', '.join(sorted(map(str, obj)))})"
            )
        obj = obj[wanted]
    elif isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not _is_tensor_dict(obj):
        raise ValueError(
            f"{path}: not a state dict (expected a mapping of parameter names to "
            "tensors, an official {'model': ...} file, or an evit checkpoint)"
        )
    keys = list(obj)
    if any(k.startswith(("blocks1.", "patch_embed.0.")) for k in keys):
        fmt = "official"
        sd = {_official_key(k): v for k, v in obj.items() if not k.endswith("attention_bias_idxs")}
        if any(k.startswith("head_dist.") for k in sd):
            sd = _merge_distillation_head(sd)
    elif any(".m." in k for k in keys):
        fmt = "timm"
        sd = {_timm_key(k): v for k, v in obj.items() if not k.endswith("attention_bias_idxs")}
    else:
        fmt = FORMAT if config is not None else "state_dict"
        sd = dict(obj)
    return sd, config, fmt


def _describe(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def load_weights(
    model: EfficientViT, path: str | os.PathLike, *, reset_head: bool = False, ema: bool = False
) -> str:
    """Load ``path`` into ``model`` strictly.

    Args:
        model: the target; its config defines what is expected.
        path: checkpoint file in any supported format.
        reset_head: skip the classifier weights (keep the model's fresh head), for fine-tuning
            to another class count.
        ema: official checkpoints: load ``model_ema``.

    Returns:
        The detected format name.

    Raises:
        ValueError: one line naming what is missing, unexpected or of the wrong shape.
    """
    sd, _, fmt = load_state_dict_file(path, ema=ema)
    target = model.state_dict()
    if reset_head:
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
        target = {k: v for k, v in target.items() if not k.startswith("head.")}
    for key, value in list(sd.items()):
        expected = target.get(key)
        # the official loader's rule: 2-D 1x1-conv weights become 4-D
        if (
            expected is not None
            and value.dim() == 2
            and expected.dim() == 4
            and expected.shape[2:] == (1, 1)
            and expected.shape[:2] == value.shape
        ):
            sd[key] = value[:, :, None, None]
    missing = sorted(set(target) - set(sd))
    unexpected = sorted(set(sd) - set(target))
    mismatched = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(target[k].shape)}"
        for k in target
        if k in sd and sd[k].shape != target[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {_describe(mismatched)}")
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_describe(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_describe(unexpected)}")
        hint = ""
        if all(m.startswith("head.") for m in mismatched) and mismatched and not missing:
            hint = (
                "; for another number of classes pass num_classes=N with reset_head=True "
                "(CLI: --num-classes N --reset-head)"
            )
        cfg = model.config
        raise ValueError(
            f"checkpoint {path} ({fmt} format) does not fit {cfg.name} "
            f"(num_classes={cfg.num_classes}): {'; '.join(parts)}{hint}"
        )
    model.load_state_dict(sd, strict=not reset_head)
    return fmt


def save_checkpoint(
    model: EfficientViT,
    path: str | os.PathLike,
    extra: dict[str, Any] | None = None,
    *,
    class_names: list[str] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write weights with their config (atomically: temp file, then rename).

    Args:
        model: the model whose config (and, by default, weights) are saved.
        path: destination file.
        extra: anything else to keep (epoch, metrics, recipe, training state); tensors, numbers,
            strings, lists and dicts only, so the file loads with ``weights_only=True``.
        class_names: the label of each output, in order; travels to ONNX metadata and the app.
        state_dict: weights to save instead of the model's own (e.g. its EMA).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if class_names is not None and len(class_names) != model.config.num_classes:
        raise ValueError(
            f"{len(class_names)} class names for a model with "
            f"num_classes={model.config.num_classes}"
        )
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": state_dict if state_dict is not None else model.state_dict(),
        "class_names": list(class_names) if class_names is not None else None,
    }
    if extra:
        payload["extra"] = extra
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """What an evit checkpoint says about itself: ``config``, ``class_names``, ``extra``.

    Official and timm files carry none of these; their values are then ``None``/``{}``.
    """
    obj = _read(path)
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        return {"config": None, "class_names": None, "extra": {}}
    config = ModelConfig.from_dict(obj.get("config"), source=f"{path} config").validate()
    return {
        "config": config,
        "class_names": obj.get("class_names"),
        "extra": obj.get("extra") or {},
    }


def is_checkpoint_path(spec: Any) -> bool:
    return isinstance(spec, (str, os.PathLike)) and str(spec).endswith(CHECKPOINT_SUFFIXES)


def _config_from_weights(config: ModelConfig, weights: str | os.PathLike, ema: bool) -> ModelConfig:
    """An evit checkpoint of the same architecture brings its input size and class count.

    ``create_model("m0", weights="run/best.pth")`` then builds the m0 that was trained (at
    64 px with 10 classes, say); a checkpoint of another architecture is refused by name.
    """
    _, saved, _ = load_state_dict_file(weights, ema=ema)
    if saved is None:
        return config
    same = config.at_img_size(saved.img_size) if config.img_size != saved.img_size else config
    same = same.replace(name=saved.name, num_classes=saved.num_classes)
    if same.architecture_hash() != saved.architecture_hash():
        raise ValueError(
            f"{weights} holds {saved.name!r}, whose architecture differs from {config.name!r}; "
            f"pass the checkpoint itself as the model"
        )
    return saved


def create_model(
    spec: str | os.PathLike | ModelConfig,
    *,
    num_classes: int | None = None,
    weights: str | os.PathLike | None = None,
    reset_head: bool = False,
    ema: bool = False,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> EfficientViT:
    """Build an EfficientViT and optionally load weights.

    Args:
        spec: variant name (``efficientvit_m0``/``m0``), YAML path, :class:`ModelConfig`, or an
            evit checkpoint (``.pth``) that carries its config.
        num_classes: override the config's class count.
        weights: checkpoint to load (official, timm or evit format).
        reset_head: load everything but the classifier, which stays freshly initialized.
        ema: official checkpoints: load ``model_ema``.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth of the last block (rising linearly from 0).

    Example:
        >>> model = create_model("m0", num_classes=10)
        >>> model.config.num_classes
        10
    """
    if is_checkpoint_path(spec):
        _, config, _ = load_state_dict_file(spec, ema=ema)
        if config is None:
            raise ValueError(
                f"{spec} carries no config: pass a variant name or YAML as the "
                "model and the file as weights="
            )
        weights = weights or spec
    else:
        config = load_config(spec)
        if weights is not None and is_checkpoint_path(weights):
            config = _config_from_weights(config, weights, ema)
    if num_classes is not None and not reset_head:
        config = config.replace(num_classes=num_classes)
    model = EfficientViT(config, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    if weights is not None:
        load_weights(model, weights, reset_head=reset_head, ema=ema)
    if reset_head and num_classes is not None and num_classes != config.num_classes:
        model.reset_classifier(num_classes)
    return model
