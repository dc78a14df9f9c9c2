"""Serving simulation: traffic and batching over time, on a multi-chip system.

``serve_llm("llama2-70b", "mtia-400:8", qps=20)`` plans the system (tensor-parallel shards and
data-parallel replicas), builds the step-cost model of a shard from the analytical engine, and
runs continuous batching over a Poisson request stream.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mtiasim.fleet import SystemCost, idle_chip_w, system_cost
from mtiasim.power.platform import PlatformError
from mtiasim.serving.cost import LLMStepCost, check_expert_parallel
from mtiasim.serving.llm import (
    RequestRecord,
    SchedulerConfig,
    route_batches_round_robin,
    route_round_robin,
    run_least_pending,
    run_replica,
)
from mtiasim.serving.traffic import DATASET_OF, Request, generate, harness_batches
from mtiasim.system.plan import LLMPlan, plan_llm, serving_calibration
from mtiasim.system.spec import SystemSpec

_COSTS: dict[tuple, LLMStepCost] = {}


def serving_cost(system: SystemSpec, busy_chip_w: float | None, busy_fraction: float,
                 items_per_s: float) -> SystemCost | None:
    """Chip and wall power and cost of ownership of a serving system whose chips draw
    ``busy_chip_w`` while they step (or run a batch) and static power for the rest of the run
    (``busy_fraction`` of it busy). None when the chip's power or platform is unknown."""
    chip = system.load_chip()
    idle = None if busy_chip_w is None else idle_chip_w(chip, busy_chip_w)
    if busy_chip_w is None or idle is None or items_per_s <= 0:
        return None
    f = min(max(busy_fraction, 0.0), 1.0)
    chip_w = f * busy_chip_w + (1 - f) * idle
    try:
        return system_cost(chip, chips=system.count, chip_power_w=chip_w, throughput_per_s=items_per_s)
    except PlatformError:
        return None
#: how requests reach the data-parallel replicas (serve_llm's ``routing``)
ROUTINGS = ("round_robin", "least_pending")


def step_cost(model: str, system: SystemSpec, tp: int, dtype: str | None, kv_dtype: str | None = None,
              pp: int = 1, ep: int = 1, stack: str | None = None) -> LLMStepCost:
    """Step-cost model of a tp-way, pp-stage (ep-way expert-parallel) shard, memoised per process
    (grids built lazily; the dense and attention grids do not depend on pp, so they are shared).
    GPU kernels are timed by the gpu engine with the software ``stack``."""
    key = (model, system.chip, tuple(sorted(system.chip_overrides.items())), tp, dtype, kv_dtype, stack, ep, pp)
    if key not in _COSTS:
        cost = LLMStepCost(model, system.load_chip(), tp, dtype, kv_dtype, pp, ep, stack)
        base = _COSTS.get(key[:-1] + (1,))
        if base is not None:  # reuse the grids of the pp=1 model
            for attr in ("_dense", "_decode_attention", "_prefill_attention"):
                if attr in base.__dict__:
                    cost.__dict__[attr] = base.__dict__[attr]
        _COSTS[key] = cost
    return _COSTS[key]


def plan_serving(model: str, system: SystemSpec, *, tp: int | None = None, pp: int | None = None,
                 dtype: str | None = None, kv_dtype: str | None = None, ep: int = 1,
                 stack: str | None = None, kv_memory_fraction: float | None = None,
                 scheduler: SchedulerConfig | None = None) -> LLMPlan:
    """The layout ``serve_llm`` runs ``model`` with on ``system``: tp x pp (x ep) chips per
    replica (given, or the fewest that hold the weights and a minimum KV cache), the rest data
    parallel. ``kv_memory_fraction``: the share of the memory left after the weights, the step
    workspace of ``scheduler``'s largest step (default_scheduler() if None) and the software
    stack's own runtime memory that holds the KV cache (default: data/calibration/serving.yaml)."""
    check_expert_parallel(model, ep)
    sched = scheduler or default_scheduler()
    return plan_llm(lambda t, p: step_cost(model, system, t, dtype, kv_dtype, p, ep, stack), system.load_chip(),
                    system.count, tp=tp, pp=pp, model=model, ep=ep, kv_memory_fraction=kv_memory_fraction,
                    step_tokens=max(sched.max_num_batched_tokens, sched.max_num_seqs * sched.beams),
                    step_seqs=sched.max_num_seqs * sched.beams)


class Percentiles(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None

    @classmethod
    def of(cls, xs: list[float]) -> Percentiles:
        if not xs:
            return cls(mean=None, p50=None, p90=None, p99=None)
        a = np.asarray(xs)
        return cls(mean=float(a.mean()), p50=float(np.percentile(a, 50)), p90=float(np.percentile(a, 90)),
                   p99=float(np.percentile(a, 99)))


class SLO(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttft_p99_s: float | None = None
    tpot_p99_s: float | None = None


class ServingReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    system: str
    plan: str
    tp: int
    pp: int
    dp: int
    ep: int = Field(default=1, description="expert-parallel chips per replica (MoE)")
    dtype: str
    kv_dtype: str
    qps: float | None = Field(description="offered load; None = all requests at t=0 (Offline)")
    requests: int
    completed: int
    rejected: int
    duration_s: float = Field(description="first arrival to last completion")
    output_tokens_per_s: float
    requests_per_s: float
    saturated_output_tokens_per_s: float | None = Field(default=None, description=(
        "Offline: steady-state output tokens/s, between ramp-up and the drain tail (which a 10-minute "
        "MLPerf run amortises); None for Poisson arrivals or runs too short to have a steady state"))
    ttft_s: Percentiles
    tpot_s: Percentiles
    e2e_s: Percentiles
    preemptions: int
    kv_capacity_tokens_per_replica: int
    utilization: float = Field(description="fraction of the run the replicas were stepping")
    slo: SLO
    meets_slo: bool | None
    cost: SystemCost | None = Field(default=None, description=(
        "chip and wall power and cost of ownership at this operating point (items: output tokens)"))
    wall_s: float = Field(description="simulator wall time")
    notes: list[str] = Field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _tokens_by(recs: list[RequestRecord], t: float) -> float:
    """Output tokens the records had produced by time ``t`` (each request's tokens spread evenly
    between its first token and its finish)."""
    tokens = 0.0
    for r in recs:
        if r.first_token_s is None or r.first_token_s > t:
            continue
        n = r.request.output_tokens
        if r.finish_s is not None and r.finish_s <= t:
            tokens += n
        elif r.finish_s is not None and r.finish_s > r.first_token_s:
            tokens += 1 + (n - 1) * (t - r.first_token_s) / (r.finish_s - r.first_token_s)
        else:
            tokens += 1
    return tokens


def _saturated_rate(recs: list[RequestRecord]) -> float | None:
    """Output tokens/s of one replica in steady state: from its first finished request (ramp-up
    over) to its last first token (the queue is empty from then on and the batch drains). None
    when the run has no such window (everything admitted at once)."""
    firsts = [r.first_token_s for r in recs if r.first_token_s is not None]
    finishes = [r.finish_s for r in recs if r.finish_s is not None]
    if not firsts or not finishes:
        return None
    t0, t1 = min(finishes), max(firsts)
    if t1 <= t0:
        return None
    return (_tokens_by(recs, t1) - _tokens_by(recs, t0)) / (t1 - t0)


def default_scheduler(**overrides: Any) -> SchedulerConfig:
    """The scheduler ``data/calibration/serving.yaml`` describes (batch and step-token limits, KV
    block size, admission watermark), with ``overrides`` for any ``SchedulerConfig`` field; an
    override of None keeps the calibrated value."""
    cal = serving_calibration()
    base: dict[str, Any] = {"max_num_seqs": int(cal["max_num_seqs"].value),
                            "max_num_batched_tokens": int(cal["max_num_batched_tokens"].value),
                            "block_tokens": int(cal["kv_block_tokens"].value),
                            "kv_watermark_fraction": cal["kv_watermark_fraction"].value}
    return SchedulerConfig(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


def serve_llm(model: str, system: str | SystemSpec, *, qps: float | None, requests: int = 1000, seed: int = 0,
              dataset: str | None = None, prompt_tokens: int | None = None, output_tokens: int | None = None,
              scheduler: SchedulerConfig | None = None, tp: int | None = None, pp: int | None = None,
              dtype: str | None = None,
              slo: SLO | None = None, request_list: list[Request] | None = None,
              kv_dtype: str | None = None, ep: int = 1, warmup_fraction: float = 0.0,
              stack: str | None = None, kv_memory_fraction: float | None = None,
              harness_batcher: tuple[int, float] | None = None, routing: str = "round_robin") -> ServingReport:
    """Serve ``model`` on ``system``: plan the layout (tp x pp [x ep] per replica, the rest data
    parallel), generate or take the requests, run continuous batching on every replica. Latency
    percentiles skip the requests that arrive in the first ``warmup_fraction`` of the arrival
    window (a loaded system takes a while to build its steady-state batch). Requests go to the
    replicas round-robin, or, with ``harness_batcher`` = (batch, timeout_s), in the batches a
    harness-side batcher forms (traffic.harness_batches), each batch to the next replica; latencies
    then count from the issue time, so they include the wait in the batcher. ``routing=
    "least_pending"`` sends each request instead to the replica with the fewest requests in flight,
    every replica simulated together (llm.run_least_pending; NVIDIA's MLPerf LLM harness)."""
    if routing not in ROUTINGS:
        raise ValueError(f"routing must be one of {ROUTINGS}, got '{routing}'")
    if routing != "round_robin" and harness_batcher is not None:
        raise ValueError("a harness batcher sends its batches round-robin: routing must be 'round_robin' with it")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    t0 = time.perf_counter()
    sysspec = system if isinstance(system, SystemSpec) else SystemSpec.parse(system)
    sched = scheduler or default_scheduler()
    plan = plan_serving(model, sysspec, tp=tp, pp=pp, dtype=dtype, kv_dtype=kv_dtype, ep=ep, stack=stack,
                        kv_memory_fraction=kv_memory_fraction, scheduler=sched)
    cost = step_cost(model, sysspec, plan.tp, dtype, kv_dtype, plan.pp, ep, stack)
    reqs = request_list or generate(requests, qps, dataset=dataset or DATASET_OF.get(model, "openorca"), seed=seed,
                                    prompt_tokens=prompt_tokens, output_tokens=output_tokens)
    records: list[RequestRecord] = []
    busy, preempt, end, steps = 0.0, 0, 0.0, 0
    saturated: list[float | None] = []  # per replica: steady-state output tokens/s (Offline)
    # a pp-stage pipeline keeps pp micro-batches in flight: pp independent batches, each with a
    # pp-th of the replica's KV cache and the full (all-stage) step latency
    lanes = plan.dp * plan.pp
    kv_lane = plan.kv_capacity_tokens // plan.pp
    if routing == "least_pending":
        runs = [run for run in run_least_pending(reqs, cost, kv_lane, sched, lanes) if run[0]]
    else:
        parts = (route_round_robin(reqs, lanes) if harness_batcher is None
                 else route_batches_round_robin(harness_batches(reqs, *harness_batcher), lanes))
        runs = (run_replica(part, cost, kv_lane, sched) for part in parts if part)
    for recs, stats, finish in runs:
        records += recs
        if qps is None:
            saturated.append(_saturated_rate(recs))
        busy += stats.busy_s
        steps += stats.steps
        preempt += stats.preemptions
        end = max(end, finish)
    done = [r for r in records if r.finish_s is not None]
    start = min(r.request.start_s for r in records)
    duration = max(end - start, 1e-12)
    last = max(r.request.start_s for r in records)
    steady = [r for r in done if r.request.start_s >= start + warmup_fraction * (last - start)] or done
    ttft = [r.ttft_s for r in steady if r.ttft_s is not None]
    tpot = [r.tpot_s for r in steady if r.tpot_s is not None]
    rep = ServingReport(
        model=model, system=sysspec.name, plan=plan.describe(), tp=plan.tp, pp=plan.pp, dp=plan.dp, ep=plan.ep,
        dtype=cost.dtype,
        kv_dtype=cost.kv_dtype, qps=qps,
        requests=len(records), completed=len(done), rejected=sum(r.rejected is not None for r in records),
        duration_s=duration, output_tokens_per_s=sum(r.request.output_tokens for r in done) / duration,
        requests_per_s=len(done) / duration, ttft_s=Percentiles.of(ttft), tpot_s=Percentiles.of(tpot),
        saturated_output_tokens_per_s=(sum(saturated) if saturated and None not in saturated else None),
        e2e_s=Percentiles.of([r.e2e_s for r in steady]), preemptions=preempt,
        kv_capacity_tokens_per_replica=plan.kv_capacity_tokens, utilization=min(1.0, busy / (duration * lanes)),
        slo=slo or SLO(), meets_slo=None, wall_s=0.0)
    tokens_per_step = sum(r.request.prompt_tokens + r.request.output_tokens for r in done) / max(steps, 1) / plan.ep
    rep.cost = serving_cost(sysspec, cost.busy_power_w(tokens_per_step) if done else None, rep.utilization,
                            rep.output_tokens_per_s)
    if slo is not None:
        ok = rep.completed == rep.requests
        if slo.ttft_p99_s is not None:
            ok &= rep.ttft_s.p99 is not None and rep.ttft_s.p99 <= slo.ttft_p99_s
        if slo.tpot_p99_s is not None:
            ok &= rep.tpot_s.p99 is not None and rep.tpot_s.p99 <= slo.tpot_p99_s
        rep.meets_slo = ok
    if rep.rejected:
        rep.notes.append(f"{rep.rejected} request(s) could not be served: "
                         + next(r.rejected for r in records if r.rejected))
    rep.wall_s = time.perf_counter() - t0
    return rep


class RankingReport(BaseModel):
    """Serving a batched model: queries of items (DLRM: user-item pairs; BERT, ResNet-50: one
    sample), dynamically batched on each chip. ``pairs`` fields count items."""

    model_config = ConfigDict(extra="forbid")
    model: str
    item_unit: str = Field(default="user-item pair", description="what one batched item is")
    system: str
    dtype: str
    qps: float | None = Field(description="offered queries/s; None = Offline (full batches of batch_pairs)")
    queries: int
    samples_per_s: float = Field(description="completed queries per second")
    pairs_per_s: float = Field(description="completed user-item pairs per second")
    p50_latency_s: float | None
    p99_latency_s: float | None
    mean_batch_pairs: float | None
    batch_pairs: int
    batch_timeout_s: float
    streams: int = 1  # batches a chip group runs at once
    table_shards: int = Field(description="chips the embedding tables are sharded over")
    table_sharding: str = Field(default="table", description="'table' (whole tables per chip) or 'row' (rows split)")
    slo_p99_s: float | None = None
    meets_slo: bool | None = None
    cost: SystemCost | None = Field(default=None, description=(
        "chip and wall power and cost of ownership at this operating point (items: pairs or samples)"))
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def serve_ranking_model(model: str, system: str | SystemSpec, *, qps: float | None, dtype: str | None = None,
                        batch_pairs: int = 65536, batch_timeout_s: float = 0.010, queries: int | None = None,
                        seed: int = 0, slo_p99_s: float | None = None, streams: int = 1,
                        stack: str | None = None) -> RankingReport:
    """Poisson queries over the system's chips, each holding the whole model (ranking, encoder and
    vision models; a DLRM query aggregates user-item pairs as in MLPerf DLRM-v2, the others are one
    sample each, and ``batch_pairs`` counts items); ``qps`` None gives the Offline throughput (full
    batches of ``batch_pairs``). Each chip group runs up to ``streams`` batches at once, which
    share its SRAM/L2. ``stack``: the GPU software stack whose kernels time the batches (GPUs only).
    ``queries`` is how many queries one (representative) chip group serves."""
    from mtiasim.compiler import CompileOptions
    from mtiasim.frontend import zoo
    from mtiasim.serving.ranking import batch_workload, plan_ranking, serve_ranking

    t0 = time.perf_counter()
    entry = zoo.get(model)
    if entry.family == "llm":
        raise ValueError(f"{model} is an LLM; LLMs use serve_llm")
    sysspec = system if isinstance(system, SystemSpec) else SystemSpec.parse(system)
    dt = dtype or entry.default_dtype
    # concurrent streams each keep their batch's activations in 1/streams of the chip's SRAM/L2
    cost = plan_ranking(entry.name, sysspec, CompileOptions(dtype=dt, concurrent_batches=streams if qps is not None else 1),
                        stack=stack)
    groups = sysspec.count // cost.shards
    mix, _, _ = batch_workload(entry.name)
    unit = "user-item pair" if entry.family == "ranking" else "sample"
    if qps is None:
        pairs_s = cost.throughput_pairs_per_s(batch_pairs) * groups
        rep = RankingReport(model=entry.name, item_unit=unit, system=sysspec.name, dtype=dt, qps=None, queries=0,
                            samples_per_s=pairs_s / mix.mean, pairs_per_s=pairs_s, p50_latency_s=None,
                            p99_latency_s=None, mean_batch_pairs=None, batch_pairs=batch_pairs,
                            batch_timeout_s=batch_timeout_s, table_shards=cost.shards,
                            table_sharding=cost.scheme, wall_s=0.0)
    else:
        r = serve_ranking(cost, groups, qps, queries=queries, batch_pairs=batch_pairs,
                          timeout_s=batch_timeout_s, seed=seed, mix=mix, streams=streams)
        rep = RankingReport(model=entry.name, item_unit=unit, system=sysspec.name, dtype=dt, qps=qps, queries=r.queries,
                            samples_per_s=r.samples_per_s, pairs_per_s=r.samples_per_s * mix.mean,
                            p50_latency_s=r.p50_latency_s, p99_latency_s=r.p99_latency_s,
                            mean_batch_pairs=r.mean_batch_pairs, batch_pairs=batch_pairs,
                            batch_timeout_s=batch_timeout_s, streams=streams, table_shards=cost.shards,
                            table_sharding=cost.scheme, slo_p99_s=slo_p99_s,
                            meets_slo=None if slo_p99_s is None else r.p99_latency_s <= slo_p99_s, wall_s=0.0)
    load = rep.pairs_per_s / groups  # items per second per chip group
    at = rep.mean_batch_pairs or batch_pairs
    rep.cost = serving_cost(sysspec, cost.busy_power_w(at), load * cost.batch_s(round(at)) / at / streams,
                            rep.pairs_per_s)
    rep.wall_s = time.perf_counter() - t0
    return rep
