"""Helpers shared by the benchmark scripts (not part of the installed packages)."""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

import evit
from edge.latency import environment

RESULTS = Path(__file__).parent / "results"


def timm_fused(name: str, state_dict: dict | None = None) -> nn.Module:
    """timm's model with its own BN fusion applied (ConvNorm.fuse / NormLinear.fuse)."""
    import timm

    model = timm.create_model(name).eval()
    if state_dict is not None:
        model.load_state_dict(state_dict)

    def replace(module: nn.Module) -> None:
        for child_name, child in module.named_children():
            if hasattr(child, "fuse") and callable(child.fuse):
                setattr(module, child_name, child.fuse())
            else:
                replace(child)

    replace(model)
    return model


def ours_and_timm(name: str, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """Our fused model and timm's fused model, holding identical random weights."""
    import timm

    reference = timm.create_model(name).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    sd = reference.state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.pth"
        torch.save(sd, path)
        ours = evit.fuse(evit.create_model(name, weights=path).eval())
    return ours, timm_fused(name, sd)


def export_torch_onnx(model: nn.Module, path: Path, size: int = 224, batch: int = 1) -> Path:
    """The standard export: torch.onnx.export, opset 17, TorchScript exporter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(batch, 3, size, size),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
        )
    return path


def fp32_and_int8(name: str, folder: Path, activations: str = "uint8") -> tuple[Path, Path]:
    """A live copy of variant ``name`` exported as fp32 and as Q/DQ int8 (``edge export
    --int8``, 32 generated calibration frames; fidelity recorded, not enforced) into ``folder``."""
    from edge.export import Int8Options, export_onnx
    from evit.live import live_copy

    live = live_copy(evit.create_model(name))
    fp32 = export_onnx(live, folder / f"{name}.onnx").path
    options = Int8Options(
        min_top1=0.0, min_cosine=0.0, max_rel_error=float("inf"), activations=activations
    )
    int8 = export_onnx(live, folder / f"{name}.int8.onnx", int8=options).path
    return fp32, int8


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"environment": environment(), "argv": sys.argv, **data}
    path.write_text(json.dumps(data, indent=2))
    return path


def ratio_cell(r) -> str:
    return f"{r.ratio:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"
