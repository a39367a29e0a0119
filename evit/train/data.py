"""Image folders for training and evaluation.

Layout: ``DIR/train/<class>/*`` and ``DIR/val/<class>/*`` (ImageNet's), or a single
``DIR/<class>/*`` split deterministically into train and validation (the split is returned so
that it can be recorded). Class names are the sorted folder names; they travel with the
checkpoint to the ONNX metadata and the demo.

Augmentation randomness is seeded per sample from ``(seed, epoch, index)``, so the images a
sample turns into do not depend on the number of DataLoader workers, processes or on where a
run was interrupted: a resumed run and a run on two processes see exactly the same pixels.

Unreadable images are skipped and counted (up to a limit) instead of ending the run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from evit.config import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
EVAL_CROP_PCT = 0.875  # resize to img_size / 0.875 (256 for 224), then centre crop
AUGMENTATIONS = ("paper", "mild", "none")


class DataError(ValueError):
    """The data cannot be used as given (missing, empty, too many unreadable images)."""


Sample = tuple[str, int]


def find_classes(root: str | os.PathLike) -> list[str]:
    """Sorted class folder names under ``root``; every class must hold at least one image."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(
            f"{root}: no class folders (expected {root}/<class>/<image> or "
            f"{root}/train/<class>/<image>)"
        )
    for name in classes:
        if not any(_is_image(p) for p in (root / name).iterdir()):
            raise DataError(
                f"{root / name}: class folder holds no images "
                f"(extensions: {', '.join(IMAGE_EXTENSIONS)})"
            )
    return classes


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def scan_images(root: str | os.PathLike, classes: list[str]) -> list[Sample]:
    """All images of ``classes`` under ``root`` as sorted ``(path, label)`` pairs.

    Raises:
        DataError: a class folder is missing or empty.
    """
    root = Path(root)
    samples: list[Sample] = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"{folder}: class folder missing (classes: {', '.join(classes)})")
        files = sorted(str(p) for p in folder.iterdir() if _is_image(p))
        if not files:
            raise DataError(f"{folder}: class folder holds no images")
        samples.extend((f, label) for f in files)
    return samples


@dataclass(frozen=True)
class DataSplit:
    """Train and validation samples with their class names and how they were obtained."""

    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    description: dict[str, Any] = field(default_factory=dict)


def resolve_data(
    data: str | os.PathLike,
    val: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> DataSplit:
    """Find the training and validation images.

    Args:
        data: ``DIR`` with ``train/`` (and ``val/``) subfolders, or a folder of class folders.
        val: validation root; by default ``DIR/val``, else a split of ``DIR``.
        val_fraction: share of each class held out when one folder is split.
        seed: seed of that split (the split depends on it and the file names only).
    """
    root = Path(data)
    train_root = root / "train" if (root / "train").is_dir() else root
    classes = find_classes(train_root)
    train = scan_images(train_root, classes)
    val_root = Path(val) if val is not None else root / "val"
    if val is not None or (train_root != root and val_root.is_dir()):
        _check_same_classes(val_root, classes)
        return DataSplit(
            classes,
            train,
            scan_images(val_root, classes),
            {"train": str(train_root), "val": str(val_root)},
        )
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction={val_fraction}: must be in (0, 1)")
    train, held_out = split_samples(train, val_fraction, seed)
    return DataSplit(
        classes,
        train,
        held_out,
        {
            "train": str(train_root),
            "val": f"held out of {train_root}",
            "val_fraction": val_fraction,
            "split_seed": seed,
            "val_files": [os.path.relpath(p, train_root) for p, _ in held_out],
        },
    )


def _check_same_classes(val_root: Path, classes: list[str]) -> None:
    found = find_classes(val_root)
    if found != classes:
        missing = sorted(set(classes) - set(found))
        extra = sorted(set(found) - set(classes))
        raise DataError(
            f"{val_root}: validation classes differ from training classes "
            f"(missing: {', '.join(missing) or '-'}; extra: {', '.join(extra) or '-'})"
        )


def split_samples(
    samples: list[Sample], val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``val_fraction`` of every class (at least one image when it has two or more)."""
    rng = random.Random(seed)
    by_class: dict[int, list[Sample]] = {}
    for sample in samples:
        by_class.setdefault(sample[1], []).append(sample)
    train, val = [], []
    for label in sorted(by_class):
        items = sorted(by_class[label])
        rng.shuffle(items)
        n_val = max(1, round(len(items) * val_fraction)) if len(items) > 1 else 0
        val.extend(items[:n_val])
        train.extend(items[n_val:])
    return sorted(train), sorted(val)


# --- transforms ------------------------------------------------------------------------------


def eval_transform(img_size: int) -> Any:
    """The official evaluation preprocessing: bicubic resize to size/0.875, centre crop."""
    from timm.data import create_transform

    return create_transform(
        img_size,
        is_training=False,
        interpolation="bicubic",
        crop_pct=EVAL_CROP_PCT,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


def train_transform(img_size: int, aug: str, rand_augment: str, random_erasing: float) -> Any:
    """Training preprocessing.

    Args:
        aug: ``paper`` (random resized crop, flip, RandAugment, random erasing), ``mild``
            (random resized crop with scale >= 0.35 and flip only) or ``none`` (the evaluation
            preprocessing: deterministic).
        rand_augment: timm RandAugment spec for ``paper``.
        random_erasing: probability for ``paper``.
    """
    from timm.data import create_transform

    if aug not in AUGMENTATIONS:
        raise ValueError(f"aug={aug!r}: choose one of {', '.join(AUGMENTATIONS)}")
    if aug == "none":
        return eval_transform(img_size)
    paper = aug == "paper"
    return create_transform(
        img_size,
        is_training=True,
        scale=(0.08, 1.0) if paper else (0.35, 1.0),
        color_jitter=0.4 if paper else 0.0,
        auto_augment=rand_augment if paper else None,
        interpolation="bicubic",
        re_prob=random_erasing if paper else 0.0,
        re_mode="pixel",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


# --- dataset ---------------------------------------------------------------------------------


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample's augmentation in one epoch."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """An image file as RGB, turned as a camera shows it (EXIF orientation)."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


PIXEL_BYTES = 4  # Pillow holds an RGB pixel in 4 bytes


class DecodedImages:
    """Decoded images kept in memory for runs that read the same files many times in one
    process (a search trains every candidate on one dataset): the same pixels, decoded once.

    Bounded by ``max_bytes`` of pixel memory: beyond it, further images are decoded on every
    read. A file changed on disk (size or modification time) is decoded again. For the
    training process only: DataLoader workers would each fill a copy of their own.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._images: dict[str, tuple[tuple[int, int], Image.Image]] = {}

    def __len__(self) -> int:
        return len(self._images)

    def load(self, path: str | os.PathLike) -> Image.Image:
        path = os.fspath(path)
        stat = os.stat(path)
        key = (stat.st_mtime_ns, stat.st_size)
        held = self._images.get(path)
        if held is not None and held[0] == key:
            return held[1]
        image = load_rgb(path)
        size = image.width * image.height * PIXEL_BYTES
        if held is not None:  # changed on disk: the new pixels replace the old
            old = held[1]
            self.nbytes -= old.width * old.height * PIXEL_BYTES
            del self._images[path]
        if self.nbytes + size <= self.max_bytes:
            self._images[path] = (key, image)
            self.nbytes += size
        return image


# one per process: the trainings of a search share it (DataLoader workers get their own copy)
DECODED = DecodedImages(max_bytes=2 << 30)


class ImageDataset(Dataset):
    """``(path, label)`` samples loaded as RGB and transformed; unreadable files yield ``None``.

    Args:
        samples: the images.
        transform: PIL image -> tensor (it must not modify its input in place when
            ``images`` is given: the cached image is read again).
        seed: base seed of the per-sample augmentation randomness.
        images: decoded images kept across runs (:data:`DECODED`), or None to decode on
            every read.
    """

    def __init__(
        self,
        samples: list[Sample],
        transform: Any,
        seed: int = 0,
        images: DecodedImages | None = None,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.images = images

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int] | tuple[None, str, str]:
        path, label = self.samples[index]
        try:
            image = self.images.load(path) if self.images is not None else load_rgb(path)
        except Exception as e:  # PIL raises many types for truncated or foreign files
            return None, path, f"{type(e).__name__}: {str(e)[:120]}"
        s = sample_seed(self.seed, self.epoch, index)
        random.seed(s)
        np.random.seed(s)
        torch.default_generator.manual_seed(s)  # the CPU generator only: 60x cheaper
        return self.transform(image), label, index


@dataclass
class Batch:
    images: torch.Tensor
    targets: torch.Tensor
    bad: list[tuple[str, str]]  # (path, reason) of the samples dropped from this batch


def collate(items: list[Any]) -> Batch:
    """Stack the readable samples; report the unreadable ones instead of failing."""
    good = [it for it in items if it[0] is not None]
    bad = [(it[1], it[2]) for it in items if it[0] is None]
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), bad)
    images = torch.stack([it[0] for it in good])
    targets = torch.tensor([it[1] for it in good], dtype=torch.long)
    return Batch(images, targets, bad)


class BadImageCounter:
    """Counts skipped images; more than ``limit`` distinct ones end the run with one line."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: dict[str, str] = {}

    def add(self, bad: list[tuple[str, str]]) -> None:
        for path, reason in bad:
            if path not in self.seen:
                log.warning("skipped unreadable image %s (%s)", path, reason)
                self.seen[path] = reason
        if len(self.seen) > self.limit:
            path, reason = next(iter(self.seen.items()))
            raise DataError(
                f"{len(self.seen)} unreadable images, more than --max-bad-images={self.limit} "
                f"(first: {path}: {reason})"
            )
