"""Ops lowered as their aten call: the rest of PyTorch's Core ATen IR.

A node of these ops carries its aten call (``attrs['op_call']``: the overload and its arguments,
tensor arguments by input position). Shape inference runs that call on meta tensors, so it is
PyTorch's own shape rule; reference numerics run it on real tensors. What differs per op is only
the cost, which each class here defines once for a family of aten ops:

- ``scan`` (cumsum, cumprod): one op per element, streamed;
- ``sort`` (sort, topk): a bitonic/merge network, ``n log2(d)`` compare-exchanges for ``n``
  elements sorted along a dimension of ``d``;
- ``scatter`` (scatter, index_put, index_add, slice/select scatter): run in place, as compilers
  do with a functional scatter whose input dies, so only the updates and indices are read and
  the updated rows written;
- ``pad`` / ``repeat`` / ``resample`` (upsampling, grid sampling, col2im): layout-unit copies
  that read the input and write the output once;
- ``random`` (rand, randn): a counter-based generator (Philox, Salmon et al., SC'11: 10 rounds of
  a multiply and xor per 4 outputs) writes the output;
- ``groupnorm``, ``pool_nd`` and the normalisation and pooling backward ops: vector work per
  element, like their forward counterparts in ``pointwise.py`` and ``conv.py``;
- ``conv_nd`` (1-D, 3-D and transposed convolutions) and ``conv_backward``: implicit GEMMs.

Op counts per element are definitional, as in ``pointwise.py``; time comes from the chip.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from mtiasim.graph.dtypes import from_torch
from mtiasim.graph.ir import TensorSpec
from mtiasim.graph.ops.base import GemmShape, OpDef, Work, prod, register_op, stream_work
from mtiasim.graph.ops.moe import expected_experts_hit

#: IR dtype -> a torch dtype with the same role, for shape inference on meta tensors (formats
#: torch has no dtype for are inferred as bf16; the output keeps the input's IR dtype)
TO_TORCH = {"fp64": torch.float64, "fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16,
             "fp16": torch.float16, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
             "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}


def resolve(qualname: str) -> Any:
    """``'aten.cumsum.default'`` -> the OpOverload."""
    ns, op, overload = qualname.split(".")
    return getattr(getattr(getattr(torch.ops, ns), op), overload)


def bind(template: Any, values: Any, tag: str = "__in__") -> Any:
    """Substitute the ``(tag, key)`` placeholders of an argument template with ``values[key]``:
    ``('__in__', i)`` by input position (this module), ``('__tensor__', name)`` by tensor name
    (a node's recorded ``call``, ``graph/execute.py``)."""
    if isinstance(template, tuple) and len(template) == 2 and template[0] == tag:
        return values[template[1]]
    if isinstance(template, (list, tuple)):
        return type(template)(bind(v, values, tag) for v in template)
    if isinstance(template, dict):
        return {k: bind(v, values, tag) for k, v in template.items()}
    return template


def call_arg(attrs: dict[str, Any], name: str, default: Any = None) -> Any:
    """The value of the aten call's argument ``name`` (by its schema), positional or keyword."""
    target, args, kwargs = attrs["op_call"]
    if name in kwargs:
        return kwargs[name]
    names = [a.name for a in resolve(target)._schema.arguments]
    i = names.index(name) if name in names else -1
    return args[i] if 0 <= i < len(args) else default


class AtenOp(OpDef):
    """Base of the ops that keep their aten call. Subclasses define ``work``."""

    #: the aten ops (overload packets) this class lowers; read by the frontend's lowering table
    aten: ClassVar[tuple[str, ...]] = ()

    def _call(self, attrs: dict[str, Any], values: list[Any]) -> Any:
        try:
            target, args, kwargs = attrs["op_call"]
        except KeyError:
            raise self.fail("node has no 'op_call' attribute (the aten call it stands for)") from None
        return resolve(target)(*bind(args, values), **bind(kwargs, values))

    def infer(self, inputs, attrs):
        metas = [torch.empty(t.shape, dtype=TO_TORCH.get(t.dtype, torch.bfloat16), device="meta") for t in inputs]
        try:
            out = self._call(attrs, metas)
        except (RuntimeError, TypeError, ValueError, IndexError) as e:
            raise self.fail(f"{attrs['op_call'][0]} rejects inputs {[list(t.shape) for t in inputs]}: {e}") from e
        outs = out if isinstance(out, (list, tuple)) else [out]
        first_float = next((t.dtype for t in inputs if t.dtype not in TO_TORCH or TO_TORCH[t.dtype].is_floating_point),
                           None)
        specs = []
        for o in outs:
            if not isinstance(o, torch.Tensor):
                continue
            dtype = from_torch(o.dtype)
            if o.dtype.is_floating_point and first_float is not None:
                dtype = first_float  # the graph's precision policy, not torch's default, sets float widths
            specs.append(TensorSpec(tuple(int(d) for d in o.shape), dtype))
        return specs

    def reference(self, *tensors, **attrs):
        return self._call(attrs, list(tensors))


def _register(cls: type[AtenOp]) -> type[AtenOp]:
    return register_op(cls)  # type: ignore[return-value]


@_register
class Scan(AtenOp):
    """Prefix sums and products along a dimension: one op per element."""

    name = "scan"
    aten = ("aten.cumsum", "aten.cumprod", "aten.logcumsumexp", "aten.cummax", "aten.cummin")

    def work(self, inputs, outputs, attrs):
        return stream_work(inputs, outputs, vector_flops=float(inputs[0].numel))


@_register
class Sort(AtenOp):
    """Sort / top-k along ``dim``: n*log2(d) compare-exchanges for n elements, rows of length d."""

    name = "sort"
    aten = ("aten.sort", "aten.topk", "aten.argsort", "aten.kthvalue", "aten.median", "aten.mode")

    def work(self, inputs, outputs, attrs):
        x = inputs[0]
        d = x.shape[call_arg(attrs, "dim", -1)] if x.shape else 1
        return stream_work(inputs, outputs, vector_flops=float(x.numel) * max(1.0, math.log2(max(d, 1))))


@_register
class Scatter(AtenOp):
    """Writes of ``src`` rows into a tensor at indices (in place): reads the updates and the
    indices, writes as many bytes as the updates."""

    name = "scatter"
    engine = "memory"
    aten = ("aten.scatter", "aten.scatter_add", "aten.scatter_reduce", "aten.index_put", "aten.index_add",
            "aten.index_copy", "aten.index_fill", "aten.select_scatter", "aten.slice_scatter",
            "aten.diagonal_scatter", "aten.as_strided_scatter", "aten.masked_scatter", "aten.embedding_dense_backward",
            "aten.histc", "aten.bincount")  # counting is a scatter-add of ones

    def work(self, inputs, outputs, attrs):
        if attrs["op_call"][0].startswith("aten.embedding_dense_backward"):  # grad rows summed into a zeroed table
            return stream_work(inputs, outputs, vector_flops=float(inputs[0].numel))
        upd = inputs[1:] if len(inputs) > 1 else inputs
        written = max((t.nbytes for t in upd if t.dtype not in ("int64", "int32", "bool")), default=outputs[0].nbytes)
        elements = max((t.numel for t in upd), default=outputs[0].numel)
        return Work(vector_flops=float(elements),
                    bytes_read={f"in{i}": t.nbytes for i, t in enumerate(upd, len(inputs) - len(upd))},
                    bytes_written={"out0": written})


@_register
class LayoutCopy(AtenOp):
    """Padding, repeats, flips, rolls and other copies of a tensor into a new layout."""

    name = "layout_copy"
    engine = "memory"
    aten = ("aten.constant_pad_nd", "aten.reflection_pad1d", "aten.reflection_pad2d", "aten.reflection_pad3d",
            "aten.replication_pad1d", "aten.replication_pad2d", "aten.replication_pad3d", "aten.repeat",
            "aten.flip", "aten.roll", "aten.tril", "aten.triu", "aten.im2col", "aten.col2im", "aten.pixel_shuffle",
            "aten.channel_shuffle")


@_register
class Resample(AtenOp):
    """Interpolation: each output element reads its 1 (nearest), 4 (bilinear) or 16 (bicubic)
    source elements and weighs them."""

    name = "resample"
    aten = ("aten.upsample_nearest1d", "aten.upsample_nearest2d", "aten.upsample_nearest3d",
            "aten.upsample_bilinear2d", "aten.upsample_linear1d", "aten.upsample_trilinear3d",
            "aten.upsample_bicubic2d", "aten.grid_sampler_2d", "aten.grid_sampler_3d", "aten._upsample_bilinear2d_aa")

    def work(self, inputs, outputs, attrs):
        target = attrs["op_call"][0]
        taps = 1 if "nearest" in target else 16 if "bicubic" in target else 8 if "3d" in target else 4
        return stream_work(inputs, outputs, vector_flops=2.0 * taps * outputs[0].numel)


@_register
class Random(AtenOp):
    """Random numbers from a counter-based generator: Philox4x32-10 gives 4 outputs per 10
    rounds of a multiply and an xor (20 ops), 5 ops per output, plus the transform to the
    distribution (Box-Muller for normals: a log, a sqrt and a sin/cos, ~10 ops)."""

    name = "random"
    aten = ("aten.rand", "aten.randn", "aten.randint", "aten.randperm", "aten.bernoulli", "aten.normal",
            "aten.uniform", "aten.native_dropout", "aten.rand_like", "aten.randn_like", "aten.randint_like",
            "aten.multinomial", "aten.exponential", "aten.poisson")

    def work(self, inputs, outputs, attrs):
        normal = "randn" in attrs["op_call"][0] or "normal" in attrs["op_call"][0]
        return stream_work(inputs, outputs, vector_flops=(15.0 if normal else 5.0) * outputs[0].numel)


@_register
class GroupNorm(AtenOp):
    """Group norm (``native_group_norm``): mean and variance per group, then normalise, scale and
    shift: ~8 ops per element, as layer norm."""

    name = "groupnorm"
    aten = ("aten.native_group_norm", "aten.group_norm", "aten._native_batch_norm_legit",
            "aten.native_batch_norm", "aten._native_batch_norm_legit_functional")

    def work(self, inputs, outputs, attrs):
        return stream_work(inputs, outputs, vector_flops=8.0 * inputs[0].numel)


@_register
class NormBackward(AtenOp):
    """Backward of a normalisation: the input gradient (~10 ops per element: the two reductions
    and the recombination) and the per-channel weight and bias gradients."""

    name = "norm_backward"
    aten = ("aten.native_layer_norm_backward", "aten.native_group_norm_backward",
            "aten.native_batch_norm_backward", "aten._log_softmax_backward_data", "aten._softmax_backward_data")

    def work(self, inputs, outputs, attrs):
        return stream_work(inputs, outputs, vector_flops=10.0 * inputs[0].numel)


@_register
class PoolNd(AtenOp):
    """1-D and 3-D pooling and the pooling backward ops: one op per input element touched."""

    name = "pool_nd"
    aten = ("aten.avg_pool1d", "aten.avg_pool3d", "aten.max_pool1d", "aten.max_pool3d_with_indices",
            "aten.adaptive_avg_pool1d", "aten._adaptive_avg_pool3d", "aten.adaptive_max_pool1d",
            "aten.avg_pool2d_backward", "aten.max_pool2d_with_indices_backward", "aten._adaptive_avg_pool2d_backward",
            "aten.max_unpool2d", "aten.max_unpool3d")

    def work(self, inputs, outputs, attrs):
        return stream_work(inputs, outputs, vector_flops=float(max(t.numel for t in inputs)))


@_register
class Distance(AtenOp):
    """Pairwise distances (``cdist``: x1 [B, P, M], x2 [B, R, M]) as a GEMM of B x P x R x M,
    as ``torch.cdist`` computes them for p=2 (``pdist``: the upper triangle of x [N, M] with itself)."""

    name = "distance"
    engine = "matrix"
    aten = ("aten._cdist_forward", "aten._pdist_forward", "aten._euclidean_dist")

    def work(self, inputs, outputs, attrs):
        x1 = inputs[0]
        x2 = inputs[1] if len(inputs) > 1 else x1
        b = prod(x1.shape[:-2])
        g = GemmShape(b, x1.shape[-2], x2.shape[-2], x1.shape[-1])
        w = stream_work(inputs, outputs, vector_flops=3.0 * outputs[0].numel)
        return Work(matrix_flops=g.flops, vector_flops=w.vector_flops, bytes_read=w.bytes_read,
                    bytes_written=w.bytes_written, gemms=[g])


@_register
class GroupedMM(AtenOp):
    """Grouped GEMM of rows sorted by expert: x [S, K] (S = tokens x top-k slots), w [E, K, N],
    offsets [E] -> [S, N] (``torch._grouped_mm``; transformers' MoE experts). 2*S*K*N flops.
    Routing is assumed balanced, as in ``moe.py``: the experts hit are those an S-slot uniform
    draw reaches, E*(1-(1-1/E)^S), each with S/hit rows, and only their weights are read."""

    name = "grouped_mm"
    engine = "matrix"
    grouped_gemm = True
    aten = ("aten._grouped_mm", "transformers.grouped_mm_fallback")

    def work(self, inputs, outputs, attrs):
        x, w = inputs[0], inputs[1]
        s, k = x.shape[-2], x.shape[-1]
        e, n = (w.shape[0], w.shape[-1]) if len(w.shape) == 3 else (1, w.shape[-1])
        hit = expected_experts_hit(s, e, 1)  # each slot is one draw of an expert
        groups, rows = max(1, round(hit)), max(1, math.ceil(s / max(hit, 1e-9)))
        read = {f"in{i}": t.nbytes for i, t in enumerate(inputs)}
        read["in1"] = w.nbytes * hit / e
        return Work(matrix_flops=2.0 * s * k * n, bytes_read=read, bytes_written={"out0": outputs[0].nbytes},
                    gemms=[GemmShape(groups, rows, n, k)])


def _conv_gemms(x: TensorSpec, w: TensorSpec, y: TensorSpec, groups: int, transposed: bool) -> GemmShape:
    """The forward implicit GEMM of a convolution (x input, w weight, y output), per group."""
    if transposed:  # a transposed convolution is the data gradient of the forward one: M over input pixels
        cin, cout = w.shape[0], w.shape[1] * groups
        return GemmShape(groups, x.shape[0] * prod(x.shape[2:]), cout // groups * prod(w.shape[2:]), cin // groups)
    return GemmShape(groups, y.shape[0] * prod(y.shape[2:]), w.shape[0] // groups, w.shape[1] * prod(w.shape[2:]))


@_register
class ConvNd(AtenOp):
    """1-D, 3-D and transposed convolutions (``aten.convolution``; 2-D forward ones are ``conv2d``):
    the implicit GEMM of ``conv.py`` over every spatial dimension."""

    name = "conv_nd"
    engine = "matrix"
    aten = ()  # reached through aten.convolution's rule, which sends 2-D forward convolutions to conv2d

    def work(self, inputs, outputs, attrs):
        g = _conv_gemms(inputs[0], inputs[1], outputs[0], int(call_arg(attrs, "groups", 1)),
                        bool(call_arg(attrs, "transposed", False)))
        w = stream_work(inputs, outputs, vector_flops=float(outputs[0].numel) if len(inputs) > 2 else 0.0)
        return Work(matrix_flops=g.flops, vector_flops=w.vector_flops, bytes_read=w.bytes_read,
                    bytes_written=w.bytes_written, gemms=[g])


@_register
class ConvBackward(AtenOp):
    """``convolution_backward(grad_out, input, weight, ...)``: the data gradient and the weight
    gradient (each as many flops as the forward GEMM, as ``output_mask`` asks for them) and the
    bias gradient (a reduction of grad_out)."""

    name = "conv_backward"
    engine = "matrix"
    aten = ("aten.convolution_backward",)

    def work(self, inputs, outputs, attrs):
        dy, x, w = inputs[:3]
        transposed, groups = bool(call_arg(attrs, "transposed")), int(call_arg(attrs, "groups", 1))
        mask = list(call_arg(attrs, "output_mask", (True, True, True)))
        fwd = _conv_gemms(x, w, dy, groups, transposed)
        gemms = []
        if mask[0]:  # dX = dY (*) W^T: M over input pixels
            gemms.append(GemmShape(groups, fwd.m, fwd.k, fwd.n))
        if mask[1]:  # dW = dY^T (*) X: reduction over output pixels
            gemms.append(GemmShape(groups, fwd.n, fwd.k, fwd.m))
        s = stream_work(inputs, outputs, vector_flops=float(dy.numel) if mask[2] else 0.0)
        return Work(matrix_flops=sum(g.flops for g in gemms), vector_flops=s.vector_flops,
                    bytes_read=s.bytes_read, bytes_written=s.bytes_written, gemms=gemms)


#: aten packet -> the generic op that lowers it
ATEN_TO_GENERIC: dict[str, str] = {a: cls.name for cls in (Scan, Sort, Scatter, LayoutCopy, Resample, Random,
                                                           GroupNorm, NormBackward, PoolNd, Distance, ConvBackward,
                                                           GroupedMM)
                                   for a in cls.aten}
