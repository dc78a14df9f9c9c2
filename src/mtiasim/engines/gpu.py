"""GPU engine: the analytical model with the GPU-specific parts fitted to real kernels.

Per kernel, on top of the analytical engine's tile/wave-quantised roofline:
- a GEMM (any kernel with matrix work except fused attention) streams its operands from HBM at
  ``gemm_dram_efficiency`` of the bandwidth, lower than a plain copy reaches (``dram_efficiency``);
- compute and memory overlap imperfectly in any kernel with matrix work: time = max(c, m) +
  (1 - overlap) x min(c, m) (a stack whose kernels overlap differently says so:
  ``compute_memory_overlap``);
- fused attention runs at its kernel's efficiency (a fraction of the dense peak of its dtype;
  the stack names the kernel: cuDNN, FlashAttention-2) under FlashAttention's work-item schedule;
- each kernel pays the stack's launch cost (CUDA-graph replay vs eager PyTorch dispatch);
- a stack can scale the GEMM efficiency of a dtype (eager PyTorch's INT8 goes through
  cuBLASLt's slower INT8 kernels), and separately that of its grouped GEMMs (an MoE layer's
  experts in one kernel, not the dense cuBLAS ones), and time elementwise kernels that read
  strided views or broadcast an input at its generic path's bandwidth (PyTorch: non-vectorised
  kernels);
- a stack can give its embedding-bag kernel's own issue limits, per SM cycle: elements summed
  and a cost per bag (PyTorch's kernel is latency-bound, not HBM-bound: the same gathers took
  the same time on an H100 and on an H200 with 1.4x its bandwidth).
Calibration: ``data/calibration/gpu.yaml`` (kernel terms, stacks) and ``analytical.yaml`` (base
GEMM efficiency per chip and dtype), fitted to ``data/calibration/measured/`` and checked against
every measured kernel by ``mtiasim.engines.measured``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mtiasim.calibration import CalValue, Fraction, Share
from mtiasim.compiler.program import Kernel, Program
from mtiasim.engines.analytical import AnalyticalEngine, KernelTime
from mtiasim.graph.ops.base import OPS


class EmbeddingBagKernel(BaseModel):
    """A stack's embedding-bag kernel limited by issue, not bandwidth: it sums at most
    ``elements_per_sm_cycle`` row elements per SM per cycle and spends ``sm_cycles_per_bag`` SM
    cycles on each bag (its offsets, accumulator and output row), whatever the HBM delivers."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    elements_per_sm_cycle: CalValue
    sm_cycles_per_bag: CalValue


class Stack(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    attention_kernel: str
    attention_kernel_source: str
    launch_overhead_s: CalValue
    gemm_efficiency_scale: dict[str, Fraction] = Field(default_factory=dict)
    grouped_gemm_efficiency_scale: dict[str, Fraction] = Field(default_factory=dict)
    strided_elementwise_efficiency: Fraction | None = None
    embedding_bag: EmbeddingBagKernel | None = None
    # the overlap of compute and operand streaming in the stack's own kernels with matrix work
    # (GEMMs and attention), where it differs from the measured kernels'
    # (``kernel.compute_memory_overlap``); 0: one after the other
    compute_memory_overlap: Share | None = None
    # device memory the serving runtime holds besides the weights, the KV cache and its step
    # workspace (LLMStepCost.activation_bytes_per_chip), taken before the cache's fraction applies
    runtime_memory_bytes: CalValue | None = None


class KernelCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    gemm_dram_efficiency: Fraction
    compute_memory_overlap: Fraction
    isolated_kernel_floor_s: CalValue


class GPUCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kernel: KernelCalibration
    attention_kernels: dict[str, dict[str, Fraction]]
    default_stack: str
    stacks: dict[str, Stack]

    @model_validator(mode="after")
    def _stacks_name_known_kernels(self) -> GPUCalibration:
        for name, st in self.stacks.items():
            if st.attention_kernel not in self.attention_kernels:
                raise ValueError(f"stacks.{name}.attention_kernel: unknown kernel '{st.attention_kernel}'; "
                                 f"calibrated: {', '.join(self.attention_kernels)}")
        if self.default_stack not in self.stacks:
            raise ValueError(f"default_stack: unknown stack '{self.default_stack}'")
        return self


@lru_cache(maxsize=1)
def gpu_calibration() -> GPUCalibration:
    raw = yaml.safe_load(resources.files("mtiasim").joinpath("data", "calibration", "gpu.yaml").read_text())
    return GPUCalibration.model_validate(raw)


Q_BLOCK = 128  # query rows per FlashAttention work item (FA2, FA3 and cuDNN's Hopper kernels)


def is_gemm(k: Kernel) -> bool:
    return k.work.matrix_flops > 0 and k.op != "attention"


def is_grouped_gemm(k: Kernel) -> bool:
    """A kernel whose op is a grouped GEMM (an MoE layer's experts in one launch)."""
    op = OPS.get(k.op)
    return op is not None and op.grouped_gemm


class GPUEngine(AnalyticalEngine):
    name = "gpu"

    def __init__(self, program: Program, stack: str | None = None, attention_kernel: str | None = None):
        if program.chip.kind == "pe_grid":
            raise ValueError(f"the gpu engine models GPUs; '{program.chip.name}' is a PE-grid chip "
                             "(use the analytical engine)")
        super().__init__(program)
        cal = gpu_calibration()
        name = stack or cal.default_stack
        if name not in cal.stacks:
            raise ValueError(f"unknown software stack '{name}'; calibrated: {', '.join(cal.stacks)}")
        self.stack_name, self.stack = name, cal.stacks[name]
        self.kcal = cal.kernel
        kernel = attention_kernel or self.stack.attention_kernel
        if kernel not in cal.attention_kernels:
            raise ValueError(f"unknown attention kernel '{kernel}'; calibrated: {', '.join(cal.attention_kernels)}")
        self.attention_kernel, self.attention_fraction = kernel, cal.attention_kernels[kernel]

    def attention_s(self, k: Kernel, rate: float) -> float:
        """Fused attention at ``rate`` flop/s over the whole chip, scheduled as FlashAttention does.

        A prefill (more than one query row per head group) is cut into work items of ``Q_BLOCK``
        query rows (GQA packs a KV head's query heads into the rows); each item walks every key it
        may see, and items run one per SM. Equal items (non-causal) take whole waves; causal
        items shrink along the diagonal and the scheduler runs the longest first, so the kernel
        takes the larger of an even share of all work and the longest item. A decode step (one
        row per head) splits the keys across SMs instead (FlashDecoding), so its tile shapes bound it.
        """
        node = k.nodes[0]
        tensors = self.p.graph.tensors
        q, kk = (tensors[t].shape for t in node.inputs[:2])
        b, h, s, _ = q
        hkv, keys = kk[1], kk[2]
        units = int(self.chip.compute.units.value or 1)
        rows = s * (h // hkv)
        if s <= 1 or not k.mappings:
            tile_eff = min((m.efficiency for m in k.mappings), default=1.0)
            return k.work.matrix_flops / (rate * tile_eff)
        items = b * hkv * math.ceil(rows / Q_BLOCK)
        per_row_key = sum(g.gemm.flops for g in k.mappings) / (b * hkv * rows * keys)  # 2 (hd + hdv)
        longest = min(Q_BLOCK, rows) * keys * per_row_key
        if node.attrs.get("causal", False):
            per_sm = max(k.work.matrix_flops / units, longest)  # matrix_flops has the mask applied
        else:
            per_sm = math.ceil(items / units) * longest
        return per_sm * units / rate

    def matrix_s(self, k: Kernel, clock_scale: float) -> float:
        if k.op == "attention" and k.work.matrix_flops > 0:
            frac = self.attention_fraction.get(k.compute_dtype)
            peak = (self.chip.peak(k.compute_dtype) or 0.0) * clock_scale
            if frac is not None and peak > 0:
                return self.attention_s(k, peak * frac.value)
        t = super().matrix_s(k, clock_scale)
        if not is_gemm(k):
            return t
        scale = self.stack.gemm_efficiency_scale.get(k.compute_dtype)
        if scale is not None:
            t /= scale.value
        grouped = self.stack.grouped_gemm_efficiency_scale.get(k.compute_dtype)
        if grouped is not None and is_grouped_gemm(k):
            t /= grouped.value
        return t

    def vector_s(self, k: Kernel, clock_scale: float) -> float:
        t = super().vector_s(k, clock_scale)
        eb = self.stack.embedding_bag
        if eb is None or k.op != "embedding_bag" or self.chip.gpu is None:
            return t
        node, tensors = k.nodes[0], self.p.graph.tensors
        weight, indices, offsets = (tensors[name] for name in node.inputs[:3])
        bags = offsets.shape[0] - (1 if node.attrs.get("include_last_offset") else 0)
        elements = indices.shape[0] * weight.shape[1]
        sm_cycles_per_s = self.chip.gpu.sm_count.value * self.chip.gpu.boost_clock_hz.value * clock_scale
        issue = (elements / eb.elements_per_sm_cycle.value + bags * eb.sm_cycles_per_bag.value) / sm_cycles_per_s
        return max(t, issue)

    def dram_stream_efficiency(self, k: Kernel) -> float:
        if is_gemm(k):
            return self.kcal.gemm_dram_efficiency.value
        strided = self.stack.strided_elementwise_efficiency
        if strided is not None and k.strided and k.work.matrix_flops <= 0:
            return strided.value  # the stack's generic elementwise path on strided/broadcast inputs
        return self.cal.dram_efficiency

    def kernel_time(self, k: Kernel, clock_scale: float = 1.0) -> KernelTime:
        t = super().kernel_time(k, clock_scale)
        if k.on_host:
            return t
        stall = 0.0
        if k.work.matrix_flops > 0:
            overlap = self.stack.compute_memory_overlap
            if overlap is None:
                overlap = self.kcal.compute_memory_overlap
            stall = (1.0 - overlap.value) * min(t.compute_s, t.memory_s)
        return replace(t, overhead_s=self.stack.launch_overhead_s.value, stall_s=stall)
