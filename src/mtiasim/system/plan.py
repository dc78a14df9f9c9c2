"""Parallelism plans: how a model is laid out over a system's chips."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

from mtiasim.calibration import CalValue
from mtiasim.chips import ChipSpec


@lru_cache(maxsize=1)
def serving_calibration() -> dict[str, CalValue]:
    raw = yaml.safe_load(resources.files("mtiasim").joinpath("data", "calibration", "serving.yaml").read_text())
    return {k: CalValue.model_validate(v) for k, v in raw.items()}


class DoesNotFit(ValueError):
    """The model cannot be held by the system; the message gives the numbers."""


@dataclass(frozen=True)
class LLMPlan:
    """``dp`` data-parallel replicas of ``tp``-way tensor-parallel x ``pp``-stage pipelines, each
    replica ``ep`` such groups sharing their experts (expert parallelism; 1 = none)."""

    tp: int
    dp: int
    weight_bytes_per_chip: float
    kv_capacity_tokens: int  # per replica
    chip_memory_bytes: float
    pp: int = 1
    ep: int = 1
    activation_bytes_per_chip: float = 0.0  # the runtime's step workspace, set aside before the KV cache
    runtime_memory_bytes_per_chip: float = 0.0  # what else the runtime holds (its stack's runtime_memory_bytes)

    def describe(self) -> str:
        pp = f" x PP={self.pp}" if self.pp > 1 else ""
        ep = f" x EP={self.ep}" if self.ep > 1 else ""
        act = f", step workspace {self.activation_bytes_per_chip / 1e9:.1f} GB/chip" if self.activation_bytes_per_chip else ""
        if self.runtime_memory_bytes_per_chip:
            act += f", runtime {self.runtime_memory_bytes_per_chip / 1e9:.1f} GB/chip"
        return (f"TP={self.tp}{pp}{ep} x DP={self.dp}; weights {self.weight_bytes_per_chip / 1e9:.1f} GB/chip{act}, "
                f"KV cache {self.kv_capacity_tokens:,} tokens per replica")


def plan_llm(cost_for, chip: ChipSpec, count: int, *, tp: int | None = None, pp: int | None = None,
             min_kv_tokens: int = 2048, model: str = "model", ep: int = 1,
             kv_memory_fraction: float | None = None, step_tokens: int = 0, step_seqs: int = 0) -> LLMPlan:
    """The fewest chips per replica (tensor-parallel degree x pipeline stages, powers of two
    dividing ``count``; more TP before more stages, as TP stays within a scale-up domain and
    cuts latency) whose shard and a minimum KV cache (``min_kv_tokens``, one long request) fit in
    a chip's memory; the other chips form data-parallel replicas. ``cost_for(tp, pp)`` gives the
    step-cost model of one shard. With ``ep`` > 1 a replica is ``ep`` such shards that split the
    experts of an MoE (its KV capacity is the group's).

    The KV cache gets ``kv_memory_fraction`` of what the weights and the runtime's step
    workspace leave (``cost.activation_bytes_per_chip(step_tokens, step_seqs)``: the
    intermediate tensors of the largest step the scheduler runs, which TensorRT-LLM's engine and
    vLLM's profiling run set aside before the cache is sized) and what else the runtime holds
    (``cost.runtime_memory_bytes_per_chip``). ``step_tokens`` = 0: no step workspace."""
    cap = chip.dram.capacity_bytes.value or 0.0
    frac = kv_memory_fraction if kv_memory_fraction is not None else serving_calibration()["kv_memory_fraction"].value
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"kv_memory_fraction must be in (0, 1], got {frac}")
    if ep < 1 or count % ep:
        raise ValueError(f"expert parallelism {ep} does not divide the system's {count} chips")
    per = count // ep
    pows = [t for t in (1, 2, 4, 8, 16, 32, 64) if t <= per and per % t == 0]
    shapes = [(t, p) for t in ([tp] if tp else pows) for p in ([pp] if pp else pows)
              if t * p <= per and per % (t * p) == 0]
    shapes.sort(key=lambda tp_pp: (tp_pp[0] * tp_pp[1], tp_pp[1]))
    if not shapes:
        raise ValueError(f"{model}: tp={tp or 'any'} x pp={pp or 'any'} does not divide the {per} chips of a "
                         f"replica group on {chip.name}:{count} (use powers of two that divide {per})")
    tried = []
    for t, p in shapes:
        label = f"TP={t}" + (f" PP={p}" if p > 1 else "")
        try:
            cost = cost_for(t, p)
        except ValueError as e:
            tried.append(f"{label}: {e}")
            continue
        act = cost.activation_bytes_per_chip(step_tokens, step_seqs) if step_tokens else 0.0
        runtime = cost.runtime_memory_bytes_per_chip
        free = (cap - cost.weight_bytes_per_chip - act - runtime) * frac
        kv_tokens = int(free // cost.kv_bytes_per_token_per_chip) if free > 0 else 0
        if kv_tokens >= min_kv_tokens:
            return LLMPlan(t, count // (t * p * ep), cost.weight_bytes_per_chip, kv_tokens, cap, p, ep, act, runtime)
        workspace = f" + step workspace {act / 1e9:.1f} GB" if act else ""
        workspace += f" + runtime {runtime / 1e9:.1f} GB" if runtime else ""
        tried.append(f"{label}: weights {cost.weight_bytes_per_chip / 1e9:.1f} GB/chip{workspace} + KV for {min_kv_tokens} "
                     f"tokens ({min_kv_tokens * cost.kv_bytes_per_token_per_chip / 1e9:.2f} GB) > "
                     f"{frac:.0%} of the {max(free / frac, 0.0) / 1e9:.1f} GB the chip's {cap / 1e9:.0f} GB leave")
    raise DoesNotFit(f"{model} does not fit on {chip.name}:{count}: " + "; ".join(tried[:4])
                     + (f"; ... ({len(tried)} layouts tried)" if len(tried) > 4 else ""))
