"""Pydantic schema of a chip description.

Every number is a :class:`Sourced` value: the value in the base unit its field name implies
(``_hz``, ``_bytes``, ``_bytes_per_s``, ``_ops_per_s``, ``_w``...), where it came from, and whether
it is published, derived (our arithmetic on published numbers), an estimate (with the reasoning
in ``note``) or unknown (``value: null``). A published conflict stays visible: the chosen value is
``value`` and the others are ``alternatives`` the user can select by label
(``--set power.tdp_w=alt:blog-2024``).

Units: in YAML a value may be a bare number in the base unit or a string with a unit
(``"204.8 GB/s"``). Bandwidths are per direction unless a field says ``_bidir``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mtiasim.units import UnitError, parse_quantity

Status = Literal["published", "measured", "derived", "estimate", "unknown"]

#: Data types a compute engine may support. ``mx8``/``mx4`` are OCP microscaling formats.
DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "mx8", "mx4", "fp4", "int4")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Alternative(_Strict):
    """A published value that conflicts with the chosen one."""

    value: float | None
    source: str
    note: str | None = None


class Sourced(_Strict):
    """A number with its provenance. Subclasses fix the dimension (see :mod:`mtiasim.units`)."""

    dimension: ClassVar[str] = "count"

    value: float | None
    source: str = Field(min_length=1)
    status: Status = "published"
    note: str | None = None
    alternatives: dict[str, Alternative] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _parse_units(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError(
                "a number must be written with its source, e.g. {value: 1.35 GHz, source: \"ISCA'25 Table 2\"}"
            )
        data = dict(data)
        try:
            if data.get("value") is not None:
                data["value"] = parse_quantity(data["value"], cls.dimension)
            alts = {}
            for label, alt in (data.get("alternatives") or {}).items():
                if isinstance(alt, dict) and alt.get("value") is not None:
                    alt = {**alt, "value": parse_quantity(alt["value"], cls.dimension)}
                alts[label] = alt
            if alts:
                data["alternatives"] = alts
        except UnitError as e:  # re-raised by pydantic with the field location attached
            raise ValueError(str(e)) from None
        return data

    @model_validator(mode="after")
    def _check_status(self) -> Sourced:
        if self.value is None and self.status != "unknown":
            raise ValueError("value is null, so status must be 'unknown' (and note should say why)")
        if self.value is not None and self.status == "unknown":
            raise ValueError("status 'unknown' needs value: null")
        if self.status == "estimate" and not self.note:
            raise ValueError("an estimate needs a note with its reasoning")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(f"value must be a finite number, got {self.value}")
        if self.value is not None and self.value < 0:
            raise ValueError(f"value must not be negative, got {self.value}")
        return self

    def __float__(self) -> float:
        if self.value is None:
            raise ValueError(f"unknown value (source: {self.source}; {self.note or ''})")
        return float(self.value)


class Hz(Sourced):
    dimension: ClassVar[str] = "hz"


class Bytes(Sourced):
    dimension: ClassVar[str] = "bytes"


class BytesPerS(Sourced):
    dimension: ClassVar[str] = "bytes_per_s"


class OpsPerS(Sourced):
    dimension: ClassVar[str] = "ops_per_s"


class Watts(Sourced):
    dimension: ClassVar[str] = "w"


class Usd(Sourced):
    dimension: ClassVar[str] = "usd"


class Seconds(Sourced):
    dimension: ClassVar[str] = "s"


class Nm(Sourced):
    dimension: ClassVar[str] = "nm"


class Count(Sourced):
    """A count or a per-cycle rate (a derived ops-per-cycle figure may be fractional)."""

    dimension: ClassVar[str] = "count"


def _check_dtype_keys(v: dict[str, Any]) -> dict[str, Any]:
    bad = [k for k in v if k not in DTYPES]
    if bad:
        raise ValueError(f"unknown dtype key(s) {bad}; expected some of {list(DTYPES)}")
    return v


class GemmTile(_Strict):
    """Work granule of one compute unit: the M x N x K block a PE's DPE or an SM's tensor cores
    process in one pass. Tile quantization pads each GEMM dimension up to a multiple of these."""

    m: int = Field(gt=0)
    n: int = Field(gt=0)
    k: int = Field(gt=0)
    source: str
    status: Status = "published"
    note: str | None = None


class Compute(_Strict):
    """Chip-level compute. ``units`` are the parallel compute units work is spread over in waves
    (PEs for a PE grid, SMs/CUs for a GPU)."""

    peak_ops_per_s: dict[str, OpsPerS] = Field(
        description="dense matrix-engine peak per dtype (2 ops per MAC), at clock_hz"
    )
    sparse_peak_ops_per_s: dict[str, OpsPerS] = Field(default_factory=dict)
    vector_ops_per_s: dict[str, OpsPerS] = Field(
        default_factory=dict, description="SIMD / vector / CUDA-core peak per dtype, at clock_hz"
    )
    units: Count
    gemm_tile: GemmTile

    @field_validator("units")
    @classmethod
    def _some_units(cls, v: Count) -> Count:
        if v.value is not None and (v.value < 1 or not float(v.value).is_integer()):
            raise ValueError(f"compute.units must be a whole number of at least 1 (SMs, CUs or PEs), got {v.value:g}")
        return v

    _v1 = field_validator("peak_ops_per_s", "sparse_peak_ops_per_s", "vector_ops_per_s")(_check_dtype_keys)


class PEEngines(_Strict):
    """Per-PE engines of an MTIA-style processing element (ops or bytes per cycle, per PE)."""

    riscv_cores: Count
    dpe_ops_per_cycle: dict[str, Count] = Field(description="dot-product engine, dense, 2 ops per MAC")
    simd_ops_per_cycle: dict[str, Count] = Field(default_factory=dict)
    vector_core_ops_per_cycle: dict[str, Count] = Field(default_factory=dict)
    reduction_engine: str | None = None
    memory_layout_unit: str | None = None
    dma: str | None = None

    _v1 = field_validator("dpe_ops_per_cycle", "simd_ops_per_cycle", "vector_core_ops_per_cycle")(
        _check_dtype_keys
    )


class LocalMemory(_Strict):
    size_bytes: Bytes
    bandwidth_bytes_per_s: BytesPerS


class PEGrid(_Strict):
    rows: Count
    cols: Count
    spare_rows: Count | None = None
    engines: PEEngines
    local_memory: LocalMemory


class GPUCores(_Strict):
    """SM / CU level description of a GPU."""

    sm_count: Count
    boost_clock_hz: Hz
    l1_bytes_per_sm: Bytes | None = None


class SRAM(_Strict):
    """Shared on-chip memory: MTIA's LLC/LLS SRAM, a GPU's L2 or AMD's Infinity Cache."""

    kind: Literal["llc_lls", "l2", "infinity_cache", "scratchpad"]
    size_bytes: Bytes
    bandwidth_bytes_per_s: BytesPerS
    partition_granularity_bytes: Bytes | None = None


class DRAM(_Strict):
    type: str = Field(description="LPDDR5, HBM2e, HBM3, HBM3e, ...")
    capacity_bytes: Bytes
    bandwidth_bytes_per_s: BytesPerS
    channels: Count | None = None


class Link(_Strict):
    """A link class of the chip. ``bandwidth_bytes_per_s`` is per direction, per chip."""

    type: str
    bandwidth_bytes_per_s: BytesPerS
    ports: Count | None = None
    domain_size: Count | None = Field(default=None, description="chips reachable at this bandwidth")


class NoC(_Strict):
    topology: str
    bandwidth_bytes_per_s: BytesPerS | None = None
    note: str | None = None


class MessageEngines(_Strict):
    count: Count
    reduction_bandwidth_bytes_per_s: BytesPerS | None = None
    note: str | None = None


class Power(_Strict):
    tdp_w: Watts
    typical_w: Watts | None = None
    idle_w: Watts | None = None


class Cost(_Strict):
    capex_usd: Usd
    lifetime_s: Seconds | None = None


class ChipSpec(_Strict):
    """One accelerator. ``kind`` picks the default engine (``pe_grid`` chips have ``pe_grid``)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    display_name: str
    vendor: str
    kind: Literal["pe_grid", "gpu", "tpu", "other"]
    year: int | None = None
    process_nm: Nm
    clock_hz: Hz
    compute: Compute
    pe_grid: PEGrid | None = None
    gpu: GPUCores | None = None
    local_memory_note: str | None = None
    sram: SRAM | None = None
    dram: DRAM
    noc: NoC | None = None
    host_link: Link
    scale_up: Link | None = None
    scale_out: Link | None = None
    message_engines: MessageEngines | None = None
    power: Power
    cost: Cost
    platform: str | None = Field(default=None, description=(
        "the server it is deployed in (data/platform/platforms.yaml); presets are listed there"))
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _kind_has_its_section(self) -> ChipSpec:
        if self.kind == "pe_grid" and self.pe_grid is None:
            raise ValueError("kind 'pe_grid' needs a pe_grid section")
        if self.kind == "gpu" and self.gpu is None:
            raise ValueError("kind 'gpu' needs a gpu section")
        return self

    # --- convenience accessors used by the compiler and engines -------------------------------
    def peak(self, dtype: str) -> float | None:
        """Dense matrix-engine peak for ``dtype`` in ops/s at ``clock_hz``, or None if unsupported."""
        s = self.compute.peak_ops_per_s.get(dtype)
        return None if s is None or s.value is None else s.value

    def vector_peak(self, dtype: str) -> float | None:
        s = self.compute.vector_ops_per_s.get(dtype)
        if s is None or s.value is None:
            s = self.compute.vector_ops_per_s.get("fp32")
        return None if s is None or s.value is None else s.value

    @property
    def sram_bytes(self) -> float:
        return 0.0 if self.sram is None or self.sram.size_bytes.value is None else self.sram.size_bytes.value
