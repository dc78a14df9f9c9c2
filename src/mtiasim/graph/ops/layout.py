"""Data-layout ops: views (free), copies, concatenation, gathers, constants.

On MTIA the memory-layout unit (MLU) does transpose/concat/reshape (ISCA'25 section 3.2); on GPUs
these are copy kernels. Views never move data; ``copy`` and ``concat`` read and write every
byte once."""

from __future__ import annotations

import torch

from mtiasim.graph.ir import TensorSpec
from mtiasim.graph.ops.base import OpDef, Work, register_op, stream_work


@register_op
class View(OpDef):
    """Reshape, transpose, slice, split... : metadata only. Output specs are recorded at capture
    (``attrs['shapes']``) because each aten view has its own shape rule."""

    name = "view"
    engine = "none"
    is_view = True

    def infer(self, inputs, attrs):
        return [TensorSpec(tuple(s), inputs[0].dtype) for s in attrs["shapes"]]

    def work(self, inputs, outputs, attrs):
        return Work()


@register_op
class Copy(OpDef):
    """Materialising copy (contiguous, clone, dtype cast, transpose into a new layout)."""

    name = "copy"
    engine = "memory"

    def infer(self, inputs, attrs):
        shape = tuple(attrs.get("shape") or inputs[0].shape)
        return [TensorSpec(shape, attrs.get("dtype") or inputs[0].dtype)]

    def reference(self, x, **_):
        return x.clone()


@register_op
class Concat(OpDef):
    """torch.cat along ``dim`` (torch.stack is unsqueeze + cat)."""

    name = "concat"
    engine = "memory"

    def infer(self, inputs, attrs):
        if attrs.get("stack"):
            inputs = [TensorSpec((*t.shape[: attrs.get("dim", 0) % (len(t.shape) + 1)], 1,
                                  *t.shape[attrs.get("dim", 0) % (len(t.shape) + 1):]), t.dtype) for t in inputs]
        dim = attrs.get("dim", 0) % len(inputs[0].shape)
        base = list(inputs[0].shape)
        for t in inputs[1:]:
            if len(t.shape) != len(base) or any(a != b for i, (a, b) in enumerate(zip(t.shape, base)) if i != dim):
                raise self.fail(f"cannot concatenate {[list(t.shape) for t in inputs]} along dim {dim}")
        base[dim] = sum(t.shape[dim] for t in inputs)
        return [TensorSpec(tuple(base), inputs[0].dtype)]

    def reference(self, *xs, dim=0, stack=False, **_):
        return torch.stack(xs, dim=dim) if stack else torch.cat(xs, dim=dim)


@register_op
class KVAppend(OpDef):
    """Write this step's keys/values into the KV cache in place (paged-attention style). Produced
    by the compiler from ``cat([cache, new])`` feeding an attention: only the new rows move."""

    name = "kv_append"
    engine = "memory"

    def infer(self, inputs, attrs):
        return Concat().infer(inputs, attrs)

    def work(self, inputs, outputs, attrs):
        new = inputs[-1]
        return Work(bytes_read={"in1": new.nbytes}, bytes_written={"out0": new.nbytes})

    def reference(self, *xs, dim=0, **_):
        return torch.cat(xs, dim=dim)


@register_op
class Gather(OpDef):
    """Advanced indexing / index_select: reads as many bytes as it writes."""

    name = "gather"
    engine = "memory"

    def infer(self, inputs, attrs):
        return [TensorSpec(tuple(attrs["shape"]), inputs[0].dtype)]

    def work(self, inputs, outputs, attrs):
        w = stream_work(inputs[1:], outputs)
        w.bytes_read["in0"] = outputs[0].nbytes
        return w


@register_op
class Const(OpDef):
    """A constant built on device (arange, zeros, full): free at run time."""

    name = "const"
    engine = "none"

    def infer(self, inputs, attrs):
        return [TensorSpec(tuple(attrs["shape"]), attrs["dtype"], "const")]

    def work(self, inputs, outputs, attrs):
        return Work()
