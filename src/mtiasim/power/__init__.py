"""Energy per action, static power, and clock throttling at TDP (or a power cap below it)."""

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


def held_clock_fraction(chip_name: str) -> float:
    """power.yaml's ``sustained_gemm_clock_fraction`` of a chip preset; 1 (the measured rate holds)
    for a chip not listed."""
    held = power_file().sustained_gemm_clock_fraction.get(chip_name)
    return held.value if held else 1.0


def energy_model(chip: ChipSpec, sustained_gemm_fraction: Callable[[str], float] | None = None
                 ) -> EnergyModel | None:
    """None when the chip's TDP is unknown: energy and power are then not predicted.

    Energy per matrix op is anchored to the chip: for a chip kind listed in power.yaml's
    ``gemm_power_limited`` (GPUs), a large GEMM at its measured rate (peak x
    ``sustained_gemm_fraction(dtype)``, the engine's calibrated base efficiency) slowed to the
    clock it holds in a minutes-long run (``sustained_gemm_clock_fraction`` of the chip, 1 if not
    listed) draws that fraction of the dynamic power budget (TDP - static). With energy per op
    ~ clock**dvfs_energy_exponent, the same GEMM at the measured rate draws that fraction over
    clock**(1 + exponent): more than the budget when the measurement ran at a clock the chip cannot
    hold, so ``throttle`` brings long runs down to it. Otherwise a GEMM at the dense peak draws
    ``matrix_power_share`` of the budget."""
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
    limited = p.gemm_power_limited.get(chip.kind)
    if limited is not None and sustained_gemm_fraction is not None:
        # power at the held clock over power at the measured one: rate x s, energy per op x s**beta
        held_power_ratio = held_clock_fraction(chip.name) ** (1 + p.dvfs_energy_exponent.value)
        per_op = {d: limited.value * dynamic / (v.value * sustained_gemm_fraction(d) * held_power_ratio)
                  for d, v in chip.compute.peak_ops_per_s.items() if v.value}
    else:
        per_op = {d: p.matrix_power_share.value * dynamic / v.value
                  for d, v in chip.compute.peak_ops_per_s.items() if v.value}
    ref = per_op.get("bf16") or per_op.get("fp16") or max(per_op.values())
    dram = p.dram_j_per_byte.get(chip.dram.type) or p.dram_j_per_byte["default"]
    return EnergyModel(static, tdp, per_op, ref * p.vector_energy_per_op_ratio.value, dram.value,
                       p.sram_j_per_byte.value, p.host_link_j_per_byte.value)


def throttle(times_at: Callable[[float], float], compute_energy_j: float, other_energy_j: float, static_w: float,
             tdp_w: float, exponent: float | None = None) -> float:
    """Clock scale s in (0, 1] so that average power over the run stays within TDP (or a cap).

    ``times_at(s)`` is the run time at clock scale s (compute slows as 1/s, memory does not).
    Dynamic voltage and frequency scaling: the energy of compute (matrix, vector, on-chip SRAM)
    per op scales as s**exponent (power.yaml ``dvfs_energy_exponent``: V^2 with V tracking f),
    DRAM and host-link energy per byte do not. Power static + E(s) / t(s) falls as s falls; we
    find the largest s that keeps it within ``tdp_w``: power rises monotonically with s, so the
    root is bracketed on log s and found by regula falsi with the Illinois step (a dozen
    evaluations of ``times_at`` where bisection to the same precision takes ~70; each evaluation
    times every kernel of the program). The returned s always meets the budget."""
    beta = power_file().dvfs_energy_exponent.value if exponent is None else exponent
    budget = tdp_w - static_w

    def excess_w(x: float) -> float:  # dynamic power over the budget at clock scale e**x
        s = math.exp(x)
        t = times_at(s)
        return ((compute_energy_j * s**beta + other_energy_j) / t if t > 0 else 0.0) - budget

    if budget <= 0 or times_at(1.0) <= 0:
        return 1.0
    hi, f_hi = 0.0, excess_w(0.0)
    if f_hi <= 0:
        return 1.0
    lo = math.log(1e-9)  # memory-heavy runs may need very low clocks
    f_lo = excess_w(lo)
    if f_lo > 0:
        return 1e-9
    side, margin = 0, -f_lo  # margin: how far under the budget the clock at lo runs
    for _ in range(200):
        if hi - lo < 1e-12 or margin <= 1e-9 * budget:
            break
        x = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        if not lo < x < hi:  # numerically stuck at an end: bisect
            x = 0.5 * (lo + hi)
        f = excess_w(x)
        if f <= 0:
            lo, f_lo, margin = x, f, -f
            if side == -1:
                f_hi *= 0.5  # Illinois: the other end has stayed twice, halve its weight
            side = -1
        else:
            hi, f_hi = x, f
            if side == 1:
                f_lo *= 0.5
            side = 1
    return math.exp(lo)
