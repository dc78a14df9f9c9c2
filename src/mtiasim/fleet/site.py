"""The data centre and the money around a system (``data/fleet/site.yaml``): PUE, power-supply
efficiency, fan power, host load, energy price, grid carbon, lifetimes, facility capex and
utilisation. Each value is sourced or an explicit estimate and one ``--cost NAME=VALUE`` away."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from mtiasim.chips.loader import ChipError, override_sourced
from mtiasim.chips.schema import Seconds, Sourced

SITE_FILE = "data/fleet/site.yaml"
HOUR_S = 3600.0


class Ratio(Sourced):
    """A dimensionless number (a fraction, a price per unit written in the field's name)."""

    dimension: ClassVar[str] = "ratio"


class Site(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pue: Ratio
    psu_efficiency: Ratio
    fan_fraction_air: Ratio
    fan_fraction_liquid: Ratio
    host_cpu_load: Ratio
    energy_usd_per_kwh: Ratio
    grid_kg_co2e_per_kwh: Ratio
    lifetime_s: Seconds
    facility_capex_usd_per_w: Ratio
    facility_lifetime_s: Seconds
    utilisation: Ratio

    @field_validator("*")
    @classmethod
    def _known(cls, v: Sourced, info: Any) -> Sourced:
        if v.value is None:
            raise ValueError("needs a value")
        bounds = {"pue": (1.0, 10.0), "psu_efficiency": (0.01, 1.0), "host_cpu_load": (0.0, 1.0),
                  "utilisation": (0.001, 1.0), "fan_fraction_air": (0.0, 1.0), "fan_fraction_liquid": (0.0, 1.0)}
        lo, hi = bounds.get(info.field_name, (0.0, float("inf")))
        if not lo <= v.value <= hi:
            raise ValueError(f"must be within [{lo}, {hi}], got {v.value}")
        if info.field_name.endswith("lifetime_s") and v.value <= 0:
            raise ValueError("must be positive")
        return v

    def fan_fraction(self, cooling: str) -> float:
        return (self.fan_fraction_liquid if cooling == "liquid" else self.fan_fraction_air).value

    def values(self) -> dict[str, Sourced]:
        return {k: getattr(self, k) for k in type(self).model_fields}


@lru_cache(maxsize=1)
def _default_site() -> Site:
    raw = yaml.safe_load(resources.files("mtiasim").joinpath(SITE_FILE).read_text())
    try:
        return Site.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        raise ChipError(f"{SITE_FILE}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def load_site(overrides: Mapping[str, Any] | None = None) -> Site:
    """The defaults with ``--cost NAME=VALUE`` overrides (a number or ``alt:LABEL``); an unknown
    name or a value out of range is a :class:`~mtiasim.chips.ChipError` naming it."""
    site = _default_site()
    if not overrides:
        return site
    fields = dict(site.values())
    for name, raw in overrides.items():
        if name not in fields:
            raise ChipError(f"--cost {name}: not a cost parameter; parameters: {', '.join(fields)}")
        fields[name] = override_sourced(fields[name], raw, f"--cost {name}")
    try:
        return Site(**fields)
    except ValidationError as e:
        first = e.errors()[0]
        raise ChipError(f"--cost {first['loc'][0]}: {first['msg'].removeprefix('Value error, ')}") from None
