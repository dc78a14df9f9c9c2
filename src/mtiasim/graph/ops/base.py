"""Op interface and registry.

Each op knows three things, in the spirit of LLMCompass's operator interface:
- ``infer``: output tensor specs from input specs and attributes (shape inference);
- ``work``: arithmetic (by engine class) and bytes read/written per operand, for a given dtype
  assignment, plus the GEMM shapes that the tiling model needs;
- ``reference``: reference numerics in PyTorch.

Ops are registered by name; the frontend maps aten targets onto these names and engines look
them up, so adding an op is adding a class here, never an ``if`` in an engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from mtiasim.graph.ir import TensorSpec

Engine = Literal["matrix", "vector", "memory", "none"]
Access = Literal["stream", "gather"]


@dataclass(frozen=True)
class GemmShape:
    """``batch`` independent (M x K) @ (K x N) products."""

    batch: int
    m: int
    n: int
    k: int

    @property
    def flops(self) -> float:
        return 2.0 * self.batch * self.m * self.n * self.k


@dataclass
class Work:
    """What an op costs, independent of any chip.

    ``matrix_flops`` run on the matrix engine (DPE / tensor cores) described by ``gemms``;
    ``vector_flops`` on the SIMD / vector units. ``bytes_read`` and ``bytes_written`` are keyed by
    operand position (``"in0"``, ``"out0"``...) so the compiler can place each operand in a memory
    level. ``gather`` operands are read as random rows (embedding lookups), not streamed.
    """

    matrix_flops: float = 0.0
    vector_flops: float = 0.0
    bytes_read: dict[str, float] = field(default_factory=dict)
    bytes_written: dict[str, float] = field(default_factory=dict)
    gemms: list[GemmShape] = field(default_factory=list)
    gather: dict[str, float] = field(default_factory=dict)  # operand -> bytes per gathered row

    @property
    def flops(self) -> float:
        return self.matrix_flops + self.vector_flops

    @property
    def bytes(self) -> float:
        return sum(self.bytes_read.values()) + sum(self.bytes_written.values())


class OpError(ValueError):
    """An op got inputs it cannot handle; the message names the op."""


class OpDef:
    """Base class of registered ops. Subclasses set ``name`` and ``engine``."""

    name: ClassVar[str]
    engine: ClassVar[Engine] = "vector"
    #: pointwise ops may be fused into the kernel that produces their input
    pointwise: ClassVar[bool] = False
    #: zero-cost view ops (no data movement)
    is_view: ClassVar[bool] = False
    #: the name a per-op precision override (``CompileOptions.op_dtypes``) knows this op by, when
    #: one PyTorch-level layer becomes several kernels (e.g. a DCNv2 cross layer's dcn_down and
    #: dcn_up both answer to 'dcn_cross'); None: the op's own name
    precision_group: ClassVar[str | None] = None
    #: a grouped GEMM: one kernel multiplying many independent (rows, weight) pairs of different
    #: sizes, as an MoE layer's experts are run (a stack may time these below its dense GEMMs)
    grouped_gemm: ClassVar[bool] = False

    @property
    def precision_key(self) -> str:
        return self.precision_group or self.name

    def infer(self, inputs: Sequence[TensorSpec], attrs: dict[str, Any]) -> list[TensorSpec]:
        raise NotImplementedError(f"op '{self.name}' has no shape inference")

    def work(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], attrs: dict[str, Any]) -> Work:
        return stream_work(inputs, outputs)

    def reference(self, *tensors: Any, **attrs: Any) -> Any:
        raise NotImplementedError(f"op '{self.name}' has no reference numerics")

    def fail(self, msg: str) -> OpError:
        return OpError(f"op '{self.name}': {msg}")


OPS: dict[str, OpDef] = {}


def register_op(cls: type[OpDef]) -> type[OpDef]:
    if cls.name in OPS:
        raise ValueError(f"op '{cls.name}' registered twice")
    OPS[cls.name] = cls()
    return cls


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise OpError(f"unknown op '{name}'; registered: {', '.join(sorted(OPS))}") from None


def stream_work(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], vector_flops: float = 0.0) -> Work:
    """Every input read once, every output written once."""
    return Work(
        vector_flops=vector_flops,
        bytes_read={f"in{i}": t.nbytes for i, t in enumerate(inputs)},
        bytes_written={f"out{i}": t.nbytes for i, t in enumerate(outputs)},
    )


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    nd = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(nd):
        dims = {s[len(s) - nd + i] for s in shapes if len(s) - nd + i >= 0} - {1}
        if len(dims) > 1:
            raise OpError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def prod(xs: Sequence[int]) -> int:
    return math.prod(xs)
