"""The paper's CPU claims, side by side on this machine (random weights, BN fused).

    python benchmarks/bench_paper.py

- torch batch 16, 1 thread (the paper's CPU protocol): throughput ratio of M5 vs
  MobileNetV3-Large (paper: +45.2 %) and M2 vs MobileViT-XXS (paper: 3.7x);
- ONNX Runtime batch 1, 1 thread: latency ratio of M2 vs MobileViT-XXS (paper: 7.4x "ONNX"),
  and M5 vs MobileNetV3-Large.
Each pair is interleaved in one run; ratios are other/ours latency (> 1: ours is faster).
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import timm

import evit
from benchmarks.common import export_torch_onnx, ratio_cell, save
from edge.export import export_onnx
from edge.latency import measure_interleaved
from edge.runtimes import TorchRuntime

PAIRS = [
    ("efficientvit_m5", "mobilenetv3_large_100", "+45.2 % CPU throughput"),
    ("efficientvit_m2", "mobilevit_xxs", "3.7x CPU, 7.4x ONNX"),
]


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for ours_name, other_name, claim in PAIRS:
        ours = evit.fuse(evit.create_model(ours_name).eval())
        other = fold_bn(timm.create_model(other_name).eval())
        shape = (16, 3, 224, 224)
        torch_res = measure_interleaved(
            [TorchRuntime(ours, shape, threads=1), TorchRuntime(other, shape, threads=1)],
            labels=[ours_name, other_name],
            block_seconds=1.0,
            min_rounds=10,
            max_rounds=16,
            max_seconds=120,
        )
        ours_path = export_onnx(evit.create_model(ours_name), tmp / f"{ours_name}.onnx").path
        other_path = export_torch_onnx(other, tmp / f"{other_name}.onnx")
        ort_res = measure_interleaved(
            [str(ours_path), str(other_path)],
            threads=1,
            labels=[ours_name, other_name],
            min_rounds=12,
            max_seconds=60,
        )
        row = {
            "ours": ours_name,
            "other": other_name,
            "paper": claim,
            "torch_b16_t1": {
                "ours_img_s": torch_res.results[0].throughput,
                "other_img_s": torch_res.results[1].throughput,
                "ratio": torch_res.ratios[0].to_dict(),
            },
            "ort_b1_t1": {
                "ours_ms": ort_res.results[0].median_ms,
                "other_ms": ort_res.results[1].median_ms,
                "ratio": ort_res.ratios[0].to_dict(),
            },
        }
        rows.append(row)
        print(
            f"{ours_name} vs {other_name} (paper {claim}): torch b16 1-thread "
            f"{torch_res.results[0].throughput:.1f} vs {torch_res.results[1].throughput:.1f}"
            f" img/s, ratio {ratio_cell(torch_res.ratios[0])}; ORT b1 1-thread "
            f"{ort_res.results[0].median_ms:.2f} vs {ort_res.results[1].median_ms:.2f} ms, "
            f"ratio {ratio_cell(ort_res.ratios[0])}",
            flush=True,
        )
    save("paper", {"rows": rows})


def fold_bn(model):
    """Fold each Conv2d followed by a BatchNorm2d (timm's BatchNormAct2d keeps its activation)."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in list(model.modules()):
        names = list(module._modules)
        for a, b in itertools.pairwise(names):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                act = getattr(bn, "act", None)  # BatchNormAct2d: BN then activation
                module._modules[b] = act if act is not None else torch.nn.Identity()
    return model


if __name__ == "__main__":
    main()
