from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import evit
import evit.weights
from edge.export import export_onnx
from edge.onnxfile import read_metadata
from evit.cli import main
from evit.train.loop import TrainOptions, train
from evit.train.recipe import Recipe
from evit.weights import read_checkpoint_meta
from tests.conftest import tiny_config
from tests.evit.train.conftest import train_argv

FAST = Recipe(epochs=2, batch_size=16, lr=2e-3, aug="mild", seed=0)


def test_train_writes_checkpoints_metrics_and_curves(shapes, tiny_yaml, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(tiny_yaml, shapes, out, "--epochs", "2")) == 0
    assert "best validation top-1" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {
        "last.pth",
        "best.pth",
        "metrics.jsonl",
        "curves.png",
    }
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert {"train_loss", "val_top1", "val_top5", "ema_top1", "lr", "train_images_per_s"} <= set(
        lines[0]
    )
    assert Image.open(out / "curves.png").size[0] > 100

    meta = read_checkpoint_meta(out / "best.pth")
    assert meta["class_names"] == sorted(p.name for p in (shapes / "train").iterdir())
    assert meta["extra"]["recipe"]["epochs"] == 2 and meta["extra"]["weights"] in ("ema", "model")
    model = evit.create_model(out / "best.pth")
    assert model.config.num_classes == 4


def test_best_checkpoint_exports_with_class_names_and_eval_reproduces_its_accuracy(
    shapes, tiny_yaml, tmp_path, capsys
):
    out = tmp_path / "run"
    assert main(train_argv(tiny_yaml, shapes, out, "--epochs", "2")) == 0
    capsys.readouterr()
    meta = read_checkpoint_meta(out / "best.pth")
    metrics = meta["extra"]["metrics"]
    expected = metrics["ema_top1"] if meta["extra"]["weights"] == "ema" else metrics["val_top1"]

    assert main(["eval", "--weights", str(out / "best.pth"), "--data", str(shapes), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["top1"] == pytest.approx(expected, abs=1e-9)
    assert set(result["per_class"]) == set(meta["class_names"]) and result["images"] == 32

    onnx_path = export_onnx(out / "best.pth", tmp_path / "best.onnx").path
    assert read_metadata(onnx_path)["class_names"] == meta["class_names"]


def test_img_size_smaller_than_the_config_clips_windows(shapes, tmp_path):
    result = train(
        TrainOptions(
            "m0", shapes, tmp_path / "m0", FAST.replace(epochs=1, img_size=32), progress=False
        )
    )
    config = evit.create_model(result.checkpoint).config
    assert config.img_size == 32 and [s.window_size for s in config.stages] == [2, 1, 1]


def test_resume_repeats_an_uninterrupted_run_exactly(shapes, tiny_yaml, tmp_path):
    recipe = Recipe(epochs=3, batch_size=16, lr=2e-3, aug="paper", drop_path=0.1, seed=5)
    full = train(TrainOptions(tiny_yaml, shapes, tmp_path / "full", recipe, progress=False))

    def interrupt(epoch, _):
        if epoch == 0:
            raise KeyboardInterrupt

    options = TrainOptions(tiny_yaml, shapes, tmp_path / "cut", recipe, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(options, on_epoch_end=interrupt)
    assert (
        len(read_checkpoint_meta(tmp_path / "cut" / "last.pth")["extra"]["train_state"]["history"])
        == 1
    )
    resumed = train(TrainOptions(**{**options.__dict__, "resume": True}))

    def numbers(history):
        keys = ("train_loss", "val_loss", "val_top1", "ema_loss", "ema_top1", "lr", "step")
        return [[h[k] for k in keys] for h in history]

    assert numbers(resumed.history) == numbers(full.history)
    a = torch.load(tmp_path / "full/last.pth", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut/last.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(
    shapes, tiny_yaml, tmp_path, monkeypatch
):
    real_save = torch.save
    calls = {"n": 0}

    def dying_save(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # epoch 2: best.pth was 3, last.pth is 4 (or 3 if not improved)
            with open(path, "wb") as f:
                f.write(b"half a checkpoint")
            raise OSError("disk full")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(evit.weights.torch, "save", dying_save)
    recipe = FAST.replace(epochs=3)
    with pytest.raises(OSError, match="disk full"):
        train(TrainOptions(tiny_yaml, shapes, tmp_path / "run", recipe, progress=False))
    for name in ("last.pth", "best.pth"):
        meta = read_checkpoint_meta(tmp_path / "run" / name)  # still a whole, loadable file
        assert meta["extra"]["epoch"] in (0, 1)
    assert not list((tmp_path / "run").glob(".*tmp"))


def test_no_weight_decay_on_norms_biases_and_attention_biases():
    from timm.optim import create_optimizer_v2

    model = evit.EfficientViT(tiny_config(), drop_path_rate=0.2)
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.025)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {
        names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]
    }
    assert any(n.endswith("attention_biases") for n in no_decay)
    assert all(
        n.endswith(("attention_biases", ".bias")) or ".bn." in n or "head.bn" in n for n in no_decay
    )
    drops = [m.drop for m in model.modules() if isinstance(m, evit.model.Residual) and m.drop > 0]
    assert max(drops) == pytest.approx(0.2)


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--amp", "--device", "cpu"], "--amp needs a CUDA device"),
        (["--sync-bn", "--device", "cpu"], "--sync-bn needs CUDA"),
        (["--batch-size", "1000"], "fewer than the global batch 1000"),
        (["--epochs", "0"], "--epochs 0: must be >= 1"),
        (["--device", "tpu"], "--device tpu: choose cpu, cuda"),
    ],
)
def test_bad_training_input_is_one_line_and_exit_2(
    shapes, tiny_yaml, tmp_path, capsys, extra, match
):
    out = tmp_path / "run"
    assert main(train_argv(tiny_yaml, shapes, out, "--epochs", "1", *extra)) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert not (out / "last.pth").exists()


def test_resume_into_another_config_and_overwriting_a_run_are_refused(
    shapes, tiny_yaml, tmp_path, capsys
):
    out = tmp_path / "run"
    assert main(train_argv(tiny_yaml, shapes, out, "--epochs", "1")) == 0
    before = (out / "last.pth").read_bytes()
    assert main(train_argv(tiny_yaml, shapes, out, "--epochs", "1")) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(train_argv("m0", shapes, out, "--epochs", "2", "--img-size", "64", "--resume")) == 2
    err = capsys.readouterr().err
    assert "another architecture than --model m0" in err and err.count("\n") == 1
    assert main(train_argv(tiny_yaml, tmp_path / "none", out, "--resume")) == 2
    assert "data folder not found" in capsys.readouterr().err
    assert (out / "last.pth").read_bytes() == before
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "last.pth").write_bytes(b"half a checkpoint")
    assert main(train_argv(tiny_yaml, shapes, damaged, "--resume")) == 2
    err = capsys.readouterr().err
    assert "--resume: cannot read" in err and err.count("\n") == 1


def test_eval_refuses_a_checkpoint_for_other_classes(shapes, tmp_path, capsys):
    model = evit.create_model(tiny_config(num_classes=7))
    evit.save_checkpoint(model, tmp_path / "seven.pth")
    assert main(["eval", "--weights", str(tmp_path / "seven.pth"), "--data", str(shapes)]) == 2
    err = capsys.readouterr().err
    assert "has 7 classes but" in err and "4 class folders" in err and err.count("\n") == 1


def test_eval_of_a_timm_checkpoint_at_another_resolution(shapes, tmp_path, capsys):
    timm = pytest.importorskip("timm")
    net = timm.create_model("efficientvit_m0", num_classes=4)
    torch.save(net.state_dict(), tmp_path / "timm_m0.pth")
    argv = ["eval", "--model", "m0", "--weights", str(tmp_path / "timm_m0.pth")]
    assert main([*argv, "--data", str(shapes), "--img-size", "64", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["img_size"] == 64 and result["images"] == 32


def test_out_of_gpu_memory_is_a_hint_at_the_batch_size(shapes, tiny_yaml, tmp_path, monkeypatch):
    import evit.train.loop as loop

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop, "optimization_step", oom)
    with pytest.raises(
        loop.TrainError, match="out of GPU memory at --batch-size 16; try --batch-size 8"
    ):
        train(TrainOptions(tiny_yaml, shapes, tmp_path / "run", FAST, progress=False))
    assert not (tmp_path / "run" / "last.pth").exists()


def test_a_named_variant_with_trained_weights_builds_the_trained_shape(shapes, tmp_path):
    result = train(
        TrainOptions(
            "m0", shapes, tmp_path / "m0", FAST.replace(epochs=1, img_size=32), progress=False
        )
    )
    model = evit.create_model("m0", weights=result.checkpoint)  # as `edge export m0 --weights`
    assert (model.config.img_size, model.config.num_classes) == (32, 4)
    with pytest.raises(ValueError, match="whose architecture differs from 'efficientvit_m1'"):
        evit.create_model("m1", weights=result.checkpoint)


def test_kept_decoded_images_serve_the_next_run_with_the_same_result(
    shapes, tiny_yaml, tmp_path, monkeypatch
):
    """keep_decoded hands the process-wide cache to the training and validation sets (so a
    second run decodes nothing), and the run trains exactly as without it; with DataLoader
    workers the cache stays out (each worker would fill a copy)."""
    import evit.train.data as data_module
    import evit.train.loop as loop_module

    cache = data_module.DecodedImages(max_bytes=1 << 30)
    monkeypatch.setattr(loop_module, "DECODED", cache)
    recipe = Recipe(epochs=1, batch_size=16, lr=2e-3, aug="mild", seed=2)

    def run(name, **kw):
        return train(TrainOptions(tiny_yaml, shapes, tmp_path / name, recipe, progress=False, **kw))

    plain = run("plain")
    assert len(cache) == 0
    kept = run("kept", keep_decoded=True)
    images = len(list(shapes.glob("*/*/*.png")))
    assert len(cache) == images  # every training and validation image, decoded once
    decoded = []
    load_rgb = data_module.load_rgb
    monkeypatch.setattr(data_module, "load_rgb", lambda path: decoded.append(path))
    again = run("again", keep_decoded=True)
    assert decoded == []  # the second run read every image from the cache
    monkeypatch.setattr(data_module, "load_rgb", load_rgb)
    keys = ("train_loss", "val_loss", "val_top1", "ema_top1")
    for other in (kept, again):
        assert [[h[k] for k in keys] for h in other.history] == [
            [h[k] for k in keys] for h in plain.history
        ]
    fresh = data_module.DecodedImages(max_bytes=1 << 30)
    monkeypatch.setattr(loop_module, "DECODED", fresh)
    run("workers", keep_decoded=True, workers=1)
    assert len(fresh) == 0


def test_a_training_is_estimated_from_its_timed_steps_without_touching_its_folder(
    shapes, tmp_path, monkeypatch
):
    """``estimate_seconds`` scales the timed steps and evaluation to the run's epochs and
    steps. On a clock that advances 1 s at every reading, the set-up, each step and the
    evaluation read 1 s: 4 x 32 training images at batch 16 (8 steps a pass), 3 epochs, the
    model's and the EMA's evaluation."""
    import types

    import evit.train.loop as loop

    now = [0.0]

    def ticking():
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=ticking))
    out = tmp_path / "run"
    options = TrainOptions(
        model=tiny_config(num_classes=4),
        data=shapes,
        out=out,
        recipe=FAST.replace(epochs=3, batch_size=16),
        init=tmp_path / "not-read.pth",  # nothing is inherited: only the time matters
        threads=1,
        progress=False,
    )
    assert loop.estimate_seconds(options) == 1.0 + 3 * (8 * 1.0 + 2 * 1.0)
    assert not out.exists()
    with pytest.raises(ValueError, match="steps 0 must be >= 1"):
        loop.estimate_seconds(options, steps=0)
