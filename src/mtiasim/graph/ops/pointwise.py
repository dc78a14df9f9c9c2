"""Pointwise (elementwise) ops, normalisations and reductions: vector-engine work.

Flops per element are operation counts of a straightforward implementation (e.g. RMSNorm:
square, sum, scale, multiply = 4). Transcendental functions count as a few ops each, as SIMD
engines evaluate them with lookup tables plus a polynomial step (ISCA'25 section 3.2: the SIMD
engine has LUTs for nonlinear functions). These are definitional counts, not calibration: time on
a chip comes from the chip's vector peak and the engine's efficiency data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from mtiasim.graph.ir import TensorSpec
from mtiasim.graph.ops.base import OpDef, broadcast_shapes, register_op, stream_work
from mtiasim.graph.ops.generic import AtenOp


class Pointwise(OpDef):
    pointwise = True
    flops_per_element: float = 1.0
    fn: Callable[..., Any]

    def infer(self, inputs, attrs):
        tensors = [t for t in inputs]
        shape = broadcast_shapes(*(t.shape for t in tensors))
        dtype = attrs.get("dtype") or next((t.dtype for t in tensors if t.dtype not in ("bool", "int64")),
                                           tensors[0].dtype)
        if attrs.get("predicate"):
            dtype = "bool"
        return [TensorSpec(shape, dtype)]

    def work(self, inputs, outputs, attrs):
        return stream_work(inputs, outputs, vector_flops=self.flops_per_element * outputs[0].numel)

    def reference(self, *tensors, **attrs):
        return type(self).fn(*tensors)


def _pointwise(name: str, flops: float, fn: Callable[..., Any]) -> None:
    cls = type(f"Pointwise_{name}", (Pointwise,), {"name": name, "flops_per_element": flops, "fn": staticmethod(fn)})
    register_op(cls)


# binary / ternary arithmetic: one op per output element
for _name, _fn in {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "maximum": torch.maximum,
    "minimum": torch.minimum, "pow": torch.pow, "where": torch.where, "eq": torch.eq, "lt": torch.lt,
    "gt": torch.gt, "le": torch.le, "ge": torch.ge, "ne": torch.ne, "logical_and": torch.logical_and,
    "logical_or": torch.logical_or, "logical_xor": torch.logical_xor, "bitwise_and": torch.bitwise_and,
    "bitwise_or": torch.bitwise_or, "bitwise_xor": torch.bitwise_xor, "fmod": torch.fmod,
    "remainder": torch.remainder, "copysign": torch.copysign, "hypot": torch.hypot,
}.items():
    _pointwise(_name, 1.0, _fn)

# unary: counts of a LUT + polynomial evaluation
for _name, _flops, _fn in [
    ("neg", 1, torch.neg), ("abs", 1, torch.abs), ("relu", 1, F.relu), ("cast", 1, lambda x: x),
    ("reciprocal", 1, torch.reciprocal), ("sqrt", 2, torch.sqrt), ("rsqrt", 2, torch.rsqrt),
    ("exp", 4, torch.exp), ("log", 4, torch.log), ("sin", 4, torch.sin), ("cos", 4, torch.cos),
    ("tanh", 4, torch.tanh), ("sigmoid", 4, torch.sigmoid), ("silu", 5, F.silu), ("gelu", 8, F.gelu),
    ("clamp", 2, torch.clamp), ("square", 1, torch.square),
    ("floor", 1, torch.floor), ("ceil", 1, torch.ceil), ("round", 1, torch.round), ("trunc", 1, torch.trunc),
    ("sign", 1, torch.sign), ("bitwise_not", 1, torch.bitwise_not), ("logical_not", 1, torch.logical_not),
    ("isnan", 1, torch.isnan), ("isinf", 1, torch.isinf), ("fill", 1, torch.zeros_like),
    ("erf", 8, torch.erf), ("erfinv", 8, torch.erfinv), ("expm1", 4, torch.expm1), ("log1p", 4, torch.log1p),
    ("log2", 4, torch.log2), ("log10", 4, torch.log10), ("tan", 4, torch.tan), ("asin", 4, torch.asin),
    ("acos", 4, torch.acos), ("atan", 4, torch.atan), ("sinh", 4, torch.sinh), ("cosh", 4, torch.cosh),
    ("asinh", 4, torch.asinh), ("acosh", 4, torch.acosh), ("atanh", 4, torch.atanh), ("atan2", 8, torch.atan2),
    ("elu", 5, F.elu), ("softplus", 5, F.softplus), ("hardswish", 3, F.hardswish),
    ("hardsigmoid", 3, F.hardsigmoid), ("mish", 10, F.mish), ("logit", 5, torch.logit),
]:
    _pointwise(_name, float(_flops), _fn)


@register_op
class RMSNorm(OpDef):
    """x [..., D] * rsqrt(mean(x^2) + eps) * w: ~4 flops per element."""

    name = "rmsnorm"

    def infer(self, inputs, attrs):
        return [TensorSpec(inputs[0].shape, inputs[0].dtype)]

    def work(self, inputs, outputs, attrs):
        return stream_work(inputs, outputs, vector_flops=4.0 * inputs[0].numel)

    def reference(self, x, weight=None, eps=None, normalized_shape=None, **_):
        return F.rms_norm(x, normalized_shape or [x.shape[-1]], weight, eps)


@register_op
class LayerNorm(OpDef):
    """(x - mean) / sqrt(var + eps) * w + b: ~8 flops per element."""

    name = "layernorm"

    def infer(self, inputs, attrs):
        return [TensorSpec(inputs[0].shape, inputs[0].dtype)]

    def work(self, inputs, outputs, attrs):
        return stream_work(inputs, outputs, vector_flops=8.0 * inputs[0].numel)

    def reference(self, x, weight=None, bias=None, eps=1e-5, normalized_shape=None, **_):
        return F.layer_norm(x, normalized_shape or [x.shape[-1]], weight, bias, eps)


@register_op
class Reduce(AtenOp):
    """Sum / mean / max / min / prod / any / all / var / argmax ... over ``dims``: one op per input
    element (a captured node carries its aten call, whose shape rule covers every variant; a node
    built in the IR gives ``dims``, ``keepdim`` and ``kind``)."""

    name = "reduce"

    def infer(self, inputs, attrs):
        if "op_call" in attrs:
            return super().infer(inputs, attrs)
        x = inputs[0]
        dims = {d % len(x.shape) for d in attrs.get("dims") or range(len(x.shape))}
        keep = attrs.get("keepdim", False)
        shape = tuple(1 if i in dims else s for i, s in enumerate(x.shape) if keep or i not in dims)
        return [TensorSpec(shape, x.dtype)]

    def work(self, inputs, outputs, attrs):
        return stream_work(inputs, outputs, vector_flops=float(inputs[0].numel))

    def reference(self, x, dims=None, keepdim=False, kind="sum", **attrs):
        if "op_call" in attrs:
            return super().reference(x, **attrs)
        fn = {"sum": torch.sum, "mean": torch.mean, "amax": torch.amax}[kind]
        return fn(x, dim=dims, keepdim=keepdim)


