"""GPU engine: the analytical model with the GPU-specific parts made explicit per software stack.

It differs from ``analytical`` where GPUs differ from a generic roofline:
- fused attention runs at the FlashAttention efficiency of the chosen stack (a fraction of the
  dense peak of its dtype, from the FlashAttention-3 paper) instead of the GEMM efficiency;
- the per-kernel launch cost is the stack's (CUDA-graph replay vs eager PyTorch dispatch).
GEMM tile and wave quantisation over SMs/CUs, HBM efficiency and energy are shared with the
analytical engine. Calibration: ``data/calibration/gpu.yaml``. Kernel measurements on real GPUs
are to be added when a device machine is available.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict

from mtiasim.calibration import CalValue, Fraction
from mtiasim.compiler.program import Kernel, Program
from mtiasim.engines.analytical import AnalyticalEngine, KernelTime


class Stack(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    attention_fraction_of_peak: dict[str, Fraction]
    launch_overhead_s: CalValue


class GPUCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    default_stack: str
    stacks: dict[str, Stack]


@lru_cache(maxsize=1)
def gpu_calibration() -> GPUCalibration:
    raw = yaml.safe_load(resources.files("mtiasim").joinpath("data", "calibration", "gpu.yaml").read_text())
    return GPUCalibration.model_validate(raw)


class GPUEngine(AnalyticalEngine):
    name = "gpu"

    def __init__(self, program: Program, stack: str | None = None):
        if program.chip.kind == "pe_grid":
            raise ValueError(f"the gpu engine models GPUs; '{program.chip.name}' is a PE-grid chip "
                             "(use the analytical engine)")
        super().__init__(program)
        cal = gpu_calibration()
        name = stack or cal.default_stack
        if name not in cal.stacks:
            raise ValueError(f"unknown software stack '{name}'; calibrated: {', '.join(cal.stacks)}")
        self.stack_name, self.stack = name, cal.stacks[name]

    def kernel_time(self, k: Kernel, clock_scale: float = 1.0) -> KernelTime:
        t = super().kernel_time(k, clock_scale)
        if k.on_host:
            return t
        t = replace(t, overhead_s=self.stack.launch_overhead_s.value)
        if k.op != "attention" or k.work.matrix_flops <= 0:
            return t
        frac = self.stack.attention_fraction_of_peak.get(k.compute_dtype)
        peak = (self.chip.peak(k.compute_dtype) or 0.0) * clock_scale
        if frac is None or peak <= 0:
            return t
        # the tile shapes still bound it: a decode step's few query rows waste most of a tile
        tile_eff = min((m.efficiency for m in k.mappings), default=1.0)
        t_matrix = k.work.matrix_flops / (peak * frac.value * tile_eff)
        t_vector = k.work.vector_flops / (self.vector_peak(k.vector_dtype) * clock_scale * self.cal.vector_efficiency)
        return replace(t, compute_s=max(t_matrix, t_vector), gemm_efficiency=k.work.matrix_flops / peak / t_matrix)
