"""evit.supernet.space: the search-space YAML read on the evit side, as search/space.py reads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evit.config import load_config
from evit.supernet.contain import check_contained
from evit.supernet.space import read_space, space_from_dict
from search.space import load_space

SPACES = sorted((Path(__file__).parents[2] / "search").glob("*_space.yaml"))


def test_reading_a_space_does_not_import_torch():
    code = "import sys, evit.supernet.space; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_spaces_read_as_the_search_reads_them(path):
    ours, theirs = read_space(path), load_space(path)
    smallest = theirs.smallest()
    assert (
        ours.smallest(1000).architecture_hash()
        == smallest.at_img_size(smallest.img_size).architecture_hash()
    )
    largest = ours.largest(1000)
    check_contained(largest, theirs.largest())
    for i in range(6):  # the spaces contain M0-M5 (search's tests), so does the supernet
        check_contained(largest, load_config(f"m{i}"))
    rng = np.random.default_rng(0)

    class RandomTrial:
        def suggest_categorical(self, name, choices):
            return choices[int(rng.integers(len(choices)))]

    for _ in range(50):  # whatever the search draws, the supernet holds
        check_contained(largest, theirs.sample(RandomTrial()))


def test_largest_takes_the_per_head_kernel_maximum():
    space = read_space(SPACES[0])
    largest = space.largest(10)
    assert [s.kernel_sizes for s in largest.stages] == [(7, 5, 5, 5)] * 3  # not one listed tuple
    assert [(s.num_heads, s.embed_dim) for s in largest.stages] == [(4, 512)] * 3
    assert largest.num_classes == 10


def test_samples_are_seeded_keep_the_rules_and_reach_every_choice():
    space = read_space(SPACES[0]).with_img_size((64,))
    largest = space.largest(4)

    def draw(seed: int, n: int) -> list:
        rng = np.random.default_rng(seed)
        return [space.sample(rng, 4) for _ in range(n)]

    configs = draw(1, 300)
    assert configs[:5] == draw(1, 5) and configs[:5] != draw(2, 5)
    for config in configs:
        assert space.rules.violation(config) is None
        check_contained(largest, config)
    assert {c.stages[2].depth for c in configs} == {1, 2, 3, 4, 5}
    assert {c.stages[0].kernel_sizes for c in configs} == {(3,) * 4, (5,) * 4, (7, 5, 3, 3)}
    assert {c.img_size for c in configs} == {64}


def test_the_fingerprint_follows_the_choices_not_the_input_sizes_or_the_writing():
    space = read_space(SPACES[0])
    assert space.with_img_size((32, 64)).fingerprint() == space.fingerprint()
    data = space.to_dict()
    assert space_from_dict(data, "copy").fingerprint() == space.fingerprint()
    data["stages"][0]["depth"] = [1, 2]
    assert space_from_dict(data).fingerprint() != space.fingerprint()


STAGE = {
    "num_heads": [1, 2],
    "head_dim": [8],
    "depth": [1],
    "key_dim": [4],
    "ffn_ratio": [1.0],
    "window_size": [3],
    "kernel_sizes": [[3, 3]],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stages": [{**STAGE, "heads": [1]}]}, "stages[0]: unknown key(s) heads"),
        ({"stages": [{**STAGE, "kernel_sizes": [[3, 4]]}]}, "must hold odd positive integers"),
        ({"stages": [{**STAGE, "kernel_sizes": [[3]]}]}, "num_heads up to 2 but a kernel_sizes"),
        ({"stages": [{**STAGE, "head_dim": [6]}]}, "width 1 x 6 is not divisible by 8"),
        ({"stages": [{**STAGE, "depth": [0]}]}, "depth: choice 0 must be a positive int"),
        ({"img_size": [40]}, "img_size 40 must be a multiple of 16"),
        ({"rules": {"min_first_width": 64}}, "no config of the space keeps the rules"),
        ({"stages": []}, "'stages' must be a non-empty list"),
    ],
)
def test_an_invalid_space_is_one_line_naming_the_field(change, message):
    data = {"img_size": [64], "stages": [STAGE], **change}
    with pytest.raises(ValueError) as refused:
        space_from_dict(data, "tiny.yaml")
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert str(refused.value).startswith("tiny.yaml")
