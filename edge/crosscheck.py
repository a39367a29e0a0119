"""A runtime's numbers against ONNX Runtime's on the same file (OpenVINO's check before timing).

Kept apart from both runtimes so that neither imports the other.

Two checks:

- :func:`check_against_ort`: OpenVINO and ONNX Runtime run the same file on random images and
  must agree within the precision's tolerance (``edge.openvino.TOLERANCE``). Right for fp32 and
  bf16, and for int8 files of trained models (§14 of docs/benchmarks.md: OpenVINO's int8 of a
  trained M0 agrees with ONNX Runtime's at cosine 0.9996).
- :func:`check_int8_against_fp32`: for an int8 file of *random* weights (a benchmark's or a
  search's live copies) the quantization error itself is large (ONNX Runtime's int8 of a live
  M0 has cosine 0.4-0.9 to its fp32 model), so two correct int8 implementations that round
  differently drift apart through the network and the first check cannot tell a misread graph
  from rounding. This one asks instead whether OpenVINO's int8 is as close to the fp32 model as
  ONNX Runtime's int8 is.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edge.openvino import TOLERANCE, OpenVinoRuntime
from edge.quantize import centered_cosine
from edge.runtimes import OrtRuntime

# check_int8_against_fp32: how much further from fp32 OpenVINO's int8 may be than ONNX Runtime's;
# top-1 agreement: at least 2 of 16 images, or two standard errors of the difference of two
# agreement rates over the images, whichever is larger (see int8_top1_slack)
INT8_FIDELITY_SLACK = {"cosine": 0.05, "top1": 0.125}


def int8_top1_slack(ort_agreement: float, samples: int) -> float:
    """How far OpenVINO's top-1 agreement with fp32 may fall below ONNX Runtime's by chance.

    On random weights an int8 graph agrees with fp32 on a fraction p of the images (M3: 8 of
    16), and two correct int8 runtimes round differently, so their agreements differ like two
    binomial draws: the standard error of the difference is sqrt(2 p (1 - p) / n).
    """
    p = min(max(ort_agreement, 0.0), 1.0)
    return max(INT8_FIDELITY_SLACK["top1"], 2.0 * float(np.sqrt(2.0 * p * (1.0 - p) / samples)))


def _run(rt: Any, images: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([rt(x) for x in images]).astype(np.float64)


def _images(shape: tuple[int, ...], samples: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(samples)]


def _ort(path: str | os.PathLike, batch: int, images: list[np.ndarray]) -> np.ndarray:
    rt = OrtRuntime(path, batch=batch)
    try:
        return _run(rt, images)
    finally:
        rt.close()


def check_against_ort(
    path: str | os.PathLike, rt: OpenVinoRuntime, samples: int = 16, seed: int = 0
) -> dict[str, Any]:
    """Run ``rt`` and ONNX Runtime on the same file and random images; compare the logits.

    Returns the cosine (of the logits minus each class's mean over the images, so that a
    constant offset cannot hide a difference), top-1 agreement, the tolerance and ``passed``.
    """
    images = _images(rt.input_shape, samples, seed)
    q, f = _run(rt, images), _ort(path, rt.input_shape[0], images)
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


def check_int8_against_fp32(
    int8: str | os.PathLike,
    fp32: str | os.PathLike,
    rt: OpenVinoRuntime,
    samples: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """Is ``rt`` (OpenVINO running the Q/DQ file ``int8``) as close to the fp32 model as ONNX
    Runtime running the same Q/DQ file? Both are compared with ONNX Runtime's fp32 ``fp32``.

    Passes when OpenVINO's cosine to fp32 is at most :data:`INT8_FIDELITY_SLACK` below ONNX
    Runtime's and its top-1 agreement at most :func:`int8_top1_slack` below.
    """
    if rt.precision != "int8":
        raise ValueError(f"check_int8_against_fp32 checks int8, not {rt.precision}")
    batch = rt.input_shape[0]
    images = _images(rt.input_shape, samples, seed)
    ov, ort, ref = _run(rt, images), _ort(int8, batch, images), _ort(fp32, batch, images)
    top1 = ref.argmax(1)
    result = {
        "precision": "int8",
        "samples": samples,
        "cosine": centered_cosine(ov, ref),
        "top1_agreement": float(np.mean(ov.argmax(1) == top1)),
        "ort_cosine": centered_cosine(ort, ref),
        "ort_top1_agreement": float(np.mean(ort.argmax(1) == top1)),
        "cosine_to_ort": centered_cosine(ov, ort),
    }
    result["min_cosine"] = result["ort_cosine"] - INT8_FIDELITY_SLACK["cosine"]
    ort_top1 = result["ort_top1_agreement"]
    result["min_top1"] = ort_top1 - int8_top1_slack(ort_top1, samples)
    result["passed"] = (
        result["cosine"] >= result["min_cosine"] and result["top1_agreement"] >= result["min_top1"]
    )
    return result
