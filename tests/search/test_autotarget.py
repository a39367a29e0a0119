"""--target auto chooses the CPU path for the models the budget admits (fake paths, real timing
harness; the outputs check runs on a tiny live model)."""

from __future__ import annotations

import pytest

import search.space
from search.autotarget import budget_models, choose_cpu_target
from tests.conftest import tiny_config
from tests.search.conftest import ConstantRuntime, FakeTarget

SIZES = {f"efficientvit_m{i}": 64 + 16 * i for i in range(6)}  # stand-ins for M0-M5


def base_ms(config) -> float:
    """A path-neutral latency: grows with the input (0.56 ms for the smallest, 5 ms for M5)."""
    return (config.img_size / 64) ** 2


class Neutral(FakeTarget):
    def prepare(self, config, timings=None, model=None):
        return lambda: ConstantRuntime(base_ms(config), config.name)


class FastOnSmall(Neutral):
    """Twice as fast as Neutral on models under 2 ms, three times slower on larger ones."""

    def prepare(self, config, timings=None, model=None):
        ms = base_ms(config) * (0.5 if base_ms(config) < 2 else 3.0)
        return lambda: ConstantRuntime(ms, config.name)


@pytest.fixture
def stand_ins(monkeypatch):
    refs = {name: tiny_config(name=name, img_size=size) for name, size in SIZES.items()}
    monkeypatch.setattr(search.space, "reference_configs", lambda: refs)
    return refs, tiny_config(name="smallest", img_size=48)


def test_the_models_nearest_the_budget(stand_ins, tmp_path):
    refs, smallest = stand_ins
    probe = Neutral("ort-cpu", threads=1, workdir=tmp_path)

    def names(budget):
        return [m.name for m in budget_models(budget, smallest, probe)]

    assert names(None) == ["efficientvit_m0", "efficientvit_m5"]  # no budget: M0 and M5
    assert names("efficientvit_m0") == ["smallest", "efficientvit_m0"]
    assert names(1.2) == ["efficientvit_m0", "efficientvit_m1"]  # M0 fits, M1 is next
    assert names(4.5) == ["efficientvit_m4", "efficientvit_m5"]
    assert names(0.1) == ["smallest", "efficientvit_m0"]  # nothing fits: the two smallest


@pytest.mark.parametrize(
    ("budget", "winner", "models"),
    [
        (None, Neutral, "M0 and M5"),  # what a budget-blind choice picks
        (1.2, FastOnSmall, "M0 and M1"),  # a small budget: the path fast on small models
    ],
)
def test_auto_chooses_the_path_for_the_budget(stand_ins, tmp_path, budget, winner, models):
    _, smallest = stand_ins
    common = dict(threads=1, workdir=tmp_path / "w")
    paths = [Neutral("ort-cpu", **common), FastOnSmall("ort-cpu", **common)]
    chosen, table = choose_cpu_target(
        tmp_path / "run",
        batch=1,
        threads=1,
        precision=None,
        max_seconds=0.3,
        workdir=tmp_path / "w",
        calib=None,
        targets=paths,
        budget=budget,
        smallest=smallest,
        target_class=Neutral,
    )
    assert type(chosen) is winner, table
    assert f"lowest geometric mean of {models}" in table
