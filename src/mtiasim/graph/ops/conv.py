"""Convolution, batch norm and pooling: the ops of CNNs such as MLPerf's ResNet-50.

A 2-D convolution runs on the matrix engine as an implicit GEMM (the formulation of cuDNN's and
TensorRT's implicit-GEMM kernels and of im2col on accelerators): per group,
``M = N * H_out * W_out`` output pixels, ``N = C_out / groups`` filters and
``K = C_in / groups * kh * kw`` reduction terms, i.e. ``2 * M * N * K`` flops per group.
Inference batch norm is a per-channel scale and shift (2 flops per element) that fuses into the
producing convolution's epilogue, as TensorRT folds it. Pooling reads each window element once.
"""

from __future__ import annotations

import torch.nn.functional as F

from mtiasim.graph.ir import TensorSpec
from mtiasim.graph.ops.base import GemmShape, OpDef, Work, register_op, stream_work


def _pair(v, name: str, op: OpDef) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    v = list(v)
    if len(v) == 1:
        return int(v[0]), int(v[0])
    if len(v) != 2:
        raise op.fail(f"{name} must be an int or a pair, got {v}")
    return int(v[0]), int(v[1])


def _out_hw(h: int, w: int, kernel, stride, padding, dilation, op: OpDef, ceil_mode: bool = False) -> tuple[int, int]:
    (kh, kw), (sh, sw) = _pair(kernel, "kernel", op), _pair(stride, "stride", op)
    (ph, pw), (dh, dw) = _pair(padding, "padding", op), _pair(dilation, "dilation", op)
    out = []
    for size, k, s, p, d in ((h, kh, sh, ph, dh), (w, kw, sw, pw, dw)):
        span = size + 2 * p - d * (k - 1) - 1
        n = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (n - 1) * s >= size + p:  # PyTorch: the last window must start inside the input
            n -= 1
        if n < 1:
            raise op.fail(f"input {h}x{w} is too small for kernel {kh}x{kw}, stride {sh}x{sw}, padding {ph}x{pw}")
        out.append(n)
    return out[0], out[1]


@register_op
class Conv2d(OpDef):
    """x [N, C_in, H, W], w [C_out, C_in/groups, kh, kw], b [C_out] -> [N, C_out, H_out, W_out]."""

    name = "conv2d"
    engine = "matrix"

    def infer(self, inputs, attrs):
        x, w = inputs[0], inputs[1]
        if len(x.shape) != 4 or len(w.shape) != 4:
            raise self.fail(f"expects x [N, C, H, W] and weight [C_out, C_in/groups, kh, kw], got "
                            f"{list(x.shape)} and {list(w.shape)}")
        groups = int(attrs.get("groups", 1))
        if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
            raise self.fail(f"x has C_in={x.shape[1]} but weight {list(w.shape)} with groups={groups} expects "
                            f"C_in={w.shape[1] * groups}")
        if len(inputs) > 2 and inputs[2].shape != (w.shape[0],):
            raise self.fail(f"bias {list(inputs[2].shape)} does not match C_out={w.shape[0]}")
        ho, wo = _out_hw(x.shape[2], x.shape[3], w.shape[2:], attrs.get("stride", 1), attrs.get("padding", 0),
                         attrs.get("dilation", 1), self)
        return [TensorSpec((x.shape[0], w.shape[0], ho, wo), x.dtype)]

    def work(self, inputs, outputs, attrs):
        w, out = inputs[1], outputs[0]
        groups = int(attrs.get("groups", 1))
        g = GemmShape(groups, out.shape[0] * out.shape[2] * out.shape[3], w.shape[0] // groups,
                      w.shape[1] * w.shape[2] * w.shape[3])
        base = stream_work(inputs, outputs)
        return Work(matrix_flops=g.flops, vector_flops=float(out.numel) if len(inputs) > 2 else 0.0,
                    bytes_read=base.bytes_read, bytes_written=base.bytes_written, gemms=[g])

    def reference(self, x, w, b=None, stride=1, padding=0, dilation=1, groups=1, **_):
        return F.conv2d(x, w, b, stride, padding, dilation, groups)


@register_op
class BatchNorm(OpDef):
    """Inference batch norm over dim 1: ``(x - mean) / sqrt(var + eps) * w + b``, folded to one
    per-channel scale and shift: 2 flops per element. Pointwise, so it fuses into its producer."""

    name = "batchnorm"
    pointwise = True

    def infer(self, inputs, attrs):
        x = inputs[0]
        for i, t in enumerate(inputs[1:], 1):
            if len(x.shape) < 2 or t.shape != (x.shape[1],):
                raise self.fail(f"per-channel operand {i} has shape {list(t.shape)}, expected [{x.shape[1]}]")
        return [TensorSpec(x.shape, x.dtype)]

    def work(self, inputs, outputs, attrs):
        return stream_work(inputs, outputs, vector_flops=2.0 * outputs[0].numel)

    def reference(self, x, weight, bias, mean, var, eps=1e-5, **_):
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)


@register_op
class Pool2d(OpDef):
    """Max or average pooling (``kind``), fixed windows or adaptive (``output_size``): one op per
    window element read."""

    name = "pool2d"

    def infer(self, inputs, attrs):
        x = inputs[0]
        if len(x.shape) != 4:
            raise self.fail(f"expects x [N, C, H, W], got {list(x.shape)}")
        if attrs.get("output_size") is not None:
            ho, wo = _pair(attrs["output_size"], "output_size", self)
        else:
            kernel = attrs["kernel"]
            ho, wo = _out_hw(x.shape[2], x.shape[3], kernel, attrs.get("stride") or kernel, attrs.get("padding", 0),
                             attrs.get("dilation", 1), self, bool(attrs.get("ceil_mode", False)))
        return [TensorSpec((x.shape[0], x.shape[1], ho, wo), x.dtype)]

    def work(self, inputs, outputs, attrs):
        x, out = inputs[0], outputs[0]
        if attrs.get("output_size") is not None:  # adaptive windows tile the input
            window = -(-x.shape[2] // out.shape[2]) * -(-x.shape[3] // out.shape[3])
        else:
            kh, kw = _pair(attrs["kernel"], "kernel", self)
            window = kh * kw
        return stream_work(inputs, outputs, vector_flops=float(out.numel * window))

    def reference(self, x, kind="max", kernel=None, stride=None, padding=0, dilation=1, ceil_mode=False,
                  output_size=None, **_):
        if output_size is not None:
            return (F.adaptive_max_pool2d if kind == "max" else F.adaptive_avg_pool2d)(x, output_size)
        if kind == "max":
            return F.max_pool2d(x, kernel, stride or kernel, padding, dilation, ceil_mode)
        return F.avg_pool2d(x, kernel, stride or kernel, padding, ceil_mode)
