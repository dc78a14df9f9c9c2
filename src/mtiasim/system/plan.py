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
    """``dp`` data-parallel replicas of ``tp``-way tensor-parallel shards."""

    tp: int
    dp: int
    weight_bytes_per_chip: float
    kv_capacity_tokens: int  # per replica
    chip_memory_bytes: float

    def describe(self) -> str:
        return (f"TP={self.tp} x DP={self.dp}; weights {self.weight_bytes_per_chip / 1e9:.1f} GB/chip, "
                f"KV cache {self.kv_capacity_tokens:,} tokens per replica")


def plan_llm(cost_for_tp, chip: ChipSpec, count: int, *, tp: int | None = None, min_kv_tokens: int = 2048,
             model: str = "model") -> LLMPlan:
    """Smallest tensor-parallel degree (a power of two dividing ``count``) whose shard and a
    minimum KV cache (``min_kv_tokens``, one long request) fit in a chip's memory; the other chips
    form data-parallel replicas. ``cost_for_tp(tp)`` gives the step-cost model of a tp-way shard."""
    cap = chip.dram.capacity_bytes.value or 0.0
    frac = serving_calibration()["kv_memory_fraction"].value
    candidates = [tp] if tp else [t for t in (1, 2, 4, 8, 16, 32, 64) if t <= count and count % t == 0]
    tried = []
    for t in candidates:
        try:
            cost = cost_for_tp(t)
        except ValueError as e:
            tried.append(f"TP={t}: {e}")
            continue
        free = (cap - cost.weight_bytes_per_chip) * frac
        kv_tokens = int(free // cost.kv_bytes_per_token_per_chip) if free > 0 else 0
        if kv_tokens >= min_kv_tokens:
            return LLMPlan(t, count // t, cost.weight_bytes_per_chip, kv_tokens, cap)
        tried.append(f"TP={t}: weights {cost.weight_bytes_per_chip / 1e9:.1f} GB/chip + KV for {min_kv_tokens} tokens "
                     f"({min_kv_tokens * cost.kv_bytes_per_token_per_chip / 1e9:.2f} GB) > "
                     f"{frac:.0%} of {cap / 1e9:.0f} GB free for the cache")
    raise DoesNotFit(f"{model} does not fit on {chip.name}:{count}: " + "; ".join(tried))
