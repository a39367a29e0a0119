"""How noisy is one candidate's score in the accuracy search, and what would make it less so?

    python -m benchmarks.bench_noise                 # ~10 min on 2 cores (2 models x 4 seeds)
    python -m benchmarks.bench_noise --report        # the table again, from the saved results

Trains each of ``--models`` with ``--seeds`` seeds under the accuracy objective's own short
training (``search.accuracy.TrainBudget``: ``--epochs`` on the synthetic dataset at
``--img-size`` px), on a copy of the README's dataset with ``--val-per-class`` validation images
per class (the README's 50 per class are the first 50 of them: the generator draws each class's
images in sequence). Every trained checkpoint then classifies every validation image once, and
each model's top-1 is read on the first k images per class for each k of ``--val-sizes``.

Reported per validation size: each model's mean and seed-to-seed standard deviation; the pooled
standard deviation next to the binomial one of a fixed model (sqrt(p(1-p)/n): what the
validation sample alone contributes); the mean difference between the models with its standard
error; and how often one seed's scores order the two models as their means over all seeds and
the largest validation set do (the chance that the search, which trains once, ranks them right);
and the standard deviation of a comparison between two trained runs, split into the validation
sample's part at each size (from the per-image agreement of every pair of runs) and training's.
What a larger validation set costs: the first model's seed-0 training is timed with each size
(``--time-repeats`` rounds, the sizes alternating).
Results are saved after every training, and a re-run resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench_proxies import ensure_data
from benchmarks.common import RESULTS, save

NAME = "noise"


def correct_per_image(checkpoint: Path, data: Path) -> dict[str, list[int]]:
    """1/0 per validation image (in file order) for each class, from one checkpoint."""
    import torch

    from evit.train.data import eval_transform, find_classes, scan_images
    from evit.weights import create_model

    model = create_model(checkpoint).eval()
    classes = find_classes(data / "val")
    out: dict[str, list[int]] = {}
    transform = eval_transform(model.config.img_size)
    from PIL import Image

    with torch.no_grad():
        for label, name in enumerate(classes):
            samples = scan_images(data / "val", [name])
            hits: list[int] = []
            for start in range(0, len(samples), 125):
                chunk = samples[start : start + 125]
                images = torch.stack([transform(Image.open(p).convert("RGB")) for p, _ in chunk])
                hits += (model(images).argmax(1) == label).int().tolist()
            out[name] = hits
    return out


def reference_config(model: str, data: Path) -> Any:
    """Reference ``model`` (m0 ... m5) with the dataset's class count."""
    from evit.train.data import find_classes
    from search.space import reference_configs

    config = reference_configs()[f"efficientvit_{model}"]
    return config.replace(num_classes=len(find_classes(data / "train")))


def train_one(model: str, data: Path, epochs: int, img_size: int, seed: int) -> dict[str, Any]:
    from search.accuracy import TrainBudget, train_candidate

    config = reference_config(model, data)
    budget = TrainBudget(data=data, epochs=epochs, img_size=img_size, seed=seed)
    with tempfile.TemporaryDirectory(prefix="bench-noise-") as tmp:
        outcome = train_candidate(config, budget, Path(tmp) / "run", None)
        hits = correct_per_image(outcome.checkpoint, data)
    return {"search_top1": outcome.top1, "seconds": outcome.seconds, "correct": hits}


def val_view(data: Path, per_class: int, into: Path) -> Path:
    """``into`` with ``data``'s training set and the first ``per_class`` validation images of
    each class (symbolic links: nothing is copied)."""
    (into / "val").mkdir(parents=True)
    (into / "train").symlink_to((data / "train").resolve())
    for folder in sorted(p for p in (data / "val").iterdir() if p.is_dir()):
        (into / "val" / folder.name).mkdir()
        for image in sorted(folder.iterdir())[:per_class]:
            (into / "val" / folder.name / image.name).symlink_to(image.resolve())
    return into


def time_val_sizes(
    model: str, data: Path, epochs: int, img_size: int, val_sizes: list[int], repeats: int
) -> dict[str, list[float]]:
    """Seconds of one training (seed 0) with each validation size, the sizes alternating."""
    from search.accuracy import TrainBudget, train_candidate

    config = reference_config(model, data)
    seconds: dict[str, list[float]] = {str(k): [] for k in val_sizes}
    with tempfile.TemporaryDirectory(prefix="bench-noise-time-") as tmp:
        views = {k: val_view(data, k, Path(tmp) / f"val{k}") for k in val_sizes}
        for r in range(repeats):
            for k in val_sizes:
                budget = TrainBudget(data=views[k], epochs=epochs, img_size=img_size, seed=0)
                out = train_candidate(config, budget, Path(tmp) / f"run{k}-{r}", None)
                seconds[str(k)].append(out.seconds)
                print(f"{model}, {k} validation images per class: {out.seconds:.1f} s")
    return seconds


def top1(run: dict[str, Any], per_class: int) -> float:
    hits = flat(run, per_class)
    return 100.0 * sum(hits) / len(hits)


def flat(run: dict[str, Any], per_class: int | None = None) -> list[int]:
    return [h for row in run["correct"].values() for h in row[:per_class]]


def comparison_sd(runs: dict[str, dict[str, dict]], val_sizes: list[int]) -> dict[str, Any]:
    """The standard deviation of the difference between two trained runs' top-1, split into
    what the validation sample adds at each size and what the training (seed) adds.

    Validation part at n images: sd over images of (correct_a - correct_b) / sqrt(n), averaged
    over every pair of runs (estimated on all images: it depends on how often two models agree).
    Training part: the seed-to-seed variance of a difference on the largest set, less that set's
    validation part. Total at n: both added in quadrature.
    """
    vecs = [flat(r) for m in runs.values() for r in m.values()]
    per_image = statistics.mean(
        statistics.pstdev([x - y for x, y in zip(a, b)]) for a, b in itertools.combinations(vecs, 2)
    )
    classes = len(next(iter(next(iter(runs.values())).values()))["correct"])
    largest = max(val_sizes)
    seed_var = statistics.mean(
        statistics.variance([top1(r, largest) for r in m.values()]) for m in runs.values()
    )
    val_sd = {k: 100 * per_image / math.sqrt(k * classes) for k in val_sizes}
    train_sd = math.sqrt(max(0.0, 2 * seed_var - val_sd[largest] ** 2))
    return {
        "agreement": statistics.mean(
            sum(x == y for x, y in zip(a, b)) / len(a) for a, b in itertools.combinations(vecs, 2)
        ),
        "train_sd": train_sd,
        "val_sd": val_sd,
        "total_sd": {k: math.hypot(train_sd, v) for k, v in val_sd.items()},
    }


def summarize(runs: dict[str, dict[str, dict]], val_sizes: list[int]) -> list[dict[str, Any]]:
    """One row per validation size: per-model mean/SD, pooled SD, the binomial SD, the
    difference of the first two models and how often one seed orders them right."""
    models = list(runs)
    largest = max(val_sizes)
    truth = {m: statistics.mean(top1(r, largest) for r in runs[m].values()) for m in models}
    rows = []
    for k in val_sizes:
        scores = {m: [top1(r, k) for r in runs[m].values()] for m in models}
        classes = len(next(iter(runs[models[0]].values()))["correct"])
        n = k * classes
        row: dict[str, Any] = {"per_class": k, "images": n, "models": {}}
        for m, s in scores.items():
            p = statistics.mean(s) / 100
            row["models"][m] = {
                "mean": statistics.mean(s),
                "sd": statistics.stdev(s) if len(s) > 1 else float("nan"),
                "binomial_sd": 100 * math.sqrt(p * (1 - p) / n),
                "scores": s,
            }
        sds = [v["sd"] for v in row["models"].values()]
        row["pooled_sd"] = math.sqrt(statistics.mean(x * x for x in sds))
        row["binomial_sd"] = math.sqrt(
            statistics.mean(v["binomial_sd"] ** 2 for v in row["models"].values())
        )
        if len(models) >= 2:
            a, b = models[0], models[1]
            diffs = [y - x for x, y in zip(scores[a], scores[b])]
            row["diff"] = {
                "pair": f"{b} - {a}",
                "mean": statistics.mean(diffs),
                "se": statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0,
            }
            # one seed of each (every pairing): ordered as the means on the largest set order them
            sign = 1 if truth[b] >= truth[a] else -1
            pairs = list(itertools.product(scores[a], scores[b]))
            row["ordered_right"] = sum(sign * (y - x) > 0 for x, y in pairs) / len(pairs)
        rows.append(row)
    return rows


def report(data: dict[str, Any]) -> str:
    rows = summarize(data["runs"], data["val_sizes"])
    models = list(data["runs"])
    head = " | ".join(f"{m} mean (SD)" for m in models)
    lines = [
        f"| val images | {head} | pooled seed SD | binomial SD | "
        + (
            f"{models[1]} - {models[0]} (SE) | one seed orders them right |"
            if len(models) > 1
            else ""
        )
    ]
    lines.append("|" + "---|" * (3 + len(models) + (2 if len(models) > 1 else 0)))
    for r in rows:
        cells = " | ".join(
            f"{r['models'][m]['mean']:.1f} ({r['models'][m]['sd']:.1f})" for m in models
        )
        extra = (
            f" {r['diff']['mean']:+.1f} ({r['diff']['se']:.1f}) | "
            f"{100 * r['ordered_right']:.0f} % |"
            if "diff" in r
            else ""
        )
        lines.append(
            f"| {r['images']} ({r['per_class']}/class) | {cells} | {r['pooled_sd']:.2f} | "
            f"{r['binomial_sd']:.2f} |{extra}"
        )
    comp = comparison_sd(data["runs"], data["val_sizes"])
    lines.append(
        "\nSD of the difference between two trained runs' top-1 (points): training "
        f"{comp['train_sd']:.2f}; validation sample "
        + ", ".join(f"{v:.2f} at {k}/class" for k, v in comp["val_sd"].items())
        + "; total "
        + ", ".join(f"{v:.2f} at {k}/class" for k, v in comp["total_sd"].items())
        + f" (two runs agree on {100 * comp['agreement']:.0f} % of the images)."
    )
    if data.get("timing"):
        lines.append(
            f"\nOne {models[0]} training (seed 0), seconds per validation size, alternating: "
            + "; ".join(
                f"{k}/class {', '.join(f'{x:.1f}' for x in v)}" for k, v in data["timing"].items()
            )
            + "."
        )
    secs = [run["seconds"] for m in models for run in data["runs"][m].values()]
    lines.append(
        f"\n{len(secs)} trainings, {statistics.mean(secs):.0f} s each on average "
        f"({data['epochs']} epochs at {data['img_size']} px)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="m0,m1", help="references to train (default m0,m1)")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--val-per-class", type=int, default=250)
    p.add_argument("--val-sizes", default="50,100,250")
    p.add_argument("--data", type=Path, default=RESULTS / "noise" / "shapes")
    p.add_argument(
        "--time-repeats",
        type=int,
        default=2,
        help="also time the first model's seed-0 training with each validation size, this many "
        "rounds (0: skip)",
    )
    p.add_argument("--report", action="store_true", help="print the saved results' table")
    args = p.parse_args(argv)
    path = RESULTS / f"{NAME}.json"
    if args.report:
        print(report(json.loads(path.read_text())))
        return
    models = [m.strip() for m in args.models.split(",")]
    val_sizes = sorted(int(k) for k in args.val_sizes.split(","))
    if max(val_sizes) > args.val_per_class:
        raise SystemExit(
            f"--val-sizes {args.val_sizes}: at most --val-per-class {args.val_per_class}"
        )
    settings = {"epochs": args.epochs, "img_size": args.img_size, "val_sizes": val_sizes}
    data: dict[str, Any] = {**settings, "runs": {m: {} for m in models}}
    if path.is_file():
        old = json.loads(path.read_text())
        if all(old.get(k) == v for k, v in settings.items()):
            data["runs"].update({m: old["runs"].get(m, {}) for m in models})
            data["timing"] = old.get("timing", {})
    ensure_data(args.data, args.val_per_class)
    for seed in range(args.seeds):
        for m in models:
            if str(seed) in data["runs"][m]:
                continue
            run = train_one(m, args.data, args.epochs, args.img_size, seed)
            data["runs"][m][str(seed)] = run
            print(f"{m} seed {seed}: {top1(run, max(val_sizes)):.1f} % ({run['seconds']:.0f} s)")
            save(NAME, data)
    if args.time_repeats and not data.get("timing"):
        data["timing"] = time_val_sizes(
            models[0], args.data, args.epochs, args.img_size, val_sizes, args.time_repeats
        )
        save(NAME, data)
    print(report(data))


if __name__ == "__main__":
    main()
