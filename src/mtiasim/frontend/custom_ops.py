"""Fused PyTorch operators that production stacks ship as single kernels.

Recommendation and MoE models are not run op-by-op in production: FBGEMM's table-batched
embedding (TBE), TorchRec's DCNv2 cross layer and vLLM's ``fused_moe`` are single kernels. We
register them as ``torch.library`` custom ops with a reference implementation (used for numerics)
and a fake implementation (used by ``torch.export`` on meta tensors), so a captured graph shows
them as one node each and the op registry can charge them as one kernel.

All are usable from any ``nn.Module``: ``torch.ops.mtiasim.tbe(...)`` etc.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mtiasim.graph.ops import get_op
from mtiasim.graph.ops.attention import attention_grads


@torch.library.custom_op("mtiasim::tbe", mutates_args=())
def tbe(indices: Tensor, weights: Tensor, pooling_factors: list[int], rows: list[int]) -> Tensor:
    """Table-batched embedding bag, sum pooling, fixed pooling factor per table.

    ``weights`` is all tables stacked row-wise ([sum(rows), D]); ``indices`` is
    [B, sum(pooling_factors)], table ``t``'s ``pooling_factors[t]`` columns index into that table's
    rows. Returns [B, T, D] (the dense T x B x D layout of ISCA'25 section 5.4, batch-major).
    """
    outs = []
    col, row0 = 0, 0
    for pf, nrows in zip(pooling_factors, rows):
        idx = indices[:, col : col + pf] + row0
        outs.append(weights[idx].sum(dim=1))
        col += pf
        row0 += nrows
    return torch.stack(outs, dim=1)


@tbe.register_fake
def _tbe_fake(indices: Tensor, weights: Tensor, pooling_factors: list[int], rows: list[int]) -> Tensor:
    torch._check(indices.shape[1] == sum(pooling_factors))
    return weights.new_empty((indices.shape[0], len(pooling_factors), weights.shape[1]))


@torch.library.custom_op("mtiasim::dcn_cross", mutates_args=())
def dcn_cross(x0: Tensor, xl: Tensor, u: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """One low-rank DCNv2 cross layer: ``x0 * (V(U(xl)) + b) + xl``.

    ``u``: [r, D] (down-projection), ``v``: [D, r] (up-projection), ``bias``: [D]
    (TorchRec ``LowRankCrossNet``; Wang et al., "DCN V2", WWW'21, eq. 1 with W = V U).
    """
    return x0 * (F.linear(F.linear(xl, u), v, bias)) + xl


@dcn_cross.register_fake
def _dcn_fake(x0: Tensor, xl: Tensor, u: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    return torch.empty_like(xl)


@torch.library.custom_op("mtiasim::dot_interaction", mutates_args=())
def dot_interaction(dense: Tensor, sparse: Tensor) -> Tensor:
    """DLRM pairwise dot-product feature interaction (Naumov et al., arXiv 1906.00091).

    ``dense``: [B, D], ``sparse``: [B, T, D]. Returns [B, D + F(F-1)/2] with F = T + 1: the dense
    vector followed by the strictly-lower triangle of the F x F Gram matrix.
    """
    feats = torch.cat([dense.unsqueeze(1), sparse], dim=1)
    gram = torch.bmm(feats, feats.transpose(1, 2))
    n = feats.shape[1]
    li, lj = torch.tril_indices(n, n, offset=-1, device=feats.device)
    return torch.cat([dense, gram[:, li, lj]], dim=1)


@dot_interaction.register_fake
def _dot_fake(dense: Tensor, sparse: Tensor) -> Tensor:
    n = sparse.shape[1] + 1
    return dense.new_empty((dense.shape[0], dense.shape[1] + n * (n - 1) // 2))


@torch.library.custom_op("mtiasim::moe_ffn", mutates_args=())
def moe_ffn(x: Tensor, router: Tensor, w1: Tensor, w3: Tensor, w2: Tensor, top_k: int) -> Tensor:
    """Mixture-of-experts SwiGLU FFN with top-k softmax routing (Mixtral, arXiv 2401.04088).

    ``x``: [T, D]; ``router``: [E, D]; ``w1``/``w3``: [E, F, D]; ``w2``: [E, D, F].
    Each token goes to its ``top_k`` highest-scoring experts, weighted by the softmax over those
    ``top_k`` logits (Mixtral's formulation).
    """
    logits = F.linear(x, router)
    vals, idx = torch.topk(logits, top_k, dim=-1)
    gates = torch.softmax(vals, dim=-1)
    out = torch.zeros_like(x)
    for e in range(router.shape[0]):
        tok, slot = torch.nonzero(idx == e, as_tuple=True)
        if tok.numel() == 0:
            continue
        h = x[tok]
        y = F.linear(F.silu(F.linear(h, w1[e])) * F.linear(h, w3[e]), w2[e])
        out.index_add_(0, tok, y * gates[tok, slot].unsqueeze(-1))
    return out


@moe_ffn.register_fake
def _moe_fake(x: Tensor, router: Tensor, w1: Tensor, w3: Tensor, w2: Tensor, top_k: int) -> Tensor:
    return torch.empty_like(x)


# ---- attention for training graphs ----------------------------------------------------------
# In a joint forward/backward export PyTorch decomposes scaled_dot_product_attention into its math
# (the S x L score matrix, softmax and their gradients, all materialised). Training stacks run
# fused FlashAttention forward and backward kernels instead (Dao, "FlashAttention-2", ICLR'24,
# Algorithms 1 and 2), which save only the output and the row log-sum-exp. Training capture
# (``training/capture.py``) routes SDPA to these two ops so the joint graph shows those kernels.
@torch.library.custom_op("mtiasim::attention", mutates_args=())
def attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False,
              scale: float | None = None, enable_gqa: bool = False) -> Tensor:
    """``F.scaled_dot_product_attention`` as one opaque op (its backward is :func:`attention_backward`);
    its arguments keep SDPA's names, which the capture rewrites address."""
    return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
                                          enable_gqa=enable_gqa)


@attention.register_fake
def _attention_fake(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    return query.new_empty((*query.shape[:-1], value.shape[-1]))


@torch.library.custom_op("mtiasim::attention_backward", mutates_args=())
def attention_backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None,
                       is_causal: bool = False, scale: float | None = None,
                       enable_gqa: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`attention` with respect to q, k and v (``graph/ops/attention.py``)."""
    grads = attention_grads(grad_out, q, k, v, attn_mask, is_causal, scale)
    # laid out as the fake implementation says (like q, k, v): the traced graph's views rely on it
    return tuple(torch.empty_like(t).copy_(g) for t, g in zip((q, k, v), grads))


@attention_backward.register_fake
def _attention_backward_fake(grad_out, q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _attention_setup(ctx, inputs, output):
    q, k, v, attn_mask, is_causal, scale, enable_gqa = inputs
    ctx.save_for_backward(q, k, v, attn_mask)
    ctx.flags = (is_causal, scale, enable_gqa)


def _attention_grad(ctx, grad_out):
    q, k, v, attn_mask = ctx.saved_tensors
    dq, dk, dv = torch.ops.mtiasim.attention_backward(grad_out, q, k, v, attn_mask, *ctx.flags)
    return dq, dk, dv, None, None, None, None


attention.register_autograd(_attention_grad, setup_context=_attention_setup)


# ---- backward passes of the fused recommendation ops (training) --------------------------------
# The dense ops' gradients are written in aten ops, so a joint graph shows their GEMMs. The TBE's
# gradient is FBGEMM's fused backward: each looked-up row is updated in place by the optimizer
# (rowwise Adagrad in MLPerf DLRM-DCNv2), never materialised as a dense gradient of the table.
@torch.library.custom_op("mtiasim::tbe_backward", mutates_args=())
def tbe_backward(grad_out: Tensor, indices: Tensor, weights: Tensor, pooling_factors: list[int],
                 rows: list[int]) -> Tensor:
    """The gradient of :func:`tbe` with respect to ``weights`` (a dense scatter-add here; the
    simulator charges FBGEMM's fused sparse update, ``graph/ops/embedding.py``)."""
    return get_op("tbe_backward").reference(grad_out, indices, weights, pooling_factors, rows)


@tbe_backward.register_fake
def _tbe_backward_fake(grad_out, indices, weights, pooling_factors, rows):
    return torch.empty_like(weights)


def _tbe_setup(ctx, inputs, output):
    indices, weights, pooling_factors, rows = inputs
    ctx.save_for_backward(indices, weights)
    ctx.layout = (list(pooling_factors), list(rows))


def _tbe_grad(ctx, grad_out):
    indices, weights = ctx.saved_tensors
    return None, torch.ops.mtiasim.tbe_backward(grad_out, indices, weights, *ctx.layout), None, None


tbe.register_autograd(_tbe_grad, setup_context=_tbe_setup)


def _dcn_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _dcn_grad(ctx, grad):
    """out = x0 * (V (U xl) + b) + xl, with h = U xl and z = V h + b: dz = grad * x0,
    dx0 = grad * z, dxl = grad + U^T V^T dz, dU = (V^T dz) xl^T, dV = dz h^T, db = sum dz."""
    x0, xl, u, v, b = ctx.saved_tensors
    h = F.linear(xl, u)
    z = F.linear(h, v, b)
    dz = grad * x0
    dh = dz @ v
    def flat(t: Tensor) -> Tensor:  # leading dimensions as rows
        return t.reshape(-1, t.shape[-1])

    return (grad * z, grad + dh @ u, flat(dh).T @ flat(xl), flat(dz).T @ flat(h), flat(dz).sum(0))


dcn_cross.register_autograd(_dcn_grad, setup_context=_dcn_setup)


def _dot_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _dot_grad(ctx, grad):
    """out = [dense, tril(F F^T)] with F = [dense; sparse]: the pair gradients scattered into a
    lower-triangular G give dF = (G + G^T) F."""
    dense, sparse = ctx.saved_tensors
    feats = torch.cat([dense.unsqueeze(1), sparse], dim=1)
    n, d = feats.shape[1], dense.shape[1]
    li, lj = torch.tril_indices(n, n, offset=-1, device=feats.device)
    g = grad.new_zeros((grad.shape[0], n, n))
    g[:, li, lj] = grad[:, d:]
    dfeats = (g + g.transpose(1, 2)) @ feats
    return grad[:, :d] + dfeats[:, 0], dfeats[:, 1:]


dot_interaction.register_autograd(_dot_grad, setup_context=_dot_setup)
