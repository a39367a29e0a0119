"""The one interface every runtime implements (ONNX Runtime, PyTorch, TensorRT).

Kept apart from the runtimes themselves so that no runtime module imports another.
"""

from __future__ import annotations

import abc
import time

import numpy as np


class Runtime(abc.ABC):
    """Base class: subclasses set ``name``, ``device``, ``input_shape`` and implement
    ``_infer`` (run on the prepared input) and ``_output`` (fetch the last output)."""

    name = "base"
    device = "cpu"
    threads: int | None = None
    input_shape: tuple[int, ...] = ()
    label = ""

    @abc.abstractmethod
    def set_input(self, x: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _infer(self) -> None: ...

    @abc.abstractmethod
    def _output(self) -> np.ndarray: ...

    def run(self) -> np.ndarray:
        """One inference on the prepared input; returns the output."""
        self._infer()
        return self._output()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.set_input(x)
        return self.run()

    def timed(self) -> tuple[float, float | None]:
        """One inference: (host ms, device ms or None on a CPU)."""
        start = time.perf_counter()
        self._infer()
        return (time.perf_counter() - start) * 1e3, None

    def timed_output(self) -> tuple[float, np.ndarray]:
        """One timed inference on the prepared input: (host ms, output), timed as a run of
        ``python -m edge bench`` is (the copy-out of the output is not counted)."""
        host_ms, _ = self.timed()
        return host_ms, self._output()

    def close(self) -> None:
        """Release the session (GPU memory, threads)."""

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
