"""The result every engine returns: totals plus a per-kernel breakdown that explains them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Bound = Literal["compute", "memory", "overhead", "host"]


class OpResult(BaseModel):
    """One kernel (an op with whatever was fused into it)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    op: str
    fused: list[str] = Field(default_factory=list, description="ops fused into this kernel")
    dtype: str
    time_s: float = Field(ge=0)
    bound: Bound
    flops: float = Field(ge=0)
    bytes: float = Field(ge=0, description="bytes moved at all memory levels")
    dram_bytes: float = Field(ge=0)
    sram_bytes: float = Field(ge=0)
    compute_s: float = Field(ge=0)
    memory_s: float = Field(ge=0)
    overhead_s: float = Field(ge=0)
    roofline_s: float = Field(ge=0, description="max(flops/peak, bytes per level/bandwidth): no op beats it")
    gemm_efficiency: float | None = None
    energy_j: float | None = Field(default=None, ge=0, description="None when the chip's TDP is unknown")
    source: str | None = None


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    chip: str
    engine: str
    phase: str
    batch: int
    seq_len: int | None = None
    kv_len: int | None = None
    dtype: str
    items: int = Field(description="units of work one run produces")
    item_unit: str
    latency_s: float = Field(ge=0)
    throughput_per_s: float = Field(ge=0, description="items per second")
    energy_j: float | None = Field(ge=0, description="None when the chip's TDP is unknown")
    power_w: float | None = Field(ge=0)
    perf_per_w: float | None = Field(ge=0, description="items per second per watt (= items per joule)")
    clock_scale: float = Field(gt=0, le=1, description="1 unless throttled to stay within TDP")
    tdp_w: float | None
    flops: float
    weight_bytes: float
    memory_required_bytes: float
    memory_capacity_bytes: float
    fits_in_memory: bool
    ops: list[OpResult]
    notes: list[str] = Field(default_factory=list)

    @property
    def throughput_unit(self) -> str:
        return f"{self.item_unit}s/s"

    def bound_breakdown_s(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for o in self.ops:
            out[o.bound] = out.get(o.bound, 0.0) + o.time_s
        return out

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
