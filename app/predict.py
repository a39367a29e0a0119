"""Image -> top-k predictions with an exported model, for the demo, its API and scripts.

Torch-free on the ONNX Runtime path: the file's own metadata (written by ``edge export``) gives
the input size, normalization and class names, and ``app.preprocess`` prepares the image
exactly as ``evit eval`` prepares a validation image.

Two times are kept apart: the *model* time of a frame is one timed inference on the prepared
input, measured as ``python -m edge bench`` measures a run; the *end-to-end* time also counts
decoding, preprocessing and ranking, and frames per second come from the intervals between
frames. Rolling medians and 90th percentiles cover the last ``window`` frames.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.models import ModelChoice, ModelInfo, choices_for, open_model, softmax
from app.preprocess import load_image, to_input


@dataclass(frozen=True)
class Prediction:
    labels: dict[str, float]  # top-k class name -> probability, best first
    model_ms: float  # the model's own time for this frame
    end_to_end_ms: float  # decode + preprocess + model + ranking

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "probabilities": list(self.labels.values()),
            "model_ms": self.model_ms,
            "end_to_end_ms": self.end_to_end_ms,
        }


@dataclass
class RollingStats:
    """Rolling p50/p90 of model and end-to-end times, and frames per second."""

    window: int = 100
    model_ms: deque = field(default_factory=deque)
    end_to_end_ms: deque = field(default_factory=deque)
    arrivals: deque = field(default_factory=deque)

    def add(self, p: Prediction, arrived: float) -> None:
        for values, value in (
            (self.model_ms, p.model_ms),
            (self.end_to_end_ms, p.end_to_end_ms),
            (self.arrivals, arrived),
        ):
            values.append(value)
            if len(values) > self.window:
                values.popleft()

    def fps(self) -> float | None:
        if len(self.arrivals) < 2:
            return None
        span = self.arrivals[-1] - self.arrivals[0]
        return (len(self.arrivals) - 1) / span if span > 0 else None

    def summary(self) -> str:
        if not self.model_ms:
            return "no frame yet"
        m = np.percentile(self.model_ms, [50, 90])
        e = np.percentile(self.end_to_end_ms, [50, 90])
        fps = self.fps()
        rate = f"{fps:.1f} frames/s, " if fps is not None else ""
        return (
            f"model {self.model_ms[-1]:.2f} ms (p50 {m[0]:.2f}, p90 {m[1]:.2f}) · "
            f"end to end {rate}p50 {e[0]:.1f} ms, p90 {e[1]:.1f} ms "
            f"over {len(self.model_ms)} frames"
        )


class ClassifierClosed(RuntimeError):
    """A call reached a classifier after it was closed (the caller should use the new one)."""


class Classifier:
    """One model behind one runtime session, shared by every caller (calls are serialized).

    Args:
        choice: what to run (see ``app.models``).
        runtime: ``ort`` (default), ``openvino``, ``torch`` or ``trt`` (``app.models.RUNTIMES``).
        threads: CPU threads of the runtime (ONNX Runtime spinning is off, so an idle session
            does not starve the web server sharing the CPU).
        top_k: labels returned.
    """

    def __init__(
        self,
        choice: ModelChoice,
        runtime: str = "ort",
        threads: int | None = None,
        top_k: int = 5,
    ) -> None:
        self.choice, self.runtime_name, self.threads, self.top_k = choice, runtime, threads, top_k
        self.runtime, self.info = open_model(choice, runtime, threads)
        self.lock = threading.Lock()
        self.closed = False  # set under the lock: a call that waited for it must not run
        self.stats = RollingStats()

    @classmethod
    def from_file(cls, path: str | os.PathLike, threads: int | None = None, top_k: int = 5):
        """A classifier on an exported ``.onnx`` file (ONNX Runtime)."""
        return cls(choices_for(str(path))[0], "ort", threads, top_k)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def size(self) -> int:
        return self.info.input_size

    def preprocess(self, image: Any) -> np.ndarray:
        return to_input(load_image(image), self.info.input_size, self.info.mean, self.info.std)

    def __call__(self, image: Any) -> Prediction:
        """Classify one image (path, bytes, PIL image or RGB array); raises ``ImageError``."""
        arrived = time.perf_counter()
        x = self.preprocess(image)
        with self.lock:  # one session, one inference at a time
            if self.closed:
                raise ClassifierClosed(f"{self.info.name} was closed (the demo switched models)")
            self.runtime.set_input(x)
            model_ms, logits = self.runtime.timed_output()  # as `edge bench` times a run
        logits = np.asarray(logits).reshape(-1)
        probs = softmax(logits)
        top = np.argsort(-probs)[: self.top_k]
        names = self.info.class_names
        labels = {(names[i] if i < len(names) else f"class {i}"): float(probs[i]) for i in top}
        result = Prediction(labels, model_ms, (time.perf_counter() - arrived) * 1e3)
        self.stats.add(result, arrived)
        return result

    def close(self) -> None:
        """Close the session once the call in flight, if any, is done; later calls raise
        :class:`ClassifierClosed`."""
        with self.lock:
            self.closed = True
            self.runtime.close()


def describe(info: ModelInfo, runtime: str) -> str:
    """One Markdown line: name, size, cost, runtime and where the weights came from."""
    params = f"{info.params / 1e6:.2f} M params, " if info.params is not None else ""
    macs = f"{info.macs / 1e6:.0f} M MACs, " if info.macs is not None else ""
    return (
        f"**{info.name}** · {info.input_size} px · {params}{macs}{len(info.class_names)} "
        f"classes · runtime {runtime} · weights: {info.weights}"
    )
