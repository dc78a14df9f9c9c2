"""Analytical engine: roofline with calibrated, shape-dependent efficiencies.

Per kernel (an op plus what was fused into it):
- compute: matrix flops / (peak[dtype] x base efficiency x tile/wave efficiency of each GEMM),
  vector flops / (vector peak x vector efficiency); the DPE and SIMD engines pipeline, so the
  kernel's compute time is the larger of the two;
- memory: bytes per level / (bandwidth x efficiency); DRAM streams, DRAM row gathers and SRAM
  are timed separately and overlap, so the slowest level sets the memory time;
- overhead: the kernel launch cost.
time = max(compute, memory) + overhead, labelled by whichever term dominates. Energy is per
flop and per byte by level, plus static power over the run; if the run's average power would
exceed TDP, clocks throttle (compute slows) until it does not. All efficiencies and energies come
from ``data/calibration``, each with its source.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtiasim.calibration import ChipCalibration, for_chip, power_file
from mtiasim.compiler.program import Kernel, Program
from mtiasim.compiler.tiling import map_gemm_on
from mtiasim.engines.result import OpResult, Result
from mtiasim.graph.ops.base import GemmShape
from mtiasim.power import EnergyModel, energy_model, throttle


@dataclass(frozen=True)
class KernelTime:
    compute_s: float
    memory_s: float
    overhead_s: float
    roofline_s: float
    gemm_efficiency: float | None
    stall_s: float = 0.0  # the part of compute and memory that does not overlap (GPU engine)

    @property
    def time_s(self) -> float:
        return max(self.compute_s, self.memory_s) + self.stall_s + self.overhead_s

    @property
    def bound(self) -> str:
        if self.overhead_s + self.stall_s > max(self.compute_s, self.memory_s):
            return "overhead"
        return "compute" if self.compute_s >= self.memory_s else "memory"


class AnalyticalEngine:
    name = "analytical"

    def __init__(self, program: Program):
        self.p = program
        self.chip = program.chip
        self.cal: ChipCalibration = for_chip(self.chip)
        self.energy: EnergyModel | None = energy_model(self.chip, self.sustained_gemm_fraction)
        self.notes: list[str] = []
        if self.energy is None:
            self.notes.append(f"{self.chip.name}: TDP unknown, so energy and power are not predicted "
                              "(give one with --set power.tdp_w=...)")
        self._base: dict[str, float] = {}
        c = self.chip
        self.dram_bw = c.dram.bandwidth_bytes_per_s.value or 0.0
        if self.dram_bw <= 0:
            raise ValueError(f"chip '{c.name}': dram.bandwidth_bytes_per_s is unknown")
        sram_bw = c.sram.bandwidth_bytes_per_s.value if c.sram is not None else None
        self.sram_bw = sram_bw or None
        if c.sram is not None and c.sram_bytes > 0 and not self.sram_bw:
            self.notes.append(f"{c.name}: SRAM bandwidth is not published; SRAM traffic is not timed")
        self.host_bw = c.host_link.bandwidth_bytes_per_s.value or 0.0

    # -- calibration helpers --------------------------------------------------------------
    def sustained_gemm_fraction(self, dtype: str) -> float:
        """The calibrated GEMM efficiency of ``dtype`` (the measured sustained fraction of peak)."""
        return self.cal.gemm_point(dtype).measured_fraction

    def base_efficiency(self, dtype: str) -> float:
        """Measured GEMM efficiency divided by the tile/wave efficiency of the measured shape."""
        if dtype not in self._base:
            pt = self.cal.gemm_point(dtype)
            if pt.shape is None:
                self._base[dtype] = pt.measured_fraction
                return pt.measured_fraction
            m, n, k = pt.shape
            shape_eff = map_gemm_on(self.chip, GemmShape(1, m, n, k)).efficiency
            self._base[dtype] = min(1.0, pt.measured_fraction / shape_eff)
        return self._base[dtype]

    def vector_peak(self, dtype: str) -> float:
        v = self.chip.vector_peak(dtype)
        if v:
            return v
        note = f"{self.chip.name}: no vector/SIMD peak published; vector work timed at the matrix peak"
        if note not in self.notes:
            self.notes.append(note)
        return self.chip.peak(dtype) or max(s.value for s in self.chip.compute.peak_ops_per_s.values() if s.value)

    # -- per kernel -----------------------------------------------------------------------
    def matrix_s(self, k: Kernel, clock_scale: float) -> float:
        """Time of the kernel's matrix (tensor-core / DPE) work at the calibrated efficiencies."""
        w = k.work
        if w.matrix_flops <= 0:
            return 0.0
        peak = (self.chip.peak(k.compute_dtype) or 0.0) * clock_scale
        if peak <= 0:
            raise ValueError(f"chip '{self.chip.name}' has no {k.compute_dtype} matrix peak for kernel '{k.name}'")
        base = self.base_efficiency(k.compute_dtype)
        if not k.mappings:
            return w.matrix_flops / (peak * base)
        total = sum(m.gemm.flops for m in k.mappings) or w.matrix_flops
        scale = w.matrix_flops / total
        return sum(m.gemm.flops * scale / (peak * base * m.efficiency) for m in k.mappings)

    def vector_s(self, k: Kernel, clock_scale: float) -> float:
        return k.work.vector_flops / (self.vector_peak(k.vector_dtype) * clock_scale * self.cal.vector_efficiency)

    def dram_stream_efficiency(self, k: Kernel) -> float:
        """Fraction of DRAM bandwidth the kernel's streaming reads and writes reach."""
        return self.cal.dram_efficiency

    def memory_s(self, k: Kernel) -> float:
        """DRAM streams, DRAM row gathers and SRAM are timed separately and overlap."""
        tr, cal = k.traffic, self.cal
        t_dram = tr.dram_bytes / (self.dram_bw * self.dram_stream_efficiency(k)) + \
            tr.dram_gather_bytes / (self.dram_bw * cal.gather_dram_efficiency)
        t_sram = tr.sram_bytes / (self.sram_bw * cal.sram_efficiency) if self.sram_bw else 0.0
        return max(t_dram, t_sram)

    def roofline_s(self, k: Kernel, clock_scale: float) -> float:
        w, tr = k.work, k.traffic
        peak = (self.chip.peak(k.compute_dtype) or 0.0) * clock_scale
        roof_matrix = w.matrix_flops / peak if w.matrix_flops > 0 else 0.0
        roof_vector = w.vector_flops / (self.vector_peak(k.vector_dtype) * clock_scale)
        roof_dram = (tr.dram_bytes + tr.dram_gather_bytes) / self.dram_bw
        roof_sram = tr.sram_bytes / self.sram_bw if self.sram_bw else 0.0
        return max(roof_matrix, roof_vector, roof_dram, roof_sram)

    def kernel_time(self, k: Kernel, clock_scale: float = 1.0) -> KernelTime:
        w, tr = k.work, k.traffic
        if k.on_host:
            host = power_file()
            compute = w.flops / host.host_ops_per_s.value
            memory = tr.host_bytes / self.host_bw if self.host_bw else 0.0
            return KernelTime(compute, memory, host.host_roundtrip_s.value, max(compute, memory), None)
        t_matrix = self.matrix_s(k, clock_scale)
        eff = None
        if t_matrix > 0:
            eff = w.matrix_flops / ((self.chip.peak(k.compute_dtype) or 0.0) * clock_scale) / t_matrix
        return KernelTime(
            compute_s=max(t_matrix, self.vector_s(k, clock_scale)),
            memory_s=self.memory_s(k),
            overhead_s=self.cal.launch_overhead_s,
            roofline_s=self.roofline_s(k, clock_scale),
            gemm_efficiency=eff,
        )

    def kernel_energy_j(self, k: Kernel) -> tuple[float, float]:
        """(compute energy: matrix, vector and SRAM, which scale with the clock's voltage; memory
        energy: DRAM and host link, which do not) of one kernel at the top clock."""
        e, w, tr = self.energy, k.work, k.traffic
        if e is None:
            return 0.0, 0.0
        if k.on_host:
            return 0.0, tr.host_bytes * e.host_j_per_byte
        return (w.matrix_flops * e.matrix(k.compute_dtype) + w.vector_flops * e.vector_j_per_op
                + tr.sram_bytes * e.sram_j_per_byte), (tr.dram_bytes + tr.dram_gather_bytes) * e.dram_j_per_byte

    # -- whole program --------------------------------------------------------------------
    def run(self, *, model: str, phase: str, batch: int, seq_len: int | None, kv_len: int | None,
            dtype: str, items: int, item_unit: str) -> Result:
        kernels = self.p.kernels
        parts = [self.kernel_energy_j(k) for k in kernels]
        e_compute = sum(c for c, _ in parts)
        e_memory = sum(m for _, m in parts)

        at_full_clock = [self.kernel_time(k) for k in kernels]

        def total_time(s: float) -> float:
            if s == 1.0:
                return sum(t.time_s for t in at_full_clock)
            return sum(self.kernel_time(k, s).time_s for k in kernels)

        e = self.energy
        s = throttle(total_time, e_compute, e_memory, e.static_w, e.tdp_w) if e else 1.0
        times = at_full_clock if s == 1.0 else [self.kernel_time(k, s) for k in kernels]
        beta = power_file().dvfs_energy_exponent.value
        dyn = [c * s**beta + m for c, m in parts]
        e_dyn = sum(dyn)
        latency = sum(t.time_s for t in times)
        static = e.static_w if e else 0.0
        ops = []
        for k, t, ed in zip(kernels, times, dyn):
            ops.append(OpResult(
                name=k.name, op=k.op, fused=k.fused, dtype=k.compute_dtype, time_s=t.time_s,
                bound="host" if k.on_host else t.bound, flops=k.work.flops, bytes=k.traffic.total_bytes,
                dram_bytes=k.traffic.dram_bytes + k.traffic.dram_gather_bytes, sram_bytes=k.traffic.sram_bytes,
                compute_s=t.compute_s, memory_s=t.memory_s, overhead_s=t.overhead_s, roofline_s=t.roofline_s,
                gemm_efficiency=t.gemm_efficiency, energy_j=ed + static * t.time_s if e else None, source=k.source))
        thr = items / latency if latency > 0 else 0.0
        energy = power = perf_w = None
        if e is not None:
            energy = e_dyn + static * latency
            power = energy / latency if latency > 0 else static
            perf_w = thr / power if power > 0 else 0.0
        notes = list(self.p.notes) + self.notes
        if not kernels:
            notes.append("the model runs no operation on the chip (its outputs are its inputs or constants): "
                         "nothing to time, so latency and throughput are 0")
        if e is not None and e.static_w >= e.tdp_w:
            notes.append(f"power cap {e.tdp_w:.0f} W (TDP) is below the chip's static power {e.static_w:.0f} W; "
                         "it cannot be met")
        elif e is not None and power is not None and power > e.tdp_w * (1 + 1e-6):
            notes.append(f"average power {power:.0f} W exceeds TDP {e.tdp_w:.0f} W even at the lowest clock")
        if s < 1.0:
            notes.append(f"throttled: clocks at {s:.3g}x to keep average power within TDP {e.tdp_w:.0f} W")
        mem = self.p.memory
        return Result(
            model=model, chip=self.chip.name, engine=self.name, phase=phase, batch=batch, seq_len=seq_len,
            kv_len=kv_len, dtype=dtype, items=items, item_unit=item_unit, latency_s=latency, throughput_per_s=thr,
            energy_j=energy, power_w=power, perf_per_w=perf_w, clock_scale=s,
            tdp_w=e.tdp_w if e else None, flops=sum(k.work.flops for k in kernels), weight_bytes=mem.weight_bytes,
            memory_required_bytes=mem.required_bytes,
            memory_capacity_bytes=mem.dram_capacity_bytes + mem.sram_capacity_bytes,
            fits_in_memory=mem.fits, ops=ops, notes=notes)
