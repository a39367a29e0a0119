"""Image -> model input exactly as ``evit eval`` prepares a validation image, without PyTorch.

The official evaluation preprocessing (timm's ``create_transform(..., crop_pct=0.875,
interpolation="bicubic")``, used by ``evit.train.data.eval_transform``): orient by EXIF, convert
to RGB, resize the shorter side to ``floor(size / 0.875)`` with bicubic filtering, centre-crop
``size`` x ``size``, scale to [0, 1], normalize with the model file's mean and std. Written here
in PIL and NumPy so that running an exported model needs no torch; a test checks that both give
identical tensors for the same image.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

CROP_PCT = 0.875
MAX_PIXELS = 50_000_000  # larger images are refused, not decoded (decompression bombs)


class ImageError(ValueError):
    """The input is not an image this demo can use."""


def load_image(source: Any) -> Image.Image:
    """A PIL image in RGB from a path, bytes, a PIL image or an (H, W[, C]) uint8 array.

    EXIF orientation is applied; alpha is dropped and palette or grayscale images become RGB,
    as ``Image.convert("RGB")`` does for a validation image.

    Raises:
        ImageError: empty, unreadable, not an image, or too large.
    """
    if source is None:
        raise ImageError("no image (the camera has not sent a frame yet)")
    if isinstance(source, np.ndarray):
        if source.size == 0 or source.ndim not in (2, 3):
            raise ImageError(f"empty or malformed frame of shape {source.shape}")
        if source.ndim == 3 and source.shape[2] not in (1, 3, 4):
            raise ImageError(f"a frame needs 1, 3 or 4 channels, got shape {source.shape}")
        array = source if source.dtype == np.uint8 else np.clip(source, 0, 255).astype(np.uint8)
        image = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array)
    elif isinstance(source, Image.Image):
        image = source
    else:
        image = _open(source)
    _check_size(image)
    image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


def _open(source: str | os.PathLike | bytes) -> Image.Image:
    try:
        data = source if isinstance(source, bytes) else open(source, "rb").read()  # noqa: SIM115
    except OSError as e:
        raise ImageError(f"cannot read {source}: {e.strerror or e}") from None
    if not data:
        raise ImageError("the file is empty (0 bytes)")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    with warnings.catch_warnings():  # refused below, in one line, not warned
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = _decoding(lambda: Image.open(io.BytesIO(data)))  # reads the header only
    _check_size(image)  # before decoding: Pillow only warns up to twice its limit
    _decoding(image.load)
    return image


DECODER_ERRORS = (
    UnidentifiedImageError,
    OSError,
    Image.DecompressionBombError,
    SyntaxError,
    EOFError,  # some truncated files end the decoder this way
    ValueError,  # and some malformed headers this way
)


def _decoding(step: Any) -> Any:
    """``step()``, with any decoder error as one-line :class:`ImageError`."""
    try:
        return step()
    except DECODER_ERRORS as e:
        reason = str(e).split(" (")[0][:120] or type(e).__name__
        raise ImageError(f"not a readable image ({reason})") from None


def _check_size(image: Image.Image) -> None:
    if image.width * image.height > MAX_PIXELS:
        raise ImageError(
            f"image of {image.width}x{image.height} pixels is larger than allowed "
            f"({MAX_PIXELS:,} pixels)"
        )


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size``, the longer one scaled and truncated (torchvision's rule)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return image
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    return image.resize((new_w, new_h), Image.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """The centre ``size`` x ``size`` (torchvision's rounding; zero-padded when smaller)."""
    w, h = image.size
    if w < size or h < size:
        padded = Image.new("RGB", (max(w, size), max(h, size)))
        padded.paste(image, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
        image, (w, h) = padded, padded.size
    top = round((h - size) / 2.0)
    left = round((w - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


def to_input(
    image: Image.Image, size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> np.ndarray:
    """RGB image -> (1, 3, size, size) float32, the model's input."""
    image = center_crop(resize_shorter(image, math.floor(size / CROP_PCT)), size)
    x = np.asarray(image, dtype=np.uint8).astype(np.float32) / 255
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
