"""What a training prediction returns."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mtiasim.fleet import SystemCost
from mtiasim.training.memory import TrainingMemory


class StepBreakdown(BaseModel):
    """Seconds of one step on the critical path; they add up to ``step_time_s``."""

    model_config = ConfigDict(extra="forbid")
    forward: float = Field(ge=0, description="all micro-batches' forward passes (loss included)")
    backward: float = Field(ge=0)
    optimizer: float = Field(ge=0)
    communication_exposed: float = Field(ge=0, description="collectives the compute does not hide")
    pipeline_bubble: float = Field(ge=0, description="pipeline stages idle (0 without pipeline parallelism)")


class TrainingReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    system: str
    chip: str
    chips: int
    engine: str
    precision: str
    optimizer: str
    data_parallel: int
    tensor_parallel: int
    pipeline_parallel: int
    virtual_stages: int
    sequence_parallel: bool
    zero_stage: int
    recompute: str
    global_batch: int = Field(description="samples (sequences for LLMs) per optimizer step")
    micro_batch: int = Field(description="samples per data-parallel rank per forward/backward")
    micro_batches: int = Field(description="gradient-accumulation steps per optimizer step")
    seq_len: int | None
    trainable_params: int
    frozen_params: int
    step_time_s: float = Field(gt=0)
    breakdown_s: StepBreakdown
    communication_total_s: float = Field(ge=0, description="all collectives of a step, hidden or not")
    samples_per_s: float = Field(gt=0)
    tokens_per_s: float | None = Field(description="LLMs: samples_per_s x seq_len")
    model_flops_per_step: float = Field(ge=0, description="matrix-engine flops of every micro-batch on every "
                                        "chip, forward and backward (no recompute)")
    mfu: float | None = Field(description="model_flops_per_step / (step_time_s x chips x dense peak)")
    memory_per_chip_bytes: float = Field(ge=0)
    memory_breakdown_bytes: TrainingMemory
    memory_capacity_bytes: float
    fits: bool
    energy_per_step_j: float | None = Field(description="chips' compute and memory energy; None when unknown")
    cost: SystemCost | None = Field(default=None, description=(
        "chip and wall power and cost of ownership while training (fleet.system_cost); None when unknown"))
    samples_to_converge: float | None = None
    time_to_train_s: float | None = None
    notes: list[str] = Field(default_factory=list)

    @property
    def cost_to_train_usd(self) -> float | None:
        """What the samples to converge cost at the site's utilisation (fleet/tco.py)."""
        if self.samples_to_converge is None or self.cost is None or not self.cost.items_per_usd:
            return None
        return self.samples_to_converge / self.cost.items_per_usd

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        d["memory_breakdown_bytes"]["total"] = self.memory_breakdown_bytes.total
        d["cost_to_train_usd"] = self.cost_to_train_usd
        return d
