"""How robust a workload's choice is to the cost inputs nobody publishes: each site parameter
and each candidate chip's price moved to the low and high end of its documented range, the
others at their defaults, the feasible systems re-priced (their sizes do not change), and every
end at which another chip would win recorded (caps are not applied here)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict

from mtiasim.chips import load_chip
from mtiasim.chips.loader import override_sourced
from mtiasim.fleet.mix import Objective
from mtiasim.fleet.site import Site
from mtiasim.fleet.sizing import Option, priced


class Flip(BaseModel):
    """At this end of this parameter's range, ``winner`` would beat the chosen chip."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    parameter: str
    end: Literal["low", "high"]
    value: float
    winner: str


def _variants(options: list[Option], site: Site) -> Iterator[tuple[str, str, float, list[Option]]]:
    for name, value in site.values().items():
        for end in ("low", "high"):
            if end in value.alternatives:
                moved = site.model_copy(update={name: override_sourced(value, f"alt:{end}", end)})
                yield name, end, value.alternatives[end].value or 0.0, [priced(o, moved) for o in options]
    for chip in sorted({o.chip for o in options}):
        price = load_chip(chip).cost.capex_usd
        for end in ("low", "high"):
            if end in price.alternatives:
                over = {"cost.capex_usd": f"alt:{end}"}
                yield (f"{chip} price", end, price.alternatives[end].value or 0.0,
                       [priced(o, site, over if o.chip == chip else None) for o in options])


def flips(options: list[Option], chosen: Option, site: Site, objective: Objective) -> list[Flip]:
    """Every documented range end at which another feasible option beats ``chosen``."""
    feasible = [o for o in options if o.feasible and o.objective(objective) is not None]
    if len(feasible) < 2:
        return []
    out = []
    for name, end, value, repriced in _variants(feasible, site):
        best = min(repriced, key=lambda o: o.objective(objective))
        if best.chip != chosen.chip:
            out.append(Flip(parameter=name, end=end, value=value, winner=best.chip))
    return out
