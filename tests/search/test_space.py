from __future__ import annotations

import optuna
import pytest
import yaml

from search.space import load_space, reference_configs, space_from_dict
from tests.search.conftest import TINY_SPACE


@pytest.mark.parametrize("which", ["default", "accuracy"])
def test_shipped_spaces_contain_m0_to_m5_exactly_and_their_rules_keep_them(which):
    from search.space import ACCURACY_SPACE

    space = load_space(ACCURACY_SPACE if which == "accuracy" else None)
    for name, config in reference_configs().items():
        params = space.params_of(config)
        assert params is not None, name
        assert space.config_from_params(params).stages == config.stages
        assert space.rules.violation(config) is None, name


def test_default_space_reaches_below_m0_and_above_m5():
    space = load_space()
    smallest = min(h * d for h in space.stages[0].num_heads for d in space.stages[0].head_dim)
    largest = max(h * d for h in space.stages[-1].num_heads for d in space.stages[-1].head_dim)
    assert smallest < 64 and largest > 384
    assert min(space.stages[-1].depth) == 1 and max(space.stages[-1].depth) > 4
    assert space.img_size == (224,)


def test_sampling_gives_only_valid_configs():
    space = load_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(300):
        config = space.sample(study.ask())
        config.validate()  # raises on any invalid combination
        assert space.contains(config)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(colour=1), r"unknown key\(s\) colour"),
        (lambda d: d["stages"][0].pop("depth"), r"stages\[0\]: missing key\(s\) depth"),
        (
            lambda d: d["stages"][0].update(num_heads=[3]),
            r"num_heads up to 3 but a kernel_sizes choice has fewer entries",
        ),
        (
            lambda d: d["stages"][0].update(head_dim=[12], num_heads=[1]),
            r"a combination of choices is invalid .*divisible by 8",
        ),
        (lambda d: d["stages"][1].update(depth=[0]), r"depth: choice 0 must be a positive int"),
        (lambda d: d["stages"][0].update(kernel_sizes=[3, 5]), r"expected a list of kernel lists"),
        (lambda d: d.update(img_size=[70]), r"img_size 70 must be a multiple of 16"),
        (lambda d: d["stages"][0].update(window_size=[9]), r"window_size=9: must be <="),
        (lambda d: d["stages"][0].update(value_ratio=[0.5]), r"value_ratio=0.5: must be 1.0"),
    ],
)
def test_invalid_space_files(tmp_path, change, match):
    data = yaml.safe_load(yaml.safe_dump(TINY_SPACE))
    change(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=match) as info:
        load_space(path)
    assert "\n" not in str(info.value)


def test_unreadable_space(tmp_path):
    with pytest.raises(ValueError, match="cannot read search space"):
        load_space(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("stages: [unclosed\n")
    with pytest.raises(ValueError, match="invalid YAML"):
        load_space(tmp_path / "broken.yaml")
    assert space_from_dict(TINY_SPACE).num_classes == 10


def test_config_from_partial_params_fills_single_choices_only(tiny_space):
    from search.space import load_space

    space = load_space(tiny_space)
    config = space.smallest()
    params = space.params_of(config)
    assert space.config_from_params(params) == config
    partial = {k: v for k, v in params.items() if k != "s0_depth"}  # one choice: [1]
    assert space.config_from_params(partial) == config
    with pytest.raises(ValueError, match="lack 's0_num_heads'"):
        space.config_from_params({k: v for k, v in params.items() if k != "s0_num_heads"})
