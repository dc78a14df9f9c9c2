"""Layout search: enumerate the parallel layouts of a training job, keep those that fit, rank them
by step time (as Calculon's optimal-execution search does, Isaev et al., SC'23).

A layout is tensor parallelism (within a scale-up domain, dividing the heads), pipeline stages
(dividing the layers), data parallelism (the rest), ZeRO stage, micro-batch and recompute. Each
distinct (tensor parallelism, micro-batch) costs one pair of captures; every other choice reuses
them, so the search is a few captures and many cheap step models."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from mtiasim.frontend import zoo
from mtiasim.system.spec import SystemSpec
from mtiasim.training.api import train
from mtiasim.training.report import TrainingReport

MICRO_BATCHES = (1, 2, 4, 8)


class SearchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    evaluated: int
    fitting: int
    elapsed_s: float
    ranked: list[TrainingReport]  # the fastest fitting layouts, fastest first
    rejected: dict[str, int]  # why layouts were dropped, with counts


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def layouts(model: str, system: SystemSpec, global_batch: int, micro_batches: Sequence[int] = MICRO_BATCHES
            ) -> list[dict[str, Any]]:
    """Every (tp, pp, micro_batch, zero_stage, recompute) the job admits: tp a power of two up to the
    chip's scale-up domain dividing the heads and the FFN, pp a divisor of the layers or a power of
    two below them (uneven stages), tp x pp dividing the chips, the global batch a multiple of micro-batch x data parallelism. ZeRO-3 only without
    pipeline stages (its per-micro-batch gathers and a pipeline's are not combined here)."""
    entry = zoo.get(model)
    if entry.family != "llm":
        raise ValueError(f"--search explores tensor and pipeline layouts of the zoo's decoder LLMs; {entry.name} "
                         "is not one")
    c = entry.config()
    chip = system.load_chip()
    domain = int(chip.scale_up.domain_size.value) if chip.scale_up and chip.scale_up.domain_size else 1
    tps = [t for t in (1, 2, 4, 8, 16, 32, 64) if t <= domain and c["n_heads"] % t == 0 and c["ffn"] % t == 0]
    out = []
    stages = sorted({p for p in _divisors(c["n_layers"])} | {2**k for k in range(1, 8) if 2**k <= c["n_layers"]})
    for tp, pp in itertools.product(tps, stages):
        if system.count % (tp * pp):
            continue
        dp = system.count // (tp * pp)
        for micro in micro_batches:
            if global_batch % (micro * dp):
                continue
            for zero in ((0, 1, 3) if pp == 1 else (0, 1)):
                for recompute in ("none", "full"):
                    out.append(dict(tp=tp, pp=pp, micro_batch=micro, zero_stage=zero, recompute=recompute))
    return out


def search(model: str, system: str | SystemSpec, global_batch: int, *, seq_len: int | None = None,
           precision: str | None = None, optimizer: str = "adamw", top: int = 10,
           progress: Callable[[str, int, int], None] | None = None) -> SearchResult:
    """The ``top`` fastest layouts of ``model`` on ``system`` that fit in memory;
    ``progress(description, done, total)`` follows the layouts."""
    t0 = time.perf_counter()
    spec = system if isinstance(system, SystemSpec) else SystemSpec.parse(system)
    rejected: dict[str, int] = {}
    fitting: list[TrainingReport] = []
    candidates = layouts(model, spec, global_batch)
    for k, layout in enumerate(candidates):
        if progress is not None:
            progress(", ".join(f"{a}={v}" for a, v in layout.items()), k, len(candidates))
        try:
            r = train(model, spec, global_batch, seq_len=seq_len, precision=precision, optimizer=optimizer, **layout)
        except ValueError as e:
            key = str(e).split(":")[0][:80]
            rejected[key] = rejected.get(key, 0) + 1
            continue
        if r.fits:
            fitting.append(r)
        else:
            rejected["does not fit in memory"] = rejected.get("does not fit in memory", 0) + 1
    fitting.sort(key=lambda r: (r.step_time_s, r.memory_per_chip_bytes))
    return SearchResult(evaluated=len(candidates), fitting=len(fitting), elapsed_s=time.perf_counter() - t0,
                        ranked=fitting[:top], rejected=rejected)
