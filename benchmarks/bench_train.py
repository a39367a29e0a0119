"""Training on this CPU: step throughput vs timm, and the accuracy M0 reaches in a fixed budget.

    python -m benchmarks.bench_train throughput          # M0, M5 at 224, batch 64, 2 threads
    python -m benchmarks.bench_train accuracy --epochs 60 # synthetic shapes, M0 at 64 px
    python -m benchmarks.bench_train decoded --pairs 8    # a search trial's training, cached

``throughput``: one optimization step of ``evit.train.loop.optimization_step`` (forward, label
smoothing loss, backward, adaptive clipping, AdamW) plus the EMA update, for our M0/M5 and timm's
``efficientvit_m0``/``m5`` with the same optimizer groups, in interleaved blocks; ratio =
timm step time / ours (> 1: ours is faster), median over rounds [95 % CI].

``accuracy``: writes the synthetic dataset (10 classes, 300 training + 75 validation images per
class, 64 px), trains M0 at 64 px with ``python -m evit train`` for ``--epochs`` and reports the
wall time and validation top-1; then a linear classifier on raw pixels (the same images,
standardized, full-batch AdamW) as the floor the dataset is designed to keep low.

``decoded``: the training a search trial runs (``search.accuracy.train_candidate``: M0 at
64 px, 3 epochs, on the README's accuracy dataset of 10 x 300 training and 100 validation
images per class), with decoded images kept across trainings (what a search does,
``TrainOptions.keep_decoded``) and decoded on every read, alternating in pairs after one
warm-up training; the paired ratio of wall times (< 1: keeping them is faster) and the
top-1 of both (the same pixels, so the same score).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import evit
from benchmarks.common import RESULTS, ratio_cell, save
from edge.latency import measure_interleaved
from edge.runtimes import Runtime
from evit.train.loop import optimization_step


class TrainStep(Runtime):
    """One training step as a 'runtime', so the latency harness can interleave two models."""

    name = "torch-train"

    def __init__(self, model: nn.Module, batch: int, size: int, threads: int) -> None:
        from timm.optim import create_optimizer_v2
        from timm.utils import ModelEmaV3

        torch.set_num_threads(threads)
        self.threads = threads
        self.model = model.train()
        self.optimizer = create_optimizer_v2(model, "adamw", lr=1e-4, weight_decay=0.025)
        self.ema = ModelEmaV3(model, decay=0.99996, use_warmup=True)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 3, size, size, generator=gen)
        self.y = torch.randint(0, 1000, (batch,), generator=gen)
        self.input_shape = tuple(self.x.shape)
        self.step = 0

    def set_input(self, x: np.ndarray) -> None:
        self.x = torch.from_numpy(x)

    def _infer(self) -> None:
        optimization_step(
            self.model,
            self.model.parameters(),
            self.x,
            self.y,
            self.optimizer,
            self.criterion,
            self.scaler,
            0.02,
            "agc",
        )
        self.step += 1
        self.ema.update(self.model, step=self.step)

    def _output(self) -> np.ndarray:
        return np.zeros(1)


def throughput(args: argparse.Namespace) -> None:
    import timm

    rows = []
    for name in ("efficientvit_m0", "efficientvit_m5"):
        ours = TrainStep(evit.create_model(name), args.batch, 224, args.threads)
        ref = TrainStep(timm.create_model(name), args.batch, 224, args.threads)
        res = measure_interleaved(
            [ours, ref],
            labels=["evit", "timm"],
            block_seconds=args.block_seconds,
            block_discard=0.0,
            min_rounds=6,
            max_rounds=args.rounds,
            max_seconds=args.max_seconds,
        )
        ours_ms, ref_ms = res.results[0].median_ms, res.results[1].median_ms
        row = {
            "model": name,
            "ours_images_per_s": args.batch / ours_ms * 1e3,
            "timm_images_per_s": args.batch / ref_ms * 1e3,
            "ours_step_ms": ours_ms,
            "timm_step_ms": ref_ms,
            "ratio_timm_over_ours": res.ratios[0].to_dict(),
            "rounds": res.rounds,
        }
        rows.append(row)
        print(
            f"{name}: ours {row['ours_images_per_s']:.1f} img/s, timm "
            f"{row['timm_images_per_s']:.1f} img/s, timm/ours step time "
            f"{ratio_cell(res.ratios[0])}",
            flush=True,
        )
    save("train_throughput", {"batch": args.batch, "threads": args.threads, "rows": rows})


def linear_baseline(root: Path, epochs: int = 300) -> float:
    """Top-1 of a linear classifier on standardized raw pixels (train -> val)."""
    from evit.train.data import resolve_data

    split = resolve_data(root)

    def load(samples):
        from PIL import Image

        x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p, _ in samples])
        return torch.from_numpy(x.reshape(len(x), -1)), torch.tensor([y for _, y in samples])

    xt, yt = load(split.train)
    xv, yv = load(split.val)
    mean, std = xt.mean(0), xt.std(0) + 1e-3
    xt, xv = (xt - mean) / std, (xv - mean) / std
    torch.manual_seed(0)
    linear = nn.Linear(xt.shape[1], len(split.classes))
    opt = torch.optim.AdamW(linear.parameters(), lr=1e-3, weight_decay=0.05)
    best = 0.0
    for epoch in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(linear(xt), yt).backward()
        opt.step()
        if epoch % 10 == 9:
            with torch.no_grad():
                best = max(best, (linear(xv).argmax(1) == yv).float().mean().item() * 100)
    return best  # the best over training: an optimistic floor


def accuracy(args: argparse.Namespace) -> None:
    from evit.cli import main as evit_main
    from evit.train.synthetic import write_synthetic

    work = RESULTS / "train_accuracy"
    shutil.rmtree(work, ignore_errors=True)
    data = work / "shapes"
    write_synthetic(data, num_classes=10, per_class=300, size=64, seed=0, val_per_class=75)
    out = work / "m0"
    argv = ["train", "--model", "m0", "--data", str(data), "--img-size", "64"]
    argv += ["--epochs", str(args.epochs), "--batch-size", "64", "--lr", str(args.lr)]
    argv += ["--out", str(out), "--no-progress", "--threads", str(args.threads)]
    start = time.perf_counter()
    assert evit_main(argv) == 0
    minutes = (time.perf_counter() - start) / 60
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = max(max(h["val_top1"], h.get("ema_top1", 0.0)) for h in history)
    linear = linear_baseline(data)
    print(
        f"M0 at 64 px, {args.epochs} epochs in {minutes:.1f} min: best validation top-1 "
        f"{best:.1f} % (last epoch {history[-1]['val_top1']:.1f} %, EMA "
        f"{history[-1].get('ema_top1', float('nan')):.1f} %); linear on pixels {linear:.1f} %; "
        f"chance 10 %",
        flush=True,
    )
    save(
        "train_accuracy",
        {
            "epochs": args.epochs,
            "lr": args.lr,
            "minutes": minutes,
            "best_top1": best,
            "linear_top1": linear,
            "history": [{k: v for k, v in h.items() if k != "val_per_class"} for h in history],
            "per_class_last": history[-1]["val_per_class"],
        },
    )


def decoded(args: argparse.Namespace) -> None:
    import evit.train.data as data_module
    import evit.train.loop as loop_module
    from evit.train.synthetic import write_synthetic
    from search.accuracy import TrainBudget, train_candidate
    from search.space import reference_configs

    work = RESULTS / "train_decoded"
    shutil.rmtree(work, ignore_errors=True)
    data = work / "shapes"
    write_synthetic(data, num_classes=10, per_class=300, size=64, seed=0, val_per_class=100)
    config = reference_configs()["efficientvit_m0"].replace(num_classes=10)
    budget = TrainBudget(data=data, img_size=64, threads=args.threads)
    caches = {"kept": data_module.DECODED, "decoded each read": data_module.DecodedImages(0)}

    def one(cache: data_module.DecodedImages) -> tuple[float, float]:
        loop_module.DECODED = cache  # what TrainOptions.keep_decoded hands the datasets
        shutil.rmtree(work / "out", ignore_errors=True)
        outcome = train_candidate(config, budget, work / "out", None)
        return outcome.seconds, outcome.top1

    one(caches["kept"])  # warm-up: imports, and the kept images decoded once
    seconds: dict[str, list[float]] = {name: [] for name in caches}
    top1: dict[str, set[float]] = {name: set() for name in caches}
    for _ in range(args.pairs):
        for name, cache in caches.items():
            s, t = one(cache)
            seconds[name].append(s)
            top1[name].add(t)
    loop_module.DECODED = data_module.DECODED
    ratios = [k / d for k, d in zip(seconds["kept"], seconds["decoded each read"])]
    for name in caches:
        print(f"{name:>18}: median {np.median(seconds[name]):.2f} s, top-1 {sorted(top1[name])}")
    print(
        f"kept / decoded each read: median {np.median(ratios):.3f} "
        f"(pairs {min(ratios):.3f} ... {max(ratios):.3f}, {args.pairs} pairs)"
    )
    save(
        "train_decoded",
        {
            "pairs": args.pairs,
            "seconds": seconds,
            "top1": {k: sorted(v) for k, v in top1.items()},
            "ratios": ratios,
        },
    )
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--block-seconds", type=float, default=3.0)
    t.add_argument("--rounds", type=int, default=12)
    t.add_argument("--max-seconds", type=float, default=180.0)
    a = sub.add_parser("accuracy")
    a.add_argument("--epochs", type=int, default=60)
    a.add_argument("--lr", type=float, default=2e-3)
    a.add_argument("--threads", type=int, default=2)
    d = sub.add_parser("decoded")
    d.add_argument("--pairs", type=int, default=8)
    d.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    {"throughput": throughput, "accuracy": accuracy, "decoded": decoded}[args.part](args)


if __name__ == "__main__":
    main()
