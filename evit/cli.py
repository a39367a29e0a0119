"""``python -m evit``: inspect configs and their exact costs; make data, train, evaluate.

Examples:
    python -m evit list
    python -m evit info efficientvit_m0
    python -m evit info my_variant.yaml --json
    python -m evit data synthetic data/shapes --classes 10 --per-class 300 --size 64
    python -m evit train --model m0 --data data/shapes --img-size 64 --epochs 10 --out runs/m0
    python -m evit eval --weights runs/m0/best.pth --data data/shapes
    python -m evit supernet train --space search/accuracy_space.yaml --data data/shapes \
        --img-size 64 --epochs 10 --out runs/supernet
"""

from __future__ import annotations

import argparse
import json
import sys

from evit.clitools import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    ArgumentParser,
    add_command,
    add_verbose,
    configure_logging,
    epilog,
)
from evit.config import list_variants, load_config
from evit.costs import model_costs
from evit.supernet import cli as supernet_cli
from evit.train import cli as train_cli


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def _info(args: argparse.Namespace) -> int:
    if str(args.model).endswith(".onnx"):
        raise ValueError(
            f"{args.model} is an exported model: use `python -m edge info {args.model}`"
        )
    config = load_config(args.model)
    costs = model_costs(config, batch=args.batch)
    if args.json:
        print(
            json.dumps(
                {
                    "name": config.name,
                    "config": config.to_dict(),
                    "resolutions": config.stage_resolutions(),
                    "batch": args.batch,
                    **costs.to_dict(),
                },
                indent=2,
            )
        )
        return 0
    print(f"{config.name}: {config.img_size}px input, {config.num_classes} classes")
    print(f"  params            {costs.params:,} ({_human(costs.params)})")
    print(f"  MACs              {costs.macs:,} ({_human(costs.macs)}) at batch {args.batch}")
    print(
        f"  activation bytes  {costs.activation_bytes:,} ({_human(costs.activation_bytes, 'B')})"
        " (estimate, fp32, deployed graph)"
    )
    print(
        f"  {'part':<8} {'width':>6} {'depth':>5} {'heads':>5} {'res':>4} {'params':>12} "
        f"{'MACs':>14} {'act. bytes':>14}"
    )
    resolutions = config.stage_resolutions()
    for name, part in costs.breakdown.items():
        if name.startswith("stage"):
            s = config.stages[int(name[5:])]
            res = resolutions[int(name[5:])]
            shape = f"{s.embed_dim:>6} {s.depth:>5} {s.num_heads:>5} {res:>4}"
        else:
            shape = f"{'':>6} {'':>5} {'':>5} {'':>4}"
        print(
            f"  {name:<8} {shape} {part.params:>12,} {part.macs:>14,} {part.activation_bytes:>14,}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m evit",
        description=__doc__,
        epilog=epilog(
            ["python -m evit list", "python -m evit -v info m0"],
            done="done (each subcommand's --help says what it does and when it fails)",
        ),
    )
    add_verbose(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    add_command(
        sub, "list", help="list the shipped variants (M0-M5)", examples="python -m evit list"
    )
    info = add_command(
        sub,
        "info",
        help="parameters, MACs, activation traffic, per-stage table",
        examples=["python -m evit info m0", "python -m evit info my_variant.yaml --json"],
    )
    info.add_argument("model", help="variant name (efficientvit_m0 or m0) or a YAML config path")
    info.add_argument("--batch", type=int, default=1, help="batch size for MACs/bytes (default 1)")
    info.add_argument("--json", action="store_true", help="print the costs as JSON")
    train_cli.add_parsers(sub)
    supernet_cli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in ("train", "supernet"):  # training sets up its own (per process)
        configure_logging(args.verbose)
    try:
        if args.command == "list":
            print("\n".join(list_variants()))
            return 0
        if args.command == "train":
            return train_cli.run_train(args)
        if args.command == "eval":
            return train_cli.run_eval(args)
        if args.command == "data":
            return train_cli.run_data(args)
        if args.command == "supernet":
            return supernet_cli.run(args)
        if args.batch < 1:
            raise ValueError(f"--batch={args.batch}: must be >= 1")
        return _info(args)
    except ValueError as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        saved = {"train": "last.pth", "supernet": "supernet.pth"}.get(args.command)
        hint = f"; the last finished epoch is in {saved} (continue with --resume)" if saved else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
