"""Commands that serve traffic: serve, mlperf."""

from __future__ import annotations

import math

import typer

from mtiasim.chips import ChipError
from mtiasim.cli.common import (
    _dump,
    _fail,
    _print,
    app,
    out,
)
from mtiasim.frontend import zoo
from mtiasim.frontend.capture import CaptureError
from mtiasim.graph.ops.base import OpError


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
    batched_only = {"--streams": streams != 1, "--p99": latency_p99, "--batch-pairs": batch_pairs != 65536,
                    "--batch-timeout": batch_timeout != "10ms"}
    given = [flag for flag, v in batched_only.items() if v]
    if given:
        _fail(ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to batched models; {model} "
                         "is an LLM (its SLOs are --ttft-p99 and --tpot-p99; its batching --max-batch and --max-tokens)"))
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
