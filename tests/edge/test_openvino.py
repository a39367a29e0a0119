"""OpenVINO on the CPU: numerics against ONNX Runtime, precisions, the IR cache, bad input.

Needs the ``openvino`` extra (part of ``.[test]``); without it only the "not installed" test
runs, and everything else in the suite passes."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import evit
from edge import openvino as ov_module
from edge.cli import main
from edge.export import Int8Options, export_onnx
from tests.conftest import randomize, tiny_config


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Live weights (every branch contributes), fp32 and Q/DQ int8."""
    d = tmp_path_factory.mktemp("ov")
    live = randomize(evit.create_model(tiny_config()), seed=7).eval()
    return {
        "fp32": export_onnx(live, d / "m.onnx").path,
        "other": export_onnx(
            randomize(evit.create_model(tiny_config()), seed=8), d / "o.onnx"
        ).path,
        "int8": export_onnx(
            live, d / "m.int8.onnx", int8=Int8Options(min_top1=0.8, min_cosine=0.98)
        ).path,
    }


def test_missing_openvino_is_one_line_and_exit_2(monkeypatch, files, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setattr(ov_module, "_CORE", [])
    with pytest.raises(ov_module.OpenVinoUnavailable, match=r"pip install '\.\[openvino\]'"):
        ov_module.import_openvino()
    assert main(["bench", str(files["fp32"]), "--runtime", "openvino"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: OpenVINO is not installed") and err.count("\n") == 1
    from search.autotarget import cpu_paths
    from search.targets import TargetUnavailable, resolve_target

    with pytest.raises(TargetUnavailable, match="target openvino-cpu unavailable: OpenVINO is"):
        resolve_target("openvino-cpu")
    assert cpu_paths() == [("ort-cpu", "fp32"), ("ort-cpu", "int8")]  # auto skips OpenVINO


openvino = pytest.importorskip("openvino")
from edge.crosscheck import check_against_ort, check_int8_against_fp32  # noqa: E402
from edge.openvino import (  # noqa: E402
    OpenVinoRuntime,
    bf16_supported,
    check_precision,
)


def test_fp32_matches_onnx_runtime_and_is_really_fp32(files):
    rt = OpenVinoRuntime(files["fp32"], threads=1)
    assert rt.precision == "fp32" and rt.input_shape == (1, 3, 64, 64)
    check = check_against_ort(files["fp32"], rt)
    assert check["passed"] and check["cosine"] > 0.9999 and check["top1_agreement"] == 1.0
    assert ov_module.compiled_precision(rt.compiled) == "f32"
    x = np.random.default_rng(1).standard_normal(rt.input_shape).astype(np.float32)
    y1 = rt(x)
    y2 = rt(np.zeros_like(x))
    assert not np.allclose(y1, y2)  # the first output is a copy, not the live buffer


def test_a_broken_runtime_fails_the_check(files, monkeypatch):
    rt = OpenVinoRuntime(files["fp32"], threads=1)
    real = rt._output
    rng = np.random.default_rng(0)
    monkeypatch.setattr(rt, "_output", lambda: real() + rng.standard_normal(real().shape))
    check = check_against_ort(files["fp32"], rt)
    assert not check["passed"] and check["cosine"] < check["min_cosine"]


@pytest.mark.skipif(not bf16_supported(), reason="this CPU has no bf16 (AVX-512 BF16 / AMX)")
def test_bf16_within_its_stated_tolerance(files):
    rt = OpenVinoRuntime(files["fp32"], threads=1, precision="bf16")
    check = check_against_ort(files["fp32"], rt)
    assert check["passed"], check
    assert check["min_cosine"] == ov_module.TOLERANCE["bf16"]["min_cosine"] == 0.99
    assert ov_module.compiled_precision(rt.compiled) == "bf16"


def test_bf16_without_cpu_support_is_refused(monkeypatch, files, capsys):
    monkeypatch.setattr(ov_module, "cpu_capabilities", lambda: {"FP32", "INT8"})
    with pytest.raises(ValueError, match=r"--precision bf16: this CPU \(.*\) has no bf16 support"):
        check_precision("bf16")
    code = main(["bench", str(files["fp32"]), "--runtime", "openvino", "--precision", "bf16"])
    err = capsys.readouterr().err
    assert code == 2 and "has no bf16 support" in err and err.count("\n") == 1


def test_int8_runs_qdq_files_only(files):
    rt = OpenVinoRuntime(files["int8"], threads=1, precision="int8")
    check = check_against_ort(files["int8"], rt)  # against ORT on the same Q/DQ graph
    assert check["passed"], check
    with pytest.raises(ValueError, match="--precision int8 needs a Q/DQ file"):
        OpenVinoRuntime(files["fp32"], precision="int8")
    with pytest.raises(ValueError, match=r"is quantized \(Q/DQ int8\): run it with --precision"):
        OpenVinoRuntime(files["int8"], precision="fp32")
    with pytest.raises(ValueError, match="OpenVINO precision 'fp8'"):
        check_precision("fp8")
    assert check_precision("f32") == "fp32"  # OpenVINO's spelling is accepted


def test_int8_as_close_to_fp32_as_ort_int8_and_a_broken_one_fails(files, monkeypatch):
    rt = OpenVinoRuntime(files["int8"], threads=1, precision="int8")
    check = check_int8_against_fp32(files["int8"], files["fp32"], rt)
    assert check["passed"], check
    assert check["reference_cosine"] > 0.9 and check["cosine"] > 0.9  # quantizes well
    assert check["min_cosine"] == pytest.approx(check["reference_cosine"] - 0.05)
    real = rt._output
    rng = np.random.default_rng(0)
    monkeypatch.setattr(rt, "_output", lambda: real() + 3 * rng.standard_normal(real().shape))
    broken = check_int8_against_fp32(files["int8"], files["fp32"], rt)
    assert not broken["passed"] and broken["cosine"] < broken["min_cosine"]
    with pytest.raises(ValueError, match="checks int8, not fp32"):
        check_int8_against_fp32(files["int8"], files["fp32"], OpenVinoRuntime(files["fp32"]))


def test_a_uniform_scale_on_the_output_fails_both_checks(files, monkeypatch):
    """Doubled logits keep every argmax and the centred cosine: only magnitudes show them."""
    for precision, path in (("fp32", files["fp32"]), ("int8", files["int8"])):
        rt = OpenVinoRuntime(path, threads=1, precision=precision)
        real = rt._output
        monkeypatch.setattr(rt, "_output", lambda real=real: 2.0 * real())
        check = check_against_ort(path, rt)
        assert not check["passed"] and check["cosine"] >= check["min_cosine"], check
        assert check["rel_error"] > check["max_rel_error"]
    broken = check_int8_against_fp32(files["int8"], files["fp32"], rt)
    assert not broken["passed"] and broken["rel_error"] > broken["max_rel_error"], broken


def test_int8_top1_slack_grows_with_the_noise_of_a_middling_agreement():
    from edge.crosscheck import int8_top1_slack

    assert int8_top1_slack(1.0, 16) == pytest.approx(0.125)  # both exact: 2 of 16 images
    assert int8_top1_slack(0.5, 16) == pytest.approx(2 * (2 * 0.25 / 16) ** 0.5)  # 0.35
    assert int8_top1_slack(0.5, 16) > int8_top1_slack(0.5, 64) > int8_top1_slack(0.9, 64)
    # M3 in one run: ORT int8 agreed with fp32 on 8 of 16 images, OpenVINO int8 on 4; within
    # chance of each other (cosines 0.856 and 0.850), no longer a failure
    assert 0.25 >= 0.5 - int8_top1_slack(0.5, 16)


def test_ir_cache_is_reused_and_a_mismatched_one_refused(files, tmp_path):
    xml = tmp_path / "cache" / "m.xml"
    first = OpenVinoRuntime(files["fp32"], threads=1, ir_cache=xml)
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    x = np.random.default_rng(2).standard_normal(first.input_shape).astype(np.float32)
    again = OpenVinoRuntime(files["fp32"], threads=1, ir_cache=xml)  # read from the cache
    np.testing.assert_allclose(again(x), first(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"IR cache .*m\.xml was made from another ONNX file"):
        OpenVinoRuntime(files["other"], ir_cache=xml)


def test_bench_cli_checks_then_measures(files, capsys):
    argv = ["bench", str(files["fp32"]), "--runtime", "openvino", "--threads", "1"]
    code = main([*argv, "--measure-seconds", "0.5"])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"OpenVINO fp32 vs ONNX Runtime on 16 images: logit cosine (0\.99|1\.00)", out)
    assert "median" in out and "openvino" in out
    code = main(["bench", str(files["fp32"]), "--runtime", "ort", "--precision", "bf16"])
    err = capsys.readouterr().err
    assert code == 2 and "--precision bf16 is for --runtime openvino" in err


def test_openvino_search_target_and_its_paths(tmp_path):
    from search.autotarget import cpu_paths
    from search.targets import Target

    paths = cpu_paths()
    assert ("openvino-cpu", "fp32") in paths and ("openvino-cpu", "int8") in paths
    assert (("openvino-cpu", "bf16") in paths) == bf16_supported()
    assert cpu_paths("int8") == [("ort-cpu", "int8"), ("openvino-cpu", "int8")]
    with pytest.raises(ValueError, match="--target auto --precision fp16: no CPU runtime"):
        cpu_paths("fp16")
    target = Target("openvino-cpu", threads=1, workdir=tmp_path, precision="int8")
    rt = target.prepare(tiny_config())()
    assert rt.name == "openvino" and rt.precision == "int8"
    assert "openvino" in target.description and "int8" in target.description


@pytest.mark.slow  # every CPU path measured for real: 55 s on AVX2 (test_autotarget: stand-ins)
def test_auto_measures_every_cpu_path_and_keeps_the_fastest(tmp_path, monkeypatch):
    import search.space
    from search.autotarget import AUTO_FILE, choose_cpu_target, cpu_paths

    paths = cpu_paths()
    # M0 and M5 stand-ins (tiny models) on every path, interleaved, then the fastest
    small = tiny_config(name="efficientvit_m0")
    large = tiny_config(name="efficientvit_m5", img_size=128)
    monkeypatch.setattr(
        search.space,
        "reference_configs",
        lambda: {"efficientvit_m0": small, "efficientvit_m5": large},
    )
    common = dict(batch=1, threads=1, max_seconds=0.3, workdir=tmp_path / "w", calib=None)
    chosen, table = choose_cpu_target(tmp_path / "run", precision=None, **common)
    cells = re.findall(r"(\S+) (\S+) M0 ([\d.]+) / M5 ([\d.]+) ms", table)
    assert [(n, p) for n, p, _, _ in cells] == paths
    best = min(cells, key=lambda c: float(c[2]) * float(c[3]))
    assert (chosen.name, chosen.precision) == (best[0], best[1])
    assert "lowest geometric mean of M0 and M5" in table
    assert (tmp_path / "run" / AUTO_FILE).is_file()
    again, line = choose_cpu_target(tmp_path / "run", precision=None, **common)
    assert (again.name, again.precision) == (chosen.name, chosen.precision)
    assert line.endswith("(chosen when this study started)")  # a resumed study keeps it
