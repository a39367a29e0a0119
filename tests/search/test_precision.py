"""``--precision``: candidates and M0-M5 measured in int8 (or fp16 on TensorRT), the pick and the
references compared with fp32 side by side, and the per-trial TensorRT build settings."""

from __future__ import annotations

import json
import re
import sys

import onnx
import pytest

from search.cli import main as search_main
from search.options import SearchOptions
from search.targets import TRIAL_BUILD_LEVEL, Target
from tests.conftest import tiny_config
from tests.edge.test_tensorrt import _fake_tensorrt
from tests.search.conftest import run_fake, wire


def test_int8_search_measures_in_int8_and_compares_with_fp32(
    tmp_path, tiny_space, fake_target, monkeypatch
):
    measure = fake_target.measure

    def timed(self, config, timings=None):  # as a real int8 trial reports its phases
        if timings is not None:
            timings.update(export_s=0.01, quantize_s=0.02, someday_s=0.03)
        return measure(self, config, timings)

    monkeypatch.setattr(fake_target, "measure", timed)
    opts = SearchOptions(
        budget_ms=1.5,
        target="ort-cpu",
        trials=8,
        space=tiny_space,
        out=tmp_path / "run",
        remeasure_block_seconds=0.001,
        precision="int8",
    )
    outcome = run_fake(opts)
    assert outcome.study_name.endswith("-params-int8")
    assert outcome.target.precision == "int8"
    best = outcome.best
    assert best is not None
    # the budget was checked against int8 latencies (the fake int8 runs at half the fp32 time)
    assert best.remeasured.median_ms == pytest.approx(outcome.target._ms(best.config), rel=1e-6)
    rows = outcome.precision_rows
    assert [r.candidate.reference for r in rows[:-1]] == [c.reference for c in outcome.references]
    assert rows[-1].candidate is best
    for row in rows:
        assert row.fp32.median_ms == pytest.approx(2 * row.this.median_ms, rel=1e-6)
        assert row.speedup.ratio == pytest.approx(2.0, rel=1e-6)
    report = (outcome.out / "report.md").read_text()
    assert "## int8 vs fp32, the pick and M0-M5" in report
    assert f"| {best.config.name} (pick) |" in report and "| efficientvit_m5 |" in report
    assert "`best.int8.onnx`: the same weights in Q/DQ int8 (uint8 activations" in report
    summary = json.loads((outcome.out / "summary.json").read_text())
    assert summary["precision"] == "int8" and len(summary["precision_vs_fp32"]) == len(rows)
    int8_file = onnx.load(outcome.out / "best.int8.onnx")
    assert any(n.op_type == "QuantizeLinear" for n in int8_file.graph.node)
    header = (outcome.out / "trials.csv").read_text().splitlines()[0].split(",")
    assert "quantize_s" in header and "someday_s" not in header  # unknown phases are left out
    assert "quantize" in report
    fp32_file = onnx.load(outcome.out / "best.onnx")
    assert not any(n.op_type == "QuantizeLinear" for n in fp32_file.graph.node)


def test_fp32_search_has_no_precision_table(tmp_path, tiny_space, fake_target):
    outcome = run_fake(
        SearchOptions(
            budget_ms=1.5,
            target="ort-cpu",
            trials=4,
            space=tiny_space,
            out=tmp_path / "run",
            remeasure_block_seconds=0.001,
        )
    )
    assert outcome.precision_rows == [] and not (outcome.out / "best.int8.onnx").exists()
    assert "vs fp32" not in (outcome.out / "report.md").read_text()


def test_ort_int8_target_measures_a_qdq_graph(tmp_path):
    fp32 = Target("ort-cpu", threads=1, workdir=tmp_path)
    int8 = Target("ort-cpu", threads=1, workdir=tmp_path, precision="int8")
    assert fp32.precision == "fp32" and int8.fingerprint != fp32.fingerprint
    assert "int8" in int8.description and "int8" not in fp32.description
    timings: dict = {}
    factory = int8.prepare(tiny_config(), timings)
    graph = onnx.load_from_string(factory.source).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 0
    assert timings["quantize_s"] > 0
    rt = factory()
    assert rt(evit_input(tiny_config())).shape == (1, tiny_config().num_classes)
    assert not list(tmp_path.iterdir())  # the per-trial files are gone


def test_an_int8_search_calibrates_on_whole_batches_above_8(tmp_path):
    target = Target("ort-cpu", threads=1, workdir=tmp_path, precision="int8", batch=16)
    rt = target.prepare(tiny_config())()  # 8 calibration images would not fill one batch
    assert rt.input_shape[0] == 16


class _Doubling(Target):
    """A path whose runtime returns twice the logits: right argmax, wrong probabilities."""

    def prepare(self, config, timings=None, model=None):
        factory = super().prepare(config, timings, model)

        class Doubled:
            runtime, source = factory.runtime, factory.source

            def __call__(self):
                rt = factory()
                real = rt._output
                rt._output = lambda: 2.0 * real()
                return rt

        return Doubled()


def test_auto_leaves_out_a_path_whose_outputs_are_wrong(tmp_path, monkeypatch):
    import search.space
    from search.autotarget import choose_cpu_target

    small = tiny_config(name="efficientvit_m0")
    large = tiny_config(name="efficientvit_m5", img_size=96)
    monkeypatch.setattr(
        search.space,
        "reference_configs",
        lambda: {"efficientvit_m0": small, "efficientvit_m5": large},
    )
    common = dict(threads=1, workdir=tmp_path / "w")
    targets = [
        Target("ort-cpu", **common),
        Target("ort-cpu", precision="int8", **common),
        _Doubling("ort-cpu", precision="int8", **common),
    ]
    chosen, table = choose_cpu_target(
        tmp_path / "run",
        batch=1,
        threads=1,
        precision=None,
        max_seconds=0.3,
        workdir=tmp_path / "w",
        calib=None,
        targets=targets,
    )
    assert table.count(" left out: ") == 1, table  # the doubling one, and only it
    assert "ort-cpu int8 left out: ort-cpu int8 vs the reference: cosine" in table
    assert "DISAGREES" in table
    assert len(re.findall(r"M0 [\d.]+ / M5 [\d.]+ ms", table)) == 2
    assert (chosen.name, chosen.precision) in {("ort-cpu", "fp32"), ("ort-cpu", "int8")}


def evit_input(config):
    import numpy as np

    size = config.img_size
    return np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize(
    ("target", "precision", "allowed"),
    [
        ("ort-cpu", "fp16", "fp32, int8"),
        ("torch-cpu", "int8", "fp32"),
    ],
)
def test_a_precision_the_target_cannot_measure_is_refused(target, precision, allowed, capsys):
    with pytest.raises(ValueError, match=rf"--precision {precision}: target {target} measures "):
        Target(target, precision=precision)
    code = search_main(
        ["--budget-ms", "2", "--target", target, "--precision", precision, "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == (
        f"error: --precision {precision}: target {target} measures {allowed}"
    )


@pytest.mark.parametrize(("version", "flags"), [("10.8.0", ["INT8", "FP16"]), ("11.1.0", [])])
def test_trt_trials_build_low_with_one_timing_cache(monkeypatch, tmp_path, version, flags):
    calls: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(version, calls))
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.get_device_name", lambda *a: "Fake GPU")
    cache = tmp_path / "trt-timing.cache"
    target = Target(
        "trt", workdir=tmp_path, precision="int8", build_level=TRIAL_BUILD_LEVEL, timing_cache=cache
    )
    assert Target("trt", workdir=tmp_path).precision == "fp16"  # the GPU default
    timings: dict = {}
    factory = target.prepare(tiny_config(), timings)
    assert (
        factory.runtime == "trt"
        and factory.source == b"serialized-engine"
        and timings["engine_s"] >= 0
    )
    assert calls["builder_flags"] == flags and calls["opt_level"] == TRIAL_BUILD_LEVEL
    parsed = calls["parsed"]
    scales = [n for n in parsed.graph.node if n.op_type == "QuantizeLinear"]
    assert scales  # a Q/DQ graph reached the parser
    zero_points = {i.name: onnx.numpy_helper.to_array(i) for i in parsed.graph.initializer}
    assert all(  # symmetric int8 activations, as TensorRT requires
        zero_points[n.input[2]].dtype.name == "int8" for n in scales if len(n.input) > 2
    )
    assert cache.read_bytes() == b"timing-cache"
    target.prepare(tiny_config(), {})
    assert calls["cache_in"] == b"timing-cache"  # the second trial reads the shared cache


def test_search_on_trt_shares_a_timing_cache_and_builds_the_final_engines_at_default(
    tmp_path, tiny_space, monkeypatch
):
    made = []

    class Recording(Target):
        def measure(self, config, timings=None):
            made.append(("trial", self.build_level, self.timing_cache, self.precision))
            from tests.search.conftest import fake_latency_ms, latency_result

            return latency_result([fake_latency_ms(config)] * 20, config.name, self.env)

        def prepare(self, config, timings=None):
            made.append(("prepare", self.build_level, self.timing_cache, self.precision))
            from tests.search.conftest import ConstantRuntime, fake_latency_ms

            return lambda: ConstantRuntime(fake_latency_ms(config), config.name)

    wire(target=Recording)
    monkeypatch.setattr("search.context.resolve_target", lambda name: "trt")  # no TensorRT here
    run_fake(
        SearchOptions(
            budget_ms=1.5,
            target="trt",
            trials=4,
            space=tiny_space,
            out=tmp_path / "run",
            remeasure_block_seconds=0.001,
        )
    )
    trials = [m for m in made if m[0] == "trial"]
    final = [m for m in made if m[0] == "prepare"]
    assert trials and {m[1] for m in trials} == {TRIAL_BUILD_LEVEL}
    assert final and {m[1] for m in final} == {None}  # TensorRT's default level at the end
    assert {m[2] for m in made} == {tmp_path / "run" / "trt-timing.cache"}
    assert {m[3] for m in trials} == {"fp16"}  # fp16 by default on the GPU target
    assert {m[3] for m in final} == {"fp16", "fp32"}  # and the pick and M0-M5 also in fp32


def test_the_headline_says_which_precision_each_figure_is_in():
    """--target auto may choose int8 while the candidates train and score in fp32: the CLI
    line and the report pair the two figures only with their precisions named."""
    from types import SimpleNamespace

    from search.report import precisions_note

    def outcome(precision, training):
        return SimpleNamespace(target=SimpleNamespace(precision=precision), training=training)

    mixed = precisions_note(outcome("int8", {"epochs": 3}))
    assert "accuracy of the fp32 model" in mixed and "latency in int8" in mixed
    assert precisions_note(outcome("fp32", {"epochs": 3})) == "accuracy and latency in fp32"
    assert precisions_note(outcome("bf16", None)) == "latency in bf16"
