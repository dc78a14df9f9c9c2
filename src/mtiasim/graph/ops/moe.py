"""Mixture-of-experts ops (Mixtral): routing, then the expert FFN as the kernels GPUs run it.

Production MoE layers are not one kernel. vLLM's ``fused_moe`` runs a grouped GEMM over every
(token, expert) slot that writes gate and up projections side by side (``intermediate_cache1``,
2F wide), a separate ``silu_and_mul`` kernel (F wide), a second grouped GEMM back to D and a sum
of each token's k results; TensorRT-LLM's MoE plugin does the same on Hopper (its gated
activation is fused into the grouped GEMM only on Ampere, ``use_ampere_activation_fusion``;
otherwise ``doGatedActivation`` runs after it, cpp/tensorrt_llm/kernels/mixtureOfExperts). The
capture (``frontend/capture.py``) therefore expands ``mtiasim::moe_ffn`` into five IR nodes:

    moe_router(x, router)             -> gates [T, k], ids [T, k]
    moe_expert_up(x, ids, w1, w3)     -> h2 [T*k, 2F]  [x W1_e^T | x W3_e^T], row t*k + j
    silu_and_mul(h2)                  -> h [T*k, F]    silu(gate) * up
    moe_expert_down(h, ids, w2)       -> y [T*k, D]    h W2_e^T
    moe_combine(y, gates)             -> out [T, D]    sum_j gates[t, j] * y[t*k + j]

so ``h2``, ``h`` and ``y`` are tensors the compiler places (on-chip memory when they fit, DRAM
otherwise), as the real intermediates are; the dense SwiGLU MLP is captured the same way (one
GEMM writes gate and up, then silu and mul, a kernel of their own). Rows are token-major (slot
``t*k + j``); the order a kernel sorts them into by expert changes neither the numerics nor the
traffic.

Routing is assumed balanced: each expert that receives tokens gets T*k/hit of them, where ``hit``
is the expected number of experts with at least one token; only those experts' weights are read.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mtiasim.graph.ir import TensorSpec
from mtiasim.graph.ops.base import GemmShape, OpDef, Work, register_op, stream_work


def expected_experts_hit(tokens: int, experts: int, top_k: int) -> float:
    """Expected number of distinct experts receiving at least one token when each of ``tokens``
    tokens picks ``top_k`` distinct experts uniformly: E * (1 - (1 - k/E)^T)."""
    if tokens <= 0:
        return 0.0
    return experts * (1.0 - (1.0 - top_k / experts) ** tokens)


def _groups(tokens: int, experts: int, top_k: int) -> tuple[int, int, float]:
    """(experts hit, rows per hit expert, fraction of the experts' weights read)."""
    hit = expected_experts_hit(tokens, experts, top_k)
    return max(1, round(hit)), max(1, math.ceil(tokens * top_k / max(hit, 1e-9))), hit / experts


@register_op
class MoERouter(OpDef):
    """Router GEMM [T, D] x [E, D]^T then top-k and a softmax over the k winners (Mixtral).
    Outputs gates [T, k] (fp32) and expert ids [T, k] (int64)."""

    name = "moe_router"
    engine = "matrix"

    def infer(self, inputs, attrs):
        x, router = inputs
        k = int(attrs["top_k"])
        if router.shape[1] != x.shape[-1] or k > router.shape[0]:
            raise self.fail(f"router {router.shape} does not fit x {x.shape} with top_k={k}")
        return [TensorSpec((x.shape[0], k), "fp32"), TensorSpec((x.shape[0], k), "int64")]

    def work(self, inputs, outputs, attrs):
        x, router = inputs
        t, d, e = x.shape[0], x.shape[1], router.shape[0]
        g = GemmShape(1, t, e, d)
        k = int(attrs["top_k"])
        # top-k by k passes over E logits, then a k-wide softmax (~5 ops per element)
        return Work(matrix_flops=g.flops, vector_flops=t * e * k + 5.0 * t * k,
                    bytes_read={f"in{i}": s.nbytes for i, s in enumerate(inputs)},
                    bytes_written={f"out{i}": s.nbytes for i, s in enumerate(outputs)}, gemms=[g])

    def reference(self, x, router, top_k, **_):
        vals, idx = torch.topk(F.linear(x, router), top_k, dim=-1)
        return torch.softmax(vals.float(), dim=-1), idx


@register_op
class MoEExpertUp(OpDef):
    """Grouped gate and up projections: x [T, D], ids [T, k], w1/w3 [E, F, D] -> h2 [T*k, 2F],
    columns [0, F) = x W1_e^T (gate), [F, 2F) = x W3_e^T (up). Each slot reads its token's row of
    x (k reads per token); 4*T*k*D*F flops."""

    name = "moe_expert_up"
    engine = "matrix"
    grouped_gemm = True

    def infer(self, inputs, attrs):
        x, ids, w1, w3 = inputs
        if w1.shape != w3.shape or w1.shape[2] != x.shape[1] or ids.shape[0] != x.shape[0]:
            raise self.fail(f"expert weights {w1.shape}/{w3.shape} or ids {ids.shape} do not fit x {x.shape}")
        return [TensorSpec((x.shape[0] * ids.shape[1], 2 * w1.shape[1]), x.dtype)]

    def work(self, inputs, outputs, attrs):
        x, ids, w1, w3 = inputs
        t, d = x.shape
        e, f = w1.shape[0], w1.shape[1]
        k = ids.shape[1]
        groups, m, frac = _groups(t, e, k)
        return Work(matrix_flops=4.0 * t * k * d * f,
                    bytes_read={"in0": x.nbytes * k, "in1": ids.nbytes, "in2": w1.nbytes * frac,
                                "in3": w3.nbytes * frac},
                    bytes_written={"out0": outputs[0].nbytes},
                    gemms=[GemmShape(groups, m, 2 * f, d)])

    def reference(self, x, ids, w1, w3, **_):
        tok = torch.arange(x.shape[0]).repeat_interleave(ids.shape[1])
        exp = ids.reshape(-1)
        h = torch.empty((tok.numel(), 2 * w1.shape[1]), dtype=x.dtype)
        for e in exp.unique().tolist():
            rows = torch.nonzero(exp == e).squeeze(1)
            xe = x[tok[rows]]
            h[rows] = torch.cat([F.linear(xe, w1[e]), F.linear(xe, w3[e])], dim=1)
        return h


@register_op
class SiluAndMul(OpDef):
    """Gated activation of a gate|up tensor: h2 [..., 2F] -> silu(h2[..., :F]) * h2[..., F:]
    (vLLM's ``silu_and_mul``, TensorRT-LLM's ``doGatedActivation``). A kernel of its own: it
    reads 2F and writes F per row; 6 ops per output element (SiLU 5, multiply 1)."""

    name = "silu_and_mul"
    engine = "vector"

    def infer(self, inputs, attrs):
        (h2,) = inputs
        if not h2.shape or h2.shape[-1] % 2:
            raise self.fail(f"input {h2.shape} must have an even last dimension (gate | up)")
        return [TensorSpec((*h2.shape[:-1], h2.shape[-1] // 2), h2.dtype)]

    def work(self, inputs, outputs, attrs):
        return stream_work(inputs, outputs, vector_flops=6.0 * outputs[0].numel)

    def reference(self, h2, **_):
        gate, up = h2.chunk(2, dim=-1)
        return F.silu(gate) * up


@register_op
class MoEExpertDown(OpDef):
    """Grouped down-projection: h [T*k, F], ids [T, k], w2 [E, D, F] -> y [T*k, D]; 2*T*k*D*F flops."""

    name = "moe_expert_down"
    engine = "matrix"
    grouped_gemm = True

    def infer(self, inputs, attrs):
        h, ids, w2 = inputs
        if h.shape != (ids.shape[0] * ids.shape[1], w2.shape[2]):
            raise self.fail(f"activations {h.shape} do not fit ids {ids.shape} and expert weights {w2.shape}")
        return [TensorSpec((h.shape[0], w2.shape[1]), h.dtype)]

    def work(self, inputs, outputs, attrs):
        h, ids, w2 = inputs
        t, k = ids.shape
        e, d, f = w2.shape
        groups, m, frac = _groups(t, e, k)
        return Work(matrix_flops=2.0 * t * k * d * f,
                    bytes_read={"in0": h.nbytes, "in1": ids.nbytes, "in2": w2.nbytes * frac},
                    bytes_written={"out0": outputs[0].nbytes}, gemms=[GemmShape(groups, m, d, f)])

    def reference(self, h, ids, w2, **_):
        exp = ids.reshape(-1)
        y = torch.empty((h.shape[0], w2.shape[1]), dtype=h.dtype)
        for e in exp.unique().tolist():
            rows = torch.nonzero(exp == e).squeeze(1)
            y[rows] = F.linear(h[rows], w2[e])
        return y


@register_op
class MoECombine(OpDef):
    """Weighted sum of each token's k expert outputs: y [T*k, D], gates [T, k] -> out [T, D]."""

    name = "moe_combine"
    engine = "vector"

    def infer(self, inputs, attrs):
        y, gates = inputs
        if y.shape[0] != gates.shape[0] * gates.shape[1]:
            raise self.fail(f"expert outputs {y.shape} do not fit gates {gates.shape}")
        return [TensorSpec((gates.shape[0], y.shape[1]), y.dtype)]

    def work(self, inputs, outputs, attrs):
        y, gates = inputs
        return Work(vector_flops=2.0 * y.shape[0] * y.shape[1],
                    bytes_read={"in0": y.nbytes, "in1": gates.nbytes},
                    bytes_written={"out0": outputs[0].nbytes})

    def reference(self, y, gates, **_):
        t, k = gates.shape
        w = gates.to(y.dtype).reshape(t, k, 1)
        return (y.reshape(t, k, -1) * w).sum(dim=1)
