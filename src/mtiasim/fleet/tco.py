"""Cost of ownership per accelerator: capex amortised over its life plus energy at the wall.

Per accelerator-hour, with u the utilisation (the share of time it works at the modelled rate;
it idles at static power otherwise):

    capex_usd_per_h  = (chip + host share + network share) / lifetime_h
                       + facility_capex_usd_per_w x provisioned IT watts / facility_lifetime_h
    energy_usd_per_h = facility kW at (u x busy + (1 - u) x idle chip power) x energy_usd_per_kwh
    items_per_usd    = throughput x u x 3600 / (capex_usd_per_h + energy_usd_per_h)

Provisioned IT watts are the node's power at TDP (``power.platform.max_node_power_w``): a
facility is built for the peak, not the average. Carbon is the energy's (location-based grid
intensity); the embodied carbon of the hardware is not counted.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mtiasim.chips.schema import ChipSpec
from mtiasim.fleet.site import HOUR_S, Site
from mtiasim.power.platform import Platform, WallPower, max_node_power_w, wall_power


class Tco(BaseModel):
    """Per accelerator. Money totals are None when the accelerator's price is unknown."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    chip: str
    platform: str
    utilisation: float = Field(gt=0, le=1)
    busy: WallPower
    average_facility_w: float = Field(ge=0)
    accelerator_usd: float | None
    host_usd: float = Field(ge=0, description="the accelerator's share of the node's host")
    network_usd: float = Field(ge=0)
    facility_usd: float = Field(ge=0, description="data-centre build cost of its provisioned power")
    capex_usd_per_h: float | None
    energy_usd_per_h: float = Field(ge=0)
    usd_per_h: float | None
    kg_co2e_per_h: float = Field(ge=0)
    items_per_usd: float | None
    kg_co2e_per_million_items: float | None
    notes: list[str] = Field(default_factory=list)

    @property
    def capex_usd(self) -> float | None:
        if self.accelerator_usd is None:
            return None
        return self.accelerator_usd + self.host_usd + self.network_usd + self.facility_usd


def tco(chip: ChipSpec, platform: Platform, site: Site, *, busy_chip_w: float, idle_chip_w: float,
        throughput_per_s: float) -> Tco:
    """The cost of owning one ``chip`` in ``platform`` that draws ``busy_chip_w`` while producing
    ``throughput_per_s`` items and ``idle_chip_w`` between."""
    u = site.utilisation.value
    busy = wall_power(platform, busy_chip_w, site)
    average = wall_power(platform, u * busy_chip_w + (1 - u) * idle_chip_w, site)
    n = platform.n_accelerators
    tdp = chip.power.tdp_w.value or busy_chip_w
    provisioned_it_w = max_node_power_w(platform, tdp, site) / n
    facility = site.facility_capex_usd_per_w.value * provisioned_it_w
    host, network = float(platform.host_capex_usd) / n, float(platform.network_capex_usd) / n
    kwh_per_h = average.facility_w / 1000.0
    energy = kwh_per_h * site.energy_usd_per_kwh.value
    carbon = kwh_per_h * site.grid_kg_co2e_per_kwh.value
    items_per_h = throughput_per_s * u * HOUR_S
    price = chip.cost.capex_usd.value
    notes = []
    capex_h = usd_h = per_usd = None
    if price is None:
        notes.append(f"{chip.name}: accelerator price unknown ({chip.cost.capex_usd.source}); "
                     "set one with --set cost.capex_usd=USD for cost figures")
    else:
        lifetime_h = site.lifetime_s.value / HOUR_S
        capex_h = (price + host + network) / lifetime_h + facility / (site.facility_lifetime_s.value / HOUR_S)
        usd_h = capex_h + energy
        per_usd = items_per_h / usd_h if usd_h > 0 else None
    return Tco(chip=chip.name, platform=platform.name, utilisation=u, busy=busy,
               average_facility_w=average.facility_w, accelerator_usd=price, host_usd=host, network_usd=network,
               facility_usd=facility, capex_usd_per_h=capex_h, energy_usd_per_h=energy, usd_per_h=usd_h,
               kg_co2e_per_h=carbon, items_per_usd=per_usd,
               kg_co2e_per_million_items=carbon / items_per_h * 1e6 if items_per_h > 0 else None, notes=notes)
