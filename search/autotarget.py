"""``--target auto`` on a CPU: the runtime and precision that run the budget's models fastest.

Every CPU path this machine has (ONNX Runtime and OpenVINO, fp32 / bf16 / int8) is first checked
on a live M0: a path whose outputs are wrong here (an int8 kernel that saturates, a runtime
that misreads the graph) is left out with its reason. The others are measured side by side on
the two models nearest the budget, and the path with the lowest geometric mean wins: which path
is fastest depends on the model's size (int8 pays off on M5, not on models far smaller than M0,
docs/benchmarks.md §14), so the choice is made for the models the budget admits.

The models nearest the budget: for ``--budget-ms m0``, the space's smallest config and M0; for a
budget in milliseconds, the largest of the space's smallest config and M0-M5 that fits it on
ONNX Runtime fp32 and the next larger one (both measured just before, in one interleaved run).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

import evit
from edge.runtimes import Runtime
from evit.config import ModelConfig
from search.targets import Target, TargetUnavailable, measure_side_by_side

AUTO_FILE = "auto-target.json"  # --target auto's choice, reused when the study resumes
CHECK_IMAGES = 16  # random images on which --target auto checks each path's outputs


def cpu_paths(precision: str | None = None) -> list[tuple[str, str]]:
    """Every CPU runtime and precision this machine can measure (``precision``: only that).

    OpenVINO's int8 runs the same Q/DQ file as ONNX Runtime's (docs/benchmarks.md §14)."""
    from edge.openvino import OpenVinoUnavailable, bf16_supported

    paths = [("ort-cpu", "fp32"), ("ort-cpu", "int8")]
    try:
        bf16 = bf16_supported()  # imports OpenVINO: fails without the extra
        paths += [("openvino-cpu", "fp32")] + ([("openvino-cpu", "bf16")] if bf16 else [])
        paths += [("openvino-cpu", "int8")]
    except OpenVinoUnavailable:
        pass
    chosen = [p for p in paths if precision is None or p[1] == precision]
    if not chosen:
        raise ValueError(
            f"--target auto --precision {precision}: no CPU runtime here measures {precision} "
            f"(available: {', '.join(f'{n} {p}' for n, p in paths)})"
        )
    return chosen


def output_problem(
    target: Target,
    config: ModelConfig,
    live: evit.EfficientViT,
    batches: list[np.ndarray],
    expected: np.ndarray,
) -> str | None:
    """Does ``target`` compute what its graph says? ``None`` if so, else the reason in words.

    ``live`` (a live copy of ``config``: every branch contributes, ``evit.live``) is prepared
    on ``target`` and runs ``batches``; ``expected`` is ONNX Runtime fp32's output for them.
    fp32 and bf16 paths must agree with it within ``edge.openvino.TOLERANCE``; an int8 path must
    agree with its own Q/DQ graph run as written (``edge.quantize.reference_session``) more
    closely than that graph agrees with fp32 (``edge.quantize.DeployedCheck``): a CPU whose int8
    kernels saturate, or a runtime that misreads the graph, fails here.
    """
    from edge.openvino import TOLERANCE
    from edge.quantize import compare_deployed, logit_agreement, run_reference

    if target.name == "ort-cpu" and target.precision == "fp32":
        return None  # the reference itself
    factory = target.prepare(config, model=live)
    got = _outputs(factory, batches)
    if target.precision == "int8":
        if getattr(factory, "runtime", None) not in ("ort", "openvino"):
            return None  # an engine: TensorRT is not chosen by this CPU check
        import onnx

        reference = run_reference(onnx.ModelProto.FromString(factory.source), batches)
        check = compare_deployed(got, reference, expected, f"{target.name} int8")
        return None if check.passed else check.summary()
    agreement = logit_agreement(got, expected)
    tol = TOLERANCE[target.precision or "fp32"]
    if agreement.cosine >= tol["min_cosine"] and agreement.rel_error <= tol["max_rel_error"]:
        return None
    return (
        f"{target.name} {target.precision} vs onnxruntime fp32: cosine {agreement.cosine:.4f} "
        f"(min {tol['min_cosine']}), relative error {agreement.rel_error:.3f} "
        f"(max {tol['max_rel_error']})"
    )


def _outputs(factory: Callable[[], Runtime], batches: list[np.ndarray]) -> np.ndarray:
    rt = factory()
    try:
        return np.concatenate([rt(x) for x in batches]).astype(np.float64)
    finally:
        rt.close()


def _short(config: ModelConfig) -> str:
    """``M0`` for ``efficientvit_m0``; other names as they are."""
    name = config.name or "model"
    return name.removeprefix("efficientvit_").upper() if name.startswith("efficientvit_") else name


def budget_models(
    budget: float | str | None, smallest: ModelConfig | None, probe: Target
) -> list[ModelConfig]:
    """The two models the path is chosen for (see the module docstring); without a budget, M0
    and M5. ``probe`` is ONNX Runtime fp32, on which a budget in ms is located."""
    from search.space import reference_configs

    refs = reference_configs()
    if budget is None or smallest is None:
        return [refs["efficientvit_m0"], refs["efficientvit_m5"]]
    smallest = smallest.replace(name="smallest")
    if isinstance(budget, str):
        return [smallest, refs[budget]]
    models = [smallest, *refs.values()]
    res = measure_side_by_side(
        [(probe, m) for m in models],
        [m.name for m in models],
        min_rounds=4,
        max_rounds=10,
        max_seconds=20.0,
        block_seconds=0.05,  # a coarse location: which models are near the budget
    )
    by_speed = sorted(zip(models, res.results), key=lambda p: p[1].median_ms)
    fits = [m for m, r in by_speed if r.median_ms <= budget]
    over = [m for m, r in by_speed if r.median_ms > budget]
    return fits[-1:] + over[:1] if fits else over[:2]


def _checked(
    targets: list[Target], reference: ModelConfig, batch: int, workdir: Path
) -> tuple[list[Target], list[str]]:
    """The paths whose outputs are right on a live ``reference``, and a line per other one."""
    from edge.devicelock import device_key, device_lock
    from evit.live import live_model

    # random normal images, the inputs live_copy re-estimated its BN statistics on: on
    # off-distribution inputs (drawn frames) a live random network amplifies the last bit of
    # fp32 rounding (OpenVINO vs ONNX Runtime fp32 read cosine 0.97 on one of four live M0s)
    size = reference.img_size
    images = np.random.default_rng(1).standard_normal((CHECK_IMAGES, 3, size, size))
    images = images.astype(np.float32)
    batches = [images[i : i + batch] for i in range(0, len(images), batch)]
    with device_lock(device_key("cpu"), exclusive=False):
        live = live_model(reference, seed=0)
        fp32 = Target("ort-cpu", batch=batch, threads=1, workdir=workdir)
        expected = _outputs(fp32.prepare(reference, model=live), batches)
        problems = [output_problem(t, reference, live, batches, expected) for t in targets]
    left_out = [f"{t.name} {t.precision} left out: {p}" for t, p in zip(targets, problems) if p]
    return [t for t, p in zip(targets, problems) if p is None], left_out


def choose_cpu_target(
    out: Path,
    *,
    batch: int,
    threads: int | None,
    precision: str | None,
    max_seconds: float,
    workdir: Path,
    calib: Path | None,
    targets: list[Target] | None = None,
    budget: float | str | None = None,
    smallest: ModelConfig | None = None,
    target_class: type[Target] = Target,
) -> tuple[Target, str]:
    """``--target auto`` without TensorRT (see the module docstring).

    Args:
        targets: the paths to consider (default: every one of :func:`cpu_paths`).
        budget: the budget in ms, or the reference whose latency it is (``efficientvit_m0``);
            None: the path is chosen for M0 and M5.
        smallest: the space's smallest config (with ``budget``).
        target_class: the class of the targets made here.

    Returns the target and a one-line table of what was measured and why it won. The choice is
    saved in ``out`` so that a resumed study keeps its target.
    """
    from search.space import reference_configs

    common = dict(batch=batch, threads=threads, max_seconds=max_seconds, workdir=workdir)
    saved = out / AUTO_FILE
    asked = {"precision": precision, "batch": batch, "threads": threads, "budget": budget}
    if saved.is_file():
        data = json.loads(saved.read_text())
        if data.get("asked") == asked:
            target = target_class(
                data["target"], precision=data["precision"], calib=calib, **common
            )
            return target, f"{data['table']} (chosen when this study started)"
    if targets is None:
        targets = [
            target_class(n, precision=p, calib=calib, **common) for n, p in cpu_paths(precision)
        ]
    targets, left_out = _checked(targets, reference_configs()["efficientvit_m0"], batch, workdir)
    if not targets:
        raise TargetUnavailable(
            "--target auto: no CPU path computes the right outputs; " + "; ".join(left_out)
        )
    probe = target_class("ort-cpu", **common)
    models = budget_models(budget, smallest, probe)
    jobs = [(t, m) for t in targets for m in models]
    labels = [f"{t.name} {t.precision} {m.name}" for t, m in jobs]
    res = measure_side_by_side(jobs, labels, min_rounds=6, max_rounds=20, max_seconds=45.0)
    n = len(models)
    cells, scores = [], []
    for i, t in enumerate(targets):
        ms = [r.median_ms for r in res.results[n * i : n * (i + 1)]]
        scores.append(math.prod(ms) ** (1 / n))
        times = " / ".join(f"{_short(m)} {x:.3f}" for m, x in zip(models, ms))
        cells.append(f"{t.name} {t.precision} {times} ms")
    best = targets[min(range(len(targets)), key=lambda i: scores[i])]
    names = " and ".join(_short(m) for m in models)
    why = "the models nearest the budget" if budget is not None else "no budget given"
    table = (
        "--target auto: "
        + " | ".join(cells + left_out)
        + f" -> {best.name} {best.precision} (lowest geometric mean of {names}, {why}, measured "
        "interleaved just now, among the paths whose outputs on a live M0 were right)"
    )
    out.mkdir(parents=True, exist_ok=True)
    record = {"asked": asked, "target": best.name, "precision": best.precision, "table": table}
    saved.write_text(json.dumps(record))
    return best, table
