"""A procedurally drawn image-classification dataset, for machines that cannot download one.

A class is a (shape, fill pattern) pair: "star-stripes", "ring-dots", ... Everything else is
nuisance and varies at random: the object's colours, position, scale and rotation, the pattern's
orientation and frequency, a textured background, smaller clutter objects of any shape and
pattern, blur, contrast and pixel noise. Colour and position carry no information, so a linear
model on pixels does poorly, while a model that recognises shapes and textures does well; the
clutter and noise keep small models well below 100 % in a few CPU minutes, so architectures can
be told apart (docs/benchmarks.md has the measured figures).

Example:
    python -m evit data synthetic data/shapes --classes 10 --per-class 300 --size 64
"""

from __future__ import annotations

import itertools
import math
import os
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "hexagon",
    "crescent",
    "arrow",
    "heart",
)
PATTERNS = ("solid", "stripes", "checker", "dots")
_CLASS_ORDER_SEED = 20230515  # class definitions must not depend on the user's --seed


def class_names(num_classes: int) -> list[str]:
    """The first ``num_classes`` (shape, pattern) classes, in a fixed interleaved order."""
    combos = [f"{s}-{p}" for s, p in itertools.product(SHAPES, PATTERNS)]
    if not 2 <= num_classes <= len(combos):
        raise ValueError(f"--classes {num_classes}: must be between 2 and {len(combos)}")
    random.Random(_CLASS_ORDER_SEED).shuffle(combos)
    return combos[:num_classes]


def _polygon(shape: str, n: int = 48) -> list[list[tuple[float, float]]]:
    """Unit-size outline(s) of a shape; the 2nd outline, when present, is cut out."""

    def circle(r: float, cx: float = 0.0, cy: float = 0.0) -> list[tuple[float, float]]:
        return [
            (cx + r * math.cos(2 * math.pi * i / n), cy + r * math.sin(2 * math.pi * i / n))
            for i in range(n)
        ]

    def regular(k: int, r: float = 1.0, phase: float = 0.0) -> list[tuple[float, float]]:
        return [
            (r * math.cos(phase + 2 * math.pi * i / k), r * math.sin(phase + 2 * math.pi * i / k))
            for i in range(k)
        ]

    if shape == "circle":
        return [circle(1.0)]
    if shape == "square":
        return [regular(4, 1.0, math.pi / 4)]
    if shape == "triangle":
        return [regular(3, 1.0, -math.pi / 2)]
    if shape == "hexagon":
        return [regular(6, 1.0)]
    if shape == "star":
        pts = []
        for i in range(10):
            r = 1.0 if i % 2 == 0 else 0.42
            a = -math.pi / 2 + math.pi * i / 5
            pts.append((r * math.cos(a), r * math.sin(a)))
        return [pts]
    if shape == "cross":
        a, b = 0.33, 1.0
        arm = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a)]
        return [[*arm, (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]]
    if shape == "ring":
        return [circle(1.0), circle(0.55)]
    if shape == "crescent":
        return [circle(1.0), circle(0.85, 0.45, -0.1)]
    if shape == "arrow":
        return [[(-1, -0.3), (0.2, -0.3), (0.2, -0.75), (1, 0), (0.2, 0.75), (0.2, 0.3), (-1, 0.3)]]
    if shape == "heart":
        pts = []
        for i in range(n):
            t = 2 * math.pi * i / n
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((x / 17, -y / 17))
        return [pts]
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def _mask(shape: str, size: int, cx: float, cy: float, radius: float, angle: float) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    c, s = math.cos(angle), math.sin(angle)
    for i, outline in enumerate(_polygon(shape)):
        pts = [(cx + radius * (x * c - y * s), cy + radius * (x * s + y * c)) for x, y in outline]
        draw.polygon(pts, fill=0 if i else 255)
    return mask


def _pattern(rng: np.random.Generator, pattern: str, size: int) -> np.ndarray:
    """(size, size, 3) float RGB in [0, 1]: two random colours arranged by ``pattern``."""
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    while np.abs(a - b).sum() < 0.6:  # keep the pattern visible
        b = rng.uniform(0, 1, 3)
    if pattern == "solid":
        return np.broadcast_to(a, (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = rng.uniform(0, math.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    period = rng.uniform(0.09, 0.16) * size
    if pattern == "stripes":
        on = (u / period) % 1.0 < 0.5
    elif pattern == "checker":
        on = ((u / period) // 1 + (v / period) // 1) % 2 == 0
    elif pattern == "dots":
        du = (u / period) % 1.0 - 0.5
        dv = (v / period) % 1.0 - 0.5
        on = du**2 + dv**2 < 0.09
    else:
        raise ValueError(f"unknown pattern {pattern!r}; known: {', '.join(PATTERNS)}")
    return np.where(on[..., None], a, b)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth colour gradient plus blotchy low-frequency noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) * 0.5 + 0.5
    image = c0 * (1 - t[..., None]) + c1 * t[..., None]
    coarse = rng.uniform(-0.25, 0.25, (6, 6, 3)).astype(np.float32)
    blotches = np.asarray(
        Image.fromarray(((coarse + 0.5) * 255).astype(np.uint8)).resize(
            (size, size), Image.BICUBIC
        ),
        np.float32,
    )
    return np.clip(image + blotches / 255 - 0.5, 0, 1)


def _paste(canvas: np.ndarray, fill: np.ndarray, mask: Image.Image, alpha: float) -> None:
    m = np.asarray(mask, np.float32)[..., None] / 255 * alpha
    canvas *= 1 - m
    canvas += fill * m


def draw_image(shape: str, pattern: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One image of class (shape, pattern) with random nuisance, ``size`` x ``size`` RGB."""
    big = 2 * size  # drawn at twice the size, then downsampled (anti-aliasing)
    canvas = _background(rng, big)
    for _ in range(int(rng.integers(2, 6))):  # clutter: smaller objects of any class
        r = rng.uniform(0.07, 0.17) * big
        _paste(
            canvas,
            _pattern(rng, str(rng.choice(PATTERNS)), big),
            _mask(
                str(rng.choice(SHAPES)),
                big,
                *rng.uniform(0, big, 2),
                r,
                rng.uniform(0, 2 * math.pi),
            ),
            rng.uniform(0.5, 1.0),
        )
    radius = rng.uniform(0.2, 0.38) * big
    cx, cy = rng.uniform(radius * 0.8, big - radius * 0.8, 2)
    _paste(
        canvas,
        _pattern(rng, pattern, big),
        _mask(shape, big, cx, cy, radius, rng.uniform(0, 2 * math.pi)),
        1.0,
    )
    image = Image.fromarray((canvas * 255).astype(np.uint8)).resize((size, size), Image.LANCZOS)
    if rng.uniform() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    pixels = np.asarray(image, np.float32)
    contrast = rng.uniform(0.6, 1.1)
    pixels = (pixels - pixels.mean()) * contrast + pixels.mean() + rng.uniform(-20, 20)
    pixels += rng.normal(0, rng.uniform(2, 14), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_synthetic(
    root: str | os.PathLike,
    num_classes: int = 10,
    per_class: int = 300,
    size: int = 64,
    seed: int = 0,
    val_per_class: int | None = None,
) -> dict[str, int]:
    """Write ``root/train/<class>/*.png`` and ``root/val/<class>/*.png``.

    Args:
        root: destination; must not exist or be empty. Written to a temp folder and renamed,
            so an interrupted run leaves nothing that looks complete.
        num_classes: 2..40.
        per_class: training images per class.
        size: image side in pixels.
        seed: the same seed gives the same files.
        val_per_class: validation images per class (default: a quarter of ``per_class``).

    Returns:
        Image counts per split.
    """
    root = Path(root)
    if per_class < 1 or size < 16:
        raise ValueError(f"--per-class {per_class} / --size {size}: need >= 1 and >= 16")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root} already exists and is not an empty folder")
    names = class_names(num_classes)
    val_per_class = max(1, per_class // 4) if val_per_class is None else val_per_class
    if val_per_class < 1:
        raise ValueError(f"--val-per-class {val_per_class}: need >= 1")
    tmp = root.with_name(f".{root.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for split, count, offset in (("train", per_class, 0), ("val", val_per_class, 1)):
            for label, name in enumerate(names):
                folder = tmp / split / name
                folder.mkdir(parents=True)
                shape, pattern = name.split("-")
                rng = np.random.default_rng([seed, offset, label])
                for i in range(count):
                    draw_image(shape, pattern, size, rng).save(folder / f"{i:05d}.png")
        if root.exists():
            root.rmdir()
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"train": per_class * num_classes, "val": val_per_class * num_classes}
