"""The fleet decision: what a system costs to own and run (``tco``), which parameter moves that
most (``sensitivity``), and the site it runs in (``site``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mtiasim.chips.schema import ChipSpec
from mtiasim.fleet.site import Site, load_site
from mtiasim.fleet.tco import Tco, tco
from mtiasim.power import energy_model
from mtiasim.power.platform import platform_for

__all__ = ["Site", "SystemCost", "Tco", "average_chip_power_w", "economics", "idle_chip_w", "load_site",
           "system_cost", "tco"]


def idle_chip_w(chip: ChipSpec, busy_chip_w: float) -> float | None:
    """The chip's power between batches or steps: its static power, never above its busy power
    (None when its power is unknown)."""
    model = energy_model(chip)
    return None if model is None else min(model.static_w, busy_chip_w)


def economics(chip: ChipSpec, *, chip_power_w: float | None, throughput_per_s: float,
              site: Site | None = None) -> Tco | None:
    """Wall power and cost of ownership of one ``chip`` running at ``chip_power_w`` (an engine's
    ``Result.power_w``) and ``throughput_per_s``, in its preset's platform. None when the chip's
    power is unknown (no TDP)."""
    idle = None if chip_power_w is None else idle_chip_w(chip, chip_power_w)
    if chip_power_w is None or idle is None:
        return None
    return tco(chip, platform_for(chip), site or load_site(), busy_chip_w=chip_power_w, idle_chip_w=idle,
               throughput_per_s=throughput_per_s)


class SystemCost(BaseModel):
    """A system of ``chips`` accelerators at work: its chip and wall power and what it costs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    chips: int = Field(ge=1)
    chip_power_w: float = Field(ge=0, description="average per chip while the system works")
    wall_power_w: float = Field(ge=0, description="the whole system at the facility (host, fans, supplies, PUE)")
    usd_per_h: float | None = Field(description="the whole system's cost of ownership per hour")
    items_per_usd: float | None
    kg_co2e_per_million_items: float | None
    per_chip: Tco


def average_chip_power_w(chip: ChipSpec, *, energy_j: float | None, static_counted_s: float, chips: int,
                         duration_s: float) -> float | None:
    """Average power per chip over ``duration_s`` on ``chips`` chips whose engine runs charged
    ``energy_j``, static power included for ``static_counted_s`` chip-seconds of it (the kernels'
    own time): the rest of the chip-time (exposed communication, pipeline bubbles) idles at
    static power."""
    model = energy_model(chip)
    if energy_j is None or model is None or duration_s <= 0:
        return None
    idle_chip_s = max(chips * duration_s - static_counted_s, 0.0)
    return (energy_j + model.static_w * idle_chip_s) / (chips * duration_s)


def system_cost(chip: ChipSpec, *, chips: int, chip_power_w: float | None, throughput_per_s: float,
                site: Site | None = None) -> SystemCost | None:
    """:func:`economics` of one chip carrying ``throughput_per_s / chips``, scaled to the system."""
    t = economics(chip, chip_power_w=chip_power_w, throughput_per_s=throughput_per_s / chips, site=site)
    if t is None or chip_power_w is None:
        return None
    return SystemCost(chips=chips, chip_power_w=chip_power_w, wall_power_w=t.busy.facility_w * chips,
                      usd_per_h=None if t.usd_per_h is None else t.usd_per_h * chips,
                      items_per_usd=t.items_per_usd, kg_co2e_per_million_items=t.kg_co2e_per_million_items,
                      per_chip=t)
