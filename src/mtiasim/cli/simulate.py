"""Commands that simulate one model: chips, models, run, compare."""

from __future__ import annotations

from typing import Any

import typer

from mtiasim import api
from mtiasim.chips import ChipError, list_chips, load_chip
from mtiasim.cli.common import (
    COST_HELP,
    SET_HELP,
    _dump,
    _fail,
    _overrides,
    app,
    chips_app,
    out,
)
from mtiasim.compiler import CompileOptions
from mtiasim.fleet import load_site
from mtiasim.frontend import zoo
from mtiasim.frontend.capture import CaptureError
from mtiasim.graph.ops.base import OpError


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
def run(model: str | None = typer.Argument(None, help="Zoo model name (see `mtiasim models`); omit with --hf-config."),
        hf_config: str | None = typer.Option(None, "--hf-config", help=(
            "A Hugging Face config.json (or its folder), read locally: the model is built on meta tensors "
            "(no weights) and timed on a prefill of --batch prompts of --seq-len tokens (needs mtiasim[hf]).")),
        chip: str = typer.Option("mtia-200", "--chip", help="Preset name or chip YAML path."),
        batch: int | None = typer.Option(None, "--batch", min=1, help="Batch (samples; sequences for LLMs)."),
        seq_len: int | None = typer.Option(None, "--seq-len", min=1, help="Prompt tokens (LLM prefill)."),
        dtype: str | None = typer.Option(None, "--dtype", help="Matrix precision: fp32 bf16 fp16 fp8 int8 mx8 mx4 fp4."),
        act_dtype: str | None = typer.Option(None, "--act-dtype", help="Activation storage between kernels "
                                             "(default: the model's deployment default, else 16-bit)."),
        phase: str | None = typer.Option(None, "--phase", help="LLMs: prefill (default) or decode."),
        kv_len: int | None = typer.Option(None, "--kv-len", min=1, help="LLM decode: tokens in the KV cache."),
        set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
        allow_cpu_fallback: bool = typer.Option(False, "--allow-cpu-fallback",
                                                help="Run ops the chip cannot run on the host CPU (and charge it)."),
        top: int | None = typer.Option(None, "--top", help="Show only the N slowest kernels."),
        engine: str = typer.Option("analytical", "--engine", help="analytical (any chip) or gpu (GPU presets)."),
        stack: str | None = typer.Option(None, "--stack", help="gpu engine: software stack "
                                         "(tensorrt-llm, vllm, vllm-rocm-0.4, tensorrt, tensorrt-graphs, pytorch-eager, pytorch-cuda-graph)."),
        fuse_region: list[str] | None = typer.Option(None, "--fuse-region", help=(
            "Hand-fuse the ops of these module paths (comma-separated) into one kernel, its intermediates "
            "on chip; repeatable, e.g. --fuse-region features.4,features.5,features.6 (ResNet-50's res2, "
            "as NVIDIA's TensorRT plugin runs it).")),
        cost: list[str] | None = typer.Option(None, "--cost", help=COST_HELP),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Simulate one model on one chip: per-kernel table, totals, power at the wall and cost of ownership."""
    try:
        if (model is None) == (hf_config is None):
            raise ValueError("give a zoo model name or --hf-config PATH (one of them)")
        if stack and engine != "gpu":
            raise ValueError(f"--stack applies to --engine gpu (the GPU engine's software-stack calibration); "
                             f"the {engine} engine has none")
        if hf_config is not None:
            from mtiasim.frontend.hf import from_config_file

            model = from_config_file(hf_config)  # type: ignore[assignment]
        options = None
        if fuse_region:
            regions = [[p.strip() for p in r.split(",") if p.strip()] for r in fuse_region]
            options = CompileOptions(dtype=dtype, fuse_regions=regions)
        spec = load_chip(chip, _overrides(set_))
        site = load_site(_overrides(cost, "--cost"))
        r = api.simulate(model, chip=spec, batch=batch, seq_len=seq_len, dtype=dtype, phase=phase, kv_len=kv_len,
                         allow_cpu_fallback=allow_cpu_fallback, engine=engine,
                         engine_options={"stack": stack} if stack else None, act_dtype=act_dtype, options=options)
        t, swings, notes = _economics(spec, r, site)
    except (ChipError, CaptureError, OpError, ValueError, KeyError, FileNotFoundError, ImportError) as e:
        _fail(e)
    if as_json:
        d = r.to_dict()
        d["bytes"] = sum(o.bytes for o in r.ops)
        d["economics"] = None if t is None else t.model_dump(mode="json")
        d["sensitivity"] = [s.model_dump(mode="json") for s in swings]
        d["notes"] = r.notes + notes
        _dump(d)
        return
    from mtiasim.report.tables import economics_table, ops_table, totals_table

    out.print(ops_table(r, top))
    out.print(totals_table(r))
    if t is not None:
        typical = spec.power.typical_w.value if spec.power.typical_w else None
        out.print(economics_table(r, t, swings, typical))
    for n in r.notes + notes:
        out.print(f"[yellow]note:[/yellow] {n}", highlight=False)


def _economics(spec: Any, r: Any, site: Any) -> tuple[Any, list[Any], list[str]]:
    """Wall power, cost of ownership and its sensitivity for one result; notes say what is missing."""
    from mtiasim.fleet import economics, idle_chip_w
    from mtiasim.fleet.sensitivity import sensitivity
    from mtiasim.power.platform import PlatformError, platform_for

    try:
        t = economics(spec, chip_power_w=r.power_w, throughput_per_s=r.throughput_per_s, site=site)
    except PlatformError as e:
        return None, [], [str(e)]
    if t is None:
        return None, [], []
    swings = sensitivity(spec, platform_for(spec), site, busy_chip_w=r.power_w,
                         idle_chip_w=idle_chip_w(spec, r.power_w) or 0.0,
                         throughput_per_s=r.throughput_per_s)
    return t, swings, list(t.notes)


@app.command("compare")
def compare(model: str = typer.Argument(..., help="Zoo model name."),
            chips: str = typer.Option("mtia-200,h100-sxm-80gb", "--chips", help="Comma-separated chip names."),
            batch: int | None = typer.Option(None, "--batch", min=1),
            seq_len: int | None = typer.Option(None, "--seq-len", min=1),
            dtype: str | None = typer.Option(None, "--dtype"),
            kv_len: int | None = typer.Option(None, "--kv-len", min=1, help="LLM decode: KV-cache tokens (default: seq_len)."),
            plot: str | None = typer.Option(None, "--plot", help="Write a bar chart (PNG) here."),
            cost: list[str] | None = typer.Option(None, "--cost", help=COST_HELP),
            as_json: bool = typer.Option(False, "--json")):
    """Compare chips side by side on one model (LLMs: prefill and decode): speed, chip and wall power,
    cost of ownership."""
    names = [c.strip() for c in chips.split(",") if c.strip()]
    if not names:
        _fail(ValueError("--chips names no chip; give a comma-separated list, e.g. mtia-200,h100-sxm-80gb"))
    if plot:
        from mtiasim.report.plot import check_plot_path

        try:
            check_plot_path(plot)
        except ValueError as e:
            _fail(e)
    try:
        rows = api.compare(model, names, batch=batch, seq_len=seq_len, dtype=dtype, kv_len=kv_len,
                           cost_overrides=_overrides(cost, "--cost"))
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
