"""A runtime's numbers against ONNX Runtime's on the same file (OpenVINO's check before timing).

Kept apart from both runtimes so that neither imports the other.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edge.openvino import TOLERANCE, OpenVinoRuntime
from edge.quantize import centered_cosine
from edge.runtimes import OrtRuntime


def check_against_ort(
    path: str | os.PathLike, rt: OpenVinoRuntime, samples: int = 16, seed: int = 0
) -> dict[str, Any]:
    """Run ``rt`` and ONNX Runtime on the same file and random images; compare the logits.

    Returns the cosine (of the logits minus each class's mean over the images, so that a
    constant offset cannot hide a difference), top-1 agreement, the tolerance and ``passed``.
    """
    ort_rt = OrtRuntime(path, batch=rt.input_shape[0])
    rng = np.random.default_rng(seed)
    a, b = [], []
    for _ in range(samples):
        x = rng.standard_normal(rt.input_shape).astype(np.float32)
        a.append(rt(x))
        b.append(ort_rt(x))
    ort_rt.close()
    q, f = np.concatenate(a).astype(np.float64), np.concatenate(b).astype(np.float64)
    cosine = centered_cosine(q, f)
    top1 = float(np.mean(q.argmax(1) == f.argmax(1)))
    tol = TOLERANCE[rt.precision]
    return {
        "precision": rt.precision,
        "cosine": cosine,
        "top1_agreement": top1,
        "samples": samples,
        **tol,
        "passed": cosine >= tol["min_cosine"] and top1 >= tol["min_top1"],
    }
