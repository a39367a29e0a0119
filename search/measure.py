"""Latency on the target: one trial's measurement, the pre-filter, and the final side-by-side run.

A :class:`Measurer` owns what measuring needs across trials: the measurement log (a repeated
architecture reuses its earlier reading, also one another worker took), the pre-filter (configs
predicted over the budget are bounded, not measured) and the device lock (nothing else measures
meanwhile). Its methods return what they measured; the caller records it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

import evit
from edge.devicelock import device_lock
from edge.latency import InterleavedResult, LatencyResult
from evit.config import ModelConfig
from search import keys
from search.cache import MeasurementLog
from search.candidates import Candidate
from search.options import PrecisionRow
from search.prefilter import PreFilter, gemm_peak_macs_per_ms
from search.space import SearchSpace
from search.targets import CPU_TARGETS, Target, measure_side_by_side

log = logging.getLogger(__name__)


class NothingFits(ValueError):
    """Even the smallest configuration of the space is slower than the budget."""


def attention_blocks(config: ModelConfig) -> int:
    """Attention heads over all blocks: each runs its own small ops, whatever its MACs."""
    return sum(s.depth * s.num_heads for s in config.stages)


@dataclass(frozen=True)
class Measurement:
    """One trial's latency and where it came from (``keys.MEASURED`` or ``keys.CACHE``)."""

    result: LatencyResult
    source: str
    timings: dict[str, float] = field(default_factory=dict)  # the steps of a new measurement


@dataclass(frozen=True)
class Bound:
    """The pre-filter's verdict: the config is over the budget; its latency is at least this."""

    reason: str
    bound_ms: float
    confirmations: int  # slow readings measured again before the verdict


@dataclass(frozen=True)
class Remeasured:
    """The final side-by-side run: the candidates with their re-measured latency, paired ratio
    to the first one and slot, and the run itself."""

    candidates: list[Candidate]
    run: InterleavedResult | None


class Measurer:
    """Measures on ``target`` for a study with ``budget_ms`` (see the module docstring)."""

    def __init__(self, target: Target, log_path, budget_ms: float, block_seconds: float) -> None:
        self.target = target
        self.log = MeasurementLog(log_path, target.fingerprint)
        self.block_seconds = block_seconds
        peak = (  # the MAC floor rests on the fp32 GEMM peak: int8/bf16 kernels can beat it
            gemm_peak_macs_per_ms(target.threads)
            if target.name in CPU_TARGETS and target.precision == "fp32"
            else None
        )
        self.prefilter = PreFilter(budget_ms, peak)

    def learn_from(self, study: optuna.Study, space: SearchSpace) -> None:
        """Teach the pre-filter the study's earlier measurements."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            attrs = trial.user_attrs
            if not keys.was_measured(attrs):
                continue
            try:
                config = space.config_from_params(trial.params)
            except ValueError:
                config = None  # it cannot be measured again, so it never prunes
            self.prefilter.record(
                attrs[keys.MACS],
                attrs[keys.ACTIVATION_BYTES],
                attrs[keys.BLOCKS],
                attrs[keys.LATENCY_MEDIAN],
                config,
            )

    def check_smallest_fits(self, space: SearchSpace, budget_ms: float) -> None:
        """Measure the space's smallest config first: stop at once if even it cannot fit.

        Raises:
            NothingFits: the lower end of its latency's 95 % CI exceeds the budget.
        """
        smallest = space.smallest().replace(name="smallest_in_space")
        result, _ = self._logged(smallest.architecture_hash(), smallest, {})
        if result.ci_low_ms > budget_ms:
            raise NothingFits(
                f"no configuration fits {budget_ms:g} ms on {self.target.name}: the smallest "
                f"in the space ({evit.model_costs(smallest).params:,} params) measures "
                f"{result.median_ms:.3f} ms [{result.ci_low_ms:.3f}, {result.ci_high_ms:.3f}]"
            )

    def bound(self, config: ModelConfig) -> Bound | None:
        """The pre-filter's verdict; a dominator seen slow only once is measured again first."""
        costs = evit.model_costs(config)
        blocks = attention_blocks(config)
        skip = self.prefilter.check(costs.macs, costs.activation_bytes, blocks)
        again = 0
        while skip is None and (
            slow := self.prefilter.unconfirmed(costs.macs, costs.activation_bytes, blocks)
        ):
            with device_lock(self.target.device_key):
                reading = self.target.measure(slow.config)
            again += 1
            self.prefilter.confirm(slow, reading.median_ms)
            skip = self.prefilter.check(costs.macs, costs.activation_bytes, blocks)
        return Bound(skip[0], skip[1], again) if skip is not None else None

    def _earlier(self, study: optuna.Study | None, arch: str) -> LatencyResult | None:
        """A measurement of ``arch`` on this device: this folder's log, or any trial's."""
        self.log.refresh()
        cached = self.log.get(arch)
        if cached is not None or study is None:
            return cached
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            attrs = t.user_attrs
            if attrs.get(keys.ARCH_HASH) == arch and keys.LATENCY in attrs:
                return LatencyResult.from_dict(attrs[keys.LATENCY])
        return None

    def _logged(
        self,
        arch: str,
        config: ModelConfig,
        timings: dict[str, float],
        study: optuna.Study | None = None,
        note: dict | None = None,
        reference: bool = False,
        budget_ms: float = float("inf"),
    ) -> tuple[LatencyResult, bool]:
        """An earlier reading, or one measured now (True) and logged."""
        with device_lock(self.target.device_key) as held:  # nothing else runs meanwhile
            # another worker may have measured it while this one waited for the device
            result = self._earlier(study, arch)
            if result is not None:
                return result, False
            result = self.target.measure(config, timings)
            if reference and result.median_ms > budget_ms:
                # a reference anchors the comparisons: one reading taken in a slow moment
                # must not leave it out (untrained, "over the budget")
                result = min(result, self.target.measure(config), key=lambda r: r.median_ms)
            # logged before the lock is released: the next holder sees it
            held_at = {"held_from": held.start, "held_to": time.time()}
            self.log.append(arch, result, "search", {**(note or {}), **held_at})
            return result, True

    def latency(
        self,
        study: optuna.Study,
        config: ModelConfig,
        trial: int,
        reference: bool,
        budget_ms: float,
    ) -> Measurement:
        """``config``'s latency: an earlier reading of its architecture, or measured now."""
        arch = config.architecture_hash()
        timings: dict[str, float] = {}
        result, fresh = self._earlier(study, arch), False
        if result is None:
            note = {"trial": trial}
            result, fresh = self._logged(arch, config, timings, study, note, reference, budget_ms)
        costs = evit.model_costs(config)
        self.prefilter.record(
            costs.macs, costs.activation_bytes, attention_blocks(config), result.median_ms, config
        )
        return Measurement(result, keys.MEASURED if fresh else keys.CACHE, timings)

    def measure_alone(self, config: ModelConfig) -> LatencyResult:
        with device_lock(self.target.device_key):
            return self.target.measure(config)

    def remeasure(
        self, cands: list[Candidate], target: Target | None = None, max_rounds: int = 40
    ) -> Remeasured:
        """Re-measure ``cands`` interleaved in one run (references included); returns copies
        with ``remeasured``, ``vs_first`` (paired ratio to the first) and ``slot`` set."""
        target = target or self.target
        if len(cands) < 2:
            alone = [dataclasses.replace(c, remeasured=self.measure_alone(c.config)) for c in cands]
            return Remeasured(alone, None)
        res = measure_side_by_side(
            [(target, c.config) for c in cands],
            [c.config.name for c in cands],
            max_rounds=max_rounds,
            block_seconds=self.block_seconds,
        )
        out = []
        for slot, (c, r, ratio) in enumerate(zip(cands, res.results, [None, *res.ratios])):
            out.append(dataclasses.replace(c, remeasured=r, vs_first=ratio, slot=slot))
            self.log.append(c.config.architecture_hash(), r, "remeasure", {"name": c.config.name})
        return Remeasured(out, res)

    def compare_fp32(self, cands: list[Candidate], target: Target) -> list[PrecisionRow]:
        """Each candidate in fp32 and in ``target``'s precision, all in one interleaved run
        (paired speed-ups)."""
        fp32 = dataclasses.replace(target, precision="fp32", build_level=None)
        jobs = [(t, c.config) for c in cands for t in (fp32, target)]
        labels = [f"{c.config.name} {p}" for c in cands for p in ("fp32", target.precision)]
        res = measure_side_by_side(jobs, labels, block_seconds=self.block_seconds)
        return [
            PrecisionRow(c, res.results[2 * i], res.results[2 * i + 1], res.ratio(2 * i, 2 * i + 1))
            for i, c in enumerate(cands)
        ]
