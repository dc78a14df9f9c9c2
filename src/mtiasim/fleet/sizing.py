"""Size one workload on one chip: the fewest chips whose system meets the workload's targets,
found through the serving and training simulators, and what that system costs.

Each workload kind has a sizer in ``SIZERS`` (a registry: ``@sizer("llm")``). A sizer evaluates
a system of n chips; ``smallest`` doubles n until the targets are met, then bisects: meeting
them is taken to be monotone in n (more replicas never raise a p99 at a fixed offered load)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mtiasim.chips import load_chip
from mtiasim.fleet import SystemCost, system_cost
from mtiasim.fleet.mix import LLMWorkload, Mix, Objective, RankingWorkload, TrainingWorkload
from mtiasim.fleet.site import Site, load_site


class Option(BaseModel):
    """One chip's smallest system for one workload, or why it has none."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    workload: str
    chip: str
    feasible: bool
    reason: str | None = Field(default=None, description="why the chip has no plan (targets missed, memory, price)")
    count: int | None = None
    plan: str | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict, description="latencies, time to train, ...")
    items_per_s: float | None = None
    item_unit: str = "item"
    cost: SystemCost | None = None

    @property
    def usd_per_h(self) -> float | None:
        return None if self.cost is None else self.cost.usd_per_h

    @property
    def wall_w(self) -> float | None:
        """The system's average facility power (site utilisation applied)."""
        return None if self.cost is None else self.cost.per_chip.average_facility_w * self.cost.chips

    @property
    def kg_co2e_per_h(self) -> float | None:
        return None if self.cost is None else self.cost.per_chip.kg_co2e_per_h * self.cost.chips

    def objective(self, objective: Objective) -> float | None:
        return {"tco": self.usd_per_h, "power": self.wall_w, "carbon": self.kg_co2e_per_h}[objective]


class Point(BaseModel):
    """One evaluated system: ``n`` chips of one type for one workload, whether it met the targets,
    why not, and (met) the option it gives. Points are what a results store keeps."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    n: int = Field(ge=1)
    ok: bool
    reason: str | None = None
    option: Option | None = None


#: evaluate(workload, chip, n) -> (targets met, report or None, reason when not)
Evaluate = Callable[[Any, str, int], tuple[bool, Any, str | None]]
SIZERS: dict[str, tuple[Evaluate, Callable[[Any, Any, str, int], Option]]] = {}


def sizer(kind: str) -> Callable:
    def register(cls: type) -> type:
        SIZERS[kind] = (cls.evaluate, cls.option)
        return cls
    return register


def evaluate_point(workload: Any, chip: str, n: int) -> Point:
    """Run ``workload`` on ``n`` chips of ``chip`` through its simulator."""
    evaluate, option = SIZERS[workload.kind]
    ok, rep, reason = evaluate(workload, chip, n)
    return Point(n=n, ok=ok, reason=None if ok else reason, option=option(workload, rep, chip, n) if ok else None)


def smallest(evaluate: Callable[[int], tuple[bool, Any, str | None]], max_n: int
             ) -> tuple[int | None, Any, str | None]:
    """The least n in [1, max_n] for which ``evaluate(n)`` meets the targets: doubling, then
    bisection between the last miss and the first hit. Returns (n, report, None) or (None, last
    report, the last reason it missed)."""
    lo, n, last, why = 0, 1, None, "no system tried"
    hit = None
    while n <= max_n:
        ok, rep, reason = evaluate(n)
        if ok:
            hit = (n, rep)
            break
        lo, last, why = n, rep, reason
        n *= 2
    if hit is None:
        return None, last, f"{why} (up to {max_n} chips)"
    hi, best = hit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, rep, _ = evaluate(mid)
        if ok:
            hi, best = mid, rep
        else:
            lo = mid
    return hi, best, None


def size(workload: Any, chip: str, mix: Mix, site: Site | None = None,
         known: dict[int, Point] | None = None, record: Callable[[Point], None] | None = None) -> Option:
    """The smallest system of ``chip`` that meets ``workload``'s targets, with its cost at ``site``
    (default: ``data/fleet/site.yaml``). Points in ``known`` (by n) are not run again; each new
    point is passed to ``record`` as soon as it is evaluated (a results store keeps it)."""
    known = dict(known or {})

    def point(k: int) -> tuple[bool, Any, str | None]:
        p = known.get(k)
        if p is None:
            p = known[k] = evaluate_point(workload, chip, k)
            if record is not None:
                record(p)
        return p.ok, p.option, p.reason

    n, opt, reason = smallest(point, mix.max_chips)
    if n is None:
        return Option(workload=workload.name, chip=chip, feasible=False, reason=reason)
    opt = priced(opt.model_copy(update={"workload": workload.name}), site or load_site())
    if opt.cost is None:
        return opt.model_copy(update={"feasible": False, "reason": "power or platform unknown, so no cost"})
    if opt.cost.usd_per_h is None:
        return opt.model_copy(update={"feasible": False, "reason": "accelerator price unknown "
                                      "(set one with --set cost.capex_usd=USD)"})
    return opt


def priced(opt: Option, site: Site, chip_overrides: dict[str, Any] | None = None) -> Option:
    """``opt`` with its system's cost recomputed at ``site`` (same chips, power and throughput),
    its chip's description changed by ``chip_overrides`` (e.g. ``{"cost.capex_usd": "alt:high"}``)."""
    if opt.cost is None or not opt.items_per_s or opt.count is None:
        return opt
    return opt.model_copy(update={"cost": system_cost(
        load_chip(opt.chip, chip_overrides), chips=opt.count, chip_power_w=opt.cost.chip_power_w,
        throughput_per_s=opt.items_per_s, site=site)})


def _failed(e: Exception) -> tuple[bool, Any, str]:
    return False, None, str(e).splitlines()[0]


@sizer("ranking")
class _Ranking:
    @staticmethod
    def evaluate(w: RankingWorkload, chip: str, n: int) -> tuple[bool, Any, str | None]:
        from mtiasim.serving import serve_ranking_model

        try:
            rep = serve_ranking_model(w.model, f"{chip}:{n}", qps=w.qps, slo_p99_s=w.p99_s)
        except ValueError as e:
            return _failed(e)
        return bool(rep.meets_slo), rep, f"p99 {rep.p99_latency_s * 1e3:.1f} ms > {w.p99_s * 1e3:g} ms"

    @staticmethod
    def option(w: RankingWorkload, rep: Any, chip: str, n: int) -> Option:
        chips = f"{n} chip" + ("s" if n > 1 else "")
        plan = (f"{chips}, whole model on each" if rep.table_shards == 1 else
                f"{chips}, tables sharded {rep.table_sharding}-wise over {rep.table_shards}")
        return Option(workload=w.name, chip=chip, feasible=True, count=n, plan=plan, cost=rep.cost,
                      metrics={"p99_latency_s": rep.p99_latency_s, "p50_latency_s": rep.p50_latency_s},
                      items_per_s=rep.pairs_per_s, item_unit=rep.item_unit)


@sizer("llm")
class _LLM:
    @staticmethod
    def evaluate(w: LLMWorkload, chip: str, n: int) -> tuple[bool, Any, str | None]:
        from mtiasim.serving import SLO, serve_llm

        try:
            rep = serve_llm(w.model, f"{chip}:{n}", qps=w.qps, requests=w.requests,
                            slo=SLO(ttft_p99_s=w.ttft_p99_s, tpot_p99_s=w.tpot_p99_s))
        except ValueError as e:
            return _failed(e)
        why = (f"p99 TTFT {rep.ttft_s.p99 or float('nan'):.3g} s (target {w.ttft_p99_s:g}), "
               f"p99 TPOT {rep.tpot_s.p99 or float('nan'):.3g} s (target {w.tpot_p99_s:g})")
        return bool(rep.meets_slo), rep, why

    @staticmethod
    def option(w: LLMWorkload, rep: Any, chip: str, n: int) -> Option:
        return Option(workload=w.name, chip=chip, feasible=True, count=n, plan=rep.plan.split(";")[0], cost=rep.cost,
                      metrics={"ttft_p99_s": rep.ttft_s.p99, "tpot_p99_s": rep.tpot_s.p99},
                      items_per_s=rep.output_tokens_per_s, item_unit="output token")


@sizer("training")
class _Training:
    @staticmethod
    def evaluate(w: TrainingWorkload, chip: str, n: int) -> tuple[bool, Any, str | None]:
        from mtiasim.training import train

        if n % (w.tp * w.pp):
            return False, None, f"{n} chips do not hold tp={w.tp} x pp={w.pp}"
        try:
            rep = train(w.model, f"{chip}:{n}", global_batch=w.global_batch, micro_batch=w.micro_batch,
                        seq_len=w.seq_len, tp=w.tp, pp=w.pp,
                        zero_stage=w.zero_stage, samples_to_converge=w.samples)
        except ValueError as e:
            return _failed(e)
        if not rep.fits:
            return False, rep, rep.notes[0] if rep.notes else "does not fit"
        ok = rep.time_to_train_s <= w.deadline_s
        return ok, rep, f"time to train {rep.time_to_train_s / 3600:.3g} h > deadline {w.deadline_s / 3600:.3g} h"

    @staticmethod
    def option(w: TrainingWorkload, rep: Any, chip: str, n: int) -> Option:
        return Option(workload=w.name, chip=chip, feasible=True, count=n, cost=rep.cost,
                      plan=f"TP={rep.tensor_parallel} x PP={rep.pipeline_parallel} x DP={rep.data_parallel}, "
                           f"ZeRO {rep.zero_stage}",
                      metrics={"time_to_train_s": rep.time_to_train_s, "step_time_s": rep.step_time_s,
                               "mfu": rep.mfu},
                      items_per_s=rep.samples_per_s, item_unit="sample")
