"""A measured architecture: the record the selection, the report and the CLI share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.latency import LatencyResult, Ratio
from evit.config import ModelConfig


@dataclass
class Candidate:
    """A measured architecture with everything the report needs."""

    config: ModelConfig
    objective: float
    latency: LatencyResult
    params: int
    macs: int
    trial: int | None = None
    reference: str | None = None
    remeasured: LatencyResult | None = None
    vs_first: Ratio | None = None  # re-measured latency / the first re-measured model's (M0)
    slot: int | None = None  # its index in the final interleaved run (for paired ratios)
    trained: bool | None = None  # accuracy objective: False when over the budget (objective 0)
    checkpoint: Path | None = None  # accuracy objective: its trained weights, while kept
    train_img_size: int | None = None  # accuracy objective: the resolution it trained at
    seeds: list[float] | None = None  # accuracy objective: top-1 per seed when confirmed
    inherited: float | None = None  # --weight-sharing: the supernet's score, before fine-tuning
