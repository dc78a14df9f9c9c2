"""Which cost parameter moves perf/TCO most: each swept over its documented low/high range with
the others at their defaults (a tornado chart's rows), largest swing first."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from mtiasim.chips.loader import override_sourced
from mtiasim.chips.schema import ChipSpec, Sourced
from mtiasim.fleet.site import Site
from mtiasim.fleet.tco import tco
from mtiasim.power.platform import Platform


class Swing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    parameter: str
    low: float
    high: float
    items_per_usd_at_low: float
    items_per_usd_at_high: float
    relative_swing: float  # |at_high - at_low| / the default's items per dollar


def _range(value: Sourced) -> tuple[Sourced, Sourced] | None:
    if "low" not in value.alternatives or "high" not in value.alternatives:
        return None
    return override_sourced(value, "alt:low", "low"), override_sourced(value, "alt:high", "high")


def sensitivity(chip: ChipSpec, platform: Platform, site: Site, *, busy_chip_w: float, idle_chip_w: float,
                throughput_per_s: float) -> list[Swing]:
    """One :class:`Swing` per parameter with a low/high range; empty when the price is unknown."""
    def per_usd(c: ChipSpec, p: Platform, s: Site) -> float | None:
        return tco(c, p, s, busy_chip_w=busy_chip_w, idle_chip_w=idle_chip_w,
                   throughput_per_s=throughput_per_s).items_per_usd

    base = per_usd(chip, platform, site)
    if not base:
        return []
    variants: list[tuple[str, Sourced, Sourced, list]] = []
    for name, value in site.values().items():
        r = _range(value)
        if r:
            variants.append((name, *r, [(chip, platform, site.model_copy(update={name: v})) for v in r]))
    r = _range(chip.cost.capex_usd)
    if r:
        variants.append(("accelerator price (cost.capex_usd)", *r, [
            (chip.model_copy(update={"cost": chip.cost.model_copy(update={"capex_usd": v})}), platform, site)
            for v in r]))
    for name in ("host_capex_usd", "network_capex_usd"):
        r = _range(getattr(platform, name))
        if r:
            variants.append((f"platform {name}", *r, [(chip, platform.model_copy(update={name: v}), site) for v in r]))
    out = []
    for name, lo, hi, cases in variants:
        at_lo, at_hi = (per_usd(*c) or 0.0 for c in cases)
        out.append(Swing(parameter=name, low=lo.value or 0.0, high=hi.value or 0.0, items_per_usd_at_low=at_lo,
                         items_per_usd_at_high=at_hi, relative_swing=abs(at_hi - at_lo) / base))
    return sorted(out, key=lambda s: -s.relative_swing)
