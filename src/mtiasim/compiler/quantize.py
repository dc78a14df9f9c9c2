"""Precision pass: which dtype each tensor is stored in and which the matrix engine computes in.

The requested dtype applies to the weights of matrix ops and to embedding tables (weight-only
storage in that format) and to the matrix engine. If the chip's matrix engine lacks it, the
compiler falls back along ``FALLBACK`` to the nearest format the chip runs, and says so.
Activations between kernels are kept in 16-bit (fp32 if fp32 was asked for) unless
``CompileOptions.act_dtype`` says otherwise (TensorRT INT8 engines keep them INT8)."""

from __future__ import annotations

from dataclasses import replace

from mtiasim.chips.schema import ChipSpec
from mtiasim.graph.dtypes import INDEX_DTYPES
from mtiasim.graph.ir import Graph
from mtiasim.graph.ops import get_op

FALLBACK: dict[str, list[str]] = {
    "fp32": ["fp32", "tf32", "bf16", "fp16"],
    "tf32": ["tf32", "bf16", "fp16"],
    "bf16": ["bf16", "fp16"],
    "fp16": ["fp16", "bf16"],
    "fp8": ["fp8", "mx8", "int8", "bf16", "fp16"],
    "int8": ["int8", "fp8", "mx8", "bf16", "fp16"],
    "mx8": ["mx8", "fp8", "int8", "bf16", "fp16"],
    "mx4": ["mx4", "fp4", "mx8", "fp8", "int8", "bf16", "fp16"],
    "fp4": ["fp4", "mx4", "mx8", "fp8", "int8", "bf16", "fp16"],
    "int4": ["int4", "int8", "fp8", "bf16", "fp16"],
}

#: ops whose parameter inputs are stored in the requested (possibly low-precision) format
QUANTIZED_PARAM_OPS = {"linear", "matmul", "addmm", "conv_nd", "grouped_mm", "dcn_down", "dcn_up", "moe_router", "moe_expert_up", "moe_expert_down", "embedding",
                       "embedding_bag", "tbe", "conv2d"}


def compute_dtype(chip: ChipSpec, requested: str) -> str:
    for d in FALLBACK.get(requested, [requested]):
        if chip.peak(d):
            return d
    supported = [d for d in chip.compute.peak_ops_per_s if chip.peak(d)]
    if not supported:
        raise ValueError(f"chip '{chip.name}' lists no matrix-engine peak for any dtype")
    return supported[0]


def activation_dtype(requested: str) -> str:
    return {"fp32": "fp32", "fp16": "fp16"}.get(requested, "bf16")


def assign_dtypes(graph: Graph, requested: str, kv_inputs: set[str], kv_dtype: str | None,
                  op_dtypes: dict[str, str] | None = None, act_dtype: str | None = None) -> Graph:
    """A copy of ``graph`` whose tensor dtypes follow the precision policy. ``op_dtypes`` gives
    some ops their own precision (their parameters are stored in it); ``act_dtype`` overrides the
    activations' storage dtype."""
    act = act_dtype or activation_dtype(requested)
    op_dtypes = op_dtypes or {}
    quantized: dict[str, str] = {}
    for node in graph.nodes:
        key = get_op(node.op).precision_key
        if node.op in QUANTIZED_PARAM_OPS or key in op_dtypes:
            for t in node.inputs:
                if graph.tensors[t].kind in ("param", "buffer"):
                    quantized[t] = op_dtypes.get(key, requested)
    # a parameter viewed before use (e.g. weight[e] slices) inherits through the view
    tensors = {}
    for name, spec in graph.tensors.items():
        if spec.dtype in INDEX_DTYPES:
            tensors[name] = spec
        elif name in kv_inputs:
            tensors[name] = replace(spec, dtype=kv_dtype or act)
        elif name in quantized:
            tensors[name] = replace(spec, dtype=quantized[name])
        else:
            tensors[name] = replace(spec, dtype=act)
    return Graph(graph.name, tensors, graph.nodes, graph.inputs, graph.outputs, dict(graph.meta))
