"""Power at the wall: the accelerator, its share of the server around it, and the data centre.

A chip preset is deployed in a platform (``data/platform/platforms.yaml``): a server of
``accelerators`` chips with host CPUs, DRAM, NICs, other board parts and a share of the scale-out
switches. Per accelerator, the wall power of a running system is

    it_w       = (chip_w + host_share_w) x (1 + fan_fraction) / psu_efficiency
    facility_w = it_w x pue

with the host share = (CPUs x TDP x host_cpu_load + DRAM + NICs + other + network) / accelerators
(site.yaml's defaults; ``fleet.site`` loads them). Host power does not follow the accelerator's
activity: a server idling between requests keeps its CPUs, DRAM and fans on.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mtiasim.chips.schema import ChipSpec, Count, Usd, Watts

if TYPE_CHECKING:  # fleet.site is imported by fleet/, which imports this module
    from mtiasim.fleet.site import Site


class PlatformError(ValueError):
    """A platform file is wrong or a chip has no platform; the message names the file and field."""


class Platform(BaseModel):
    """One server (node) design and the chip presets deployed in it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = ""
    description: str
    chips: list[str] = Field(min_length=1)
    accelerators: Count
    cooling: Literal["air", "liquid"]
    cpu_count: Count
    cpu_tdp_w: Watts
    host_dram_w: Watts
    nic_w: Watts
    other_w: Watts
    network_w: Watts
    max_power_w: Watts | None = None
    host_capex_usd: Usd
    network_capex_usd: Usd

    @property
    def n_accelerators(self) -> int:
        return int(self.accelerators.value or 1)

    def host_w(self, cpu_load: float, include_network: bool = True) -> float:
        """Everything in the node but its accelerators, fans and supply losses, at ``cpu_load``;
        with its share of the scale-out switches unless ``include_network`` is False."""
        cpus = float(self.cpu_count) * float(self.cpu_tdp_w) * cpu_load
        network = float(self.network_w) if include_network else 0.0
        return cpus + float(self.host_dram_w) + float(self.nic_w) + float(self.other_w) + network


class WallPower(BaseModel):
    """Per accelerator, watts. ``host_w`` is its share of the node's CPUs, DRAM, NICs, other parts
    and scale-out switches; ``it_w`` adds fans and supply losses; ``facility_w`` the data centre's
    overhead (PUE)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    platform: str
    chip_w: float = Field(ge=0)
    host_w: float = Field(ge=0)
    fans_w: float = Field(ge=0)
    conversion_w: float = Field(ge=0, description="power-supply losses")
    it_w: float = Field(ge=0)
    facility_w: float = Field(ge=0)

    @property
    def non_chip_share(self) -> float:
        """The share of facility power that is not the accelerator itself."""
        return 1.0 - self.chip_w / self.facility_w if self.facility_w > 0 else 0.0


class _PlatformFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    platforms: dict[str, Platform]


PLATFORM_FILE = "data/platform/platforms.yaml"


@lru_cache(maxsize=1)
def load_platforms() -> dict[str, Platform]:
    """Every platform by name; a chip listed under two platforms is an error."""
    text = resources.files("mtiasim").joinpath(PLATFORM_FILE).read_text()
    try:
        parsed = _PlatformFile.model_validate(yaml.safe_load(text))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PlatformError(f"{PLATFORM_FILE}: {where}: {first['msg']}") from None
    out, owner = {}, {}
    for name, p in parsed.platforms.items():
        for chip in p.chips:
            if chip in owner:
                raise PlatformError(f"{PLATFORM_FILE}: chip {chip} is listed under both {owner[chip]} and {name}")
            owner[chip] = name
        out[name] = p.model_copy(update={"name": name})
    return out


def platform_for(chip: ChipSpec | str) -> Platform:
    """The platform a chip is deployed in: the chip file's ``platform`` field, else the one whose
    ``chips`` list its name, else an error that says how to name one."""
    platforms = load_platforms()
    known = ", ".join(sorted(platforms))
    if isinstance(chip, ChipSpec) and chip.platform is not None:
        if chip.platform not in platforms:
            raise PlatformError(f"chip {chip.name}: platform '{chip.platform}' is not in {PLATFORM_FILE}; "
                                f"known: {known}")
        return platforms[chip.platform]
    name = chip if isinstance(chip, str) else chip.name
    for p in platforms.values():
        if name in p.chips:
            return p
    raise PlatformError(f"chip '{name}' has no platform: set `platform:` in its file to one of {known}")


def wall_power(platform: Platform, chip_w: float, site: Site) -> WallPower:
    """Per-accelerator wall power of ``platform`` when each accelerator draws ``chip_w``."""
    if chip_w < 0:
        raise ValueError(f"chip power must not be negative, got {chip_w} W")
    host = platform.host_w(site.host_cpu_load.value) / platform.n_accelerators
    fan_fraction = site.fan_fraction(platform.cooling)
    components = chip_w + host
    fans = components * fan_fraction
    it = (components + fans) / site.psu_efficiency.value
    return WallPower(platform=platform.name, chip_w=chip_w, host_w=host, fans_w=fans,
                     conversion_w=it - components - fans, it_w=it, facility_w=it * site.pue.value)


def max_node_power_w(platform: Platform, chip_tdp_w: float, site: Site, include_network: bool = True) -> float:
    """The node's power with every accelerator at TDP and the CPUs at theirs: what the facility is
    provisioned for. Without its switch share (``include_network=False``) it is what the node's
    own supplies deliver, which a published maximum system power bounds."""
    components = chip_tdp_w * platform.n_accelerators + platform.host_w(1.0, include_network)
    return components * (1 + site.fan_fraction(platform.cooling)) / site.psu_efficiency.value
