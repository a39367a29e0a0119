"""Frame -> top-k predictions with an exported model, for the demo and for scripts.

The ONNX file's own metadata (written by ``edge export``) says the input size, normalization
and class names, so nothing here is hard-coded to ImageNet.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from edge.export import read_metadata
from edge.runtimes import OrtRuntime


@dataclass(frozen=True)
class Prediction:
    labels: dict[str, float]  # top-k class name -> probability
    latency_ms: float  # model time for this frame (preprocessing excluded)


def center_crop_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8: centre square crop, then bilinear resize."""
    from PIL import Image

    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB frame, got shape {frame.shape}")
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = np.ascontiguousarray(frame[top : top + side, left : left + side, :3])
    return np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR))


class Classifier:
    """An exported model ready for frames.

    Args:
        path: ``.onnx`` written by ``python -m edge export`` (batch 1 or dynamic).
        threads: ONNX Runtime threads; spinning is off, so an idle session does not starve the
            web server sharing the CPU.
        top_k: number of labels returned.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, top_k: int = 5) -> None:
        meta = read_metadata(path)
        channels, size, _ = meta["input_size"]
        if channels != 3:
            raise ValueError(
                f"{path}: the demo needs an RGB model, this one takes {channels} channels"
            )
        self.size = size
        self.mean = np.asarray(meta["mean"], np.float32)[:, None, None]
        self.std = np.asarray(meta["std"], np.float32)[:, None, None]
        self.runtime = OrtRuntime(path, batch=1, threads=threads, spinning=False)
        self.class_names = meta.get("class_names")
        self.top_k = top_k
        self.name = meta["config"].name if "config" in meta else str(path)

    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        image = center_crop_resize(frame, self.size).astype(np.float32) / 255.0
        chw = (image.transpose(2, 0, 1) - self.mean) / self.std
        return chw[None].astype(np.float32)  # (1, 3, S, S)

    def __call__(self, frame: np.ndarray) -> Prediction:
        x = self.preprocess(frame)
        start = time.perf_counter()
        logits = self.runtime(x)[0].astype(np.float64)
        latency = (time.perf_counter() - start) * 1e3
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(-probs)[: self.top_k]
        names = self.class_names or [f"class {i}" for i in range(len(probs))]
        return Prediction({names[i]: float(probs[i]) for i in top}, latency)
