"""Energy per action, static power, and clock throttling at TDP."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mtiasim.calibration import power_file
from mtiasim.chips.loader import USER_OVERRIDE_SOURCE
from mtiasim.chips.schema import ChipSpec


@dataclass(frozen=True)
class EnergyModel:
    static_w: float
    tdp_w: float
    matrix_j_per_op: dict[str, float]
    vector_j_per_op: float
    dram_j_per_byte: float
    sram_j_per_byte: float
    host_j_per_byte: float

    def matrix(self, dtype: str) -> float:
        return self.matrix_j_per_op.get(dtype) or max(self.matrix_j_per_op.values())


def energy_model(chip: ChipSpec) -> EnergyModel | None:
    """None when the chip's TDP is unknown: energy and power are then not predicted."""
    p = power_file()
    tdp = chip.power.tdp_w.value
    if not tdp:
        return None
    # Energy per action is a property of the silicon: it is anchored to the preset's TDP even when
    # the user overrides power.tdp_w, which then acts as a power cap (like MLPerf's MaxQ runs).
    preset = chip.power.tdp_w.alternatives.get("preset-default")
    capped = chip.power.tdp_w.source == USER_OVERRIDE_SOURCE
    design_tdp = preset.value if capped and preset is not None and preset.value else tdp
    idle = chip.power.idle_w.value if chip.power.idle_w and chip.power.idle_w.value else None
    static = idle if idle is not None else p.static_fraction_of_tdp.value * design_tdp
    dynamic = max(design_tdp - static, 0.0)
    per_op = {d: p.matrix_power_share.value * dynamic / v.value
              for d, v in chip.compute.peak_ops_per_s.items() if v.value}
    ref = per_op.get("bf16") or per_op.get("fp16") or max(per_op.values())
    dram = p.dram_j_per_byte.get(chip.dram.type) or p.dram_j_per_byte["default"]
    return EnergyModel(static, tdp, per_op, ref * p.vector_energy_per_op_ratio.value, dram.value,
                       p.sram_j_per_byte.value, p.host_link_j_per_byte.value)


def throttle(times_at: Callable[[float], float], energy_dynamic_j: float, static_w: float, tdp_w: float) -> float:
    """Clock scale s in (0, 1] so that average power over the run stays within TDP.

    ``times_at(s)`` is the run time at clock scale s (compute slows as 1/s, memory does not).
    Dynamic energy per op is held constant (no voltage scaling: conservative). The smallest time
    that keeps power <= TDP is E_dyn / (TDP - P_static); we find the largest s reaching it."""
    t1 = times_at(1.0)
    budget = tdp_w - static_w
    if budget <= 0 or t1 <= 0 or energy_dynamic_j / t1 <= budget:
        return 1.0
    t_min = energy_dynamic_j / budget
    lo, hi = 1e-9, 1.0  # bisection on log(s): memory-heavy runs may need very low clocks
    for _ in range(80):
        mid = math.sqrt(lo * hi)
        if times_at(mid) >= t_min:
            lo = mid
        else:
            hi = mid
    return lo
