"""Rich tables for results, comparisons and chip specs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from rich.table import Table

from mtiasim.chips.schema import ChipSpec, Sourced
from mtiasim.engines.result import Result


def si(x: float | None, unit: str = "", digits: int = 3) -> str:
    """1.23e-3 s -> '1.23 ms'; None -> 'n/a'."""
    if x is None:
        return "n/a"
    prefixes = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"),
                (1e-6, "µ"), (1e-9, "n")]
    ax = abs(x)
    if ax == 0:
        return f"0 {unit}".strip()
    for f, p in prefixes:
        if ax >= f:
            return f"{x / f:.{digits}g} {p}{unit}".strip()
    return f"{x:.{digits}g} {unit}".strip()


def kv_table(title: str, rows: list[tuple[str, str]]) -> Table:
    """A two-column metric/value table."""
    t = Table(title=title, show_header=False)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in rows:
        t.add_row(k, v)
    return t


def ops_table(r: Result, top: int | None = None) -> Table:
    t = Table(title=f"{r.model} ({r.phase}) on {r.chip}: per-kernel breakdown", show_lines=False)
    for col in ("kernel", "op (+fused)", "dtype", "time", "%", "bound", "flops", "bytes", "DRAM", "GEMM eff"):
        t.add_column(col, justify="right" if col not in ("kernel", "op (+fused)", "bound", "dtype") else "left")
    ops = sorted(r.ops, key=lambda o: -o.time_s) if top else r.ops
    for o in ops[:top] if top else ops:
        t.add_row(o.name, o.op + (f" +{'+'.join(o.fused)}" if o.fused else ""), o.dtype, si(o.time_s, "s"),
                  f"{100 * o.time_s / r.latency_s:.1f}" if r.latency_s else "-", o.bound, si(o.flops),
                  si(o.bytes, "B"), si(o.dram_bytes, "B"),
                  f"{o.gemm_efficiency:.2f}" if o.gemm_efficiency is not None else "")
    return t


def totals_table(r: Result) -> Table:
    rows = [
        ("phase / batch / seq_len / kv_len", f"{r.phase} / {r.batch} / {r.seq_len} / {r.kv_len}"),
        ("dtype", r.dtype),
        ("latency", si(r.latency_s, "s")),
        ("throughput", f"{si(r.throughput_per_s)} {r.throughput_unit}"),
        ("energy per run", si(r.energy_j, "J")),
        ("average power", f"{si(r.power_w, 'W')} (TDP {si(r.tdp_w, 'W')}, clock x{r.clock_scale:.2f})"),
        ("perf/W", f"{si(r.perf_per_w)} {r.item_unit}s/J"),
        ("flops", si(r.flops)),
        ("memory needed / capacity", f"{si(r.memory_required_bytes, 'B')} / {si(r.memory_capacity_bytes, 'B')}"
         + ("" if r.fits_in_memory else "  DOES NOT FIT")),
    ]
    for b, s in sorted(r.bound_breakdown_s().items()):
        rows.append((f"time {b}-bound", f"{si(s, 's')} ({100 * s / r.latency_s:.0f}%)" if r.latency_s else "-"))
    return kv_table(f"{r.model} on {r.chip} ({r.engine} engine)", rows)


def training_table(r: Any) -> Table:
    """A :class:`~mtiasim.training.TrainingReport` as a table: step time and where it goes."""
    b, m = r.breakdown_s, r.memory_breakdown_bytes
    rows = [
        ("system / precision / optimizer", f"{r.system} / {r.precision} / {r.optimizer} (ZeRO {r.zero_stage})"),
        ("layout", f"TP={r.tensor_parallel} x PP={r.pipeline_parallel} x DP={r.data_parallel}, "
                   f"recompute {r.recompute}"),
        ("global batch = micro x DP x steps", f"{r.global_batch} = {r.micro_batch} x {r.data_parallel} x "
         f"{r.micro_batches}" + (f"  (seq_len {r.seq_len})" if r.seq_len else "")),
        ("parameters trainable / frozen", f"{si(r.trainable_params)} / {si(r.frozen_params)}"),
        ("step time", si(r.step_time_s, "s")),
    ]
    for k, v in b.model_dump().items():
        rows.append((f"  {k.replace('_', ' ')}", f"{si(v, 's')} ({100 * v / r.step_time_s:.0f}%)"))
    rows += [
        ("communication (hidden or not)", si(r.communication_total_s, "s")),
        ("throughput", f"{si(r.samples_per_s)} samples/s" + (f", {si(r.tokens_per_s)} tokens/s"
                                                             if r.tokens_per_s else "")),
        ("MFU", "-" if r.mfu is None else f"{100 * r.mfu:.1f}%"),
        ("memory per chip", f"{si(r.memory_per_chip_bytes, 'B')} of {si(r.memory_capacity_bytes, 'B')}"
         + ("" if r.fits else "  DOES NOT FIT")),
        ("  weights / gradients / optimizer / activations",
         " / ".join(si(x, "B") for x in (m.weights, m.gradients, m.optimizer_state, m.activations))),
        ("energy per step (all chips)", si(r.energy_per_step_j, "J")),
    ]
    c = r.cost
    rows += cost_rows(c, "sample")
    if r.time_to_train_s is not None:
        rows.append(("time to train", f"{si(r.time_to_train_s, 's')} ({r.time_to_train_s / 60:.1f} min)"))
    if r.cost_to_train_usd is not None:
        rows.append(("cost to train", f"${r.cost_to_train_usd:,.0f} (at {100 * c.per_chip.utilisation:.0f}% "
                     "utilisation)"))
    return kv_table(f"training {r.model} on {r.system} ({r.engine} engine)", rows)


def compare_table(model: str, rows: list[dict[str, Any]]) -> Table:
    """Chips side by side: speed, the chip's power and the system's at the wall (host share, fans,
    supply losses, PUE), perf/W at the wall and items per dollar of ownership."""
    t = Table(title=f"{model}: chips side by side")
    cols = ["chip", "phase", "latency", "throughput", "chip W", "wall W", "perf/W (wall)", "$/h", "per $",
            "bound (most time)", "fits"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("chip", "phase", "bound (most time)", "fits") else "right")
    for r in rows:
        unit = r["item_unit"]
        t.add_row(r["chip"], r["phase"], si(r["latency_s"], "s"), f"{si(r['throughput_per_s'])} {unit}/s",
                  si(r["power_w"], "W"), si(r.get("wall_power_w"), "W"), f"{si(r.get('perf_per_wall_w'))} {unit}/J",
                  "n/a" if r.get("usd_per_h") is None else f"${r['usd_per_h']:.3g}",
                  f"{si(r.get('items_per_usd'))} {unit}", r["dominant_bound"], "yes" if r["fits_in_memory"] else "NO")
    return t


def _param(name: str, x: float) -> str:
    return f"{x / (365.0 * 86400.0):.3g} y" if name.endswith("_s") else f"{x:.3g}"


def economics_table(r: Result, t: Any, swings: list[Any], typical_w: float | None = None) -> Table:
    """A :class:`~mtiasim.fleet.Tco` for one result: power from the chip to the facility, capex
    and running cost per hour, items per dollar and carbon, then the parameters that move it most."""
    w = t.busy

    def usd(x: float | None) -> str:
        return "n/a" if x is None else f"${x:,.0f}"

    rows = [
        ("platform", t.platform),
        ("chip power (busy)", si(w.chip_w, "W") + ("" if typical_w is None else
                                                    f" (published typical {si(typical_w, 'W')})")),
        ("+ host share (CPUs, DRAM, NICs, switches)", si(w.host_w, "W")),
        ("+ fans, + supply losses", f"{si(w.fans_w, 'W')}, {si(w.conversion_w, 'W')}"),
        ("= IT power; x PUE = facility power", f"{si(w.it_w, 'W')}; {si(w.facility_w, 'W')}"),
        ("perf/W: chip / wall", f"{si(r.perf_per_w)} / {si(r.throughput_per_s / w.facility_w if w.facility_w else None)}"
                                f" {r.item_unit}s/J"),
        (f"average facility power at {100 * t.utilisation:.0f}% utilisation", si(t.average_facility_w, "W")),
        ("capex: chip + host + network + facility",
         " + ".join(usd(x) for x in (t.accelerator_usd, t.host_usd, t.network_usd, t.facility_usd))
         + f" = {usd(t.capex_usd)}"),
        ("cost per hour: capex + energy", "n/a" if t.usd_per_h is None else
         f"${t.capex_usd_per_h:.3g} + ${t.energy_usd_per_h:.3g} = ${t.usd_per_h:.3g}"),
        (f"{r.item_unit}s per $", si(t.items_per_usd)),
        (f"kg CO2e per million {r.item_unit}s", "n/a" if t.kg_co2e_per_million_items is None
         else f"{t.kg_co2e_per_million_items:.3g}"),
    ]
    for sw in swings[:4]:
        rows.append((f"sensitivity: {sw.parameter} {_param(sw.parameter, sw.low)}..{_param(sw.parameter, sw.high)}",
                     f"{si(sw.items_per_usd_at_low)}..{si(sw.items_per_usd_at_high)} per $ "
                     f"({100 * sw.relative_swing:.0f}%)"))
    return kv_table(f"{r.model} on {r.chip}: power at the wall and cost of ownership (per accelerator)", rows)


def chips_table(chips: Iterable[ChipSpec]) -> Table:
    t = Table(title="chip presets")
    for c in ("name", "vendor", "kind", "bf16 dense", "fp8", "int8", "DRAM", "DRAM BW", "SRAM", "TDP", "price"):
        t.add_column(c, justify="left" if c in ("name", "vendor", "kind") else "right")
    for c in chips:
        price = c.cost.capex_usd
        t.add_row(c.name, c.vendor, c.kind, si(c.peak("bf16"), "FLOP/s"), si(c.peak("fp8"), "FLOP/s"),
                  si(c.peak("int8"), "OP/s"), si(c.dram.capacity_bytes.value, "B"),
                  si(c.dram.bandwidth_bytes_per_s.value, "B/s"), si(c.sram_bytes or None, "B"),
                  si(c.power.tdp_w.value, "W"),
                  "n/a" if price.value is None else f"${price.value:,.0f}" + (" (est.)" if price.status == "estimate"
                                                                              else ""))
    return t


def sourced_fields(obj: Any, prefix: str = "") -> Iterable[tuple[str, Sourced]]:
    """Every sourced number under ``obj`` with its dotted path (a chip: every spec value)."""
    if isinstance(obj, Sourced):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from sourced_fields(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, BaseModel):
        for k in type(obj).model_fields:
            yield from sourced_fields(getattr(obj, k), f"{prefix}.{k}" if prefix else k)


def spec_table(chip: ChipSpec) -> Table:
    t = Table(title=f"{chip.display_name} ({chip.name}): every number with its source")
    for c in ("field", "value", "status", "source / note", "alternatives"):
        t.add_column(c, overflow="fold")
    for path, s in sourced_fields(chip):
        note = s.source + (f" — {s.note}" if s.note else "")
        alts = "; ".join(f"{k}={v.value:g}" if v.value is not None else f"{k}=unknown" for k, v in s.alternatives.items())
        t.add_row(path, "unknown" if s.value is None else f"{s.value:g}", s.status, note, alts)
    return t


def cost_rows(c: Any, unit: str) -> list[tuple[str, str]]:
    """A :class:`~mtiasim.fleet.SystemCost` as table rows (none when power is unknown)."""
    if c is None:
        return []
    return [("power: per chip / system at the wall", f"{si(c.chip_power_w, 'W')} / {si(c.wall_power_w, 'W')} "
             f"({c.per_chip.platform}: host, fans, supplies, PUE)"),
            ("cost of ownership", "n/a (accelerator price unknown)" if c.usd_per_h is None else
             f"${c.usd_per_h:,.2f}/h for the system; {si(c.items_per_usd)} {unit}s per $ at "
             f"{100 * c.per_chip.utilisation:.0f}% utilisation")]


def serving_table(rep: Any) -> Table:
    load = "offline (all requests at t=0)" if rep.qps is None else f"{rep.qps:g} requests/s (Poisson)"
    pct = lambda p: f"p50 {si(p.p50, 's')}  p90 {si(p.p90, 's')}  p99 {si(p.p99, 's')}"  # noqa: E731
    rows = [
        ("offered load", load),
        ("precision", f"{rep.dtype} weights and GEMMs, {rep.kv_dtype} KV cache"),
        ("requests (completed / rejected)", f"{rep.requests} ({rep.completed} / {rep.rejected})"),
        ("duration", si(rep.duration_s, "s")),
        ("throughput", f"{si(rep.output_tokens_per_s)} output tokens/s, {si(rep.requests_per_s)} requests/s"),
        ("TTFT", pct(rep.ttft_s)),
        ("TPOT", pct(rep.tpot_s)),
        ("end to end", pct(rep.e2e_s)),
        ("preemptions", str(rep.preemptions)),
        ("KV cache per replica", f"{rep.kv_capacity_tokens_per_replica:,} tokens"),
        ("replica utilisation", f"{rep.utilization:.0%}"),
    ]
    if rep.meets_slo is not None:
        bounds = ", ".join(f"{k.removesuffix('_s')} <= {si(v, 's')}" for k, v in rep.slo.model_dump().items() if v)
        rows.append(("SLO " + bounds, "MET" if rep.meets_slo else "MISSED"))
    rows += cost_rows(rep.cost, "output token")
    rows.append(("simulator wall time", si(rep.wall_s, "s")))
    return kv_table(f"serving {rep.model} on {rep.system} ({rep.plan})", rows)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def validation_tables(rep: Any) -> list[Table]:
    rows = Table(title=f"validation against {rep.source}: per row (predicted rows)")
    for c in ("round", "system", "accel", "n", "benchmark", "scenario", "metric", "measured", "predicted", "APE %"):
        rows.add_column(c, justify="right" if c in ("n", "measured", "predicted", "APE %") else "left")
    for r in rep.by_row:
        if r.prediction is None:
            continue
        d = r.model_dump()
        rows.add_row(d.get("round", ""), str(d.get("system", ""))[:38], d["accelerator"], d["n_accel"], d["benchmark"],
                     d["scenario"], d["metric"], f"{float(d['value']):.4g}", f"{r.prediction:.4g}", f"{r.ape_pct:.1f}")
    out = [rows]
    for title, group in (("by kind", rep.by_kind), ("by benchmark", rep.by_benchmark),
                         ("by accelerator", rep.by_accelerator), ("by metric", rep.by_metric)):
        t = Table(title=f"totals {title}")
        for c in ("group", "rows", "predicted", "coverage %", "MAPE %", "median APE %", "spread floor %",
                  "MAPE % (rows fitted on)", "MAPE % (other rows)"):
            t.add_column(c, justify="left" if c == "group" else "right")
        for k, v in group.items():
            t.add_row(k, str(v.rows), str(v.predicted), f"{v.coverage_pct:.0f}", _pct(v.mape_pct),
                      _pct(v.median_ape_pct), _pct(v.floor_mape_pct),
                      f"{_pct(v.fitted_mape_pct)} ({v.fitted_predicted})",
                      f"{_pct(v.unfitted_mape_pct)} ({v.unfitted_predicted})")
        out.append(t)
    tot = Table(title="overall", show_header=False)
    tot.add_column("k")
    tot.add_column("v", justify="right")
    tot.add_row("rows / predicted / coverage", f"{rep.rows} / {rep.predicted} / {rep.coverage_pct:.0f}%")
    tot.add_row("MAPE / median APE", f"{rep.mape_pct or 0:.1f}% / {rep.median_ape_pct or 0:.1f}%")
    tot.add_row("spread floor (best single value per configuration)", f"{rep.floor_mape_pct or 0:.1f}%")
    t = rep.total
    tot.add_row("rows a fitted value was fitted on: MAPE (rows)", f"{_pct(t.fitted_mape_pct)}% ({t.fitted_predicted})")
    tot.add_row("other rows (out of sample): MAPE / median APE (rows)",
                f"{_pct(t.unfitted_mape_pct)}% / {_pct(t.unfitted_median_ape_pct)}% ({t.unfitted_predicted})")
    reasons: dict[str, int] = {}
    for r in rep.by_row:
        if r.reason:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
    for why, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:8]:
        tot.add_row(f"unsupported: {why[:90]}", str(n))
    out.append(tot)
    return out


def ranking_table(rep: Any) -> Table:
    load = "offline (full batches)" if rep.qps is None else f"{si(rep.qps)} queries/s (Poisson)"
    unit = f"{rep.item_unit}s"
    rows = [("offered load", load),
            ("throughput", f"{si(rep.samples_per_s)} queries/s, {si(rep.pairs_per_s)} {unit}/s"),
            ("model placement", "whole model on every chip" if rep.table_shards == 1 else
             f"embedding tables sharded {rep.table_sharding}-wise over {rep.table_shards} chips ("
             + ("reduce-scatter of partial sums)" if rep.table_sharding == "row" else "all-to-all of pooled embeddings)")),
            ("batching", f"up to {rep.batch_pairs:,} {unit} or {si(rep.batch_timeout_s, 's')} wait"
             + (f", {rep.streams} batches at once per chip" if rep.streams > 1 else "")
             + (f"; mean batch {rep.mean_batch_pairs:,.0f} {unit}" if rep.mean_batch_pairs else ""))]
    if rep.qps is not None:
        rows.append(("query latency", f"p50 {si(rep.p50_latency_s, 's')}  p99 {si(rep.p99_latency_s, 's')}"))
    if rep.meets_slo is not None:
        rows.append((f"SLO p99 <= {si(rep.slo_p99_s, 's')}", "MET" if rep.meets_slo else "MISSED"))
    rows += cost_rows(rep.cost, rep.item_unit)
    rows.append(("simulator wall time", si(rep.wall_s, "s")))
    return kv_table(f"serving {rep.model} on {rep.system} ({rep.dtype})", rows)


def training_validation_tables(rep: Any) -> list[Table]:
    """Per-row predictions and the summary of a :class:`~mtiasim.validate.training.TrainingValidation`."""
    rows = Table(title=f"MLPerf Training time to train: {rep.source}")
    for c in ("line", "benchmark", "accelerator", "chips", "GBS", "measured", "predicted", "APE", "deployment / reason"):
        rows.add_column(c, justify="right" if c in ("line", "chips", "GBS", "measured", "predicted", "APE") else "left")
    for r in rep.by_row:
        rows.add_row(str(r.line), r.benchmark, r.accelerator, r.n_accel, r.global_batch_size,
                     "-" if r.measured_min is None else f"{r.measured_min:.2f} min",
                     "-" if r.predicted_min is None else f"{r.predicted_min:.2f} min",
                     "-" if r.ape_pct is None else f"{r.ape_pct:.1f}%", r.deployment or r.reason or "")
    summary = Table(title="error by benchmark (no value is fitted to these rows: all out of sample)")
    for c in ("benchmark", "rows", "predicted", "coverage", "MAPE", "median APE"):
        summary.add_column(c, justify="left" if c == "benchmark" else "right")
    for name, s in [*rep.by_benchmark.items(), ("all", rep.total)]:
        summary.add_row(name, str(s.rows), str(s.predicted), f"{s.coverage_pct:.0f}%",
                        "-" if s.mape_pct is None else f"{s.mape_pct:.1f}%",
                        "-" if s.median_ape_pct is None else f"{s.median_ape_pct:.1f}%")
    return [rows, summary]


def search_table(res: Any) -> Table:
    """A :class:`~mtiasim.training.search.SearchResult`: the fastest layouts that fit."""
    t = Table(title=f"{res.fitting} of {res.evaluated} layouts fit ({res.elapsed_s:.1f} s); fastest first")
    for c in ("TP", "PP", "DP", "micro-batch", "ZeRO", "recompute", "step", "MFU", "memory/chip", "bubble", "exposed comm"):
        t.add_column(c, justify="right")
    for r in res.ranked:
        t.add_row(str(r.tensor_parallel), str(r.pipeline_parallel), str(r.data_parallel), str(r.micro_batch),
                  str(r.zero_stage), r.recompute, si(r.step_time_s, "s"), "-" if r.mfu is None else f"{100 * r.mfu:.1f}%",
                  si(r.memory_per_chip_bytes, "B"), si(r.breakdown_s.pipeline_bubble, "s"),
                  si(r.breakdown_s.communication_exposed, "s"))
    if res.rejected:
        t.caption = "not ranked: " + "; ".join(f"{why} ({n})" for why, n in res.rejected.items())
    return t


def fleet_tables(plan: Any) -> list[Table]:
    """A :class:`~mtiasim.fleet.planner.FleetPlan`: the choice per workload, every alternative with
    why it loses, and the fleet total."""
    obj = plan.objective
    choice = Table(title=f"fleet plan (objective: {obj})")
    for c in ("workload", "model", "chip", "chips", "plan", "$/h", "wall kW", "per $", "targets"):
        choice.add_column(c, justify="right" if c in ("chips", "$/h", "wall kW", "per $") else "left")
    for w in plan.workloads:
        o = w.chosen
        choice.add_row(w.workload, w.model, o.chip, str(o.count), o.plan or "", f"${o.usd_per_h:,.2f}",
                       f"{o.wall_w / 1e3:.2f}", f"{si(o.cost.items_per_usd)} {o.item_unit}s", _metrics(o.metrics))
    choice.add_row("fleet total", "", ", ".join(f"{c} x{n}" for c, n in plan.chips.items()), "", "",
                   f"${plan.total(lambda o: o.usd_per_h):,.2f}", f"{plan.total(lambda o: o.wall_w) / 1e3:.2f}", "", "")
    alts = Table(title="every chip per workload: its smallest system that meets the targets, and why it loses")
    for c in ("workload", "chip", "chips", "$/h", "wall kW", "per $", "targets", "verdict"):
        alts.add_column(c, justify="right" if c in ("chips", "$/h", "wall kW", "per $") else "left")
    for w in plan.workloads:
        for o in w.options:
            alts.add_row(w.workload, o.chip, "-" if o.count is None else str(o.count),
                         "-" if o.usd_per_h is None else f"${o.usd_per_h:,.2f}",
                         "-" if o.wall_w is None else f"{o.wall_w / 1e3:.2f}",
                         "-" if o.cost is None else f"{si(o.cost.items_per_usd)}", _metrics(o.metrics),
                         w.why_not(o, obj))
    robust = Table(title="how robust each choice is: every documented cost range end at which another chip wins")
    for c in ("workload", "chosen", "another chip wins when"):
        robust.add_column(c)
    for w in plan.workloads:
        robust.add_row(w.workload, w.chosen.chip, flip_text(w.flips))
    return [choice, alts, robust]


def flip_text(flips: list[Any]) -> str:
    """``Flip``s as one line (or that the choice holds over every documented range)."""
    if not flips:
        return "none: the choice holds over every documented range"
    return "; ".join(f"{f.parameter} at its {f.end} end ({f.value:g}): {f.winner}" for f in flips)


def _metrics(m: dict[str, float | None]) -> str:
    parts = []
    for k, v in m.items():
        if v is None or k == "mfu":
            continue
        name = k.removesuffix("_s").replace("_", " ")
        parts.append(f"{name} {si(v, 's')}")
    return ", ".join(parts)
