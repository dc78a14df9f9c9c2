"""The fleet decision: fleet and report."""

from __future__ import annotations

import typer

from mtiasim.chips import ChipError
from mtiasim.cli.common import (
    COST_HELP,
    _dump,
    _fail,
    _overrides,
    _progress,
    app,
    out,
)
from mtiasim.fleet import load_site
from mtiasim.frontend.capture import CaptureError
from mtiasim.graph.ops.base import OpError


@app.command("fleet")
def fleet_cmd(mix_file: str = typer.Argument(..., help="A workload mix (YAML): chips on offer, workloads with "
                                              "traffic and targets, optional caps; see examples/mix.yaml."),
              objective: str | None = typer.Option(None, "--objective", help="tco, power or carbon "
                                                   "(default: the mix's objective)."),
              cost: list[str] | None = typer.Option(None, "--cost", help=COST_HELP),
              jobs: int = typer.Option(1, "--jobs", "-j", help="Worker processes for the sweep (the same plan "
                                       "for any number)."),
              ray: str | None = typer.Option(None, "--ray", help="Run the sweep on a Ray cluster: an address, "
                                             "'auto', or 'local' (a local cluster of --jobs CPUs); needs mtiasim[ray]."),
              store: str | None = typer.Option(None, "--store", help="A DuckDB file that keeps every evaluated "
                                               "system as it completes: a rerun or a killed sweep resumes from it."),
              export: str | None = typer.Option(None, "--export", help="Write every evaluated system as Parquet."),
              as_json: bool = typer.Option(False, "--json")):
    """For each workload, the cheapest system (chip, count, plan) that meets its targets, every
    alternative with why it loses, and the fleet total."""
    from mtiasim.fleet.mix import MixError, load_mix
    from mtiasim.fleet.planner import InfeasibleMix, plan_fleet
    from mtiasim.fleet.store import Store

    try:
        mix = load_mix(mix_file)
        if objective is not None:
            if objective not in ("tco", "power", "carbon"):
                raise ValueError(f"--objective must be tco, power or carbon, got {objective!r}")
            mix = mix.model_copy(update={"objective": objective})
        site = load_site(_overrides(cost, "--cost"))
        results = Store(store)
        with _progress(len(mix.workloads) * len(mix.chips)) as step:
            plan = plan_fleet(mix, site=site, progress=step, jobs=jobs, ray=ray, store=results)
        if export:
            results.export(export)
    except (MixError, InfeasibleMix, ChipError, ValueError) as e:
        _fail(e)
    if as_json:
        _dump(plan.model_dump(mode="json"))
        return
    from mtiasim.report.tables import fleet_tables

    for t in fleet_tables(plan):
        out.print(t)
    if plan.capped:
        out.print("[yellow]note:[/yellow] the caps changed the choice of at least one workload (solved as a "
                  "mixed-integer program)", highlight=False)



@app.command("report")
def report_cmd(model: str | None = typer.Argument(None, help="Zoo model name (omit with --fleet)."),
               chips: str = typer.Option("mtia-200,h100-sxm-80gb", "--chips", help="Comma-separated chip names."),
               fleet: str | None = typer.Option(None, "--fleet", help="A workload mix (YAML): report its fleet plan."),
               output: str = typer.Option("report.html", "-o", "--output", help="The HTML file to write."),
               batch: int | None = typer.Option(None, "--batch", min=1),
               seq_len: int | None = typer.Option(None, "--seq-len", min=1),
               serving: bool = typer.Option(True, "--serving/--no-serving", help="Latency-against-load curves "
                                            "from the serving simulator (the slow part)."),
               cost: list[str] | None = typer.Option(None, "--cost", help=COST_HELP),
               jobs: int = typer.Option(1, "--jobs", "-j", help="--fleet: worker processes for the sweep."),
               store: str | None = typer.Option(None, "--store", help="--fleet: the DuckDB results store of "
                                                "`mtiasim fleet --store` (reused, and extended)."),
               ):
    """Write one self-contained HTML page (opens with no network): rooflines, per-kernel time and
    energy, latency against load, perf/W and perf/TCO, and every chip number's source; or, with
    --fleet, the fleet plan with every option and why it loses."""
    from mtiasim.fleet.mix import MixError, load_mix
    from mtiasim.fleet.planner import InfeasibleMix, plan_fleet
    from mtiasim.fleet.store import Store
    from mtiasim.report import page

    try:
        if (model is None) == (fleet is None):
            raise ValueError("give a zoo model name or --fleet MIX.yaml (one of them)")
        other = ({"--jobs": jobs != 1, "--store": store} if fleet is None else
                 {"--batch": batch, "--seq-len": seq_len, "--no-serving": not serving,
                  "--chips": chips != "mtia-200,h100-sxm-80gb"})
        unused = [flag for flag, v in other.items() if v]
        if unused:
            raise ValueError(f"{', '.join(unused)} appl{'ies' if len(unused) == 1 else 'y'} to "
                             f"{'--fleet' if fleet is None else 'a model report'}; not used here")
        site = load_site(_overrides(cost, "--cost"))
        if fleet is not None:
            mix = load_mix(fleet)
            with _progress(len(mix.workloads) * len(mix.chips)) as step:
                html = page.fleet_report(plan_fleet(mix, site=site, progress=step, jobs=jobs, store=Store(store)))
        else:
            names = [c.strip() for c in chips.split(",") if c.strip()]
            if not names:
                raise ValueError("--chips names no chip; give a comma-separated list, e.g. mtia-200,h100-sxm-80gb")
            with _progress(len(names) * (2 if serving else 1)) as step:
                html = page.model_report(model, names, batch=batch, seq_len=seq_len, site=site, serving=serving,
                                         progress=step)
        path = page.write(html, output)
    except (MixError, InfeasibleMix, ChipError, CaptureError, OpError, ValueError, KeyError) as e:
        _fail(e)
    out.print(f"report written to {path} ({path.stat().st_size / 1e6:.1f} MB)")
