"""Attention (with GQA and a KV cache), softmax and rotary embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtiasim.graph.ir import TensorSpec
from mtiasim.graph.ops.base import GemmShape, OpDef, Work, register_op


def score_pairs(s: int, keys: int, causal: bool) -> int:
    """Query-key pairs an attention evaluates. Non-causal: S*L. Causal with the S queries at the
    end of the L keys (prefill, with or without earlier context): S*(L-S) + S*(S+1)/2."""
    if not causal:
        return s * keys
    return s * (keys - s) + s * (s + 1) // 2


@register_op
class Attention(OpDef):
    """Fused (flash-style) attention. q [B, H, S, hd], k [B, Hkv, L, hd], v [B, Hkv, L, hdv],
    H a multiple of Hkv (GQA). Attributes: ``causal``, ``scale``, ``kv_cache_len`` (the first
    L - S keys come from a KV cache; set by the compiler's KV-cache pass).

    Flops: 2*B*H*pairs*hd (QK^T) + 2*B*H*pairs*hdv (PV) on the matrix engine, ~5 per score on
    the vector engine (scale, max, exp, sum, normalise). Q, K, V are read once and O written once:
    K/V are shared by the H/Hkv query heads of a group."""

    name = "attention"
    engine = "matrix"

    def infer(self, inputs, attrs):
        q, k, v = inputs[:3]
        if len(q.shape) != 4 or len(k.shape) != 4 or len(v.shape) != 4:
            raise self.fail(f"expects 4-D [B, H, S, hd] q/k/v, got {q.shape}, {k.shape}, {v.shape}")
        if q.shape[1] % k.shape[1] or k.shape[2] != v.shape[2] or q.shape[3] != k.shape[3]:
            raise self.fail(f"q {q.shape}, k {k.shape}, v {v.shape} are not a valid (GQA) attention")
        return [TensorSpec((*q.shape[:3], v.shape[3]), q.dtype)]

    def work(self, inputs, outputs, attrs):
        q, k, v = inputs[:3]
        b, h, s, hd = q.shape
        keys, hdv = k.shape[2], v.shape[3]
        pairs = score_pairs(s, keys, bool(attrs.get("causal", False)))
        # GQA kernels (FlashDecoding, TRT-LLM XQA, FlashAttention-3) pack the H/Hkv query heads
        # that share a KV head into the M dimension of one tile: M = S x H/Hkv per (batch, KV head).
        # The kernel tiles the full problem and skips the blocks a causal mask removes, so the tile
        # shapes are the full ones and only the flops shrink (by pairs / (S*L)).
        hkv = k.shape[1]
        m = s * (h // hkv)
        gemms = [GemmShape(b * hkv, m, keys, hd), GemmShape(b * hkv, m, hdv, keys)]
        full = sum(g.flops for g in gemms)
        frac = pairs / (s * keys)
        return Work(matrix_flops=full * frac, vector_flops=5.0 * b * h * pairs,
                    bytes_read={f"in{i}": t.nbytes for i, t in enumerate(inputs)},
                    bytes_written={"out0": outputs[0].nbytes}, gemms=gemms)

    def reference(self, q, k, v, attn_mask=None, causal=False, scale=None, **_):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal, scale=scale,
                                              enable_gqa=q.shape[1] != k.shape[1])


@register_op
class AttentionBackward(OpDef):
    """FlashAttention-2's backward kernel (Dao, ICLR'24, Algorithm 2): inputs dO, q, k, v
    [, mask]; outputs dq, dk, dv (shaped as q, k, v).

    Per query-key block it recomputes S = QK^T and P, then dV += P^T dO, dP = dO V^T,
    dS = P * (dP - D), dQ += dS K, dK += dS^T Q: five GEMMs over the score pairs against the
    forward's two, hence the paper's "backward = 2.5x forward" flop count. ~4 vector flops per
    score (exp, subtract, multiply, scale). dO, q, k, v are read once; dq, dk, dv written once
    (dK/dV of a GQA group summed in the kernel)."""

    name = "attention_backward"
    engine = "matrix"

    def infer(self, inputs, attrs):
        _, q, k, v = inputs[:4]
        return [TensorSpec(q.shape, q.dtype), TensorSpec(k.shape, k.dtype), TensorSpec(v.shape, v.dtype)]

    def work(self, inputs, outputs, attrs):
        _, q, k, v = inputs[:4]
        b, h, s, hd = q.shape
        hkv, keys, hdv = k.shape[1], k.shape[2], v.shape[3]
        pairs = score_pairs(s, keys, bool(attrs.get("causal", False)))
        m = s * (h // hkv)  # the query heads of a GQA group packed into M, as in the forward
        n = b * hkv
        gemms = [GemmShape(n, m, keys, hd), GemmShape(n, m, keys, hdv),  # S = QK^T, dP = dO V^T
                 GemmShape(n, m, hd, keys),  # dQ = dS K
                 GemmShape(n, keys, hdv, m), GemmShape(n, keys, hd, m)]  # dV = P^T dO, dK = dS^T Q
        frac = pairs / (s * keys)
        return Work(matrix_flops=sum(g.flops for g in gemms) * frac, vector_flops=4.0 * b * h * pairs,
                    bytes_read={f"in{i}": t.nbytes for i, t in enumerate(inputs)},
                    bytes_written={f"out{i}": t.nbytes for i, t in enumerate(outputs)}, gemms=gemms)

    def reference(self, grad_out, q, k, v, attn_mask=None, causal=False, scale=None, **_):
        return list(attention_grads(grad_out, q, k, v, attn_mask, causal, scale))


def attention_grads(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    attn_mask: torch.Tensor | None = None, causal: bool = False, scale: float | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv of ``F.scaled_dot_product_attention`` (GQA when q has more heads than k), written
    out: P = softmax(scale q k^T + mask), dV = P^T dO, dS = P (dO V^T - rowsum(dO o O)),
    dQ = scale dS K, dK = scale dS^T Q, a GQA group's dK/dV summed over its query heads."""
    g = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    sc = scale if scale is not None else q.shape[-1] ** -0.5
    s = (q @ kk.transpose(-2, -1)) * sc
    if causal:
        allowed = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~allowed, float("-inf"))
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
    p = torch.softmax(s, dim=-1)
    out = p @ vv
    dv = p.transpose(-2, -1) @ grad_out
    dp = grad_out @ vv.transpose(-2, -1)
    ds = p * (dp - (grad_out * out).sum(-1, keepdim=True))
    dq = (ds @ kk) * sc
    dk = (ds.transpose(-2, -1) @ q) * sc

    def group_sum(t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(1, (k.shape[1], g)).sum(2)

    return dq, group_sum(dk), group_sum(dv)


@register_op
class Softmax(OpDef):
    """Softmax over ``dim``: max, subtract, exp, sum, divide: ~5 flops per element."""

    name = "softmax"

    def infer(self, inputs, attrs):
        return [TensorSpec(inputs[0].shape, inputs[0].dtype)]

    def work(self, inputs, outputs, attrs):
        w = super().work(inputs, outputs, attrs)
        w.vector_flops = 5.0 * inputs[0].numel
        return w

    def reference(self, x, dim=-1, **_):
        return torch.softmax(x, dim=dim)


@register_op
class LogSoftmax(Softmax):
    """log(softmax(x)) over ``dim``: x - max - log(sum(exp)): ~5 flops per element."""

    name = "log_softmax"

    def reference(self, x, dim=-1, **_):
        return torch.log_softmax(x, dim=dim)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


@register_op
class RoPE(OpDef):
    """Rotary position embedding (Su et al., RoFormer) on the first ``rotary_dim`` channels:
    x*cos + rotate_half(x)*sin. x [..., S, hd], cos/sin [S, rotary_dim]. 3 flops per rotated element.

    Captured models usually arrive as the pointwise ops RoPE decomposes into; the compiler fuses
    those into one kernel. This op exists for graphs built directly in the IR."""

    name = "rope"
    pointwise = True

    def infer(self, inputs, attrs):
        x, cos, sin = inputs
        if cos.shape != sin.shape or cos.shape[-1] > x.shape[-1]:
            raise self.fail(f"cos {cos.shape} / sin {sin.shape} do not fit x {x.shape}")
        return [TensorSpec(x.shape, x.dtype)]

    def work(self, inputs, outputs, attrs):
        w = super().work(inputs, outputs, attrs)
        x, cos = inputs[0], inputs[1]
        w.vector_flops = 3.0 * x.numel * cos.shape[-1] / x.shape[-1]
        return w

    def reference(self, x, cos, sin, **_):
        r = cos.shape[-1]
        xr, xp = x[..., :r], x[..., r:]
        return torch.cat([xr * cos + rotate_half(xr) * sin, xp], dim=-1)


