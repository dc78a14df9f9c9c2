"""The graph IR: tensors with shapes and dtypes, and nodes that name a registered op."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from mtiasim.graph.dtypes import nbytes

TensorKind = Literal["input", "param", "buffer", "activation", "const"]


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str
    kind: TensorKind = "activation"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> float:
        return self.numel * nbytes(self.dtype)

    def with_dtype(self, dtype: str) -> TensorSpec:
        return replace(self, dtype=dtype)


@dataclass
class Node:
    """One operation. ``inputs``/``outputs`` are tensor names in the owning :class:`Graph`;
    ``attrs`` are the op's non-tensor arguments; ``source`` is the user code location."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    aten: str | None = None
    #: module path of the op in the captured nn.Module (torch.export's nn_module_stack), e.g.
    #: 'features.4.body.0'; '' for the top module, None when unknown
    scope: str | None = None


@dataclass
class Graph:
    name: str
    tensors: dict[str, TensorSpec]
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def spec(self, name: str) -> TensorSpec:
        return self.tensors[name]

    def params(self) -> list[str]:
        return [n for n, t in self.tensors.items() if t.kind in ("param", "buffer")]

    def param_bytes(self) -> float:
        return sum(self.tensors[n].nbytes for n in self.params())

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for node in self.nodes:
            for t in node.inputs:
                out.setdefault(t, []).append(node)
        return out

    def producers(self) -> dict[str, Node]:
        return {t: node for node in self.nodes for t in node.outputs}

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.op] = counts.get(node.op, 0) + 1
        return counts
