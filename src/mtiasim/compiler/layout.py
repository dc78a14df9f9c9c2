"""Memory layout: which tensors are strided views rather than dense, contiguous buffers.

Eager PyTorch keeps a view's strides: ``x.transpose(1, 2)`` or a split along the last dimension
is not copied, and an elementwise op on such an input writes its output with the same strides.
Its elementwise kernels then take the generic, non-vectorised path (``elementwise_kernel<128, 4>``
in a profile instead of ``vectorized_elementwise_kernel``), and so do broadcasts and concats of
such inputs. ``reads_strided`` tells whether a node reads a strided or broadcast input, so an
engine can time such kernels at that path's bandwidth (``data/calibration/gpu.yaml``, per stack).
"""

from __future__ import annotations

import math

from mtiasim.graph.ir import Graph
from mtiasim.graph.ops import get_op

# aten views that leave a tensor non-contiguous whatever dimension they act on
_PERMUTING = ("aten.transpose", "aten.t.", "aten.permute", "aten.movedim", "aten.swapaxes", "aten.expand")
# aten views that cut a tensor along a dimension: contiguous only along the outermost one
_CUTTING = ("aten.slice", "aten.split", "aten.chunk", "aten.narrow", "aten.unbind", "aten.select",
            "aten.tensor_split")


def _cut_dim(call: tuple, rank: int) -> int:
    """The dimension a cutting view acts on (its ``dim`` argument, default 0)."""
    name, args, kwargs = call
    pos = 1 if any(s in name for s in ("aten.slice", "aten.select", "aten.unbind", "aten.narrow")) else 2
    dim = kwargs.get("dim", args[pos] if len(args) > pos and isinstance(args[pos], int) else 0)
    return dim % rank if rank else 0


def _view_is_strided(graph: Graph, node) -> bool:
    call = node.attrs.get("call")
    if not call:
        return False
    name = call[0]
    if any(name.startswith(p) for p in _PERMUTING):
        return True
    if any(name.startswith(p) for p in _CUTTING):
        shape = graph.tensors[node.inputs[0]].shape
        dim = _cut_dim(call, len(shape))
        return any(s > 1 for s in shape[:dim])  # cutting below a non-trivial outer dimension
    return False


def strided_tensors(graph: Graph) -> set[str]:
    """Tensors that eager PyTorch would hold as non-contiguous strided views."""
    strided: set[str] = set()
    for node in graph.nodes:
        op = get_op(node.op)
        if op.is_view:
            if node.inputs[0] in strided or _view_is_strided(graph, node):
                strided.update(node.outputs)
        elif (op.pointwise or node.op == "concat") and any(t in strided for t in node.inputs):
            strided.update(node.outputs)  # elementwise ops keep their input's strides
    return strided


def reads_strided(graph: Graph, node, strided: set[str]) -> bool:
    """Whether a pointwise/concat node reads a strided view or broadcasts an input."""
    op = get_op(node.op)
    if not (op.pointwise or node.op == "concat"):
        return False
    out = graph.tensors[node.outputs[0]].shape
    for t in node.inputs:
        if t in strided:
            return True
        shape = graph.tensors[t].shape
        if node.op != "concat" and math.prod(shape) > 1 and tuple(shape) != tuple(out):
            return True  # a broadcast operand
    return False
