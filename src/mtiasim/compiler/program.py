"""What the compiler produces for an engine: kernels with their work, mapping and memory traffic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mtiasim.chips.schema import DTYPES, ChipSpec
from mtiasim.graph.ir import Graph, Node
from mtiasim.graph.ops.base import GemmShape, Work


class CompileOptions(BaseModel):
    """Knobs of the compile pipeline. ``dtype`` is the matrix-engine precision asked for (weights
    of matrix ops and embedding tables are stored in it); ``None`` keeps the workload's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dtype: str | None = None
    kv_dtype: str | None = Field(default=None, description="KV-cache storage dtype (default: activation dtype)")
    act_dtype: str | None = Field(default=None, description=(
        "storage dtype of activations between kernels, which attention also computes in (default: 16-bit, "
        "fp32 if dtype is fp32); e.g. 'int8' for TensorRT INT8 engines, which keep activations INT8"))
    op_dtypes: dict[str, str] = Field(default_factory=dict,
                                      description="per-op precision, e.g. {'dcn_cross': 'fp16'} (MLPerf DLRM 99.9%)")
    fuse: bool = True
    fuse_regions: list[list[str]] = Field(default_factory=list, description=(
        "hand-fused regions: each is a list of module paths (prefixes of the ops' scope, e.g. "
        "'features.4') whose ops run as one kernel, their intermediates never leaving the chip, as a "
        "submitter's fused plugin does (NVIDIA's ResNet-50 RnRes2FullFusion runs the whole res2 stage)"))
    pin_weights_in_sram: bool = True
    concurrent_batches: int = Field(default=1, ge=1, description=(
        "copies of the program running at once on the chip (a serving harness's inference streams): "
        "they share the weights, each keeps its own activations in SRAM/L2"))
    kv_in_place: bool = Field(default=True, description=(
        "a KV-cache concat appends the new rows in place (paged KV cache, as serving stacks do); "
        "False: it copies the whole cache, as eager PyTorch's torch.cat does"))

    def model_post_init(self, _: Any) -> None:
        for f, v in [("dtype", self.dtype), ("kv_dtype", self.kv_dtype), ("act_dtype", self.act_dtype)] + [
                (f"op_dtypes.{k}", v) for k, v in self.op_dtypes.items()]:
            if v is not None and v not in DTYPES:
                raise ValueError(f"{f}: unknown dtype '{v}'; choose one of {', '.join(DTYPES)}")


@dataclass(frozen=True)
class GemmMapping:
    """How one GEMM is spread over the chip's compute units (PEs / SMs)."""

    gemm: GemmShape
    tiles: int  # output tiles x batch
    split_k: int  # K split across units when there are fewer tiles than units
    waves: int
    pad_efficiency: float  # useful MACs / MACs of the padded tiles
    wave_efficiency: float  # busy unit-slots / unit-slots over all waves

    @property
    def efficiency(self) -> float:
        return self.pad_efficiency * self.wave_efficiency


@dataclass
class Traffic:
    """Bytes a kernel moves per memory level."""

    dram_bytes: float = 0.0  # streamed
    dram_gather_bytes: float = 0.0  # random rows
    sram_bytes: float = 0.0
    host_bytes: float = 0.0  # over the host link (CPU fallback)

    @property
    def total_bytes(self) -> float:
        return self.dram_bytes + self.dram_gather_bytes + self.sram_bytes + self.host_bytes


@dataclass
class Kernel:
    name: str
    op: str  # op of the kernel's anchor node
    nodes: list[Node]
    work: Work
    compute_dtype: str  # matrix-engine dtype
    vector_dtype: str
    mappings: list[GemmMapping] = field(default_factory=list)
    traffic: Traffic = field(default_factory=Traffic)
    source: str | None = None
    on_host: bool = False
    strided: bool = False  # reads a strided view or broadcasts an input (compiler/layout.py)

    @property
    def fused(self) -> list[str]:
        return [n.op for n in self.nodes[1:]]


@dataclass
class MemoryPlan:
    weight_bytes: float
    kv_cache_bytes: float
    peak_activation_bytes: float
    dram_capacity_bytes: float
    sram_pinned_bytes: float
    sram_capacity_bytes: float

    @property
    def required_bytes(self) -> float:
        return self.weight_bytes + self.kv_cache_bytes + self.peak_activation_bytes

    @property
    def fits(self) -> bool:
        return self.required_bytes <= self.dram_capacity_bytes + self.sram_capacity_bytes


@dataclass
class Program:
    graph: Graph
    chip: ChipSpec
    options: CompileOptions
    kernels: list[Kernel]
    memory: MemoryPlan
    notes: list[str] = field(default_factory=list)
