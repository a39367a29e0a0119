"""The names of what a trial records (Optuna user attributes), and what they tell.

Every module that writes or reads a trial's attributes uses these constants, so a name is spelled
once; :func:`was_measured` and :func:`was_trained` are the one answer to "does this trial carry a
measured latency / a trained accuracy".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SETTINGS = "settings"  # study attribute: what the study was created with

# set by every trial
WORKER = "worker"
REFERENCE = "reference"  # M0-M5 enqueued as trials carry their name
REJECTED = "rejected"  # a shape rule refused the config before anything ran
FAIL_REASON = "fail_reason"

# the architecture and its costs
ARCH_HASH = "arch_hash"
PARAMS = "params"
MACS = "macs"
ACTIVATION_BYTES = "activation_bytes"
BLOCKS = "blocks"

# the latency
LATENCY_SOURCE = "latency_source"  # one of SOURCES
LATENCY = "latency"  # the whole LatencyResult as a dict (readable on any host)
LATENCY_MEDIAN = "latency_median_ms"
LATENCY_CI_LOW = "latency_ci_low_ms"
LATENCY_CI_HIGH = "latency_ci_high_ms"
LATENCY_P90 = "latency_p90_ms"
LATENCY_RUNS = "latency_runs"
LATENCY_CONVERGED = "latency_converged"
TIMINGS = "timings"  # seconds of each step of the measurement (export, quantize, ...)
PREFILTER_REASON = "prefilter_reason"

MEASURED, CACHE, PREFILTER_BOUND = "measured", "cache", "prefilter-bound"
SOURCES = (MEASURED, CACHE, PREFILTER_BOUND)

# the accuracy objective
TOP1 = "top1"  # validation top-1 % after the short training
EARLY_TOP1 = "early_top1"  # ... at the early-stop rule's check epoch
CURVE = "curve"  # top-1 after each epoch
TRAIN_IMG_SIZE = "train_img_size"
TRAIN_SECONDS = "train_seconds"
EARLY_STOPPED = "early_stopped"  # the rule's reason, in words
EARLY_SAVED_S = "early_saved_s"
CHECKPOINT = "checkpoint"  # trials/<number>/best.pth, relative to the run folder
ACCURACY_SOURCE = "accuracy_source"  # trained, inherited, trial N (same architecture), or why not
INHERIT_SECONDS = "inherit_seconds"  # --weight-sharing: seconds to read the score off the supernet
SCORE_KEYS = (TOP1, EARLY_TOP1, CURVE, TRAIN_IMG_SIZE)  # what a same-architecture trial copies


def was_measured(attrs: Mapping[str, Any]) -> bool:
    """The trial's latency was measured on the target (now, or earlier for the same
    architecture), not bounded by the pre-filter."""
    return attrs.get(LATENCY_SOURCE) in (MEASURED, CACHE)


def was_trained(attrs: Mapping[str, Any]) -> bool:
    """The trial's accuracy objective is a trained score (not a placeholder 0)."""
    return TOP1 in attrs
