"""How many training batches re-estimate a supernet sub-network's BatchNorm statistics well enough?

    python -m benchmarks.bench_supernet_bn --data data/shapes --checkpoint runs/sn/supernet.pth
    python -m benchmarks.bench_supernet_bn --data DIR --checkpoint CKPT --batches 1,4,16 --subnets 6

A supernet's running statistics mix every sub-network it trained; each evaluated sub-network
gets its own, re-estimated on a few training batches (``evit.supernet.evaluate_subnet``, and
``evit supernet train --bn-batches``). This measures the validation top-1 of a few
sub-networks of a trained supernet (its space's largest and smallest configs, and random ones
drawn with ``--seed``) against the number of re-estimation batches: the first K batches of one
fixed, seeded choice of training images (evaluation preprocessing), so a larger K adds batches
to a smaller K's. Column 0 is the supernet's own statistics (no re-estimation). Where the
top-1 stops moving with K is enough.

Results go to ``benchmarks/results/supernet_bn.json``.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from benchmarks.common import save
from evit.config import ModelConfig
from evit.supernet.checkpoint import load_supernet
from evit.supernet.evaluate import evaluate_subnet, extract_model, fixed_training_images
from evit.train.data import resolve_data
from evit.train.evaluate import eval_loader, evaluate


def subnet_configs(loaded, count: int, seed: int) -> dict[str, ModelConfig]:
    """The space's largest and smallest configs and ``count - 2`` random ones."""
    classes = len(loaded.class_names)
    configs = {"largest": loaded.supernet.max_config, "smallest": loaded.space.smallest(classes)}
    rng = np.random.default_rng(seed)
    for i in range(max(count - 2, 0)):
        configs[f"random{i + 1}"] = loaded.space.sample(rng, classes)
    return configs


def measure(args: argparse.Namespace) -> dict:
    counts = sorted({int(k) for k in args.batches.split(",")})
    if not counts or counts[0] < 1:
        raise SystemExit(f"--batches {args.batches}: counts must be >= 1")
    probe = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    extra = probe.get("extra") or {}
    split_seed = extra.get("recipe", {}).get("seed", 0)
    fraction = extra.get("data", {}).get("val_fraction", 0.1)
    data = resolve_data(args.data, None, fraction, split_seed)  # the training run's split
    loaded = load_supernet(args.checkpoint, class_names=data.classes, ema=args.ema)
    configs = subnet_configs(loaded, args.subnets, args.seed)
    max_size = loaded.supernet.max_config.img_size
    images = fixed_training_images(data.train, max_size, counts[-1], args.batch_size, args.seed)
    sizes = {c.img_size for c in configs.values()}
    val = {s: eval_loader(data.val, s, args.batch_size, 0) for s in sizes}
    rows: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    for name, config in configs.items():
        own = evaluate(extract_model(loaded.supernet, config), val[config.img_size], data.classes)
        rows[name] = {"0": own.top1}
        for k in counts:
            top1 = evaluate_subnet(
                loaded.supernet, config, itertools.islice(images, k), val[config.img_size]
            )
            rows[name][str(k)] = top1
        print(
            f"{name:<9} " + " ".join(f"{rows[name][key]:6.2f}" for key in rows[name]),
            flush=True,
        )
    return {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "batch_size": args.batch_size,
        "train_images": len(data.train),
        "val_images": len(data.val),
        "configs": {name: c.to_dict() for name, c in configs.items()},
        "top1": rows,
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the ImageFolder the supernet trained on")
    parser.add_argument("--checkpoint", required=True, help="evit supernet train's supernet.pth")
    parser.add_argument(
        "--batches", default="1,2,4,8,16,32", help="re-estimation batch counts (1,2,4,8,16,32)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (64)")
    parser.add_argument(
        "--subnets", type=int, default=4, help="largest, smallest and random configs (4)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random configs and images (0)")
    parser.add_argument("--ema", action="store_true", help="the EMA of the weights")
    parser.add_argument("--threads", type=int, help="PyTorch CPU threads")
    parser.add_argument(
        "--no-save", action="store_true", help="print only (no results/supernet_bn.json)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    counts = ["0", *sorted({k.strip() for k in args.batches.split(",")}, key=int)]
    print(f"validation top-1 (%) by BN re-estimation batches of {args.batch_size} images")
    print(f"{'config':<9} " + " ".join(f"{k:>6}" for k in counts))
    result = measure(args)
    if not args.no_save:
        print(f"saved {save('supernet_bn', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
