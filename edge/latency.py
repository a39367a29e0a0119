"""A latency harness you can trust on a shared, noisy machine.

Single model (:func:`measure_latency`): time session creation and the first run, warm up
(>= 200 ms, like trtexec), then repeat until the 95 % confidence interval of the median is within
``target_rel_ci`` (default +-2 %) of it, or a time cap. Report median, CI, p90, p99, mean, std,
CV, runs, and an environment fingerprint; on a GPU also the device (CUDA-event) time.

Several models (:func:`measure_interleaved`): absolute times on a shared machine drift by tens
of percent between minutes, so every "faster than" claim is a ratio measured side by side. Models
run in alternating blocks (A B A B ...); each block runs ~``block_seconds`` and drops its first
``block_discard`` share of runs (an idle ONNX Runtime session's spinning threads and cold caches
slow the first runs after a switch: measured here, see docs/benchmarks.md). The ratio of two
models is taken per round (their block medians) and reported as the median over rounds with an
order-statistics 95 % CI.

Statistics are distribution-free: the CI of a median is the pair of order statistics around it
given by the binomial(n, 1/2) distribution (normal approximation), so skewed latency
distributions need no assumptions.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

from edge.runtimes import Runtime, open_runtime

Z95 = 1.959964


def median_ci(samples: Sequence[float], z: float = Z95) -> tuple[float, float]:
    """Distribution-free CI of the median: order statistics j, k of the sorted sample."""
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if n == 0:
        raise ValueError("median_ci needs at least one sample")
    half = z * math.sqrt(n) / 2
    lo = max(math.floor(n / 2 - half), 0)
    hi = min(math.ceil(n / 2 + half), n - 1)
    return float(x[lo]), float(x[hi])


def relative_ci_halfwidth(samples: Sequence[float]) -> float:
    lo, hi = median_ci(samples)
    med = float(np.median(samples))
    return max(med - lo, hi - med) / med if med > 0 else math.inf


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), the default thread count of a
    measurement (``edge bench``, ``search``)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def environment(threads: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """Where a measurement was taken: CPU, cores, thread setting, runtime versions, GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for package in ("onnxruntime", "torch", "tensorrt", "openvino", "numpy", "onnx"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    env = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads": threads,
        "device": device,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "versions": versions,
    }
    if device == "cuda":
        import torch

        env["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return env


def fingerprint(env: dict[str, Any], runtime: str, batch: int) -> str:
    """A short stable key for caching measurements taken under the same conditions."""
    import hashlib

    stable = {
        "runtime": runtime,
        "batch": batch,
        "cpu": env.get("cpu"),
        "usable_cores": env.get("usable_cores"),
        "threads": env.get("threads"),
        "device": env.get("device"),
        "gpu": env.get("gpu"),
        "versions": {
            k: v
            for k, v in env.get("versions", {}).items()
            if k in ("onnxruntime", "tensorrt", "torch", "openvino")
        },
    }
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class LatencyResult:
    """One model's latency under one runtime; all times in milliseconds."""

    model: str
    runtime: str
    device: str
    batch: int
    threads: int | None
    median_ms: float
    ci_low_ms: float
    ci_high_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    cv: float
    min_ms: float
    runs: int
    converged: bool
    target_rel_ci: float
    session_ms: float | None = None
    first_run_ms: float | None = None
    gpu_median_ms: float | None = None
    gpu_p90_ms: float | None = None
    gpu_p99_ms: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def rel_ci(self) -> float:
        return (
            max(self.median_ms - self.ci_low_ms, self.ci_high_ms - self.median_ms) / self.median_ms
        )

    @property
    def throughput(self) -> float:
        """Images per second at the median."""
        return self.batch * 1e3 / self.median_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyResult:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LatencyResult field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_samples(
        cls, host_ms: Sequence[float], gpu_ms: Sequence[float] | None = None, **fields: Any
    ) -> LatencyResult:
        x = np.asarray(host_ms, dtype=float)
        lo, hi = median_ci(x)
        mean, std = float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0
        gpu = {}
        if gpu_ms is not None and len(gpu_ms):
            g = np.asarray(gpu_ms, dtype=float)
            gpu = {
                "gpu_median_ms": float(np.median(g)),
                "gpu_p90_ms": float(np.percentile(g, 90)),
                "gpu_p99_ms": float(np.percentile(g, 99)),
            }
        return cls(
            median_ms=float(np.median(x)),
            ci_low_ms=lo,
            ci_high_ms=hi,
            p90_ms=float(np.percentile(x, 90)),
            p99_ms=float(np.percentile(x, 99)),
            mean_ms=mean,
            std_ms=std,
            cv=std / mean if mean > 0 else 0.0,
            min_ms=float(x.min()),
            runs=len(x),
            **gpu,
            **fields,
        )


Clock = Callable[[], float]


def _open(model: str | Runtime, **kwargs: Any) -> tuple[Runtime, float | None]:
    if isinstance(model, Runtime):
        return model, None
    start = time.perf_counter()
    rt = open_runtime(model, **kwargs)
    return rt, (time.perf_counter() - start) * 1e3


def measure_latency(
    model: str | Runtime,
    *,
    runtime: str | None = None,
    device: str = "cpu",
    batch: int = 1,
    threads: int | None = None,
    precision: str | None = None,
    warmup_seconds: float = 0.2,
    target_rel_ci: float = 0.02,
    min_runs: int = 20,
    max_seconds: float = 10.0,
    clock: Clock = time.perf_counter,
    env: dict[str, Any] | None = None,
) -> LatencyResult:
    """Measure one model until the median's 95 % CI is within ``target_rel_ci``.

    Args:
        model: a path/name for :func:`edge.runtimes.open_runtime`, or an open runtime.
        runtime, device, batch, threads, precision: passed to ``open_runtime``.
        warmup_seconds: runs discarded before measuring.
        target_rel_ci: stop once the CI half-width relative to the median is at most this.
        min_runs: at least this many measured runs.
        max_seconds: time cap for the measured phase (``converged`` is False if it hit the cap
            first).
        clock: wall clock for the warm-up and the cap (a fake one in tests).
        env: environment fingerprint to record (computed when None).
    """
    if target_rel_ci <= 0:
        raise ValueError(f"target_rel_ci={target_rel_ci}: must be > 0")
    rt, session_ms = _open(
        model, runtime=runtime, device=device, batch=batch, threads=threads, precision=precision
    )
    try:
        return _measure(
            rt,
            session_ms,
            str(model),
            warmup_seconds,
            target_rel_ci,
            min_runs,
            max_seconds,
            clock,
            env,
        )
    finally:
        if not isinstance(model, Runtime):
            rt.close()


def _measure(
    rt: Runtime,
    session_ms: float | None,
    model: str,
    warmup_seconds: float,
    target_rel_ci: float,
    min_runs: int,
    max_seconds: float,
    clock: Clock,
    env: dict[str, Any] | None,
) -> LatencyResult:
    first_ms, _ = rt.timed()
    start = clock()
    while clock() - start < warmup_seconds:
        rt.timed()
    host: list[float] = []
    gpu: list[float] = []
    converged = False
    start = clock()
    while True:
        h, g = rt.timed()
        host.append(h)
        if g is not None:
            gpu.append(g)
        n = len(host)
        if n >= min_runs and (n % 5 == 0) and relative_ci_halfwidth(host) <= target_rel_ci:
            converged = True
            break
        if clock() - start >= max_seconds and n >= 3:
            break
    return LatencyResult.from_samples(
        host,
        gpu or None,
        model=rt.label or model,
        runtime=rt.name,
        device=rt.device,
        batch=rt.input_shape[0],
        threads=rt.threads,
        converged=converged,
        target_rel_ci=target_rel_ci,
        session_ms=session_ms,
        first_run_ms=first_ms,
        environment=env if env is not None else environment(rt.threads, rt.device),
    )


@dataclass
class Ratio:
    """``other / reference`` median latency ratio over rounds (> 1: reference is faster)."""

    reference: str
    other: str
    ratio: float
    ci_low: float
    ci_high: float
    rounds: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class InterleavedResult:
    results: list[LatencyResult]
    ratios: list[Ratio]  # every model against results[0]
    rounds: int
    block_seconds: float
    block_medians: list[list[float]] = field(default_factory=list)  # [model][round] ms

    def ratio(self, other: int, reference: int) -> Ratio:
        """Paired ``other / reference`` ratio over the rounds, for any two models of the run."""
        per_round = np.asarray(self.block_medians[other]) / np.asarray(
            self.block_medians[reference]
        )
        lo, hi = median_ci(per_round)
        return Ratio(
            reference=self.results[reference].model,
            other=self.results[other].model,
            ratio=float(np.median(per_round)),
            ci_low=lo,
            ci_high=hi,
            rounds=len(per_round),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in self.results],
            "ratios": [r.to_dict() for r in self.ratios],
            "rounds": self.rounds,
            "block_seconds": self.block_seconds,
        }


def _block(
    rt: Runtime, seconds: float, discard: float, clock: Clock
) -> tuple[list[float], list[float]]:
    host: list[float] = []
    gpu: list[float] = []
    start = clock()
    while clock() - start < seconds or len(host) < 4:
        h, g = rt.timed()
        host.append(h)
        if g is not None:
            gpu.append(g)
    skip = int(len(host) * discard)
    return host[skip:], gpu[skip:] if gpu else []


def measure_interleaved(
    models: Sequence[str | Runtime | Callable[[], Runtime]],
    *,
    runtime: str | None = None,
    device: str = "cpu",
    batch: int = 1,
    threads: int | None = None,
    precision: str | None = None,
    block_seconds: float = 0.15,
    block_discard: float = 0.3,
    pause_seconds: float = 0.02,
    min_rounds: int = 10,
    max_rounds: int = 60,
    target_rel_ci: float = 0.02,
    max_seconds: float = 60.0,
    one_session_at_a_time: bool = False,
    clock: Clock = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
    labels: Sequence[str] | None = None,
) -> InterleavedResult:
    """Measure several models in alternating blocks and report paired ratios to the first.

    Args:
        models: paths/names (opened with :func:`edge.runtimes.open_runtime`), open runtimes
            (kept open throughout), or factories returning a fresh runtime (opened for each
            block and closed after it).
        one_session_at_a_time: open paths/names per block too, so that only one session (and
            its thread pool and memory arena) exists at a time however many models take part.

    Rounds continue until every ratio's CI half-width is within ``target_rel_ci`` of the
    ratio (after ``min_rounds``), or ``max_rounds``/``max_seconds``.
    """
    if len(models) < 2:
        raise ValueError("measure_interleaved needs at least two models")
    common = dict(runtime=runtime, device=device, batch=batch, threads=threads, precision=precision)
    openers: list[Callable[[], Runtime]] = []
    kept: list[Runtime | None] = []
    for m in models:
        if isinstance(m, Runtime):
            openers.append(lambda m=m: m)
            kept.append(m)
        elif callable(m):
            openers.append(m)
            kept.append(None)
        elif one_session_at_a_time:
            openers.append(lambda m=m: open_runtime(m, **common))
            kept.append(None)
        else:
            rt = open_runtime(m, **common)
            openers.append(lambda rt=rt: rt)
            kept.append(rt)

    def block(
        i: int, seconds: float, discard: float
    ) -> tuple[Runtime, list[float], list[float], float | None]:
        start = time.perf_counter()
        rt = kept[i] or openers[i]()
        session_ms = None if kept[i] else (time.perf_counter() - start) * 1e3
        try:
            h, g = _block(rt, seconds, discard, clock)
        finally:
            if kept[i] is None:
                rt.close()
        return rt, h, g, session_ms

    n = len(models)
    first: list[float] = []
    sessions: list[float | None] = []
    meta: list[Runtime] = []
    for i in range(n):  # first run, then a warm-up block
        rt, h, _, session_ms = block(i, 0.2, 0.0)
        meta.append(rt)
        first.append(h[0])
        sessions.append(session_ms)
    names = (
        list(labels) if labels is not None else [rt.label or str(m) for rt, m in zip(meta, models)]
    )
    host: list[list[float]] = [[] for _ in range(n)]
    gpu: list[list[float]] = [[] for _ in range(n)]
    block_medians: list[list[float]] = [[] for _ in range(n)]
    start = clock()
    rounds = 0
    while rounds < max_rounds:
        order = range(n) if rounds % 2 == 0 else reversed(range(n))
        for i in order:
            _, h, g, _ = block(i, block_seconds, block_discard)
            host[i].extend(h)
            gpu[i].extend(g)
            block_medians[i].append(float(np.median(h)))
            sleep(pause_seconds)
        rounds += 1
        if rounds >= min_rounds:
            widths = [
                relative_ci_halfwidth(np.asarray(b) / np.asarray(block_medians[0]))
                for b in block_medians[1:]
            ]
            if max(widths) <= target_rel_ci or clock() - start >= max_seconds:
                break
    for rt in kept:
        if rt is not None and not any(rt is m for m in models):
            rt.close()  # opened here from a path
    env = environment(meta[0].threads, meta[0].device)
    results = []
    for i, rt in enumerate(meta):
        rel = relative_ci_halfwidth(host[i])
        results.append(
            LatencyResult.from_samples(
                host[i],
                gpu[i] or None,
                model=names[i],
                runtime=rt.name,
                device=rt.device,
                batch=rt.input_shape[0],
                threads=rt.threads,
                converged=rel <= target_rel_ci,
                target_rel_ci=target_rel_ci,
                session_ms=sessions[i],
                first_run_ms=first[i],
                environment=env,
            )
        )
    ratios = []
    base = np.asarray(block_medians[0])
    for i in range(1, n):
        per_round = np.asarray(block_medians[i]) / base
        lo, hi = median_ci(per_round)
        ratios.append(
            Ratio(
                reference=names[0],
                other=names[i],
                ratio=float(np.median(per_round)),
                ci_low=lo,
                ci_high=hi,
                rounds=rounds,
            )
        )
    return InterleavedResult(
        results=results,
        ratios=ratios,
        rounds=rounds,
        block_seconds=block_seconds,
        block_medians=block_medians,
    )
