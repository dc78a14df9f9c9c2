"""The ``mtiasim`` command line: a thin layer that parses arguments and calls the API."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console

from mtiasim import api
from mtiasim.chips import ChipError, list_chips, load_chip
from mtiasim.frontend import zoo
from mtiasim.frontend.capture import CaptureError
from mtiasim.graph.ops.base import OpError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Simulate PyTorch models on MTIA accelerators and reference GPUs.")
chips_app = typer.Typer(invoke_without_command=True, help="List chip presets, or show one with its sources.")
app.add_typer(chips_app, name="chips")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

SET_HELP = "Override a chip field, e.g. --set dram.bandwidth_bytes_per_s=3e12 or --set power.tdp_w=alt:blog-2024"


def _overrides(items: list[str] | None) -> dict[str, str]:
    res = {}
    for it in items or []:
        if "=" not in it:
            raise typer.BadParameter(f"--set {it!r}: expected PATH=VALUE")
        k, v = it.split("=", 1)
        res[k.strip()] = v.strip()
    return res


def _fail(e: Exception) -> None:
    err.print(f"[red]error:[/red] {e}", highlight=False)
    raise typer.Exit(2)


def _dump(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@chips_app.callback()
def chips_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """List the chip presets."""
    if ctx.invoked_subcommand is not None:
        return
    from mtiasim.report.tables import chips_table

    specs = [load_chip(n) for n in list_chips()]
    if as_json:
        _dump([{"name": c.name, "display_name": c.display_name, "vendor": c.vendor, "kind": c.kind,
                "peak_bf16_flops_per_s": c.peak("bf16"), "dram_bandwidth_bytes_per_s": c.dram.bandwidth_bytes_per_s.value,
                "dram_capacity_bytes": c.dram.capacity_bytes.value, "tdp_w": c.power.tdp_w.value} for c in specs])
    else:
        out.print(chips_table(specs))


@chips_app.command("show")
def chips_show(name: str = typer.Argument(..., help="Preset name or path to a chip YAML file."),
               as_json: bool = typer.Option(False, "--json"),
               set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP)):
    """Print a chip spec with the source of every number."""
    from mtiasim.report.tables import spec_table

    try:
        chip = load_chip(name, _overrides(set_))
    except ChipError as e:
        _fail(e)
    if as_json:
        _dump(chip.model_dump(mode="json"))
    else:
        out.print(spec_table(chip))
        for n in chip.notes:
            out.print(f"• {n}")


@app.command("models")
def models(as_json: bool = typer.Option(False, "--json")):
    """List the model zoo."""
    rows = []
    for n in zoo.names():
        m = zoo.get(n)
        rows.append({"name": n, "family": m.family, "default_batch": m.default_batch,
                     "default_seq_len": m.default_seq_len, "default_dtype": m.default_dtype,
                     "phases": list(m.phases), "params": m.param_count(), "source": m.source})
    if as_json:
        _dump(rows)
        return
    from rich.table import Table

    t = Table(title="model zoo")
    for c in ("name", "family", "params", "batch", "seq_len", "dtype", "phases"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["name"], r["family"], f"{r['params'] / 1e9:.2f} B", str(r["default_batch"]),
                  str(r["default_seq_len"]), r["default_dtype"], ",".join(r["phases"]))
    out.print(t)


@app.command("run")
def run(model: str = typer.Argument(..., help="Zoo model name (see `mtiasim models`)."),
        chip: str = typer.Option("mtia-200", "--chip", help="Preset name or chip YAML path."),
        batch: int | None = typer.Option(None, "--batch", min=1, help="Batch (samples; sequences for LLMs)."),
        seq_len: int | None = typer.Option(None, "--seq-len", min=1, help="Prompt tokens (LLM prefill)."),
        dtype: str | None = typer.Option(None, "--dtype", help="Matrix precision: fp32 bf16 fp16 fp8 int8 mx8 mx4 fp4."),
        phase: str | None = typer.Option(None, "--phase", help="LLMs: prefill (default) or decode."),
        kv_len: int | None = typer.Option(None, "--kv-len", min=1, help="LLM decode: tokens in the KV cache."),
        set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
        allow_cpu_fallback: bool = typer.Option(False, "--allow-cpu-fallback",
                                                help="Run ops the chip cannot run on the host CPU (and charge it)."),
        top: int | None = typer.Option(None, "--top", help="Show only the N slowest kernels."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Simulate one model on one chip: per-kernel table and totals."""
    try:
        r = api.simulate(model, chip=chip, batch=batch, seq_len=seq_len, dtype=dtype, phase=phase, kv_len=kv_len,
                         chip_overrides=_overrides(set_), allow_cpu_fallback=allow_cpu_fallback)
    except (ChipError, CaptureError, OpError, ValueError, KeyError) as e:
        _fail(e)
    if as_json:
        d = r.to_dict()
        d["bytes"] = sum(o.bytes for o in r.ops)
        _dump(d)
        return
    from mtiasim.report.tables import ops_table, totals_table

    out.print(ops_table(r, top))
    out.print(totals_table(r))
    for n in r.notes:
        out.print(f"[yellow]note:[/yellow] {n}", highlight=False)


@app.command("compare")
def compare(model: str = typer.Argument(..., help="Zoo model name."),
            chips: str = typer.Option("mtia-200,h100-sxm-80gb", "--chips", help="Comma-separated chip names."),
            batch: int | None = typer.Option(None, "--batch", min=1),
            seq_len: int | None = typer.Option(None, "--seq-len", min=1),
            dtype: str | None = typer.Option(None, "--dtype"),
            kv_len: int | None = typer.Option(None, "--kv-len", min=1, help="LLM decode: KV-cache tokens (default: seq_len)."),
            plot: str | None = typer.Option(None, "--plot", help="Write a bar chart (PNG) here."),
            as_json: bool = typer.Option(False, "--json")):
    """Compare chips side by side on one model (LLMs: prefill and decode)."""
    names = [c.strip() for c in chips.split(",") if c.strip()]
    try:
        rows = api.compare(model, names, batch=batch, seq_len=seq_len, dtype=dtype, kv_len=kv_len)
    except (ChipError, CaptureError, OpError, ValueError, KeyError) as e:
        _fail(e)
    if plot:
        from mtiasim.report.plot import compare_chart

        compare_chart(model, rows, plot)
    if as_json:
        _dump({"model": model, "rows": rows, "plot": plot})
        return
    from mtiasim.report.tables import compare_table

    out.print(compare_table(model, rows))
    seen = set()
    for r in rows:
        for n in r["notes"]:
            if n not in seen:
                seen.add(n)
                out.print(f"[yellow]note:[/yellow] {n}", highlight=False)
    if plot:
        out.print(f"chart written to {plot}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
