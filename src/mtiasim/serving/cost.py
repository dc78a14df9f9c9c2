"""Step-time model of one tensor-parallel LLM replica, built from the engines (the ``gpu`` engine
with the deployment's software stack for GPUs, ``analytical`` for every other chip).

A serving step runs every layer once over all tokens scheduled in it (prefill chunks and one
token per decoding sequence). Its time splits into parts that depend on different things:
- dense work per layer (norms, projections, FFN/MoE, residuals): depends on the step's token
  count only. Measured from the captured zoo model of one tensor-parallel shard: the 2-layer
  graph minus the 1-layer graph, non-attention kernels, on a grid of token counts;
- the part outside the layers (embedding, final norm, LM head): 1-layer graph minus one layer;
- decode attention per layer: one paged-attention kernel over all cached tokens of the decoding
  sequences (its flops and bytes are those of a single query over the summed context);
- prefill attention per layer and chunk: a causal attention kernel, by query-key pairs;
- tensor parallelism: two all-reduces per layer of the step's activations (Megatron-LM);
- pipeline parallelism: a step crosses pp-1 stage boundaries (point-to-point sends); each chip
  holds 1/pp of the layers' weights and KV cache. The serving loop keeps pp micro-batches in flight
  per replica (see ``serving/llm.py``);
- expert parallelism: see ``LLMStepCost.step_s``.
Grids are evaluated once (captures are cached on disk) and interpolated, so a step costs
microseconds and a 10,000-request serving run takes seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from mtiasim.api import run_program, workload_graph
from mtiasim.calibration import for_chip
from mtiasim.chips import ChipSpec
from mtiasim.compiler import CompileOptions, compile
from mtiasim.compiler.quantize import activation_dtype
from mtiasim.engines.result import Result
from mtiasim.frontend import zoo
from mtiasim.graph import Graph, Node, TensorSpec
from mtiasim.graph.dtypes import nbytes
from mtiasim.system.collectives import allreduce_s, alltoall_s, p2p_s

TOKEN_GRID = [2**i for i in range(0, 15)]  # 1 .. 16384 tokens per step
CONTEXT_GRID = [2**i for i in range(4, 24)]  # 16 .. 8M cached tokens per decode step


@dataclass(frozen=True)
class StepShape:
    """What one step runs: prefill chunks as (new tokens, tokens before them), the KV tokens the
    decoding sequences read from memory (``decode_contexts_sum``, over ``decode_count`` sequences)
    and ``decode_repeat_tokens``: KV tokens read again in the step by other beams of the same
    request (beam search reads the shared prompt blocks once per beam, at the same time, so the
    repeats hit the on-chip cache)."""

    prefill: tuple[tuple[int, int], ...]
    decode_contexts_sum: int
    decode_count: int
    decode_repeat_tokens: int = 0

    @property
    def tokens(self) -> int:
        return sum(q for q, _ in self.prefill) + self.decode_count


def engine_for(chip: ChipSpec, stack: str | None) -> tuple[str, dict]:
    """The engine that times a chip's kernels in serving: the ``gpu`` engine (with the deployment's
    software stack, e.g. ``tensorrt-llm`` or ``vllm``) for GPUs, the ``analytical`` one otherwise."""
    if chip.kind == "gpu":
        return "gpu", ({"stack": stack} if stack else {})
    return "analytical", {}


def check_expert_parallel(model: str, ep: int) -> None:
    """Raise ValueError unless ``model`` is an MoE whose experts split into ``ep`` groups of at
    least top_k experts each."""
    if ep == 1:
        return
    c = zoo.get(model).config()
    e, k = c.get("n_experts", 0), c.get("top_k", 0)
    if not e:
        raise ValueError(f"{model} has no experts: expert parallelism (ep={ep}) applies to MoE models only")
    if ep < 1 or e % ep or k > e // ep:
        raise ValueError(f"{model}: expert parallelism ep={ep} must split its {e} experts into equal groups of at "
                         f"least top_k={k} experts (valid: {[d for d in range(1, e + 1) if e % d == 0 and e // d >= k]})")


class LLMStepCost:
    def __init__(self, model: str, chip: ChipSpec, tp: int = 1, dtype: str | None = None,
                 kv_dtype: str | None = None, pp: int = 1, ep: int = 1, stack: str | None = None):
        entry = zoo.get(model)
        if entry.family != "llm":
            raise ValueError(f"{model} is not an LLM (family {entry.family})")
        self.model, self.chip, self.tp, self.pp, self.ep = model, chip, tp, pp, ep
        self.engine, self.engine_options = engine_for(chip, stack)
        self.cfg = entry.config()
        self.dtype = dtype or entry.default_dtype
        self.act_dtype = activation_dtype(self.dtype)
        self.kv_dtype = kv_dtype or self.act_dtype
        c = self.cfg
        if c["n_heads"] % tp or c["ffn"] % tp:
            raise ValueError(f"{model}: tensor parallelism {tp} does not divide {c['n_heads']} heads / ffn {c['ffn']}")
        self.heads = c["n_heads"] // tp
        self.kv_heads = max(1, c["n_kv_heads"] // tp)  # KV heads are replicated when tp > n_kv_heads
        self.shard = {"n_heads": self.heads, "n_kv_heads": self.kv_heads, "ffn": c["ffn"] // tp,
                      "head_dim": c["head_dim"], "vocab": math.ceil(c["vocab"] / tp)}
        self.layers = c["n_layers"]
        if pp < 1 or self.layers % pp:
            raise ValueError(f"{model}: pipeline parallelism {pp} does not divide {self.layers} layers")
        if ep > 1:
            check_expert_parallel(model, ep)
            self.shard["n_experts"] = c["n_experts"] // ep  # a chip's experts; its routed load is unchanged (step_s)

    # ---- memory ---------------------------------------------------------------------------
    @cached_property
    def weight_bytes_per_chip(self) -> float:
        """A chip holds 1/(tp*pp) of the weights, and of the experts only its 1/ep share."""
        c = self.cfg
        experts = self.layers * c.get("n_experts", 0) * 3 * c["hidden"] * c["ffn"]
        params = zoo.get(self.model).param_count() - experts + experts / self.ep
        return params * nbytes(self.dtype) / (self.tp * self.pp)

    @property
    def kv_bytes_per_token_per_chip(self) -> float:
        """Each pipeline stage keeps the KV of its own layers; with expert parallelism a token's KV
        lives on the one chip of the ep group that runs its attention (amortised over the group)."""
        return 2 * (self.layers // self.pp) * self.kv_heads * self.cfg["head_dim"] * nbytes(self.kv_dtype) / self.ep

    def activation_bytes_per_chip(self, tokens: int, seqs: int) -> float:
        """Bytes of intermediate tensors a chip holds while it runs a step of up to ``tokens``
        tokens for up to ``seqs`` sequences: the serving runtime sizes this workspace for its
        largest step at start-up, before the KV cache takes its share of what is left.

        One layer's worth: a runtime reuses the tensors of one layer for the next (TensorRT
        computes the engine's activation memory at build time from the largest step, and "only 1
        block's memory is needed", TensorRT-LLM docs/source/reference/memory.md; vLLM profiles a
        step of max_num_batched_tokens the same way before it sizes its cache). Per token, in the
        activation dtype: the residual stream, plus the larger of
        - attention: the normed input, the Q/K/V projections, the attention output and the
          output projection's result;
        - a dense MLP: the normed input, the up (and gate) projections, the activated
          intermediate and the down projection's result;
        - an MoE: the buffers TensorRT-LLM's CUTLASS MoE runner asks for
          (``CutlassMoeFCRunner::getWorkspaceSize`` in cpp/tensorrt_llm/kernels/mixtureOfExperts/
          moe_kernels.cu): top_k copies of the permuted input, the gated FC1 output (2 x ffn),
          the activated FC1 result, the FC2 result and the output (the router's logits, a few
          bytes per token, are left out).
        With tensor parallelism the heads and the FFN are split; with expert parallelism a chip
        runs 1/ep of the step's tokens. Plus the fp32 logits of each sequence's last token over
        the chip's share of the vocabulary.
        An estimate from the tensor shapes: kernels' own workspaces, allocator fragmentation and
        the CUDA context are not counted."""
        c, b = self.cfg, nbytes(self.act_dtype)
        n = math.ceil(tokens / self.ep)
        h, hd, f = c["hidden"], c["head_dim"], self.shard["ffn"]
        gated = c.get("act") == "swiglu"
        attention = h + (self.heads + 2 * self.kv_heads) * hd + self.heads * hd + h
        k, experts = c.get("top_k", 0), c.get("n_experts", 0)
        if experts:
            mlp = h + k * h + k * (2 if gated else 1) * f + k * f + k * h + h
        else:
            mlp = h + (2 if gated else 1) * f + f + h
        per_token = (h + max(attention, mlp)) * b
        logits = seqs * self.shard["vocab"] * 4.0
        return n * per_token + logits

    @property
    def runtime_memory_bytes_per_chip(self) -> float:
        """Device memory the serving runtime holds on each chip besides weights, KV cache and step
        workspace (its software stack's ``runtime_memory_bytes``, data/calibration/gpu.yaml; 0
        where the stack declares none or the chip is not timed by the gpu engine)."""
        if self.engine != "gpu":
            return 0.0
        from mtiasim.engines.gpu import gpu_calibration

        cal = gpu_calibration()
        name = self.engine_options.get("stack", cal.default_stack)
        if name not in cal.stacks:
            raise ValueError(f"unknown software stack '{name}'; calibrated: {', '.join(cal.stacks)}")
        mem = cal.stacks[name].runtime_memory_bytes
        return float(mem.value) if mem is not None else 0.0

    # ---- grids -----------------------------------------------------------------------------
    def _program(self, n_layers: int, tokens: int) -> Result:
        """A shard with ``n_layers`` layers run over ``tokens`` tokens (a prefill of that many)."""
        seq = min(tokens, 1024)  # dense work depends on the token count only; stay within context
        g, w = workload_graph(self.model, batch=tokens // seq, seq_len=seq, phase="prefill", n_layers=n_layers,
                              **self.shard)
        p = compile(g, self.chip, CompileOptions(dtype=self.dtype, kv_dtype=self.kv_dtype),
                    default_dtype=w.default_dtype)
        return run_program(p, self.engine, self.engine_options, model=w.name, phase="prefill", batch=w.batch,
                           seq_len=seq, kv_len=None, dtype=self.dtype, items=tokens, item_unit="token")

    def _program_times(self, n_layers: int, tokens: int) -> tuple[float, float]:
        """(non-attention time, attention time) of a shard with ``n_layers`` layers over ``tokens`` tokens."""
        r = self._program(n_layers, tokens)
        attn = sum(o.time_s for o in r.ops if o.op == "attention")
        return r.latency_s - attn, attn

    def busy_power_w(self, tokens: float) -> float | None:
        """A chip's power while it steps ``tokens`` tokens at a time: that of a two-layer shard run
        over them, the nearest whole number of 1,024-token rows above 1,024 (None: power unknown)."""
        n = max(1, round(tokens))
        return self._program(2, n if n <= 1024 else 1024 * round(n / 1024)).power_w

    @cached_property
    def _dense(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        one = [self._program_times(1, n)[0] for n in TOKEN_GRID]
        two = [self._program_times(2, n)[0] for n in TOKEN_GRID]
        layer = np.maximum(np.array(two) - np.array(one), 0.0)
        base = np.maximum(np.array(one) - layer, 0.0)
        # more tokens never cost less: remove the ~0.1% wiggles that SRAM placement of the 1- and
        # 2-layer graphs leaves in the differences
        return np.array(TOKEN_GRID, dtype=float), np.maximum.accumulate(layer), np.maximum.accumulate(base)

    def _attention_s(self, q: int, keys: int, causal: bool) -> float:
        hd = self.cfg["head_dim"]
        t = {"q": TensorSpec((1, self.heads, q, hd), self.act_dtype, "input"),
             "k": TensorSpec((1, self.kv_heads, keys, hd), self.kv_dtype, "input"),
             "v": TensorSpec((1, self.kv_heads, keys, hd), self.kv_dtype, "input"),
             "o": TensorSpec((1, self.heads, q, hd), self.act_dtype)}
        # k and v are the paged KV cache: declared as such, the compiler stores them in kv_dtype
        # (an FP8 cache halves the bytes a decode step's attention reads)
        g = Graph("attention", t, [Node("attn", "attention", ["q", "k", "v"], ["o"], {"causal": causal})],
                  ["q", "k", "v"], ["o"], meta={"kv_cache_inputs": ["k", "v"]})
        p = compile(g, self.chip, CompileOptions(dtype=self.dtype, kv_dtype=self.kv_dtype))
        return run_program(p, self.engine, self.engine_options, model="attention", phase="step", batch=1,
                           seq_len=q, kv_len=keys,
                           dtype=self.dtype, items=q, item_unit="token").latency_s

    @cached_property
    def _decode_attention(self) -> tuple[np.ndarray, np.ndarray]:
        y = np.array([self._attention_s(1, c, False) for c in CONTEXT_GRID])
        return np.array(CONTEXT_GRID, float), np.maximum.accumulate(y)

    @cached_property
    def _prefill_attention(self) -> tuple[np.ndarray, np.ndarray]:
        pairs = np.array([n * (n + 1) / 2 for n in TOKEN_GRID], float)
        return pairs, np.maximum.accumulate(np.array([self._attention_s(n, n, True) for n in TOKEN_GRID]))

    @cached_property
    def _repeat_read_s_per_token(self) -> float:
        """Seconds per layer to read one cached token's K and V again while it is still on chip (the
        other beams' reads of a prompt block the first beam has just fetched): at the on-chip cache's
        bandwidth (a GPU's L2, MTIA's SRAM), or at DRAM's where the chip has none."""
        cal = for_chip(self.chip)
        per_token = 2 * self.kv_heads * self.cfg["head_dim"] * nbytes(self.kv_dtype)
        sram_bw = self.chip.sram.bandwidth_bytes_per_s.value if self.chip.sram is not None else None
        if sram_bw:
            return per_token / (sram_bw * cal.sram_efficiency)
        return per_token / (self.chip.dram.bandwidth_bytes_per_s.value * cal.dram_efficiency)

    # ---- step ------------------------------------------------------------------------------
    def dense_s(self, tokens: int) -> tuple[float, float]:
        """(per-layer dense time, outside-layers time) for ``tokens`` tokens in a step."""
        x, layer, base = self._dense
        return float(_interp(tokens, x, layer)), float(_interp(tokens, x, base))

    def step_s(self, step: StepShape) -> float:
        """Time of one step. With expert parallelism the step's sequences are spread evenly over the
        ep chips (data-parallel attention, as DeepSeek-V3 and vLLM's DP+EP serve MoEs); each chip
        holds E/ep experts and, with uniform routing, receives as many token-expert slots as its own
        tokens produce, so its MoE work is that of a graph with E/ep experts over its own tokens.
        Each MoE layer adds two all-to-alls (dispatch, combine) of the routed token activations."""
        n = math.ceil(step.tokens / self.ep)
        if n == 0:
            return 0.0
        layer, base = self.dense_s(n)
        attn = 0.0
        if step.decode_count:
            x, y = self._decode_attention
            attn += float(_interp(step.decode_contexts_sum / self.ep, x, y))
            attn += step.decode_repeat_tokens / self.ep * self._repeat_read_s_per_token
        if step.prefill:
            x, y = self._prefill_attention
            for q, before in step.prefill:
                pairs = q * before + q * (q + 1) / 2
                attn += float(_interp(pairs, x, y)) / self.ep
        act_bytes = n * self.cfg["hidden"] * nbytes(self.act_dtype)
        comm = 2 * allreduce_s(self.chip, act_bytes, self.tp)
        if self.ep > 1:
            comm += 2 * alltoall_s(self.chip, act_bytes * self.cfg["top_k"], self.ep)
        # a token's step crosses pp-1 stage boundaries (point-to-point sends of its activations)
        hops = (self.pp - 1) * p2p_s(self.chip, act_bytes)
        return base + self.layers * (layer + attn + comm) + hops


def _interp(v: float, x: np.ndarray, y: np.ndarray) -> float:
    """Piecewise-linear interpolation; linear extrapolation past the last point (costs grow)."""
    if v <= x[-1]:
        return float(np.interp(v, x, y))
    slope = (y[-1] - y[-2]) / (x[-1] - x[-2])
    return float(y[-1] + slope * (v - x[-1]))
