"""The fleet planner: for each workload of a mix, every chip's smallest system that meets its
targets (``sizing.size``), the best by the mix's objective, why each other chip loses, and a
fleet total. Supply caps couple the workloads: when the per-workload choices exceed a cap, a
mixed-integer program (PuLP with its bundled CBC solver) picks one option per workload that
minimises the fleet objective within every cap."""

from __future__ import annotations

import warnings
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from mtiasim.fleet.mix import Mix, Objective
from mtiasim.fleet.robustness import Flip, flips
from mtiasim.fleet.site import Site, load_site
from mtiasim.fleet.sizing import Option
from mtiasim.fleet.store import Store
from mtiasim.fleet.sweep import sweep


class InfeasibleMix(ValueError):
    """No allocation meets the targets within the caps; the message names the workload and constraint."""


class WorkloadPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    workload: str
    kind: str
    model: str
    chosen: Option
    options: list[Option] = Field(description="every chip, best first; infeasible ones last with their reason")
    flips: list[Flip] = Field(default_factory=list, description="cost-input range ends at which another chip "
                              "would win (fleet/robustness.py); empty: the choice holds over every documented range")

    def why_not(self, option: Option, objective: Objective) -> str:
        """Why ``option`` lost to the chosen one."""
        if not option.feasible:
            return option.reason or "infeasible"
        if option.chip == self.chosen.chip:
            return "chosen"
        mine, best = option.objective(objective), self.chosen.objective(objective)
        if mine is not None and best is not None and mine <= best:
            return "within a cap's limit only for another workload"
        unit = {"tco": "cost", "power": "power", "carbon": "carbon"}[objective]
        return f"{unit} {mine / best:.2f}x the chosen" if mine and best else "not chosen"


class FleetPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    objective: Objective
    workloads: list[WorkloadPlan]
    caps: dict[str, int]
    capped: bool = Field(description="whether the caps changed any workload's choice")

    @property
    def chips(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.workloads:
            out[w.chosen.chip] = out.get(w.chosen.chip, 0) + (w.chosen.count or 0)
        return out

    def total(self, what: Callable[[Option], float | None]) -> float:
        return sum(what(w.chosen) or 0.0 for w in self.workloads)


def _ranked(options: list[Option], objective: Objective) -> list[Option]:
    feasible = sorted((o for o in options if o.feasible), key=lambda o: o.objective(objective))
    return feasible + [o for o in options if not o.feasible]


def _allocate(mix: Mix, per_workload: list[list[Option]]) -> list[Option]:
    """One feasible option per workload, the fleet objective least, every cap kept."""
    import pulp

    prob = pulp.LpProblem("fleet", pulp.LpMinimize)
    x = {(i, j): prob.add_variable(f"x_{i}_{j}", 0, 1, cat="Binary")
         for i, opts in enumerate(per_workload) for j in range(len(opts))}
    prob += pulp.lpSum(x[i, j] * per_workload[i][j].objective(mix.objective) for i, j in x)
    for i, opts in enumerate(per_workload):
        prob += pulp.lpSum(x[i, j] for j in range(len(opts))) == 1
    for chip, cap in mix.caps.items():
        prob += pulp.lpSum(x[i, j] * (o.count or 0) for (i, j) in x
                           for o in [per_workload[i][j]] if o.chip == chip) <= cap
    with warnings.catch_warnings():  # PuLP 3.3 announces the bundled CBC's move to an extra in PuLP 4 (pinned <4)
        warnings.simplefilter("ignore", DeprecationWarning)
        prob.solve(pulp.PULP_CBC_CMD(msg=False))
    if pulp.LpStatus[prob.status] != "Optimal":
        need = {chip: sum(min((o.count or 0) for o in opts if o.chip == chip) if all(o.chip == chip for o in opts)
                          else 0 for opts in per_workload) for chip in mix.caps}
        over = [f"{c}: workloads that can only use it need {n} > cap {mix.caps[c]}" for c, n in need.items()
                if n > mix.caps[c]]
        raise InfeasibleMix("no allocation keeps every cap" + (": " + "; ".join(over) if over else
                            f" ({', '.join(f'{c} <= {n}' for c, n in mix.caps.items())})"))
    return [next(opts[j] for j in range(len(opts)) if x[i, j].value() > 0.5) for i, opts in enumerate(per_workload)]


def plan_fleet(mix: Mix, site: Site | None = None, progress: Callable[[str], None] | None = None, *,
               jobs: int = 1, ray: str | None = None, store: Store | None = None) -> FleetPlan:
    """Size every workload on every chip of the mix and choose (see module docstring); ``site``
    prices the systems (default: ``data/fleet/site.yaml``). ``jobs``, ``ray`` and ``store``: how the
    sweep runs and where its points are kept (``fleet/sweep.py``)."""
    swept = sweep(mix, site, jobs=jobs, ray=ray, store=store, progress=progress)
    plans_options = [_ranked(options, mix.objective) for options in swept]
    per_workload = []
    for w, options in zip(mix.workloads, plans_options):
        within = [o for o in options if o.feasible and (o.chip not in mix.caps or (o.count or 0) <= mix.caps[o.chip])]
        if not within:
            reasons = "; ".join(f"{o.chip}: {o.reason or f'needs {o.count} > cap {mix.caps.get(o.chip)}'}"
                                for o in options)
            raise InfeasibleMix(f"workload {w.name}: no chip meets its targets within the caps ({reasons})")
        per_workload.append(within)
    greedy = [opts[0] for opts in per_workload]
    chosen = greedy
    over = any(sum(o.count or 0 for o in greedy if o.chip == c) > cap for c, cap in mix.caps.items())
    if over:
        chosen = _allocate(mix, per_workload)
    site = site or load_site()
    workloads = [WorkloadPlan(workload=w.name, kind=w.kind, model=w.model, chosen=c, options=opts,
                              flips=flips(opts, c, site, mix.objective))
                 for w, c, opts in zip(mix.workloads, chosen, plans_options)]
    return FleetPlan(objective=mix.objective, workloads=workloads, caps=dict(mix.caps), capped=over)
