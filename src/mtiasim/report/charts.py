"""Plotly figures for the HTML report: rooflines, per-kernel time and energy, latency against
load, perf/W and perf/TCO, and the fleet's options. Each takes plain results and returns a figure."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from mtiasim.chips.schema import ChipSpec
from mtiasim.engines.result import Result

LAYOUT = dict(template="plotly_white", height=420, margin=dict(l=60, r=20, t=50, b=50))


def roofline(r: Result, chip: ChipSpec) -> go.Figure:
    """The chip's roofline (DRAM, and SRAM where published) with every kernel of ``r`` on it:
    arithmetic intensity against DRAM bytes, achieved ops per second. Nothing sits above a roof."""
    ops = [o for o in r.ops if o.flops > 0 and o.time_s > 0]
    peak = chip.peak(r.dtype) or max((v.value or 0.0) for v in chip.compute.peak_ops_per_s.values())
    dram = chip.dram.bandwidth_bytes_per_s.value or 0.0
    ai = [o.flops / max(o.dram_bytes, 1.0) for o in ops]
    lo, hi = min(ai + [0.1]) / 2, max(ai + [peak / dram if dram else 1e3]) * 4
    xs = [lo * (hi / lo) ** (i / 60) for i in range(61)]
    fig = go.Figure()
    if dram:
        fig.add_trace(go.Scatter(x=xs, y=[min(peak, dram * x) for x in xs], mode="lines", name="DRAM roof",
                                 line=dict(color="black")))
    sram = chip.sram.bandwidth_bytes_per_s.value if chip.sram is not None else None
    if sram:
        fig.add_trace(go.Scatter(x=xs, y=[min(peak, sram * x) for x in xs], mode="lines", name="SRAM roof",
                                 line=dict(color="grey", dash="dash")))
    fig.add_trace(go.Scatter(
        x=ai, y=[o.flops / o.time_s for o in ops], mode="markers", name="kernels",
        marker=dict(size=[6 + 18 * (o.time_s / r.latency_s) ** 0.5 for o in ops], color="#1f77b4", opacity=0.7),
        text=[f"{o.name} ({o.op}, {o.bound}-bound): {o.time_s * 1e6:.1f} µs" for o in ops], hoverinfo="text"))
    fig.update_layout(title=f"{chip.name}: roofline ({r.dtype}), {r.model} {r.phase}", **LAYOUT)
    fig.update_xaxes(type="log", title="ops per DRAM byte")
    fig.update_yaxes(type="log", title="ops per second")
    return fig


def kernel_bars(r: Result, top: int = 15) -> go.Figure:
    """The ``top`` slowest kernels: time and energy side by side."""
    ops = sorted(r.ops, key=lambda o: -o.time_s)[:top][::-1]
    names = [f"{o.name} ({o.op})" for o in ops]
    fig = go.Figure()
    fig.add_trace(go.Bar(y=names, x=[o.time_s * 1e6 for o in ops], orientation="h", name="time (µs)",
                         xaxis="x"))
    if all(o.energy_j is not None for o in ops):
        fig.add_trace(go.Bar(y=names, x=[o.energy_j * 1e3 for o in ops], orientation="h", name="energy (mJ)",
                             xaxis="x2"))
    fig.update_layout(title=f"{r.chip}: slowest kernels of {r.model} {r.phase}", barmode="group",
                      xaxis=dict(domain=[0, 0.48], title="µs"), xaxis2=dict(domain=[0.52, 1], title="mJ"),
                      **{**LAYOUT, "height": 120 + 24 * len(ops), "margin": dict(l=220, r=20, t=50, b=50)})
    return fig


def efficiency_bars(rows: list[dict[str, Any]]) -> go.Figure:
    """Per chip and phase: perf/W at the chip and at the wall, and items per dollar of ownership."""
    from plotly.subplots import make_subplots

    unit = rows[0]["item_unit"] if rows else "item"
    labels = [f"{r['chip']} {r['phase']}" for r in rows]
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"{unit}s per joule", f"{unit}s per dollar"))
    fig.add_trace(go.Bar(x=labels, y=[r["perf_per_w"] for r in rows], name="chip"), 1, 1)
    fig.add_trace(go.Bar(x=labels, y=[r.get("perf_per_wall_w") for r in rows], name="at the wall"), 1, 1)
    fig.add_trace(go.Bar(x=labels, y=[r.get("items_per_usd") for r in rows], name="per $ (TCO)"), 1, 2)
    fig.update_layout(title="perf/W and perf/TCO", barmode="group", **LAYOUT)
    return fig


def load_curves(curves: dict[str, list[tuple[float, float]]], x_title: str, y_title: str, title: str) -> go.Figure:
    """One line per chip: a latency percentile against the load served."""
    fig = go.Figure()
    for chip, pts in curves.items():
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=chip))
    fig.update_layout(title=title, **LAYOUT)
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title, type="log")
    return fig


def fleet_options(plan: Any) -> go.Figure:
    """Per workload, each feasible chip's system cost per hour (the chosen one marked)."""
    fig = go.Figure()
    chips = sorted({o.chip for w in plan.workloads for o in w.options})
    for chip in chips:
        xs, ys, text = [], [], []
        for w in plan.workloads:
            o = next((o for o in w.options if o.chip == chip and o.feasible), None)
            if o is not None:
                xs.append(w.workload)
                ys.append(o.usd_per_h)
                text.append(f"{o.count} x {chip}" + (" (chosen)" if w.chosen.chip == chip else ""))
        fig.add_trace(go.Bar(x=xs, y=ys, name=chip, text=text, textposition="outside"))
    fig.update_layout(title="fleet: each chip's smallest system that meets the targets", barmode="group", **LAYOUT)
    fig.update_yaxes(title="$ per hour", type="log")
    return fig
