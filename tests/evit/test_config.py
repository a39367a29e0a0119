from __future__ import annotations

import pytest

from evit.config import ModelConfig, StageConfig, list_variants, load_config, save_yaml
from tests.conftest import VARIANTS, tiny_config


@pytest.mark.parametrize("name", VARIANTS)
def test_variants_resolve_by_name_alias_and_path(name):
    by_name = load_config(name)
    assert load_config(name.replace("efficientvit_", "")) == by_name
    assert load_config(name.upper()) == by_name
    from evit.config import CONFIG_DIR

    assert load_config(CONFIG_DIR / f"{name}.yaml") == by_name
    assert by_name.name == name


def test_list_variants():
    assert list_variants() == VARIANTS


def test_m5_matches_the_paper_table():
    cfg = load_config("m5")
    assert [s.embed_dim for s in cfg.stages] == [192, 288, 384]
    assert [s.depth for s in cfg.stages] == [1, 3, 4]
    assert [s.num_heads for s in cfg.stages] == [3, 3, 4]
    assert all(s.kernel_sizes == (7, 5, 3, 3) for s in cfg.stages)
    assert cfg.stage_resolutions() == [14, 7, 4]


def test_yaml_round_trip(tmp_path):
    cfg = tiny_config()
    path = save_yaml(cfg, tmp_path / "tiny.yaml")
    again = load_config(path)
    assert again == cfg
    assert again.architecture_hash() == cfg.architecture_hash()
    assert cfg.replace(name="other").architecture_hash() == cfg.architecture_hash()
    assert cfg.replace(num_classes=3).architecture_hash() != cfg.architecture_hash()
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def _stage(**kw):
    base = dict(
        embed_dim=64, depth=1, num_heads=4, key_dim=16, window_size=7, kernel_sizes=(5, 5, 5, 5)
    )
    base.update(kw)
    return StageConfig(**base)


@pytest.mark.parametrize(
    ("stage", "img_size", "match"),
    [
        (_stage(embed_dim=66), 224, r"stages\[0\]\.embed_dim=66: must be divisible by num_heads=4"),
        (
            _stage(num_heads=5, embed_dim=80),
            224,
            r"stages\[0\]\.num_heads=5: must be <= the number of kernel_sizes \(4\)",
        ),
        (_stage(kernel_sizes=(4, 5, 5, 5)), 224, r"kernel_sizes=\[4, 5, 5, 5\]: must hold odd"),
        (
            _stage(window_size=15),
            224,
            r"window_size=15: must be <= the first stage's resolution 14",
        ),
        (_stage(depth=0), 224, r"stages\[0\]\.depth=0: must be >= 1"),
        (_stage(key_dim=0), 224, r"key_dim=0: must be >= 1"),
        (_stage(value_ratio=0.5), 224, r"value_ratio=0.5: must be 1.0"),
        (_stage(ffn_ratio=0.001), 224, r"ffn_ratio=0.001"),
        (_stage(), 200, r"img_size=200: must be a multiple of 16"),
        (
            _stage(embed_dim=36, num_heads=2, kernel_sizes=(5, 5)),
            224,
            r"stages\[0\]\.embed_dim=36: must be divisible by 8",
        ),
    ],
)
def test_validation_names_field_value_and_rule(stage, img_size, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig("bad", (stage,), img_size=img_size).validate()


def test_yaml_errors_are_one_line(tmp_path):
    cases = {
        "unknown.yaml": "name: x\nstages: [{embed_dim: 64, depth: 1, num_heads: 4, colour: 3}]\n",
        "top.yaml": "name: x\nwidth: 3\nstages: []\n",
        "broken.yaml": "name: [unclosed\n",
        "missing.yaml": "name: x\nstages: [{embed_dim: 64, depth: 1}]\n",
        "scalar.yaml": "42\n",
    }
    expected = {
        "unknown.yaml": r"unknown key\(s\) colour; allowed: depth, embed_dim",
        "top.yaml": r"unknown key\(s\) width",
        "broken.yaml": r"invalid YAML",
        "missing.yaml": r"missing key\(s\) num_heads",
        "scalar.yaml": r"expected a mapping",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ValueError, match=expected[name]) as info:
            load_config(path)
        assert "\n" not in str(info.value)


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown model 'm9'; known names: efficientvit_m0"):
        load_config("m9")
    with pytest.raises(ValueError, match="config file not found"):
        load_config("nowhere/model.yaml")
