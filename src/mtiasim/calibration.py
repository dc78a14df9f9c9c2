"""Calibration data (``data/calibration/*.yaml``): typed, sourced, looked up per chip.

Formulas in the engines never hold efficiency or energy literals; they ask this module.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mtiasim.chips.schema import ChipSpec
from mtiasim.fitted import check_fitted

Status = Literal["published", "measured", "derived", "estimate", "fitted"]


class CalValue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    value: float = Field(ge=0)
    source: str
    status: Status = "published"
    note: str | None = None

    fitted_on: list[str] = Field(default_factory=list, description="status fitted: the rows or files it was "
                                 "fitted to (mtiasim/fitted.py)")

    @model_validator(mode="after")
    def _estimate_has_reason(self) -> CalValue:
        if self.status == "estimate" and not self.note:
            raise ValueError("an estimate needs a note with its reasoning")
        check_fitted(self.status, self.fitted_on)
        return self


class Fraction(CalValue):
    value: float = Field(gt=0, le=1)


class Share(CalValue):
    """A share of accesses in [0, 1] (0 allowed: e.g. no embedding rows held on chip)."""

    value: float = Field(ge=0, le=1)


class GemmPoint(BaseModel):
    """A measured GEMM efficiency: ``measured_fraction`` of dense peak at ``shape`` = [M, N, K].

    Without a shape, ``measured_fraction`` is the base efficiency itself: fitted over a grid of
    measured shapes after each shape's tile/wave efficiency was divided out."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    measured_fraction: float = Field(gt=0, le=1)
    shape: tuple[int, int, int] | None = None
    source: str
    status: Status = "published"
    note: str | None = None
    fitted_on: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fitted_names_its_data(self) -> GemmPoint:
        check_fitted(self.status, self.fitted_on)
        return self


class EngineCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    gemm_base_efficiency: dict[str, GemmPoint] = Field(default_factory=dict)
    dram_efficiency: Fraction | None = None
    sram_efficiency: Fraction | None = None
    gather_dram_efficiency: Fraction | None = None
    sparse_sram_hit_fraction: Share | None = None
    vector_efficiency: Fraction | None = None
    launch_overhead_s: CalValue | None = None


class AnalyticalFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kinds: dict[str, EngineCalibration]
    chips: dict[str, EngineCalibration] = Field(default_factory=dict)


class PowerFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    static_fraction_of_tdp: Fraction
    matrix_power_share: Fraction
    gemm_power_limited: dict[str, Fraction] = Field(default_factory=dict)  # chip kind -> share at the measured rate
    sustained_gemm_clock_fraction: dict[str, Fraction] = Field(default_factory=dict)  # chip name -> clock held at TDP
    dvfs_energy_exponent: CalValue
    vector_energy_per_op_ratio: CalValue
    dram_j_per_byte: dict[str, CalValue]
    sram_j_per_byte: CalValue
    host_link_j_per_byte: CalValue
    host_ops_per_s: CalValue
    host_roundtrip_s: CalValue


def _read(name: str) -> dict:
    text = resources.files("mtiasim").joinpath("data", "calibration", name).read_text()
    return yaml.safe_load(text)


@lru_cache(maxsize=1)
def analytical_file() -> AnalyticalFile:
    try:
        return AnalyticalFile.model_validate(_read("analytical.yaml"))
    except ValidationError as e:
        raise ValueError(f"data/calibration/analytical.yaml: {e}") from None


@lru_cache(maxsize=1)
def power_file() -> PowerFile:
    try:
        return PowerFile.model_validate(_read("power.yaml"))
    except ValidationError as e:
        raise ValueError(f"data/calibration/power.yaml: {e}") from None


class ChipCalibration:
    """Calibration resolved for one chip: the chip's own entry first, then its kind's defaults."""

    FIELDS = ("dram_efficiency", "sram_efficiency", "gather_dram_efficiency", "sparse_sram_hit_fraction",
              "vector_efficiency", "launch_overhead_s")

    def __init__(self, chip: ChipSpec):
        f = analytical_file()
        own = f.chips.get(chip.name, EngineCalibration())
        kind = f.kinds.get(chip.kind) or f.kinds["gpu"]
        self.sources: dict[str, str] = {}
        for field in self.FIELDS:
            v = getattr(own, field) or getattr(kind, field)
            if v is None:
                raise ValueError(f"calibration for '{chip.name}' (kind {chip.kind}) lacks '{field}'")
            setattr(self, field, v.value)
            self.sources[field] = v.source
        self.gemm_points = {**kind.gemm_base_efficiency, **own.gemm_base_efficiency}

    def gemm_point(self, dtype: str) -> GemmPoint:
        return self.gemm_points.get(dtype) or self.gemm_points["default"]


def for_chip(chip: ChipSpec) -> ChipCalibration:
    return ChipCalibration(chip)
