"""The ``mtiasim`` command line: a thin layer that parses arguments and calls the API."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from mtiasim import api
from mtiasim.chips import ChipError, list_chips, load_chip
from mtiasim.compiler import CompileOptions
from mtiasim.fleet import load_site
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
COST_HELP = ("Override a cost or site parameter (data/fleet/site.yaml), e.g. --cost energy_usd_per_kwh=0.12, "
             "--cost utilisation=alt:high; the chip's price is --set cost.capex_usd=USD")


def _overrides(items: list[str] | None, option: str = "--set") -> dict[str, str]:
    res = {}
    for it in items or []:
        if "=" not in it:
            raise typer.BadParameter(f"{option} {it!r}: expected PATH=VALUE")
        k, v = it.split("=", 1)
        res[k.strip()] = v.strip()
    return res


def _fail(e: Exception) -> None:
    from pydantic import ValidationError

    if isinstance(e, ValidationError):  # our validators' own messages name the field
        e = ValueError("; ".join(d["msg"].removeprefix("Value error, ") for d in e.errors()))
    err.print(f"[red]error:[/red] {e}", highlight=False)
    raise typer.Exit(2)


def _dump(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _print(table: Any, notes: list[str]) -> None:
    """A result's table, then its notes."""
    out.print(table)
    for n in notes:
        out.print(f"[yellow]note:[/yellow] {n}", highlight=False)


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
    from mtiasim.fleet import economics
    from mtiasim.fleet.sensitivity import sensitivity
    from mtiasim.power import energy_model
    from mtiasim.power.platform import PlatformError, platform_for

    try:
        t = economics(spec, chip_power_w=r.power_w, throughput_per_s=r.throughput_per_s, site=site)
    except PlatformError as e:
        return None, [], [str(e)]
    if t is None:
        return None, [], []
    idle = min(energy_model(spec).static_w, r.power_w)
    swings = sensitivity(spec, platform_for(spec), site, busy_chip_w=r.power_w, idle_chip_w=idle,
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


def _duration_s(text: str | None, name: str, allow_zero: bool = False) -> float | None:
    """A duration option in seconds: finite, positive (or zero where ``allow_zero``)."""
    if text is None:
        return None
    from mtiasim.units import UnitError, parse_quantity

    try:
        value = parse_quantity(text, "s")
    except UnitError as e:
        raise typer.BadParameter(f"{name} {text!r}: {e}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise typer.BadParameter(f"{name} {text!r}: must be a finite duration "
                                 f"{'of 0 or more' if allow_zero else 'above 0'}")
    return value


def _rate(qps: float | None) -> float | None:
    """--qps: a positive, finite arrival rate (None: Offline)."""
    if qps is not None and not (math.isfinite(qps) and qps > 0):
        raise typer.BadParameter(f"--qps {qps}: must be a positive, finite number of queries per second "
                                 "(omit it for Offline: every request at t = 0)")
    return qps


@app.command("serve")
def serve(model: str = typer.Argument(..., help="Zoo LLM name (see `mtiasim models`)."),
          system: str = typer.Option("mtia-400:8", "--system", help="CHIP:COUNT or a SystemSpec YAML file."),
          qps: float | None = typer.Option(None, "--qps", help="Poisson arrival rate; omit for Offline (all at t=0)."),
          trace: str | None = typer.Option(None, "--trace", help="LLMs: CSV of requests (arrival_s, prompt_tokens, "
                                           "output_tokens) instead of Poisson arrivals."),
          requests: int = typer.Option(1000, "--requests", min=1, help="Number of requests to simulate."),
          seed: int = typer.Option(0, "--seed", help="Seed of the arrival and length draws."),
          prompt_tokens: int | None = typer.Option(None, "--input-len", min=1, help="Fixed prompt length."),
          output_tokens: int | None = typer.Option(None, "--output-len", min=1, help="Fixed output length."),
          tp: int | None = typer.Option(None, "--tp", min=1, help="Tensor-parallel degree (default: smallest that fits)."),
          pp: int | None = typer.Option(None, "--pp", min=1, help="Pipeline stages per replica (default: planned)."),
          ep: int = typer.Option(1, "--ep", min=1, help="MoE: chips per replica that split the experts "
                                 "(expert parallelism, data-parallel attention)."),
          kv_dtype: str | None = typer.Option(None, "--kv-dtype", help="KV-cache precision (default: activations')."),
          beams: int = typer.Option(1, "--beams", min=1, help="Beam-search width (MLPerf GPT-J: 4)."),
          stack: str | None = typer.Option(None, "--stack", help="GPUs: software stack whose kernel calibration "
                                           "times the steps or batches (tensorrt-llm, vllm, vllm-rocm-0.4, tensorrt, tensorrt-graphs, pytorch-eager, pytorch-cuda-graph)."),
          dtype: str | None = typer.Option(None, "--dtype", help="Weight/matrix precision (default: the model's)."),
          max_num_seqs: int | None = typer.Option(None, "--max-batch", min=1, help="Max sequences per step."),
          max_tokens: int | None = typer.Option(None, "--max-tokens", min=1, help="Max tokens per step (chunked prefill)."),
          max_chunk: int | None = typer.Option(None, "--max-prefill-chunk", min=1,
                                               help="Max prompt tokens one request prefills per step (vLLM's "
                                                    "--long-prefill-token-threshold); default: no cap."),
          routing: str = typer.Option("round_robin", "--routing", help="LLMs: how requests reach the data-parallel "
                                      "replicas: round_robin, or least_pending (each to the replica with the fewest "
                                      "in flight, as NVIDIA's MLPerf LLM harness routes Server runs)."),
          prefill_first: bool = typer.Option(False, "--prefill-first", help="A step with prompts to prefill runs only "
                                             "them while the decodes wait (vLLM V0's default scheduler); default: "
                                             "prompts and decodes share each step."),
          ttft_p99: str | None = typer.Option(None, "--ttft-p99", help="SLO on p99 time to first token, e.g. 2s."),
          tpot_p99: str | None = typer.Option(None, "--tpot-p99", help="SLO on p99 time per output token, e.g. 200ms."),
          batch_pairs: int = typer.Option(65536, "--batch-pairs", min=1,
                                          help="Batched models: target items per batch (DLRM: user-item pairs)."),
          batch_timeout: str = typer.Option("10ms", "--batch-timeout", help="Batched models: longest wait to fill a batch "
                                            "(0: a free stream takes whatever waits)."),
          streams: int = typer.Option(1, "--streams", min=1, help="Batched models: batches a chip runs at once, "
                                      "sharing its compute and SRAM/L2 (NVIDIA harnesses: CUDA inference streams)."),
          latency_p99: str | None = typer.Option(None, "--p99", help="Batched models: SLO on p99 query latency, e.g. 60ms."),
          as_json: bool = typer.Option(False, "--json")):
    """Simulate serving a model on a multi-chip system and report latency percentiles, throughput
    and whether the SLOs hold. LLMs: continuous batching with a paged KV cache. Batched models
    (dlrm-v2, ranking-lc/hc: queries of user-item pairs; bert-large, resnet50: one sample per
    query): dynamically batched per chip."""
    from mtiasim.serving import SLO, default_scheduler, serve_llm

    try:
        family = zoo.get(model).family
    except KeyError as e:
        _fail(e)
    qps = _rate(qps)
    if family != "llm":
        llm_only = {"--ep": ep != 1, "--beams": beams != 1, "--kv-dtype": kv_dtype, "--tp": tp,
                    "--pp": pp, "--trace": trace, "--ttft-p99": ttft_p99, "--tpot-p99": tpot_p99,
                    "--max-batch": max_num_seqs, "--max-tokens": max_tokens, "--prefill-first": prefill_first,
                    "--max-prefill-chunk": max_chunk, "--routing": routing != "round_robin",
                    "--input-len": prompt_tokens,
                    "--output-len": output_tokens}
        given = [flag for flag, v in llm_only.items() if v]
        if given:
            _fail(ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to LLMs; {model} is a "
                             f"batched {zoo.get(model).family} model (use --qps, --batch-pairs, --batch-timeout, "
                             "--streams, --p99, --stack)"))
        _serve_ranking(model, system, qps, requests, seed, dtype, batch_pairs, batch_timeout, streams, latency_p99,
                       as_json, stack)
        return
    if streams != 1:
        _fail(ValueError(f"--streams applies to batched models; {model} is an LLM"))
    try:
        _check_stack(stack, system)
        sched = default_scheduler(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_tokens, beams=beams,
                                  mixed_steps=not prefill_first, max_prefill_chunk_tokens=max_chunk)
        slo = SLO(ttft_p99_s=_duration_s(ttft_p99, "--ttft-p99"), tpot_p99_s=_duration_s(tpot_p99, "--tpot-p99"))
        from mtiasim.serving.traffic import load_trace

        rep = serve_llm(model, system, qps=qps, requests=requests, seed=seed, prompt_tokens=prompt_tokens,
                        output_tokens=output_tokens, scheduler=sched, tp=tp, pp=pp, dtype=dtype,
                        kv_dtype=kv_dtype, ep=ep, stack=stack, slo=slo if (slo.ttft_p99_s or slo.tpot_p99_s) else None,
                        request_list=load_trace(trace) if trace else None, routing=routing)
    except (ChipError, CaptureError, OpError, ValueError, KeyError) as e:
        _fail(e)
    if as_json:
        _dump(rep.to_dict())
        return
    from mtiasim.report.tables import serving_table

    _print(serving_table(rep), rep.notes)


def _check_stack(stack: str | None, system: str) -> None:
    from mtiasim.system.spec import SystemSpec

    if stack and SystemSpec.parse(system).load_chip().kind != "gpu":
        raise ValueError(f"--stack selects a GPU software stack; {system} is not a GPU system "
                         "(its kernels are timed by the analytical engine)")


def _serve_ranking(model, system, qps, requests, seed, dtype, batch_pairs, batch_timeout, streams, latency_p99,
                   as_json, stack=None):
    from mtiasim.report.tables import ranking_table
    from mtiasim.serving import serve_ranking_model

    try:
        _check_stack(stack, system)
        rep = serve_ranking_model(model, system, qps=qps, dtype=dtype, batch_pairs=batch_pairs,
                                  batch_timeout_s=_duration_s(batch_timeout, "--batch-timeout", allow_zero=True),
                                  streams=streams,
                                  queries=max(requests, 20000) if qps else None, seed=seed,
                                  slo_p99_s=_duration_s(latency_p99, "--p99"), stack=stack)
    except (ChipError, CaptureError, OpError, ValueError, KeyError) as e:
        _fail(e)
    if as_json:
        _dump(rep.to_dict())
    else:
        out.print(ranking_table(rep))


@app.command("mlperf")
def mlperf(benchmark: str = typer.Argument(..., help="MLPerf benchmark, e.g. llama2-70b, mixtral-8x7b, gptj."),
           system: str = typer.Option("h100-sxm-80gb:8", "--system", help="CHIP:COUNT or a SystemSpec YAML file."),
           scenario: str = typer.Option("Offline", "--scenario", help="Offline, Server or Interactive."),
           mlperf_round: str | None = typer.Option(None, "--round", help="MLPerf round (e.g. v3.1) whose software "
                                                   "deployment to use where it differs (deployments.yaml 'rounds')."),
           maxq: bool = typer.Option(False, "--maxq", help="Power-capped (MaxQ) run at the submitters' power limit."),
           as_json: bool = typer.Option(False, "--json")):
    """Predict an MLPerf Inference result (LLM benchmarks, dlrm-v2, bert, resnet50) for a system."""
    from mtiasim.report.tables import serving_table
    from mtiasim.serving.mlperf import predict

    try:
        p = predict(benchmark, system, scenario.capitalize(), mlperf_round=mlperf_round, maxq=maxq)
    except (ChipError, CaptureError, OpError, ValueError, KeyError) as e:
        _fail(e)
    if as_json:
        _dump(p.model_dump(mode="json"))
        return
    if p.report is not None:
        out.print(serving_table(p.report))
        for n in p.report.notes:
            out.print(f"[yellow]note:[/yellow] {n}", highlight=False)
    if p.latency_s is not None and p.report is None:
        lat = p.latency_s
        out.print(f"query latency mean {lat.mean * 1e3:.1f} ms, p50 {lat.p50 * 1e3:.1f} ms, p90 {lat.p90 * 1e3:.1f} ms, "
                  f"p99 {lat.p99 * 1e3:.1f} ms")
    qps = "all at t=0" if p.qps is None else f"{p.qps:.3g} queries/s"
    tokens = f"{p.tokens_per_s:,.0f} tokens/s, " if p.tokens_per_s else ""
    out.print(f"[bold]{p.benchmark} {p.scenario} on {p.system}[/bold]: {tokens}"
              f"{p.samples_per_s:,.2f} samples/s ({qps})" + ("" if p.meets_bounds is None else
                                                             f"; latency bounds {'met' if p.meets_bounds else 'MISSED'}"))
    out.print(f"deployment: {p.deployment}")


@app.command("train")
def train_cmd(model: str = typer.Argument(..., help="Zoo model name (see `mtiasim models`)."),
              system: str = typer.Option("mtia-300:1", "--system", help="CHIP:COUNT (every chip a data-parallel "
                                         "rank) or a system YAML."),
              global_batch: int | None = typer.Option(None, "--global-batch", min=1,
                                                      help="Samples (sequences) per optimizer step."),
              micro_batch: int | None = typer.Option(None, "--micro-batch", min=1, help="Samples per chip per "
                                                     "forward/backward (default: global batch / chips)."),
              seq_len: int | None = typer.Option(None, "--seq-len", min=1, help="LLMs: tokens per sequence."),
              optimizer: str = typer.Option("adamw", "--optimizer", help="adamw, lamb, sgd or adagrad."),
              precision: str | None = typer.Option(None, "--precision", help="fp32, bf16 (default), fp16 or fp8 "
                                                   "(mixed precision, fp32 master weights)."),
              zero: int = typer.Option(0, "--zero", min=0, max=3, help="ZeRO stage: 1 shards the optimizer state, "
                                       "2 the gradients too, 3 the weights too."),
              tp: int = typer.Option(1, "--tp", min=1, help="Tensor-parallel degree (zoo decoders); the other "
                                     "chips are data-parallel ranks."),
              pp: int = typer.Option(1, "--pp", min=1, help="Pipeline stages (zoo decoders; 1F1B schedule)."),
              recompute: str = typer.Option("none", "--recompute", help="Activation recompute: none or full."),
              lora_rank: int | None = typer.Option(None, "--lora-rank", min=1, help="Freeze the model and train "
                                                   "rank-r LoRA adapters on its qkv_proj and o_proj."),
              samples_to_converge: float | None = typer.Option(None, "--samples-to-converge",
                                                               help="Samples to reach the target: gives time to train."),
              engine: str = typer.Option("analytical", "--engine", help="analytical (any chip) or gpu (GPU presets)."),
              search_layouts: bool = typer.Option(False, "--search", help="Zoo decoders: enumerate TP x PP x DP, "
                                                  "ZeRO, micro-batch and recompute; rank the layouts that fit."),
              top: int = typer.Option(10, "--top", min=1, help="--search: how many layouts to show."),
              as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Predict a training step: forward, backward (from PyTorch autograd), optimizer and exposed
    data-parallel communication; throughput, MFU, memory per chip, energy, time to train."""
    from mtiasim.training import train

    if search_layouts:
        _train_search(model, system, global_batch, seq_len, precision, optimizer, top, as_json)
        return
    try:
        r = train(model, system=system, global_batch=global_batch, micro_batch=micro_batch, seq_len=seq_len,
                  optimizer=optimizer, precision=precision, zero_stage=zero, tp=tp, pp=pp, recompute=recompute,
                  lora_rank=lora_rank, samples_to_converge=samples_to_converge, engine=engine)
    except (ChipError, CaptureError, OpError, ValueError, KeyError) as e:
        _fail(e)
    if as_json:
        _dump(r.to_dict())
        return
    from mtiasim.report.tables import training_table

    _print(training_table(r), r.notes)


def _train_search(model: str, system: str, global_batch: int | None, seq_len: int | None, precision: str | None,
                  optimizer: str, top: int, as_json: bool) -> None:
    from mtiasim.training.search import search

    if global_batch is None:
        _fail(ValueError("--search needs --global-batch"))
    try:
        res = search(model, system, global_batch, seq_len=seq_len, precision=precision, optimizer=optimizer, top=top)
    except (ChipError, CaptureError, ValueError, KeyError) as e:
        _fail(e)
    if as_json:
        _dump({**res.model_dump(mode="json"), "ranked": [r.to_dict() for r in res.ranked]})
        return
    from mtiasim.report.tables import search_table

    out.print(search_table(res))


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


def _progress(total: int) -> Any:
    """A rich progress bar on stderr; yields a callable that advances it with a description."""
    from contextlib import contextmanager

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    @contextmanager
    def bar():  # noqa: ANN202
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=err, transient=True) as p:
            task = p.add_task("working", total=total)
            started = 0

            def step(desc: str, completed: int | None = None, new_total: int | None = None) -> None:
                """Describe the item now starting (counting the ones before it as done), or set
                ``completed`` of ``new_total`` outright."""
                nonlocal started
                if completed is None:
                    completed, started = started, started + 1
                p.update(task, description=desc, completed=completed, total=new_total or p.tasks[0].total)

            yield step
    return bar()


@app.command("report")
def report_cmd(model: str | None = typer.Argument(None, help="Zoo model name (omit with --fleet)."),
               chips: str = typer.Option("mtia-200,h100-sxm-80gb", "--chips", help="Comma-separated chip names."),
               fleet: str | None = typer.Option(None, "--fleet", help="A workload mix (YAML): report its fleet plan."),
               output: str = typer.Option("report.html", "-o", "--output", help="The HTML file to write."),
               batch: int | None = typer.Option(None, "--batch", min=1),
               seq_len: int | None = typer.Option(None, "--seq-len", min=1),
               serving: bool = typer.Option(True, "--serving/--no-serving", help="Latency-against-load curves "
                                            "from the serving simulator (the slow part)."),
               cost: list[str] | None = typer.Option(None, "--cost", help=COST_HELP)):
    """Write one self-contained HTML page (opens with no network): rooflines, per-kernel time and
    energy, latency against load, perf/W and perf/TCO, and every chip number's source; or, with
    --fleet, the fleet plan with every option and why it loses."""
    from mtiasim.fleet.mix import MixError, load_mix
    from mtiasim.fleet.planner import InfeasibleMix, plan_fleet
    from mtiasim.report import page

    try:
        if (model is None) == (fleet is None):
            raise ValueError("give a zoo model name or --fleet MIX.yaml (one of them)")
        site = load_site(_overrides(cost, "--cost"))
        if fleet is not None:
            mix = load_mix(fleet)
            with _progress(len(mix.workloads) * len(mix.chips)) as step:
                html = page.fleet_report(plan_fleet(mix, site=site, progress=step))
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


@app.command("validate")
def validate_cmd(data: str | None = typer.Option(None, "--data", help="CSV with the columns of "
                                                 "mlperf_calibration.csv (default: the packaged calibration set)."),
                 as_json: bool = typer.Option(False, "--json"),
                 training: bool = typer.Option(False, "--training", help="Predict MLPerf Training time-to-train "
                                               "rows instead (columns of mlperf_training_calibration.csv)."),
                 jobs: int = typer.Option(1, "--jobs", "-j", help="Worker processes; rows sharing a benchmark, "
                                          "system and round stay together. The result does not depend on it.")):
    """Predict every row of a measurement CSV and report the errors (MAPE, coverage). A p99
    latency row is read at the predicted Server operating point (the largest load meeting the
    benchmark's bounds), from the same prediction as its submission's throughput row. Each total
    also gives its spread floor: the MAPE of the best single value per configuration, the part of
    the error that is the submitters' own spread. With --training, each row's time to train is
    predicted from its benchmark's samples to converge and the predicted training throughput."""
    if training:
        if jobs != 1:
            _fail(ValueError("--jobs applies to inference validation; --training runs in one process"))
        _validate_training(data, as_json)
        return
    from mtiasim.validate import validate

    try:
        with _progress(1) as step:
            rep = validate(data, jobs=jobs, progress=lambda k, n: step(f"rows predicted: {k}/{n}", k, n))
    except ValueError as e:
        _fail(e)
    if as_json:
        _dump(rep.model_dump(mode="json"))
        return
    from mtiasim.report.tables import validation_tables

    for t in validation_tables(rep):
        out.print(t)


def _data_rows(data: str | None) -> int:
    """Rows of the training CSV (for the progress bar; 0 when it cannot be read: validate says why)."""
    from mtiasim.validate.training import default_data

    try:
        return max(0, len((Path(data) if data else default_data()).read_text(encoding="utf-8-sig").splitlines()) - 1)
    except (OSError, UnicodeDecodeError):
        return 0


def _validate_training(data: str | None, as_json: bool) -> None:
    from mtiasim.validate.training import validate_training

    try:
        with _progress(_data_rows(data)) as step:
            rep = validate_training(data, progress=step)
    except ValueError as e:
        _fail(e)
    if as_json:
        _dump(rep.model_dump(mode="json"))
        return
    from mtiasim.report.tables import training_validation_tables

    for t in training_validation_tables(rep):
        out.print(t)


@app.command("kernels")
def kernels_cmd(chip: str = typer.Option("h100-sxm-80gb", "--chip", help="A chip with kernel measurements "
                                         "(data/calibration/measured/)."),
                rows: bool = typer.Option(False, "--rows", help="Every kernel, not only the totals per kind."),
                as_json: bool = typer.Option(False, "--json")):
    """How far the GPU engine's kernel predictions are from kernels measured on a real GPU
    (GEMMs by dtype, attention prefill and decode, streaming kernels, convolutions, embedding
    bags), and, where measured, from whole zoo models run end to end by PyTorch; and the share of
    its burst rate a GEMM held for a minute keeps, beside the sustained clock the power model uses."""
    from rich.table import Table

    from mtiasim.engines.measured import check, check_models, check_sustained, load, summary

    try:
        checks, env = check(chip), load(chip)["env"]
    except ValueError as e:
        _fail(e)
    try:
        checks += check_models(chip)
    except ValueError:
        pass  # no whole-model measurements for this chip
    try:
        held = check_sustained(chip)
    except ValueError as e:  # a sustained_gemm record too short to settle
        _fail(e)
    per_kind = summary(checks)
    if as_json:
        _dump({"chip": chip, "env": env, "by_kind": per_kind,
               "by_kernel": [{"kind": c.kind, "kernel": c.label, "measured_s": c.measured_s,
                              "predicted_s": c.predicted_s, "error_pct": c.error_pct} for c in checks],
               "sustained_gemm": [{"dtype": d, "held_rate_fraction": m, "model_clock_fraction": f}
                                  for d, m, f in held]})
        return
    if rows:
        t = Table(title=f"kernels on {chip}")
        for col in ("kind", "kernel", "measured", "predicted", "error"):
            t.add_column(col)
        for c in checks:
            t.add_row(c.kind, c.label, f"{c.measured_s * 1e6:.1f} us", f"{c.predicted_s * 1e6:.1f} us",
                      f"{c.error_pct:+.1f}%")
        out.print(t)
    t = Table(title=f"GPU engine vs {env['gpu']} (driver {env['nvidia_smi'].get('driver_version', '?')}, "
                    f"torch {env['torch']})")
    for col in ("kind", "kernels", "MAPE", "median APE", "mean signed error"):
        t.add_column(col)
    for kind, s in per_kind.items():
        t.add_row(kind, str(s["n"]), f"{s['mape_pct']:.1f}%", f"{s['median_ape_pct']:.1f}%", f"{s['bias_pct']:+.1f}%")
    out.print(t)
    for dtype, measured, model in held:
        out.print(f"{dtype} GEMM held for a minute keeps {measured:.2f} of its first-second rate "
                  f"(power.yaml sustained_gemm_clock_fraction: {model:.2f})")
    if not held:
        out.print("no sustained-clock measurement for this chip (benchmarks/gpu_kernels.py --only sustained); "
                  "power.yaml's sustained_gemm_clock_fraction is fitted")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
