"""One self-contained HTML page (plotly.js inlined: it opens with no network) that explains a
comparison of chips on a model, or a fleet plan: charts from ``report/charts.py``, tables, and the
source of every chip number. Each chart's toolbar exports it as PNG."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import plotly.io as pio
from plotly.offline import get_plotlyjs

from mtiasim import api
from mtiasim.chips import load_chip
from mtiasim.chips.schema import ChipSpec
from mtiasim.fleet import load_site
from mtiasim.fleet.site import Site
from mtiasim.frontend import zoo
from mtiasim.report import charts
from mtiasim.report.tables import flip_text, sourced_fields

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}td.n{text-align:right}h2{margin-top:2em;border-bottom:1px solid #ddd}.note{color:#a60}"""
LOAD_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 0.9)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f'<td class="n">{v:.4g}</td>'
        return f"<td>{html.escape('' if v is None else str(v))}</td>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(fig: Any) -> str:
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, config={"displaylogo": False,
                       "toImageButtonOptions": {"format": "png", "scale": 2}})


def _page(title: str, sections: list[str]) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
            f"<h1>{html.escape(title)}</h1><p>mtiasim, {date.today().isoformat()}. Each chart's toolbar saves it "
            "as PNG. Estimates are labelled as such in the sources below.</p>" + "".join(sections) + "</body></html>")


def sources_section(chips: Sequence[ChipSpec]) -> str:
    """Every number of each chip with its status and source (conflicting published values listed)."""
    parts = ["<h2>Sources of every chip number</h2>"]
    for c in chips:
        rows = [(path, "unknown" if s.value is None else f"{s.value:g}", s.status,
                 s.source + (f" ({s.note})" if s.note else ""),
                 "; ".join(f"{k}={'unknown' if v.value is None else f'{v.value:g}'}" for k, v in s.alternatives.items()))
                for path, s in sourced_fields(c)]
        parts.append(f"<details><summary>{html.escape(c.display_name)} ({c.name}): {len(rows)} numbers</summary>"
                     + _table(("field", "value", "status", "source", "alternatives"), rows) + "</details>")
    return "".join(parts)


def _curves(model: str, chips: Sequence[str], progress: Callable[[str], None]) -> tuple[str, list[str]]:
    """Latency against load on one chip (LLMs: one 8-chip system) per chip: p99 at a share of the
    offline capacity; chips that cannot serve the model are named."""
    from mtiasim.serving import serve_llm, serve_ranking_model

    llm = zoo.get(model).family == "llm"
    curves, skipped = {}, []
    for chip in chips:
        progress(f"serving curve on {chip}")
        try:
            if llm:
                system = f"{chip}:8"
                cap = serve_llm(model, system, qps=None, requests=200).requests_per_s
                pts = [(r.output_tokens_per_s, r.tpot_s.p99) for f in LOAD_FRACTIONS[:4]
                       for r in [serve_llm(model, system, qps=f * cap, requests=200)] if r.tpot_s.p99]
            else:
                cap = serve_ranking_model(model, f"{chip}:1", qps=None).samples_per_s
                pts = [(r.samples_per_s, r.p99_latency_s) for f in LOAD_FRACTIONS
                       for r in [serve_ranking_model(model, f"{chip}:1", qps=f * cap, queries=2000)]]
        except ValueError as e:
            skipped.append(f"{chip}: {str(e).splitlines()[0]}")
            continue
        curves[chip] = pts
    if llm:
        fig = charts.load_curves(curves, "output tokens/s (8 chips)", "p99 time per output token (s)",
                                 f"{model}: p99 TPOT against load (Poisson arrivals)")
    else:
        fig = charts.load_curves(curves, "queries/s (one chip)", "p99 query latency (s)",
                                 f"{model}: p99 latency against load (Poisson arrivals, dynamic batching)")
    return _figure(fig), skipped


def model_report(model: str, chips: Sequence[str], *, batch: int | None = None, seq_len: int | None = None,
                 site: Site | None = None, serving: bool = True,
                 progress: Callable[[str], None] = lambda _: None) -> str:
    """The page for ``model`` on ``chips``: rooflines and slowest kernels per chip, perf/W and
    perf/TCO, latency against load from the serving simulator, and every chip number's source."""
    site = site or load_site()
    specs = [load_chip(c) for c in chips]
    sections, rows = [], []
    entry = zoo.get(model)
    for spec in specs:
        progress(f"{model} on {spec.name}")
        for phase in entry.phases:
            r = api.simulate(model, chip=spec, batch=batch, seq_len=seq_len, phase=phase)
            row = {"chip": r.chip, "phase": r.phase, "latency_s": r.latency_s, "throughput_per_s": r.throughput_per_s,
                   "item_unit": r.item_unit, "power_w": r.power_w, "perf_per_w": r.perf_per_w, "notes": r.notes}
            extra = api.economics_row(spec, r, site)
            row["notes"] = row["notes"] + extra.pop("economics_notes")
            rows.append({**row, **extra})
            sections.append(f"<h2>{html.escape(spec.display_name)}: {html.escape(phase)}</h2>"
                            + _figure(charts.roofline(r, spec)) + _figure(charts.kernel_bars(r)))
    summary = _table(("chip", "phase", "latency s", "throughput /s", "chip W", "wall W", "perf/W (wall)", "$/h",
                      "per $"),
                     [(r["chip"], r["phase"], r["latency_s"], r["throughput_per_s"], r["power_w"], r["wall_power_w"],
                       r["perf_per_wall_w"], r["usd_per_h"], r["items_per_usd"]) for r in rows])
    notes = sorted({n for r in rows for n in r["notes"]})
    head = ["<h2>Chips side by side</h2>", summary, _figure(charts.efficiency_bars(rows)),
            "".join(f"<p class='note'>note: {html.escape(n)}</p>" for n in notes)]
    if serving:
        fig, skipped = _curves(model, chips, progress)
        head += ["<h2>Latency against load</h2>", fig,
                 "".join(f"<p class='note'>not served: {html.escape(s)}</p>" for s in skipped)]
    return _page(f"{model} on {', '.join(chips)}", head + sections + [sources_section(specs)])


def fleet_report(plan: Any) -> str:
    """The page for a :class:`~mtiasim.fleet.planner.FleetPlan`: the choice per workload, every
    option with why it loses, a chart of the options' costs, and the chips' sources."""
    obj = plan.objective
    chosen = _table(("workload", "model", "chip", "chips", "plan", "$/h", "facility W", "targets"),
                    [(w.workload, w.model, w.chosen.chip, w.chosen.count, w.chosen.plan, w.chosen.usd_per_h,
                      w.chosen.wall_w, ", ".join(f"{k} {v:.3g}" for k, v in w.chosen.metrics.items() if v is not None))
                     for w in plan.workloads])
    robust = _table(("workload", "chosen", "another chip wins when"),
                    [(w.workload, w.chosen.chip, flip_text(w.flips)) for w in plan.workloads])
    options = _table(("workload", "chip", "chips", "$/h", "facility W", "per $", "verdict"),
                     [(w.workload, o.chip, o.count, o.usd_per_h, o.wall_w,
                       None if o.cost is None else o.cost.items_per_usd, w.why_not(o, obj))
                      for w in plan.workloads for o in w.options])
    total = (f"<p>Fleet total: {', '.join(f'{n} x {c}' for c, n in plan.chips.items())}; "
             f"${plan.total(lambda o: o.usd_per_h):,.2f} per hour; "
             f"{plan.total(lambda o: o.wall_w) / 1e3:,.2f} kW at the facility.</p>")
    specs = [load_chip(c) for c in sorted({o.chip for w in plan.workloads for o in w.options})]
    return _page(f"fleet plan (objective: {obj})", [
        "<h2>The choice per workload</h2>", chosen, total, _figure(charts.fleet_options(plan)),
        "<h2>Every option and why it loses</h2>", options,
        "<h2>How robust each choice is</h2><p>Each site parameter and each chip's price moved to the low "
        "and high end of its documented range, the others at their defaults; caps not applied.</p>", robust,
        sources_section(specs)])


def write(page: str, path: str | Path) -> Path:
    """Write ``page``; the folder must exist (a clear error otherwise)."""
    p = Path(path)
    if not p.parent.is_dir():
        raise ValueError(f"-o {path}: folder {p.parent} does not exist")
    p.write_text(page, encoding="utf-8")
    return p
