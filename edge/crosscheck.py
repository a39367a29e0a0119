"""A runtime's numbers against ONNX Runtime's on the same file (OpenVINO's check before timing).

Kept apart from both runtimes so that neither imports the other.

Two checks:

- :func:`check_against_ort`: OpenVINO and ONNX Runtime run the same file on random images and
  must agree within the precision's tolerance (``edge.openvino.TOLERANCE``). Right for fp32 and
  bf16, and for int8 files of trained models (§14 of docs/benchmarks.md: OpenVINO's int8 of a
  trained M0 agrees with ONNX Runtime's at cosine 0.9996).
- :func:`check_int8_against_fp32`: for an int8 file of *random* weights (a benchmark's or a
  search's live copies) the quantization error itself is large (a live M0's Q/DQ graph has
  cosine 0.96 to its fp32 model), so two correct int8 implementations that round differently
  drift apart through the network and the first check cannot tell a misread graph from
  rounding. This one asks instead whether OpenVINO's int8 is as close to the fp32 model as the
  Q/DQ graph itself is (run as written, ``edge.quantize.reference_session``: no CPU's int8
  kernels take part, so a CPU whose kernels saturate does not move the bar).

Both also compare magnitudes (the relative error of the logits): a runtime that returns
``a * logits + b`` has a perfect centred cosine and wrong probabilities.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edge.openvino import TOLERANCE, OpenVinoRuntime
from edge.quantize import centered_cosine, logit_agreement, run_reference
from edge.runtimes import OrtRuntime

# check_int8_against_fp32: how much further from fp32 OpenVINO's int8 may be than the Q/DQ
# graph's; top-1 agreement: at least 2 of 16 images, or two standard errors of the difference of
# two agreement rates over the images, whichever is larger (see int8_top1_slack); relative error
# of the logits: at most this much above the Q/DQ graph's
INT8_FIDELITY_SLACK = {"cosine": 0.05, "top1": 0.125, "rel_error": 0.15}


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
    agreement = logit_agreement(q, f)
    tol = TOLERANCE[rt.precision]
    return {
        "precision": rt.precision,
        "cosine": agreement.cosine,
        "top1_agreement": agreement.top1_agreement,
        "rel_error": agreement.rel_error,
        "samples": samples,
        **tol,
        "passed": agreement.cosine >= tol["min_cosine"]
        and agreement.top1_agreement >= tol["min_top1"]
        and agreement.rel_error <= tol["max_rel_error"],
    }


def check_int8_against_fp32(
    int8: str | os.PathLike,
    fp32: str | os.PathLike,
    rt: OpenVinoRuntime,
    samples: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """Is ``rt`` (OpenVINO running the Q/DQ file ``int8``) as close to the fp32 model as the
    Q/DQ graph run as written? Both are compared with ONNX Runtime's fp32 ``fp32``.

    Passes when OpenVINO's cosine to fp32 is at most :data:`INT8_FIDELITY_SLACK` below the
    reference's, its relative error at most that much above, and its top-1 agreement at most
    :func:`int8_top1_slack` below.
    """
    if rt.precision != "int8":
        raise ValueError(f"check_int8_against_fp32 checks int8, not {rt.precision}")
    batch = rt.input_shape[0]
    images = _images(rt.input_shape, samples, seed)
    ov, reference, fp = _run(rt, images), run_reference(int8, images), _ort(fp32, batch, images)
    mine, theirs = logit_agreement(ov, fp), logit_agreement(reference, fp)
    result = {
        "precision": "int8",
        "samples": samples,
        "cosine": mine.cosine,
        "top1_agreement": mine.top1_agreement,
        "rel_error": mine.rel_error,
        "reference_cosine": theirs.cosine,
        "reference_top1_agreement": theirs.top1_agreement,
        "reference_rel_error": theirs.rel_error,
        "cosine_to_reference": centered_cosine(ov, reference),
    }
    result["min_cosine"] = theirs.cosine - INT8_FIDELITY_SLACK["cosine"]
    result["max_rel_error"] = theirs.rel_error + INT8_FIDELITY_SLACK["rel_error"]
    result["min_top1"] = theirs.top1_agreement - int8_top1_slack(theirs.top1_agreement, samples)
    result["passed"] = (
        mine.cosine >= result["min_cosine"]
        and mine.top1_agreement >= result["min_top1"]
        and mine.rel_error <= result["max_rel_error"]
    )
    return result
