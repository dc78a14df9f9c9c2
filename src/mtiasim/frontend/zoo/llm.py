"""Decoder-only transformer LLMs: Llama2 / Llama3.1, Mixtral (MoE) and GPT-J, one parameterised class.

Only ops the capture layer lowers are used: nn.Linear / nn.Embedding / nn.RMSNorm / nn.LayerNorm,
F.scaled_dot_product_attention, F.silu, F.gelu, cat, view/reshape/transpose/split/chunk, static
slicing, elementwise ops and ``torch.ops.mtiasim.moe_ffn``. QKV and gate/up projections are fused
into one Linear each (the GEMM shapes vLLM/TensorRT-LLM run; mlperf.md 1.2), which is numerically the
same model as the HF checkpoints with concatenated weights.

RoPE uses the rotate-half formulation on the first ``rotary_dim`` channels of each head with cos/sin
tables precomputed at construction (GPT-J's HF code rotates interleaved pairs instead; that is the
same op up to a fixed permutation of the q/k projection rows, so cost and shapes are identical).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import mtiasim.frontend.custom_ops  # noqa: F401  (registers torch.ops.mtiasim.*)

from . import Workload, ZooModel, register
from ._common import apply_overrides, cache_key, check_positive, uniform_param


@dataclass(frozen=True)
class LLMConfig:
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    ffn: int
    vocab: int
    head_dim: int | None = None  # None: hidden // n_heads
    norm: str = "rms"  # "rms" | "layer"
    norm_eps: float = 1e-5
    act: str = "swiglu"  # "swiglu" | "gelu" (tanh approximation, GPT-J's gelu_new)
    rope_theta: float = 10000.0
    rotary_dim: int | None = None  # None: head_dim
    rope_scaling: tuple | None = None  # Llama3.1: (factor, low_freq_factor, high_freq_factor, orig_ctx)
    max_positions: int = 4096  # context window; a workload needing more raises ValueError
    parallel_residual: bool = False  # GPT-J: x + attn(ln(x)) + mlp(ln(x))
    n_experts: int = 0  # >0: MoE FFN (torch.ops.mtiasim.moe_ffn)
    top_k: int = 0
    attn_bias: bool = False
    mlp_bias: bool = False
    lm_head_bias: bool = False
    tie_embeddings: bool = False

    @property
    def hd(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden // self.n_heads

    @property
    def rd(self) -> int:
        return self.rotary_dim if self.rotary_dim is not None else self.hd

    def validate(self, name: str) -> None:
        check_positive(n_layers=self.n_layers, hidden=self.hidden, n_heads=self.n_heads,
                       n_kv_heads=self.n_kv_heads, ffn=self.ffn, vocab=self.vocab)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"{name}: n_heads ({self.n_heads}) must be a multiple of n_kv_heads")
        if self.hd < 1 or (self.head_dim is None and self.hidden % self.n_heads):
            raise ValueError(f"{name}: hidden ({self.hidden}) not divisible by n_heads; set head_dim")
        if self.rd % 2 or not 0 < self.rd <= self.hd:
            raise ValueError(f"{name}: rotary_dim ({self.rd}) must be even and <= head_dim ({self.hd})")
        if self.norm not in ("rms", "layer") or self.act not in ("swiglu", "gelu"):
            raise ValueError(f"{name}: norm must be rms|layer and act swiglu|gelu")
        if self.n_experts and (self.act != "swiglu" or not 0 < self.top_k <= self.n_experts):
            raise ValueError(f"{name}: MoE needs act=swiglu and 0 < top_k <= n_experts")

    def resolved(self) -> dict:
        d = dataclasses.asdict(self)
        d["head_dim"], d["rotary_dim"] = self.hd, self.rd
        return d


def rope_tables(cfg: LLMConfig, n_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [n_pos, rotary_dim] (rotate-half layout: frequencies repeated twice), on CPU."""
    rd = cfg.rd
    inv = 1.0 / cfg.rope_theta ** (torch.arange(0, rd, 2, dtype=torch.float64) / rd)
    if cfg.rope_scaling is not None:  # Llama3.1 "llama3" rope scaling (HF modeling_rope_utils)
        factor, low, high, orig = cfg.rope_scaling
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > orig / low, inv / factor, inv)
        smooth = (orig / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= orig / high) & (wavelen <= orig / low)
        inv = torch.where(medium, smoothed, scaled)
    ang = torch.outer(torch.arange(n_pos, dtype=torch.float64), inv)
    ang = torch.cat([ang, ang], dim=-1)
    dt = torch.get_default_dtype()
    return ang.cos().to(dt), ang.sin().to(dt)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rd: int) -> torch.Tensor:
    """x: [B, H, S, hd]; cos/sin: [S, rd]. Rotate-half RoPE on the first rd channels."""
    hd = x.shape[-1]
    xr = x[..., :rd] if rd < hd else x
    half = rd // 2
    rot = torch.cat([-xr[..., half:], xr[..., :half]], dim=-1)
    out = xr * cos + rot * sin
    return torch.cat([out, x[..., rd:]], dim=-1) if rd < hd else out


def _norm(cfg: LLMConfig) -> nn.Module:
    if cfg.norm == "rms":
        return nn.RMSNorm(cfg.hidden, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.hidden, eps=cfg.norm_eps)


class Attention(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.h, self.kv, self.hd, self.rd = cfg.n_heads, cfg.n_kv_heads, cfg.hd, cfg.rd
        self.qkv_proj = nn.Linear(cfg.hidden, (self.h + 2 * self.kv) * self.hd, bias=cfg.attn_bias)
        self.o_proj = nn.Linear(self.h * self.hd, cfg.hidden, bias=cfg.attn_bias)

    def forward(self, x, cos, sin, past_k=None, past_v=None):
        b, s, _ = x.shape
        q, k, v = self.qkv_proj(x).split([self.h * self.hd, self.kv * self.hd, self.kv * self.hd], -1)
        q = q.view(b, s, self.h, self.hd).transpose(1, 2)
        k = k.view(b, s, self.kv, self.hd).transpose(1, 2)
        v = v.view(b, s, self.kv, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin, self.rd), apply_rope(k, cos, sin, self.rd)
        k_new, v_new = k, v
        if past_k is not None:
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
        o = F.scaled_dot_product_attention(
            q, k, v, is_causal=past_k is None, enable_gqa=self.kv < self.h
        )
        return self.o_proj(o.transpose(1, 2).reshape(b, s, self.h * self.hd)), k_new, v_new


class MLP(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.act = cfg.act
        if cfg.act == "swiglu":
            self.gate_up_proj = nn.Linear(cfg.hidden, 2 * cfg.ffn, bias=cfg.mlp_bias)
            self.down_proj = nn.Linear(cfg.ffn, cfg.hidden, bias=cfg.mlp_bias)
        else:
            self.fc_in = nn.Linear(cfg.hidden, cfg.ffn, bias=cfg.mlp_bias)
            self.fc_out = nn.Linear(cfg.ffn, cfg.hidden, bias=cfg.mlp_bias)

    def forward(self, x):
        if self.act == "swiglu":
            g, u = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(F.silu(g) * u)
        return self.fc_out(F.gelu(self.fc_in(x), approximate="tanh"))


class MoE(nn.Module):
    """Mixtral sparse MoE block: one ``torch.ops.mtiasim.moe_ffn`` over the flattened tokens."""

    def __init__(self, cfg: LLMConfig):
        super().__init__()
        e, d, f = cfg.n_experts, cfg.hidden, cfg.ffn
        self.top_k = cfg.top_k
        self.router = nn.Linear(d, e, bias=False)
        self.w1, self.w3 = uniform_param((e, f, d), d), uniform_param((e, f, d), d)
        self.w2 = uniform_param((e, d, f), f)

    def forward(self, x):
        b, s, d = x.shape
        y = torch.ops.mtiasim.moe_ffn(
            x.reshape(b * s, d), self.router.weight, self.w1, self.w3, self.w2, self.top_k
        )
        return y.view(b, s, d)


class Block(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.parallel = cfg.parallel_residual
        self.attn_norm = _norm(cfg)
        self.mlp_norm = None if self.parallel else _norm(cfg)
        self.attn = Attention(cfg)
        self.mlp = MoE(cfg) if cfg.n_experts else MLP(cfg)

    def forward(self, x, cos, sin, past_k=None, past_v=None):
        h = self.attn_norm(x)
        a, k, v = self.attn(h, cos, sin, past_k, past_v)
        if self.parallel:
            return x + a + self.mlp(h), k, v
        x = x + a
        return x + self.mlp(self.mlp_norm(x)), k, v


class DecoderLM(nn.Module):
    """Decoder-only LM for one phase. Prefill: forward(input_ids[B,S]) -> logits[B,1,V] of the last
    position. Decode: forward(input_ids[B,1], kv_cache[L,2,B,KV,kv_len,hd]) -> logits[B,1,V]."""

    def __init__(self, cfg: LLMConfig, phase: str, pos0: int, n_pos: int):
        super().__init__()
        self.cfg, self.phase, self.pos0, self.n_pos = cfg, phase, pos0, n_pos
        self.embed = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = _norm(cfg)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=cfg.lm_head_bias)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(cfg, pos0 + n_pos)
        dev = self.embed.weight.device
        self.register_buffer("rope_cos", cos.to(dev), persistent=False)
        self.register_buffer("rope_sin", sin.to(dev), persistent=False)

    def _run(self, input_ids, kv_cache, collect: bool, last_only: bool = True):
        if (kv_cache is None) != (self.phase == "prefill"):
            need = "absent" if self.phase == "prefill" else "given"
            raise ValueError(f"{self.phase} module: kv_cache must be {need}")
        s = input_ids.shape[1]
        cos = self.rope_cos[self.pos0 : self.pos0 + s]
        sin = self.rope_sin[self.pos0 : self.pos0 + s]
        x = self.embed(input_ids)
        cache = []
        for i, layer in enumerate(self.layers):
            pk = kv_cache[i, 0] if kv_cache is not None else None
            pv = kv_cache[i, 1] if kv_cache is not None else None
            x, k, v = layer(x, cos, sin, pk, pv)
            if collect:
                cache.append(torch.stack([k, v]))
        logits = self.lm_head(self.norm(x[:, -1:, :] if last_only else x))
        return logits, (torch.stack(cache) if collect else None)

    def forward(self, input_ids, kv_cache=None):
        return self._run(input_ids, kv_cache, collect=False)[0]

    @torch.no_grad()
    def prefill_with_cache(self, input_ids):
        """Prefill that also returns the KV cache [n_layers, 2, B, n_kv_heads, S, head_dim] (post-RoPE),
        laid out as a decode module built with ``kv_len=S`` expects. Not used by capture."""
        return self._run(input_ids, None, collect=True)


class CausalLMLoss(nn.Module):
    """A prefill-phase :class:`DecoderLM` trained as a language model: forward(input_ids[B,S],
    labels[B,S]) -> the mean next-token cross-entropy over every position, on fp32 logits."""

    def __init__(self, lm: DecoderLM):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, labels):
        logits = self.lm._run(input_ids, None, collect=False, last_only=False)[0]
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


def llm_param_count(cfg: LLMConfig) -> int:
    d, hd, f, e = cfg.hidden, cfg.hd, cfg.ffn, cfg.n_experts
    norm = d if cfg.norm == "rms" else 2 * d
    q, kv = cfg.n_heads * hd, cfg.n_kv_heads * hd
    attn = d * (q + 2 * kv) + q * d + (q + 2 * kv + d if cfg.attn_bias else 0)
    if e:
        ffn = e * 3 * d * f + e * d  # experts + router
    elif cfg.act == "swiglu":
        ffn = 3 * d * f + (2 * f + d if cfg.mlp_bias else 0)
    else:
        ffn = 2 * d * f + (f + d if cfg.mlp_bias else 0)
    layer = attn + ffn + norm * (1 if cfg.parallel_residual else 2)
    head = 0 if cfg.tie_embeddings else cfg.vocab * d
    return cfg.n_layers * layer + cfg.vocab * d + norm + head + (cfg.vocab if cfg.lm_head_bias else 0)


class LLMModel(ZooModel):
    family = "llm"
    phases = ("prefill", "decode")
    default_batch = 1
    default_seq_len = 1024

    def __init__(self, name: str, cfg: LLMConfig, source: str, description: str, dtype: str = "bf16"):
        cfg.validate(name)
        self.name, self.cfg, self.source, self.description, self.default_dtype = (
            name, cfg, source, description, dtype)

    def config(self) -> dict:
        return self.cfg.resolved()

    def param_count(self, **overrides) -> int:
        return llm_param_count(apply_overrides(self.cfg, overrides, self.name))

    def build(self, batch=None, seq_len=None, phase=None, kv_len=None, device="meta", **overrides):
        cfg = apply_overrides(self.cfg, overrides, self.name)
        cfg.validate(self.name)
        batch = self.default_batch if batch is None else batch
        seq_len = self.default_seq_len if seq_len is None else seq_len
        phase = phase or "prefill"
        check_positive(batch=batch, seq_len=seq_len, kv_len=kv_len)
        if phase not in self.phases:
            raise ValueError(f"{self.name}: phase must be one of {self.phases}, got {phase!r}")
        if phase == "prefill":
            if kv_len is not None:
                raise ValueError(f"{self.name}: kv_len is only for phase='decode'")
            pos0, n_new = 0, seq_len
        else:
            kv_len = seq_len if kv_len is None else kv_len
            pos0, n_new, seq_len = kv_len, 1, 1
        if pos0 + n_new > cfg.max_positions:
            raise ValueError(
                f"{self.name}: {pos0 + n_new} positions exceed max_positions={cfg.max_positions}")
        with torch.device(device):
            module = DecoderLM(cfg, phase, pos0, n_new).eval()
        ids = torch.zeros((batch, n_new), dtype=torch.int64, device=device)
        if ids.device.type != "meta":
            ids = torch.randint(0, cfg.vocab, (batch, n_new), dtype=torch.int64).to(device)
        inputs: tuple = (ids,)
        if phase == "decode":
            shape = (cfg.n_layers, 2, batch, cfg.n_kv_heads, kv_len, cfg.hd)
            cache = torch.empty(shape, device=device)
            if cache.device.type != "meta":
                cache = torch.randn(shape).to(device)
            inputs = (ids, cache)
        conf = cfg.resolved()
        return Workload(
            name=self.name, module=module, example_inputs=inputs, phase=phase, batch=batch,
            seq_len=seq_len, kv_len=kv_len if phase == "decode" else None,
            items=batch * n_new, item_unit="token", default_dtype=self.default_dtype,
            cache_key=cache_key(self.name, phase, batch, seq_len, kv_len, conf),
        )


_L2 = {"vocab": 32000, "max_positions": 4096}
_L31 = {"vocab": 128256, "rope_theta": 500000.0, "rope_scaling": (8.0, 1.0, 4.0, 8192),
        "max_positions": 131072}
_MIXTRAL = LLMConfig(32, 4096, 32, 8, 14336, 32000, rope_theta=1e6, max_positions=32768,
                     n_experts=8, top_k=2)
_GPTJ = LLMConfig(28, 4096, 16, 16, 16384, 50400, norm="layer", act="gelu", rotary_dim=64,
                  max_positions=2048, parallel_residual=True, mlp_bias=True, lm_head_bias=True)

# name, config, HF repo, mlperf.md section, default dtype (fp8 for llama2-70b: MLPerf runs FP8)
for _name, _cfg, _repo, _sec, _dtype in [
    ("llama2-7b", LLMConfig(32, 4096, 32, 32, 11008, **_L2), "meta-llama/Llama-2-7b-hf", "1.2", "bf16"),
    ("llama2-13b", LLMConfig(40, 5120, 40, 40, 13824, **_L2), "meta-llama/Llama-2-13b-hf", "1.2", "bf16"),
    ("llama2-70b", LLMConfig(80, 8192, 64, 8, 28672, **_L2), "meta-llama/Llama-2-70b-hf", "1.2, 1.4",
     "fp8"),
    ("llama3.1-8b", LLMConfig(32, 4096, 32, 8, 14336, **_L31), "meta-llama/Llama-3.1-8B", "1.3", "bf16"),
    ("llama3.1-70b", LLMConfig(80, 8192, 64, 8, 28672, **_L31), "meta-llama/Llama-3.1-70B", "1.3", "bf16"),
    ("llama3.1-405b", LLMConfig(126, 16384, 128, 8, 53248, **_L31), "meta-llama/Llama-3.1-405B", "1.3",
     "bf16"),
    ("mixtral-8x7b", _MIXTRAL, "mistralai/Mixtral-8x7B-v0.1", "1.3, 1.4", "bf16"),
    ("gptj-6b", _GPTJ, "EleutherAI/gpt-j-6b", "1.3", "bf16"),
]:
    _ffn = f"ffn {_cfg.ffn}"
    if _cfg.n_experts:
        _ffn = f"MoE {_cfg.n_experts} experts top-{_cfg.top_k}, {_ffn}"
    register(LLMModel(
        _name, _cfg, f"HF config {_repo}; mlperf.md {_sec}",
        f"{_name}: decoder-only LM, {_cfg.n_layers} layers, hidden {_cfg.hidden}, {_cfg.n_heads} heads / "
        f"{_cfg.n_kv_heads} KV heads, head_dim {_cfg.hd}, {_ffn}, vocab {_cfg.vocab}. Prefill: LM head "
        "on the last position only; decode: one token against a [L,2,B,KV,kv_len,hd] KV cache.",
        _dtype,
    ))

# GPT-3 175B (Brown et al., "Language Models are Few-Shot Learners", NeurIPS 2020, Table 2.1: 96
# layers, d_model 12288, 96 heads of 128, FFN 4 x d_model, 2048-token context; the MLPerf
# Training gpt3 benchmark's model). Stand-in details: rotary positions instead of GPT-3's learned
# ones (the same cost to within the position table), the GPT-2 BPE vocabulary of 50257.
register(LLMModel(
    "gpt3-175b", LLMConfig(96, 12288, 96, 96, 49152, 50257, norm="layer", act="gelu", max_positions=2048,
                           attn_bias=True, mlp_bias=True),
    "Brown et al., NeurIPS 2020, Table 2.1 (GPT-3 175B); MLPerf Training gpt3",
    "gpt3-175b: decoder-only LM, 96 layers, hidden 12288, 96 heads, head_dim 128, ffn 49152, vocab 50257 "
    "(rotary positions stand in for GPT-3's learned ones).",
    "bf16",
))
