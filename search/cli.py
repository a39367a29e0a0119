"""``python -m search --budget-ms 2``: find the best EfficientViT variant that fits a latency
budget measured on this device, next to M0-M5 measured in the same run.

Examples:
    python -m search --budget-ms 2
    python -m search --budget-ms 12 --family --timeout 600
    python -m search --budget-ms 2 --storage journal:///tmp/study.log --study shared  # 2 workers
    python -m search --budget-ms 2 --objective accuracy --data data/shapes --train-img-size 64
    python -m search --budget-ms m0 --objective accuracy --data data/shapes  # as fast as M0
    python -m search --budget-ms 2 --precision int8  # candidates and M0-M5 measured in int8
    python -m search --budget-ms 2 --json > summary.json  # the outcome as JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import optuna

from edge.openvino import OpenVinoUnavailable
from edge.tensorrt import TensorRTUnavailable
from evit.clitools import (
    EXIT_BAD_INPUT,
    EXIT_FAILED_CHECK,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ArgumentParser,
    add_verbose,
    configure_logging,
    epilog,
)
from search import keys
from search.accuracy import TrainBudget
from search.context import RunContext, Seams, counted_trials
from search.measure import NothingFits
from search.objectives import ACCURACY, OBJECTIVE_NAMES
from search.options import DEFAULT_TIME_LIMIT_S, SAMPLERS, SearchOptions, SearchOutcome
from search.outputs import summary
from search.report import budget_rule, fastest_words, lead_verdict, precisions_note, short_budget
from search.study import run_search
from search.targets import TARGETS, TargetUnavailable
from search.timeplan import TimePlan

DEFAULT_TIMEOUT_S = 330.0


class Progress:
    """A tqdm bar: trials done, best feasible so far, time left."""

    def __init__(
        self,
        ctx: RunContext,
        plan: TimePlan,
        study: optuna.Study,
        total: int | None,
        timeout: float | None,
    ) -> None:
        from tqdm import tqdm

        self.ctx, self.plan = ctx, plan
        self.timeout = timeout
        self.start = time.monotonic()
        self.bar = tqdm(
            total=total,
            initial=counted_trials(study) if total else 0,
            unit="trial",
            file=sys.stderr,
            dynamic_ncols=True,
            desc=f"search {ctx.budget_ms:g} ms",
        )
        self.best: tuple[float, float] | None = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        attrs = trial.user_attrs
        if keys.REJECTED in attrs:  # by a shape rule, before anything ran: not a trial to count
            return
        if (
            trial.state == optuna.trial.TrialState.COMPLETE
            and keys.was_measured(attrs)
            and trial.values[1] <= self.ctx.budget_ms
            and (self.best is None or trial.values[0] > self.best[0])
        ):
            self.best = (trial.values[0], trial.values[1])
        parts = []
        if self.best is not None:
            value = self.best[0]
            shown = (
                f"{value / 1e6:.2f}M"
                if self.ctx.objective.name in ("params", "macs")
                else f"{value:.1f}%"
                if self.ctx.train is not None
                else f"{value:.3g}"
            )
            parts.append(f"best {self.ctx.objective.name} {shown} @ {self.best[1]:.2f} ms")
        else:
            parts.append("no feasible yet")
        if self.timeout is not None:
            left = max(0.0, self.timeout - (time.monotonic() - self.start))
            parts.append(f"{left:.0f} s left")
        limit = self.plan.time_left()
        if limit is not None:
            parts.append(f"{max(limit, 0.0):.0f} s left of --time-limit")
        self.bar.set_postfix_str(", ".join(parts), refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def budget_arg(text: str) -> float | str:
    """``--budget-ms``: milliseconds, or a reference's name (``m0`` ... ``m5``)."""
    name = text.strip().lower().removeprefix("efficientvit_")
    if name in {f"m{i}" for i in range(6)}:
        return f"efficientvit_{name}"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give milliseconds (e.g. 2) or a reference, m0 ... m5"
        ) from None


def _target_args(p: argparse.ArgumentParser) -> None:
    """The budget and where it is measured."""
    p.add_argument(
        "--budget-ms",
        type=budget_arg,
        required=True,
        help="latency budget in milliseconds per batch, or a reference (m0 ... m5): its latency "
        "on the target, measured at start-up; the pick must then be as fast as it in the final "
        "paired run (required)",
    )
    p.add_argument(
        "--target",
        choices=TARGETS,
        default="auto",
        help="where latency is measured, a runtime and a device in one name (edge bench's "
        "--runtime and --device): auto = TensorRT if it and a GPU are present, else "
        "the fastest CPU path (ONNX Runtime fp32/int8, OpenVINO fp32/bf16/int8 when installed) "
        "for the two models nearest the budget, measured at start-up (default auto)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "bf16", "int8"),
        help="measure every candidate and M0-M5 in this precision: int8 = Q/DQ graphs "
        "(ort-cpu, openvino-cpu, trt), fp16 (trt), bf16 (openvino-cpu, where the CPU has "
        "it); default fp16 on trt, else fp32",
    )
    p.add_argument("--batch", type=int, default=1, help="images per inference (default 1)")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads of the measurement (ort-cpu, openvino-cpu, torch-cpu) and of each "
        "candidate's training (default: all usable cores, as edge bench measures)",
    )
    p.add_argument(
        "--measure-seconds",
        type=float,
        default=2.0,
        help="time cap of one trial's latency measurement (default 2)",
    )
    p.add_argument(
        "--drift-retries",
        type=int,
        default=2,
        help="repeat the final re-measurement up to N times (a minute apart) while M0-M5 "
        "read more than 1.25x off their trial latencies, keeping the closest run (default 2)",
    )


def _stopping_args(p: argparse.ArgumentParser) -> None:
    """When the trials, and the whole run, end."""
    stop = p.add_mutually_exclusive_group()
    stop.add_argument(
        "--trials", type=int, help="stop after this many trials in the study (all workers together)"
    )
    stop.add_argument(
        "--timeout",
        type=float,
        help=f"stop the trial loop after this many seconds (default "
        f"{DEFAULT_TIMEOUT_S:g} when neither --trials nor --time-limit is given); the final "
        "re-measurement and outputs follow",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="the whole run's wall-clock time, target choice and final phase included: the "
        "trial loop stops when the time left covers only another trial and the final "
        "re-measurement, confirmation and outputs (estimated from this run's own timings); "
        "drift re-measurements are skipped when they do not fit (default "
        f"{DEFAULT_TIME_LIMIT_S:g} s unless --trials is given)",
    )


def _accuracy_args(p: argparse.ArgumentParser) -> None:
    """The objective, and the accuracy objective's training."""
    p.add_argument(
        "--objective",
        choices=OBJECTIVE_NAMES,
        default="params",
        help="what to maximize under the budget: accuracy (trains each candidate on --data) "
        "or a training-free proxy (default params; docs/benchmarks.md ranks them)",
    )
    acc = p.add_argument_group("accuracy objective (--objective accuracy)")
    acc.add_argument(
        "--data", type=Path, help="ImageFolder root with train/ and val/ (required by accuracy)"
    )
    acc.add_argument(
        "--init",
        type=Path,
        help="checkpoint every candidate inherits weights from (any config, as evit train --init)",
    )
    acc.add_argument(
        "--train-epochs",
        type=int,
        default=TrainBudget.epochs,
        help=f"epochs of each candidate's training (default {TrainBudget.epochs})",
    )
    acc.add_argument(
        "--train-img-size",
        type=int,
        help="train and validate a 224-px candidate at this size (others in proportion), a "
        "cheap proxy; latency is always measured at the candidate's size (default: its size)",
    )
    acc.add_argument(
        "--train-batch-size",
        type=int,
        default=TrainBudget.batch_size,
        help=f"training batch (default {TrainBudget.batch_size})",
    )
    acc.add_argument(
        "--train-lr",
        type=float,
        default=TrainBudget.lr,
        help="AdamW learning rate (default: evit train's short recipe for the run, "
        "evit.train.recipe.short_recipe)",
    )
    acc.add_argument(
        "--train-device", help="cpu or cuda[:N] (default: cuda when available, else the cpu)"
    )
    acc.add_argument(
        "--early-stop",
        type=float,
        default=TrainBudget.early_stop,
        help="after this fraction of the epochs, stop a trial that a faster finished trial "
        f"beat there by more than --early-stop-margin (default {TrainBudget.early_stop:g}; "
        "0 = never)",
    )
    acc.add_argument(
        "--early-stop-margin",
        type=float,
        default=TrainBudget.early_stop_margin,
        help=f"points of top-1 (default {TrainBudget.early_stop_margin:g})",
    )
    acc.add_argument(
        "--confirm",
        type=int,
        default=TrainBudget.confirm,
        metavar="K",
        help="after the search, train the K most accurate candidates within the budget, M0 and "
        "the most accurate candidate within M0's latency again with another seed, and pick by "
        f"the mean of both (default {TrainBudget.confirm}; 0 = off)",
    )
    _weight_sharing_args(acc)


def _weight_sharing_args(acc: argparse._ArgumentGroup) -> None:
    """``--weight-sharing`` and its supernet, in the accuracy objective's group."""
    acc.add_argument(
        "--weight-sharing",
        action="store_true",
        help="train one weight-sharing supernet of the space on --data first, score every "
        "candidate by its inherited weights (BatchNorm re-estimated, the whole validation "
        "set) in seconds, then fine-tune the contenders and M0 from their inherited weights "
        "with two seeds and pick by the mean",
    )
    acc.add_argument(
        "--supernet-epochs",
        type=int,
        default=SearchOptions.supernet_epochs,
        help=f"epochs of the supernet's training (default {SearchOptions.supernet_epochs}; "
        "fewer, or one epoch of fewer steps, when they would not fit half of what "
        "--time-limit leaves after M0's fine-tunings and the final phase)",
    )


def _study_args(p: argparse.ArgumentParser) -> None:
    """The space, the study and the outputs."""
    p.add_argument(
        "--space",
        help="search space YAML (default: the shipped space, which reaches below M0 and above M5)",
    )
    p.add_argument(
        "--storage",
        help="Optuna storage: sqlite:///f.db, postgresql://..., or "
        "journal:///f.log for several workers on one machine (default: "
        "sqlite in --out)",
    )
    p.add_argument(
        "--study",
        help="study name; re-running with the same storage and study "
        "resumes it (default: from target, batch, threads, budget, objective)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the sampler and of every candidate's training (default 0)",
    )
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="tpe",
        help="Optuna sampler (default tpe; see docs/benchmarks.md for why)",
    )
    p.add_argument("--out", type=Path, help="output folder (default runs/<study>)")
    p.add_argument(
        "--family",
        action="store_true",
        help="also pick S0-S5: the best configs at the re-measured latencies of "
        "M0-M5 (give a budget above M5's latency)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the outcome as JSON (what OUT/summary.json holds) instead of the table",
    )
    add_verbose(p)


EPILOG = epilog(
    [
        "python -m search --budget-ms 2",
        "python -m search --budget-ms m0 --objective accuracy --data data/shapes --json",
    ],
    done="a configuration fits the budget",
    failed="no configuration fits the budget (the report says which came closest)",
    interrupted="finished trials are saved; the same command resumes",
)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m search", description=__doc__, epilog=EPILOG)
    for add in (_target_args, _stopping_args, _accuracy_args, _study_args):
        add(p)
    return p


def _print_summary(o: SearchOutcome) -> None:
    print(
        f"\nsearch {o.study_name}: budget {budget_rule(o)}" + f" on {o.target.name} "
        f"(batch {o.target.batch}, threads {o.target.threads}), objective "
        f"{o.objective.name}"
        + (
            " (a proxy, not accuracy)"
            if not o.training
            else " (validation top-1 %, fine-tuned from the supernet)"
            if o.supernet
            else " (validation top-1 %, short training)"
        )
        + f"; {precisions_note(o)}"
    )
    print(
        f"{'model':<24} {'objective':>11} {'params':>8} {'MACs':>8} {'first ms':>9} "
        f"{'re-measured ms [95% CI]':>26}"
    )
    rows = ([o.best] if o.best else []) + o.references
    for c in rows:
        r = c.remeasured
        cell = f"{r.median_ms:.3f} [{r.ci_low_ms:.3f}, {r.ci_high_ms:.3f}]" if r else "-"
        value = (
            "not trained"
            if c.trained is False
            else f"{c.objective:.1f}%"
            if o.training
            else f"{c.objective / 1e6:.2f}M"
            if o.objective.name in ("params", "macs")
            else f"{c.objective:.3g}"
        )
        star = " *" if c is o.best else ""
        print(
            f"{c.config.name + star:<24} {value:>11} {c.params / 1e6:>7.2f}M "
            f"{c.macs / 1e6:>7.1f}M {c.latency.median_ms:>9.3f} {cell:>26}"
        )
    verdict = lead_verdict(o)
    if verdict:
        print(f"verdict: {verdict}")
    if o.family:
        print(
            "family: "
            + ", ".join(f"S{i} replaces {r.reference}" for i, (r, _) in enumerate(o.family))
        )
    files = sorted(p.name for p in o.out.iterdir() if p.is_file() and not p.name.startswith("."))
    print(f"outputs: {o.out}/ ({', '.join(files)})")


def options_from_args(args: argparse.Namespace) -> SearchOptions:
    """The run's options from parsed flags (checked later by ``SearchOptions.check``).

    Raises:
        ValueError: ``--init`` without the accuracy objective.
    """
    timeout = (
        args.timeout
        if args.timeout is not None
        else (DEFAULT_TIMEOUT_S if args.trials is None and args.time_limit is None else None)
    )
    train = None  # SearchOptions.check refuses accuracy without --data, and --data without it
    if args.data is not None:
        train = TrainBudget(
            data=args.data,
            epochs=args.train_epochs,
            img_size=args.train_img_size,
            batch_size=args.train_batch_size,
            lr=args.train_lr,
            init=args.init,
            early_stop=args.early_stop,
            early_stop_margin=args.early_stop_margin,
            threads=args.threads,
            device=args.train_device,
            seed=args.seed,
            confirm=args.confirm,
        )
    elif args.init is not None and args.objective != ACCURACY:
        raise ValueError("--init is for --objective accuracy (with --data)")
    reference = args.budget_ms if isinstance(args.budget_ms, str) else None
    return SearchOptions(
        budget_ms=math.nan if reference else args.budget_ms,
        budget_reference=reference,
        target=args.target,
        batch=args.batch,
        threads=args.threads,
        trials=args.trials,
        timeout=timeout,
        objective=args.objective,
        space=args.space,
        storage=args.storage,
        study=args.study,
        seed=args.seed,
        out=args.out,
        family=args.family,
        sampler=args.sampler,
        measure_seconds=args.measure_seconds,
        train=train,
        precision=args.precision,
        drift_retries=args.drift_retries,
        time_limit=args.time_limit,
        weight_sharing=args.weight_sharing,
        supernet_epochs=args.supernet_epochs,
    )


INTERRUPTED = "interrupted: finished trials are saved; run the same command to resume"


def _exit_code(outcome: SearchOutcome) -> int:
    """After the summary: 130 interrupted, 1 nothing fits, else 0 (with their messages)."""
    if outcome.drift_warning:
        print(f"warning: {outcome.drift_warning}", file=sys.stderr)
    if outcome.interrupted:
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    if outcome.best is None:
        print(
            f"error: no configuration fits {short_budget(outcome)}; fastest measured: "
            f"{fastest_words(outcome)} (report: {outcome.out / 'report.md'})",
            file=sys.stderr,
        )
        return EXIT_FAILED_CHECK
    return EXIT_OK


def main(argv: list[str] | None = None, *, seams: Seams | None = None) -> int:
    """The ``python -m search`` command; ``seams`` wires the run (tests, embedding)."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    optuna.logging.set_verbosity(optuna.logging.INFO if args.verbose else optuna.logging.ERROR)
    try:
        opts = options_from_args(args)
        factory = (
            None
            if args.no_progress
            else (lambda ctx, plan, study: Progress(ctx, plan, study, args.trials, opts.timeout))
        )
        outcome = run_search(opts, factory, seams=seams)
    except NothingFits as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED_CHECK
    except (ValueError, TargetUnavailable, TensorRTUnavailable, OpenVinoUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(summary(outcome), indent=2))
    else:
        _print_summary(outcome)
    return _exit_code(outcome)


if __name__ == "__main__":
    sys.exit(main())
