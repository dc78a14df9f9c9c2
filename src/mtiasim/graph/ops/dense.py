"""Matrix-engine ops: linear, batched matmul, DCNv2 cross layer (down / up kernels), DLRM dot interaction (MoE: moe.py)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mtiasim.graph.ir import TensorSpec
from mtiasim.graph.ops.base import GemmShape, OpDef, Work, broadcast_shapes, prod, register_op


def _io(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> tuple[dict, dict]:
    return ({f"in{i}": t.nbytes for i, t in enumerate(inputs)}, {f"out{i}": t.nbytes for i, t in enumerate(outputs)})


@register_op
class Linear(OpDef):
    """``y = x @ w.T + b``; x [..., K], w [N, K], b [N]. 2*M*N*K flops (+ M*N for the bias)."""

    name = "linear"
    engine = "matrix"

    def infer(self, inputs, attrs):
        x, w = inputs[0], inputs[1]
        if x.shape[-1] != w.shape[1]:
            raise self.fail(f"x has K={x.shape[-1]} but weight is {list(w.shape)} (expects [N, K])")
        if len(inputs) > 2 and inputs[2].shape != (w.shape[0],):
            raise self.fail(f"bias {list(inputs[2].shape)} does not match N={w.shape[0]}")
        return [TensorSpec((*x.shape[:-1], w.shape[0]), x.dtype)]

    def work(self, inputs, outputs, attrs):
        x, w = inputs[0], inputs[1]
        m, n, k = prod(x.shape[:-1]), w.shape[0], w.shape[1]
        g = GemmShape(1, m, n, k)
        r, wr = _io(inputs, outputs)
        return Work(matrix_flops=g.flops, vector_flops=m * n if len(inputs) > 2 else 0.0,
                    bytes_read=r, bytes_written=wr, gemms=[g])

    def reference(self, x, w, b=None, **_):
        return F.linear(x, w, b)


@register_op
class Matmul(OpDef):
    """Batched matmul with broadcasting: a [..., M, K] @ b [..., K, N]."""

    name = "matmul"
    engine = "matrix"

    def infer(self, inputs, attrs):
        a, b = inputs
        if len(a.shape) < 2 or len(b.shape) < 2 or a.shape[-1] != b.shape[-2]:
            raise self.fail(f"cannot multiply {list(a.shape)} by {list(b.shape)}")
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
        return [TensorSpec((*batch, a.shape[-2], b.shape[-1]), a.dtype)]

    def work(self, inputs, outputs, attrs):
        a, b = inputs
        out = outputs[0]
        g = GemmShape(prod(out.shape[:-2]), a.shape[-2], b.shape[-1], a.shape[-1])
        r, w = _io(inputs, outputs)
        return Work(matrix_flops=g.flops, bytes_read=r, bytes_written=w, gemms=[g])

    def reference(self, a, b, **_):
        return torch.matmul(a, b)


@register_op
class AddMM(OpDef):
    """``bias + a @ b`` (``addmm``, ``baddbmm``): a [..., M, K], b [..., K, N], bias broadcast to
    [..., M, N]; the form of GPT-2's Conv1D layers, whose weight is stored [K, N]. 2*M*N*K flops
    (+ M*N for the bias), like a linear layer."""

    name = "addmm"
    engine = "matrix"

    def infer(self, inputs, attrs):
        bias, a, b = inputs
        out = Matmul().infer([a, b], attrs)[0]
        broadcast_shapes(bias.shape, out.shape)
        return [out]

    def work(self, inputs, outputs, attrs):
        bias, a, b = inputs
        out = outputs[0]
        g = GemmShape(prod(out.shape[:-2]), a.shape[-2], b.shape[-1], a.shape[-1])
        r, w = _io(inputs, outputs)
        return Work(matrix_flops=g.flops, vector_flops=float(out.numel), bytes_read=r, bytes_written=w, gemms=[g])

    def reference(self, bias, a, b, **_):
        return bias + torch.matmul(a, b)


@register_op
class DCNDown(Linear):
    """Down-projection of a low-rank DCNv2 cross layer: ``h = xl @ U.T``, a bias-free linear;
    xl [B, D], u [r, D] -> h [B, r], 2*B*D*r flops. Its own kernel on every stack that runs DCNv2:
    TorchRec's ``LowRankCrossNet`` calls two matmuls, and NVIDIA's MLPerf DLRMv2 TensorRT network
    builds the layer as two 1x1 convolutions (V, then W with the bias)."""

    name = "dcn_down"
    precision_group = "dcn_cross"


@register_op
class DCNUp(OpDef):
    """Up-projection of a low-rank DCNv2 cross layer with the cross term in its epilogue:
    ``x0 * (h @ V.T + b) + xl`` (DCN V2, WWW'21, eq. 1 with W = V U); x0, xl [B, D], h [B, r],
    v [D, r], b [D]. One GEMM of 2*B*D*r flops; the bias, product and residual (3*B*D flops) ride
    in the epilogue, which reads x0 and xl beside the GEMM's operands (NVIDIA's DLRMv2 builder
    sets TensorRT's builder optimisation level 4 for Myelin's ConvMulAdd fusion of exactly this)."""

    name = "dcn_up"
    engine = "matrix"
    precision_group = "dcn_cross"

    def infer(self, inputs, attrs):
        x0, xl, h, v, b = inputs
        if (x0.shape != xl.shape or v.shape != (xl.shape[-1], h.shape[-1]) or b.shape != (xl.shape[-1],)
                or h.shape[:-1] != xl.shape[:-1]):
            raise self.fail(f"shapes x0 {list(x0.shape)}, xl {list(xl.shape)}, h {list(h.shape)}, V {list(v.shape)}, "
                            f"bias {list(b.shape)} do not fit (V [D, r], bias [D])")
        return [TensorSpec(xl.shape, xl.dtype)]

    def work(self, inputs, outputs, attrs):
        x0, xl, h, v, b = inputs
        bsz, d, r = prod(xl.shape[:-1]), xl.shape[-1], h.shape[-1]
        g = GemmShape(1, bsz, d, r)
        rd, wr = _io(inputs, outputs)
        return Work(matrix_flops=g.flops, vector_flops=3.0 * bsz * d, bytes_read=rd, bytes_written=wr, gemms=[g])

    def reference(self, x0, xl, h, v, b, **_):
        return x0 * F.linear(h, v, b) + xl


@register_op
class DotInteraction(OpDef):
    """DLRM pairwise dot interaction: dense [B, D], sparse [B, T, D] -> [B, D + F(F-1)/2], F=T+1.
    One batched Gram GEMM of B x (F x D x F): 2*B*F*F*D flops."""

    name = "dot_interaction"
    engine = "matrix"

    def infer(self, inputs, attrs):
        dense, sparse = inputs
        if dense.shape[-1] != sparse.shape[-1] or dense.shape[0] != sparse.shape[0]:
            raise self.fail(f"dense {dense.shape} and sparse {sparse.shape} disagree on B or D")
        f = sparse.shape[1] + 1
        return [TensorSpec((dense.shape[0], dense.shape[1] + f * (f - 1) // 2), dense.dtype)]

    def work(self, inputs, outputs, attrs):
        dense, sparse = inputs
        b, f, d = dense.shape[0], sparse.shape[1] + 1, dense.shape[1]
        g = GemmShape(b, f, f, d)
        rd, wr = _io(inputs, outputs)
        return Work(matrix_flops=g.flops, bytes_read=rd, bytes_written=wr, gemms=[g])

    def reference(self, dense, sparse, **_):
        feats = torch.cat([dense.unsqueeze(1), sparse], dim=1)
        gram = torch.bmm(feats, feats.transpose(1, 2))
        li, lj = torch.tril_indices(feats.shape[1], feats.shape[1], offset=-1)
        return torch.cat([dense, gram[:, li, lj]], dim=1)
