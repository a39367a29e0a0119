"""Supernet checkpoints: the shared weights with the space and the classes they were trained on.

One file holds what a search needs to rank sub-networks without the training run's folder: the
largest config, the space (its YAML and fingerprint, see
:meth:`~evit.supernet.space.SupernetSpace.fingerprint`), the class names, the weights and
their EMA, and (from ``evit supernet train``) the training state to resume. Written atomically;
loads with ``torch.load(weights_only=True)``.

Example:
    >>> from evit.supernet import load_supernet, read_space
    >>> loaded = load_supernet("runs/supernet/supernet.pth", space=read_space("space.yaml"))
    ... # doctest: +SKIP
    >>> model_config, state = loaded.supernet.extract(loaded.space.smallest(4))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from evit.config import ModelConfig
from evit.files import atomic_path
from evit.supernet.network import Supernet
from evit.supernet.space import SupernetSpace, space_from_dict

FORMAT = "evit-supernet"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class LoadedSupernet:
    """A supernet checkpoint, read.

    Attributes:
        supernet: the shared weights (or their EMA), in eval mode.
        space: the space it was trained on (at the input sizes of the training).
        class_names: the label of each output.
        extra: what the training added (epoch, metrics, recipe, training state).
    """

    supernet: Supernet
    space: SupernetSpace
    class_names: list[str]
    extra: dict[str, Any]


def save_supernet(
    path: str | os.PathLike,
    supernet: Supernet,
    space: SupernetSpace,
    class_names: list[str],
    *,
    ema_state: dict[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a supernet checkpoint (atomically: temp file, then rename).

    Args:
        path: destination file.
        supernet: the shared weights.
        space: the space its sub-networks come from.
        class_names: one per output of the classifier.
        ema_state: the EMA of ``supernet.state_dict()``, if any.
        extra: tensors, numbers, strings, lists and dicts only (``weights_only`` loading).

    Raises:
        ValueError: as many class names as the supernet has outputs are needed.
    """
    num_classes = supernet.max_config.num_classes
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a supernet of {num_classes} classes")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "max_config": supernet.max_config.to_dict(),
        "space": {
            "yaml": space.to_yaml(),
            "fingerprint": space.fingerprint(),
            "source": space.source,
        },
        "class_names": list(class_names),
        "state_dict": supernet.state_dict(),
        "ema_state_dict": ema_state,
        "extra": extra or {},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def check_checkpoint_matches(
    obj: dict[str, Any],
    path: str | os.PathLike,
    space: SupernetSpace | None = None,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
) -> None:
    """Refuse a supernet checkpoint (as read) of another space or other classes.

    Raises:
        ValueError: one line naming the checkpoint's space and classes and the ones asked for.
    """
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path} is not an evit supernet checkpoint (format {found!r})")
    saved = obj["space"]
    names = obj["class_names"]
    wanted_count = len(class_names) if class_names is not None else num_classes
    other_space = space is not None and space.fingerprint() != saved["fingerprint"]
    other_count = wanted_count is not None and wanted_count != len(names)
    if other_space or other_count:
        asked_space = (
            f"space {space.source} ({space.fingerprint()})" if space is not None else "its space"
        )
        asked_count = wanted_count if wanted_count is not None else len(names)
        raise ValueError(
            f"{path} is a supernet of space {saved['source']} ({saved['fingerprint']}) with "
            f"{len(names)} classes; asked for {asked_space} with {asked_count} classes"
        )
    if class_names is not None and list(class_names) != names:
        raise ValueError(
            f"{path} was trained on other classes ({', '.join(names[:3])}, ...) than "
            f"{', '.join(class_names[:3])}, ..."
        )


def load_supernet(
    path: str | os.PathLike,
    *,
    space: SupernetSpace | None = None,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
    ema: bool = False,
) -> LoadedSupernet:
    """Read a supernet checkpoint, checking it against the space and classes it is used for.

    Args:
        path: a file written by :func:`save_supernet` (``evit supernet train``'s output).
        space: the space the caller samples from; refused if the checkpoint's differs.
        class_names: the caller's classes; refused if they differ.
        num_classes: the caller's class count (when the names are unknown).
        ema: load the EMA of the weights (refused if the checkpoint has none).

    Raises:
        ValueError: unreadable file, another format, space or classes, or no EMA (one line).
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"supernet checkpoint not found: {path}") from None
    except Exception as e:  # torch raises many types for a damaged file
        raise ValueError(f"cannot read supernet checkpoint {path} ({type(e).__name__})") from None
    check_checkpoint_matches(obj, path, space, class_names, num_classes)
    state = obj["ema_state_dict"] if ema else obj["state_dict"]
    if state is None:
        raise ValueError(f"{path} holds no EMA of the weights (trained with --ema-decay 0)")
    max_config = ModelConfig.from_dict(obj["max_config"], source=f"{path} max_config")
    supernet = Supernet(max_config)
    supernet.load_state_dict(state)
    saved_space = space_from_dict(yaml.safe_load(obj["space"]["yaml"]), obj["space"]["source"])
    return LoadedSupernet(supernet.eval(), saved_space, list(obj["class_names"]), obj["extra"])
