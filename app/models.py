"""What the demo can run, and how a choice becomes an open runtime.

``--model`` takes a variant name or YAML config (exported on the fly, with ``--weights`` if
given), an exported ``.onnx`` file (run as is: no PyTorch needed), a TensorRT ``.engine``, or a
search's output folder (its ``best.onnx``, its Pareto candidates and M0-M5). Exports made here
are verified and cached by content hash, so a second start is instant.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.onnxfile import load_onnx, read_metadata
from evit.config import IMAGENET_MEAN, IMAGENET_STD

RUNTIMES = ("ort", "openvino", "torch", "trt")  # every runtime edge has
VARIANTS = tuple(f"m{i}" for i in range(6))
IMAGENET_NAMES = Path(__file__).parent / "imagenet_classes.txt"
OFFICIAL_HINT = "python -m app --model m0 --weights efficientvit_m0.pth"


class ModelError(ValueError):
    """A model that cannot be loaded as asked (one line, shown in the UI or by the CLI)."""


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model picker.

    Attributes:
        label: what the picker shows.
        path: an ``.onnx`` or ``.engine`` file, or None for a config exported on the fly.
        config: variant name, YAML path or config dict (for on-the-fly export and the torch
            runtime).
        weights: checkpoint for the on-the-fly export.
    """

    label: str
    path: Path | None = None
    config: Any = None
    weights: Path | None = None


@dataclass
class ModelInfo:
    """What the page says about the running model."""

    name: str
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str]
    weights: str  # where the weights came from, in words
    random_weights: bool
    params: int | None = None
    macs: int | None = None
    notes: list[str] = field(default_factory=list)  # e.g. defaults assumed for a foreign file
    warnings: list[str] = field(default_factory=list)  # e.g. an int8 file this CPU gets wrong


def choices_for(spec: str | None, weights: str | None = None) -> list[ModelChoice]:
    """The picker's entries for ``--model`` (M0 when not given) and ``--weights``."""
    if weights is not None and not Path(weights).is_file():
        raise ModelError(f"--weights {weights}: file not found")
    if spec is None:
        spec = "m0"
    path = Path(spec)
    if path.is_dir():
        return _search_output(path)
    if spec.endswith((".onnx", ".engine")):
        if not path.is_file():
            raise ModelError(f"model file not found: {spec}")
        if weights is not None:
            raise ModelError("--weights goes with a variant or YAML config, not an exported file")
        return [ModelChoice(path.name, path=path)]
    named = spec.lower() in VARIANTS or spec.lower().startswith("efficientvit_m")
    if not (named or path.is_file()):
        raise ModelError(
            f"--model {spec}: give m0..m5, a config .yaml, an .onnx or .engine file, or a "
            "search output folder"
        )
    label = Path(spec).stem if path.is_file() else spec
    suffix = f" + {Path(weights).name}" if weights else " (random weights)"
    return [ModelChoice(label + suffix, config=spec, weights=Path(weights) if weights else None)]


def _search_output(folder: Path) -> list[ModelChoice]:
    """A search's ``runs/<study>/``: best.onnx, the re-measured Pareto set, M0-M5."""
    out: list[ModelChoice] = []
    if (folder / "best.onnx").is_file():
        out.append(ModelChoice(f"best ({folder.name})", path=folder / "best.onnx"))
    pareto = folder / "pareto.yaml"
    if pareto.is_file():
        import yaml

        data = yaml.safe_load(pareto.read_text()) or {}
        for c in data.get("candidates", []):
            out.append(ModelChoice(f"{c['name']} (Pareto, random weights)", config=c["config"]))
    if not out:
        raise ModelError(f"{folder}: no best.onnx or pareto.yaml (is it a search output folder?)")
    out += [ModelChoice(f"{v} (reference, random weights)", config=v) for v in VARIANTS]
    return out


def cache_dir() -> Path:
    root = os.environ.get("EVIT_CACHE") or Path.home() / ".cache" / "evit-edge"
    return Path(root) / "app"


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def exported_path(choice: ModelChoice) -> Path:
    """The ONNX file of a choice: the file itself, or a verified export cached by content."""
    if choice.path is not None:
        return choice.path
    from edge.export import export_onnx

    config = _config(choice)
    import evit

    key = {
        "config": config.to_dict(),
        "weights": _file_hash(choice.weights) if choice.weights else None,
        "version": evit.__version__,
    }
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"{config.name}-{name}.onnx"
    if not path.is_file():
        # a checkpoint of another architecture than --model is refused by name here
        export_onnx(config, path, weights=choice.weights)
    return path


def _config(choice: ModelChoice) -> Any:
    from evit.config import ModelConfig, load_config

    if isinstance(choice.config, dict):  # a search's Pareto candidate
        return ModelConfig.from_dict(choice.config).validate()
    return load_config(choice.config)


def model_info(path: Path) -> ModelInfo:
    """Read what the file says about itself; a file without this project's metadata is run
    with ImageNet defaults, and the notes say so."""
    meta = read_metadata(path)
    notes: list[str] = []
    if "config" in meta:
        config = meta["config"]
        name, size, classes = config.name, config.img_size, config.num_classes
    else:
        name, size, classes = path.stem, *_graph_input_and_classes(path)
        notes.append(
            f"{path.name} has no evit metadata: assumed {size} px input, ImageNet mean/std, "
            "RGB, and the evaluation crop"
        )
    names = meta.get("class_names")
    if names is None:
        names = (
            IMAGENET_NAMES.read_text().splitlines()
            if classes == 1000
            else [f"class {i}" for i in range(classes)]
        )
    weights = meta.get("weights", "not recorded in the file")
    return ModelInfo(
        name=name,
        input_size=size,
        mean=tuple(meta.get("mean", IMAGENET_MEAN)),
        std=tuple(meta.get("std", IMAGENET_STD)),
        class_names=names,
        weights=weights,
        random_weights=str(weights).startswith("random"),
        params=int(meta["params"]) if "params" in meta else None,
        macs=int(meta["macs"]) if "macs" in meta else None,
        notes=notes,
        warnings=_cpu_warnings(path),
    )


def _cpu_warnings(path: Path) -> list[str]:
    """An int8 file whose weights saturate ONNX Runtime's kernels on this CPU (``edge.cpu``)."""
    from edge.quantize import cpu_warning

    warning = cpu_warning(load_onnx(path, load_weights=False))
    return [warning] if warning else []


def _graph_input_and_classes(path: Path) -> tuple[int, int]:
    """Input side and class count read from a foreign ONNX graph's shapes."""
    proto = load_onnx(path, load_weights=False)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    out = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3 or dims[2] != dims[3] or dims[2] <= 0:
        raise ModelError(
            f"{path.name}: the demo needs a (N, 3, S, S) image input, the graph takes {dims}"
        )
    if len(out) != 2 or out[1] <= 0:
        raise ModelError(f"{path.name}: the demo needs (N, classes) logits, the graph gives {out}")
    return dims[2], out[1]


def available_runtimes() -> dict[str, str | None]:
    """Every runtime ``edge`` has, with None when it runs here or the reason it cannot."""
    from edge.runtimes import runtime_status

    return {name: runtime_status(name) for name in RUNTIMES}


def open_model(choice: ModelChoice, runtime: str, threads: int | None) -> tuple[Any, ModelInfo]:
    """An open runtime on ``choice`` (batch 1) and what to show about it.

    Raises:
        ModelError: the runtime cannot run this choice here (one line).
    """
    from edge.runtimes import RuntimeFactory, runtime_status

    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    engine = choice.path is not None and choice.path.suffix == ".engine"
    reason = runtime_status("trt" if engine else runtime)
    if reason is not None:
        raise ModelError(f"the {'trt' if engine else runtime} runtime is unavailable: {reason}")
    if engine:
        return _open(RuntimeFactory("trt", str(choice.path))), _engine_info(choice.path)
    path = exported_path(choice)
    info = model_info(path)
    if runtime == "torch":
        return _open_torch(choice, threads), info
    if runtime == "trt":
        from edge.tensorrt import TensorRTUnavailable, build_engine

        try:
            engine_path = build_engine(path, path.with_suffix(".engine"), batch=1).path
        except (TensorRTUnavailable, RuntimeError, ValueError) as e:
            raise ModelError(f"TensorRT could not build {path.name}: {e}") from None
        return _open(RuntimeFactory("trt", str(engine_path))), info
    # a server's threads must not spin while idle (see --threads)
    return _open(RuntimeFactory(runtime, str(path), 1, threads, spinning=False)), info


def _open(factory: Any) -> Any:
    try:
        return factory()
    except (RuntimeError, ValueError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ModelError(f"cannot run {Path(str(factory.source)).name}: {first}") from None


def _open_torch(choice: ModelChoice, threads: int | None) -> Any:
    if choice.config is None:
        raise ModelError(
            f"the torch runtime needs a config or checkpoint; {choice.label} is an exported "
            "file (use ort or openvino)"
        )
    import evit
    from edge.runtimes import TorchRuntime

    model = evit.create_model(_config(choice), weights=choice.weights).eval()
    shape = (1, 3, model.config.img_size, model.config.img_size)
    return TorchRuntime(evit.fuse(model), shape, threads=threads)


def _engine_info(path: Path) -> ModelInfo:
    """From the engine's sidecar (``edge trt``): its config, and the ONNX file it was built
    from when that is still there (class names, weights)."""
    sidecar = Path(f"{path}.json")
    if not sidecar.is_file():
        raise ModelError(f"{path.name}: no sidecar {sidecar.name} (build engines with `edge trt`)")
    data = json.loads(sidecar.read_text())
    source = Path(data.get("source_onnx", ""))
    if source.is_file():
        return model_info(source)
    config = data.get("config") or {}
    classes = int(config.get("num_classes", 1000))
    return ModelInfo(
        name=config.get("name", path.stem),
        input_size=int(config.get("img_size", 224)),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=IMAGENET_NAMES.read_text().splitlines()
        if classes == 1000
        else [f"class {i}" for i in range(classes)],
        weights="not recorded (the source ONNX file is gone)",
        random_weights=False,
        notes=[f"{source.name or 'the source ONNX'} not found: ImageNet mean/std assumed"],
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max()
    e = np.exp(z)
    return e / e.sum()
