"""MLPerf Inference scenarios on top of the serving simulator.

- Offline: every request at t=0; the result is the completed throughput.
- Server / Interactive: the largest Poisson rate whose p99 TTFT and TPOT (or end-to-end latency
  for GPT-J) meet the benchmark's bounds, found by bisection; the result is the throughput at it.
Bounds and deployments (precision, TP, batch limits: software choices) are data, with sources.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from mtiasim.serving import (
    ROUTINGS,
    SLO,
    Percentiles,
    ServingReport,
    default_scheduler,
    plan_serving,
    serve_llm,
)
from mtiasim.serving.llm import route_batches_round_robin, route_round_robin
from mtiasim.serving.traffic import generate, harness_batches
from mtiasim.system.spec import SystemSpec

SCENARIOS = ("Offline", "Server", "Interactive")
#: an Offline replica serves at least this many batches of max_num_seqs (per pipeline lane): its
#: steady-state rate is then within ~2% of a 4x longer run's (measured: llama2-70b on one MI300X,
#: batch 1792, and on H100 TP2, batch 896; 1.7 batches overstated the rate by 15%)
OFFLINE_BATCHES_PER_LANE = 8
#: deployment keys a ``server_`` twin overrides in Server / Interactive runs (data/mlperf/deployments.yaml):
#: submitters tune their engines per scenario (e.g. RedHat's v5.1 llama3.1-8b vLLM: a 1,024-token
#: step budget, 256-token prompt chunks and a 16-bit KV cache in Server; 4,096 and FP8 in Offline)
SERVER_OVERRIDES = ("max_num_seqs", "max_num_batched_tokens", "max_prefill_chunk_tokens", "kv_dtype")
#: an MLPerf Server run lasts at least this long (mlcommons/inference loadgen mlperf.conf:
#: *.Server.min_duration = 600000 ms); a Server probe of the QPS search lasts as long, so that a
#: load whose queue grows slowly fails as it would in the real run (3,000-request probes passed
#: the Offline rate itself: BENCHMARKS.md)
SERVER_MIN_DURATION_S = 600.0
#: requests one replica serves in a probe: 600 s of its arrivals, within these bounds. The upper one
#: only guards the search's time: 60,000 is 600 s at 100 requests/s, above every replica of the
#: calibration set (Mixtral on one H100: ~54/s; llama3.1-8b: ~47/s). It was 12,000 (600 s at 20/s)
#: until the probes were cut to 220-250 s: a queue growing at 99% of the Offline rate
#: stayed under the TTFT bound in that time and the search ended on the knee (Mixtral on 4 H100s:
#: p99 TTFT 1.83 s at the operating point, 0.56 s with 600 s probes; BENCHMARKS.md)
SERVER_PROBE_REQUESTS = (1_000, 60_000)
#: a Server probe of a deployment that routes each request to the least-loaded engine
#: (``server_routing: least_pending``) simulates this many of its replicas together, fed their
#: share of the stream: the routing couples them, so one replica alone cannot stand for the rest.
LEAST_PENDING_PROBE_REPLICAS = 4
#: queries one chip group of a batched benchmark (dlrm-v2, bert, resnet50) serves in a Server
#: probe: SERVER_MIN_DURATION_S of its arrivals, within these bounds (the upper one only guards
#: the search's time and memory: 2,000,000 is 290 s of a bert group at the knee, 31 s of a DLRM-v2
#: one and 23 s of a ResNet-50 one), and at most SERVER_PROBE_BATCHES batches: a light load's many
#: small batches settle long before that. Earlier a probe was 400 full batches (at least
#: 20,000 queries): 3-7 s of arrivals, in which a queue at the knee has not yet grown to what a
#: 600 s run shows (bert-99 on 8 H100s at the model's operating point: p99 59 ms in 50,000
#: queries, 71 ms in 400,000, 100 ms in 2,000,000; measured 76-130 ms; BENCHMARKS.md)
SERVER_PROBE_QUERIES = (20_000, 2_000_000)
SERVER_PROBE_BATCHES = 100_000
#: independent runs (arrival streams drawn with seeds seed, seed+1, ...) that must each meet the
#: bounds for an LLM Server search to accept a load; each latency percentile reported at the
#: accepted load is that percentile's median over the runs (``median_report``). Near the knee one
#: run's p99 TTFT is a draw from a wide distribution: the v4.1 Mixtral Server rows (the same
#: TensorRT-LLM configs on 8 H100-SXM, loads within 1.1% of each other) report p99 TTFTs from 421 to
#: 1,908 ms, and the model's runs at one load spread as widely (BENCHMARKS.md). A load
#: that passes once by luck is not a result a submitter can publish: it has to pass again in the
#: tuning reruns that choose the target QPS and whenever the result is rerun in review. Requiring
#: all N runs to pass accepts loads whose single-run pass probability p has p**N >= ~1/2: p >= 0.87
#: for N = 5 (0.79 for three, the earlier count). Five read the submitters' operating points better
#: than three: Mixtral on 4 H100s, whose two logs ran at 95-96% of their Offline rates with p99
#: TTFTs of 328-355 ms, is predicted at 412 ms (1,010 with three runs), and the p99 latency MAPE of
#: `mtiasim validate` falls from 28.0% to 26.0% (BENCHMARKS.md). Five were first tried
#: with a search that re-probed a failing first load and saw llama3.1-405b's Server row collapse;
#: with plain bisection it lands at 217 tokens/s (measured 277; 253 with three runs).
SERVER_RUNS = 5
#: a run whose tightest p99 is at most this fraction of its bound accepts its load alone, sparing
#: the search the other runs (speed only: every probe logged at such a load had all
#: its runs within +-25% of each other); the reported latencies are still medians over SERVER_RUNS
#: runs, completed at the accepted load when needed
SURE_PASS_SLACK = 0.5
#: the same for the batched benchmarks (dlrm-v2, bert, resnet50): one run. Three were tried
#: and moved their p99s away from the logs: at its knee the model's batcher is
#: critically loaded, and a run either keeps a short queue throughout or, after one excursion,
#: holds a long one for the rest of its 600 s (bert-99.9 on 8 H100s at 56,867 q/s: seed 0 p99
#: 126 ms, mean batch 70; seeds 1 and 2 14.5 ms, mean batch 46). The median of three fell in the
#: short-queue mode, while the v4.1 logs all sit near the long one (101-127 ms). Kept at one run
#: until that bimodality is understood.
BATCHED_SERVER_RUNS = 1


def reliable_run(run_at: Callable[[int], Any], ok: Callable[[Any], bool], slack: Callable[[Any], float],
                 seed: int, runs: int = SERVER_RUNS, sure_slack: float | None = None,
                 combine: Callable[[list[Any]], Any] | None = None) -> Any | None:
    """A Server probe repeated over ``runs`` independent arrival streams (seeds ``seed``,
    ``seed + 1``, ...): None as soon as one run misses a bound (the rest are not run), else the
    median run by ``slack`` (its p99 latency over the bound, the tightest metric's), or, with
    ``combine``, what it makes of the passing runs sorted by slack (e.g. ``median_report``). With
    ``sure_slack``, a first run whose slack is at most that is returned alone."""
    done = []
    for k in range(runs):
        r = run_at(seed + k)
        if not ok(r):
            return None
        done.append(r)
        if k == 0 and sure_slack is not None and slack(r) <= sure_slack:
            break
    done.sort(key=slack)
    return combine(done) if combine is not None and len(done) > 1 else done[len(done) // 2]


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def median_report(runs: list[ServingReport]) -> ServingReport:
    """Independent Server runs at one load as one report: the median run by slack (``runs`` come
    sorted by it) with each of its TTFT, TPOT and end-to-end percentiles (mean, p50, p90, p99)
    replaced by that statistic's median over the runs.

    The run whose tightest metric is the median one stands for that metric, but its other
    metrics are one draw among the runs: e.g. llama2-70b's TPOT sets the slack (153 ms of a 200
    ms bound against 454 ms of 2 s TTFT), so the reported TTFT p99 was whichever that run drew.
    A measured row is one run, a draw from the same spread, and the prediction that errs least
    on such a draw (absolute percentage error) is a median-like centre of its distribution: the
    median of each statistic, not one run's. BENCHMARKS.md."""
    mid = runs[len(runs) // 2]
    return mid.model_copy(update={
        key: Percentiles(**{f: _median([getattr(getattr(r, key), f) for r in runs])
                            for f in ("mean", "p50", "p90", "p99")})
        for key in ("ttft_s", "tpot_s", "e2e_s")})


@lru_cache(maxsize=1)
def _data(name: str) -> dict:
    return yaml.safe_load(resources.files("mtiasim").joinpath("data", "mlperf", name).read_text())


def benchmark_info(benchmark: str) -> dict[str, Any]:
    """``llama2-70b-99.9`` -> the llama2-70b entry (accuracy variants share the model)."""
    base = benchmark.lower()
    for suffix in ("-99.9", "-99"):
        base = base.removesuffix(suffix)
    base = {"llama2-70b-interactive": "llama2-70b"}.get(base, base)
    info = _data("scenarios.yaml")["benchmarks"].get(base)
    if info is None:
        raise ValueError(f"unsupported MLPerf benchmark '{benchmark}'; supported: "
                         f"{', '.join(_data('scenarios.yaml')['benchmarks'])}")
    return {"benchmark": base, **info}


def deployment(benchmark: str, chip: str, high_accuracy: bool = False, mlperf_round: str | None = None,
               maxq: bool = False, scenario: str | None = None) -> dict[str, Any]:
    """The submitters' deployment of ``benchmark`` (base name) on ``chip``, layered: the
    ``default`` entry, then the chip's; for a -99.9 variant ``high_accuracy``'s; for a round listed
    under ``rounds`` (software of that round, e.g. v3.1's pre-TensorRT-LLM GPT-J) that round's,
    unless the round names the ``scenarios`` it was seen in and ``scenario`` is not one of them;
    for a power-capped (MaxQ) run each of those sections' ``maxq`` entries (``power_limit_w``)."""
    entries = _data("deployments.yaml").get(benchmark, {})
    high = entries.get("high_accuracy", {}) if high_accuracy else {}
    rnd = entries.get("rounds", {}).get((mlperf_round or "").lower(), {})
    if scenario and scenario not in rnd.get("scenarios", [scenario]):
        rnd = {}
    sections = [entries, high, rnd]
    if maxq:
        sections += [sec.get("maxq", {}) for sec in sections]
    d: dict[str, Any] = {}
    sources = []
    for sec in sections:
        for layer in (sec.get("default", {}), sec.get(chip, {})):
            d.update(layer)
            if layer.get("source"):
                sources.append(layer["source"])
    if sources:
        d["source"] = " | ".join(sources)  # every layer that set a field says where it came from
    if maxq and "power_limit_w" not in d:
        raise ValueError(f"no MaxQ (power-capped) deployment of {benchmark} on {chip} in data/mlperf/deployments.yaml: "
                         "its power limit is unknown")
    return d


def _capped(system: SystemSpec, dep: dict[str, Any]) -> SystemSpec:
    """The system with its chips capped at the deployment's ``power_limit_w`` (a MaxQ run)."""
    if "power_limit_w" not in dep:
        return system
    return system.model_copy(update={"chip_overrides": {**system.chip_overrides, "power.tdp_w": dep["power_limit_w"]}})


def deployment_round(benchmark: str, mlperf_round: str | None) -> str | None:
    """``mlperf_round`` when data/mlperf/deployments.yaml has a deployment of that round for
    ``benchmark`` (any accuracy variant), else None: other rounds share the default deployment."""
    base = benchmark_info(benchmark)["benchmark"]
    r = (mlperf_round or "").strip().lower()
    return r if r and r in _data("deployments.yaml").get(base, {}).get("rounds", {}) else None


def _replicas_scaled(rep: ServingReport, plan, system_name: str, note: str, replicas: int = 1) -> ServingReport:
    """A run of ``replicas`` of ``plan.dp`` identical data-parallel replicas as the whole system's
    report: counts and rates times ``plan.dp / replicas``, latencies as they are."""
    if plan.dp == replicas:
        return rep
    f = plan.dp / replicas
    return rep.model_copy(update={
        "system": system_name, "dp": plan.dp, "requests": round(rep.requests * f), "completed": round(rep.completed * f),
        "rejected": round(rep.rejected * f), "output_tokens_per_s": rep.output_tokens_per_s * f,
        "requests_per_s": rep.requests_per_s * f,
        "saturated_output_tokens_per_s": (None if rep.saturated_output_tokens_per_s is None
                                          else rep.saturated_output_tokens_per_s * f),
        "preemptions": round(rep.preemptions * f), "plan": plan.describe(),
        "notes": rep.notes + [f"{note}; its rates are scaled by {f:g}"]})


class MLPerfPrediction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    benchmark: str
    system: str
    scenario: str
    qps: float | None
    tokens_per_s: float
    samples_per_s: float
    p99_ttft_s: float | None
    p99_tpot_s: float | None
    p99_e2e_s: float | None
    meets_bounds: bool | None
    deployment: dict[str, Any]
    report: ServingReport | None = None  # LLMs: the serving run behind the numbers
    #: Server / Interactive: latency of a query (batched benchmarks) or request (LLMs, end to end)
    #: at the operating point, past warm-up: the distribution MLPerf's logs also print
    latency_s: Percentiles | None = None


def _slo(benchmark: str, scenario: str) -> SLO | dict:
    b = _data("scenarios.yaml")["bounds"].get(benchmark, {}).get(scenario)
    if b is None:
        raise ValueError(f"no {scenario} latency bounds for {benchmark} in data/mlperf/scenarios.yaml")
    return b


def predict(benchmark: str, system: str | SystemSpec, scenario: str = "Offline", *,
            qps: float | None = None, mlperf_round: str | None = None, maxq: bool = False) -> MLPerfPrediction:
    """Any supported MLPerf benchmark (LLM, or batched: ranking, BERT, ResNet-50); ``mlperf_round``
    (e.g. "v3.1") selects that round's software deployment where data/mlperf/deployments.yaml has
    one; ``maxq`` runs the chips at the submitters' MaxQ power limit (clocks throttle to hold it)."""
    from mtiasim.frontend import zoo

    if zoo.get(benchmark_info(benchmark)["model"]).family == "llm":
        return predict_llm(benchmark, system, scenario, qps=qps, mlperf_round=mlperf_round, maxq=maxq)
    return predict_batched(benchmark, system, scenario, qps=qps, mlperf_round=mlperf_round, maxq=maxq)


def batched_cost(benchmark: str, system: str | SystemSpec, scenario: str = "Offline", *,
                 mlperf_round: str | None = None, maxq: bool = False):
    """(deployment, system, batch-cost model, streams) of a batched benchmark (dlrm-v2, bert,
    resnet50) as ``predict_batched`` runs it in ``scenario``: the submitters' deployment with the
    system size's own ``by_count`` settings, the chips capped at a MaxQ power limit, and the
    engine's batch times (``RankingBatchCost``) for that scenario's batches."""
    from mtiasim.compiler import CompileOptions
    from mtiasim.serving.ranking import padded_attention, plan_ranking

    if scenario not in ("Offline", "Server"):
        raise ValueError(f"{benchmark} has no {scenario} scenario (Offline, Server)")
    info = benchmark_info(benchmark)
    sysspec = system if isinstance(system, SystemSpec) else SystemSpec.parse(system)
    dep = deployment(info["benchmark"], sysspec.chip, high_accuracy=benchmark.endswith("99.9"),
                     mlperf_round=mlperf_round, maxq=maxq, scenario=scenario)
    sysspec = _capped(sysspec, dep)
    own = dep.get("by_count", {}).get(sysspec.count, {})  # a system size's own settings
    if own:
        dep = {**dep, **own, "source": " | ".join(x for x in (dep.get("source"), own.get("source")) if x)}
    streams = int(dep.get("server_streams", 1)) if scenario == "Server" else 1
    # Server streams run their batches at once: each keeps its activations in 1/streams of SRAM/L2
    options = CompileOptions(dtype=dep.get("dtype"), act_dtype=dep.get("act_dtype"),
                             op_dtypes=dep.get("op_dtypes") or {}, fuse_regions=dep.get("fuse_regions") or [],
                             concurrent_batches=streams)
    # attention kernels compiled per sequence length pad each batch to its longest sequence:
    # Offline batches are sorted by length, Server batches are not
    padding = padded_attention(info["model"], dep.get("attention_kernel_seq_lens"), sorted_batches=scenario == "Offline")
    cost = plan_ranking(info["model"], sysspec, options, padding=padding, stack=dep.get("stack"))
    return dep, sysspec, cost, streams


def predict_batched(benchmark: str, system: str | SystemSpec, scenario: str = "Offline", *,
                    qps: float | None = None, queries: int | None = None, search_steps: int = 12,
                    mlperf_round: str | None = None, maxq: bool = False, seed: int = 0) -> MLPerfPrediction:
    """MLPerf dlrm-v2, bert, resnet50: Offline = samples/s in full batches of the submitters'
    batch; Server = the largest query rate whose p99 latency meets the bound, with
    dynamic batching (``server_batch`` items or ``batch_timeout_s``) onto ``server_streams``
    concurrent streams per chip (default 1), with up to ``bundles`` batches in flight
    (default: the streams). A deployment with ``host_input_bytes_per_item`` copies each batch's
    inputs from host memory over the chip's host link (at ``host_copy_efficiency`` of its
    bandwidth, data/calibration/serving.yaml) before it runs; with two or more bundles the copy
    of one batch overlaps the run of another, so it bounds the throughput only when it is the
    slower stage (Offline: full batches through the same two stages). ``batch_overhead_s`` is a
    harness's per-batch time on the stream beside the engine's kernels; ``by_count`` holds settings
    a submitter gave one system size (e.g. a larger Server batch on one GPU). The Server search
    accepts a load when BATCHED_SERVER_RUNS runs (arrival seeds ``seed``, ``seed + 1``, ...) all
    meet the bound and reports the median one."""
    from mtiasim.serving.ranking import batch_workload, serve_ranking

    info = benchmark_info(benchmark)
    dep, sysspec, cost, streams = batched_cost(benchmark, system, scenario, mlperf_round=mlperf_round, maxq=maxq)
    groups = sysspec.count // cost.shards
    mix, _, _ = batch_workload(info["model"])
    bundles = max(int(dep.get("bundles", 1)), streams)  # every running batch holds a bundle
    copy_s_per_item = _host_copy_s_per_item(dep, sysspec, cost.shards)
    overhead_s = float(dep.get("batch_overhead_s", 0.0))

    def full_batches_per_s(b: int) -> float:
        """Batches of ``b`` items per second back to back: the copy overlaps another batch's run
        when there are two bundles or more, else it adds to it."""
        run_s, copy_s = cost.batch_s(b) + overhead_s, b * copy_s_per_item
        return 1.0 / (max(run_s, copy_s) if bundles > 1 else run_s + copy_s)

    if scenario == "Offline":
        # NVIDIA's Offline harnesses form full gpu_batch_size batches from the sample set LoadGen
        # issues at once; a smaller batch that would run faster in the model (its activations
        # resident in L2) is not what they run
        b = int(dep["offline_batch"])
        items_s = b * full_batches_per_s(b) * groups
        return MLPerfPrediction(benchmark=info["benchmark"], system=sysspec.name, scenario=scenario, qps=None,
                                tokens_per_s=0.0, samples_per_s=items_s / mix.mean, p99_ttft_s=None, p99_tpot_s=None,
                                p99_e2e_s=None, meets_bounds=None, deployment=dep)
    bound = _slo(info["benchmark"], "Server")["latency_p99_s"]

    def run(rate: float, seed: int = seed):
        # a probe: the queries given, else SERVER_MIN_DURATION_S of one group's arrivals (within
        # SERVER_PROBE_QUERIES and SERVER_PROBE_BATCHES), as long as the MLPerf run it stands for
        lo_n, hi_n = SERVER_PROBE_QUERIES
        n = queries or int(min(max(rate / groups * SERVER_MIN_DURATION_S, lo_n), hi_n))
        return serve_ranking(cost, groups, rate, queries=n, batch_pairs=int(dep["server_batch"]),
                             timeout_s=float(dep["batch_timeout_s"]), mix=mix, streams=streams, bundles=bundles,
                             copy_s_per_item=copy_s_per_item, batch_overhead_s=overhead_s,
                             max_batches=None if queries else SERVER_PROBE_BATCHES, seed=seed)

    def passing(rate: float):
        """The median of BATCHED_SERVER_RUNS runs at ``rate`` when every one meets the bound, else None."""
        return reliable_run(lambda s: run(rate, s), lambda r: r.p99_latency_s <= bound,
                            lambda r: r.p99_latency_s / bound, seed, runs=BATCHED_SERVER_RUNS)

    if qps is not None:
        res = run(qps)
    else:
        # A server cannot outrun its full batches: under overload the batcher fills every batch to
        # server_batch, so a load above that rate queues without bound in a >= 600 s MLPerf run
        # even where a smaller batch would run faster (a short probe would still pass it). The cap
        # is probed first: where it meets the bound it is the answer (bisection below it would
        # only approach it), else the largest passing load below it is found by bisection.
        full = int(dep["server_batch"])
        cap = full * full_batches_per_s(full) * groups / mix.mean
        res = passing(cap)
        if res is None:
            lo, hi = 0.0, cap
            for _ in range(search_steps):
                mid = (lo + hi) / 2
                r = passing(mid)
                if r is not None:
                    lo, res = mid, r
                else:
                    hi = mid
            res = res or run(0.01 * cap)
    return MLPerfPrediction(benchmark=info["benchmark"], system=sysspec.name, scenario=scenario, qps=res.qps,
                            tokens_per_s=0.0, samples_per_s=res.samples_per_s, p99_ttft_s=None, p99_tpot_s=None,
                            p99_e2e_s=res.p99_latency_s, meets_bounds=res.p99_latency_s <= bound, deployment=dep,
                            latency_s=Percentiles(mean=res.mean_latency_s, p50=res.p50_latency_s,
                                                  p90=res.p90_latency_s, p99=res.p99_latency_s))


def _host_copy_s_per_item(dep: dict[str, Any], system: SystemSpec, shards: int) -> float:
    """Seconds per item to copy a batch's inputs from host memory to its chips: the deployment's
    ``host_input_bytes_per_item`` (the harness's input formats; absent: inputs start on the device)
    over ``shards`` chips' host links in parallel at ``host_copy_efficiency`` of their bandwidth."""
    nbytes = float(dep.get("host_input_bytes_per_item", 0.0))
    if nbytes <= 0:
        return 0.0
    from mtiasim.system.plan import serving_calibration

    link = system.load_chip().host_link.bandwidth_bytes_per_s.value
    if not link:
        raise ValueError(f"{system.chip} publishes no host-link bandwidth, so the deployment's host-to-device input "
                         "copies (host_input_bytes_per_item in data/mlperf/deployments.yaml) cannot be timed")
    return nbytes / (link * serving_calibration()["host_copy_efficiency"].value * shards)


def _no_load_passed(rep: ServingReport, lowest_failed_qps: float, cap_qps: float, bounds: dict) -> ServingReport:
    """The run a Server search reports when no load it probed met the bounds in every run: at 1%
    of the Offline rate, with a note naming the lowest load probed and the p99s over their bounds."""
    p99 = {"ttft_p99_s": rep.ttft_s.p99, "tpot_p99_s": rep.tpot_s.p99, "e2e_p99_s": rep.e2e_s.p99}
    missed = [f"{k.removesuffix('_p99_s').upper()} p99 {p99[k]:.3g} s > bound {b:.3g} s"
              for k, b in bounds.items() if k in p99 and p99[k] is not None and p99[k] > b]
    if rep.completed < rep.requests:
        missed.append(f"{rep.requests - rep.completed} of {rep.requests} requests not completed")
    note = (f"no load down to {lowest_failed_qps:.3g} queries/s met the bounds in all {SERVER_RUNS} runs; "
            f"reported at 1% of the Offline rate ({rep.qps:.3g} of {cap_qps:.3g} queries/s), where "
            + ("; ".join(missed) if missed else "this run meets them"))
    return rep.model_copy(update={"notes": [*rep.notes, note]})


def predict_llm(benchmark: str, system: str | SystemSpec, scenario: str = "Offline", *, requests: int | None = None,
                seed: int = 0, qps: float | None = None, search_steps: int = 9,
                mlperf_round: str | None = None, maxq: bool = False, routing: str | None = None) -> MLPerfPrediction:
    """Predict an MLPerf LLM result. Offline simulates one data-parallel replica with its share
    of the sample set, at least OFFLINE_BATCHES_PER_LANE batches (``requests`` given: that many
    requests over the whole system), and reports the steady-state throughput (before the drain
    tail, which MLPerf's >= 10-minute runs amortise); each probe of the Server search serves one
    replica's SERVER_MIN_DURATION_S of arrivals (``requests`` given: that many over the system),
    and a load passes when SERVER_RUNS runs of it (arrival seeds ``seed``, ``seed + 1``, ...) all
    meet the bounds; each reported latency percentile is its median over the runs
    (``median_report``). The search probes the Offline rate first and bisects below it
    (``search_steps`` probes) only when that fails.
    With ``qps`` given (Server/Interactive), run 20,000 requests at that load instead of searching
    (e.g. to predict the latencies a submission measured at its load), with percentiles past
    warm-up. ``routing`` (round_robin, least_pending) overrides how the deployment's harness sends
    Server requests to the replicas (``server_routing`` in deployments.yaml; default round-robin)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got '{scenario}'")
    info = benchmark_info(benchmark)
    sysspec = system if isinstance(system, SystemSpec) else SystemSpec.parse(system)
    dep = deployment(info["benchmark"], sysspec.chip, mlperf_round=mlperf_round, maxq=maxq, scenario=scenario)
    sysspec = _capped(sysspec, dep)
    if scenario != "Offline":  # the engine settings a Server / Interactive run uses instead
        dep = {**dep, **{k: dep[f"server_{k}"] for k in SERVER_OVERRIDES if f"server_{k}" in dep}}
    sched = default_scheduler(max_num_seqs=dep.get("max_num_seqs"),
                              max_num_batched_tokens=dep.get("max_num_batched_tokens"),
                              max_prefill_chunk_tokens=dep.get("max_prefill_chunk_tokens"),
                              beams=int(info.get("beams", 1)),
                              batching=dep.get("batching"), sort_prompts=dep.get("sort_prompts"),
                              mixed_steps=dep.get("mixed_steps"))
    n_offline = requests or int(info["samples"])
    # a run at a given load (to predict the latencies a submission measured at it): 20,000
    # requests over the system; the QPS search's probes are one replica's 600 s (probe below). Both
    # score latency percentiles on the second half of the arrivals (past warm-up).
    n_server = requests or 20_000
    kw = dict(seed=seed, dataset=info["dataset"], scheduler=sched, tp=dep.get("tp"), pp=dep.get("pp"),
              dtype=dep.get("dtype"), kv_dtype=dep.get("kv_dtype"), stack=dep.get("stack"),
              kv_memory_fraction=dep.get("kv_memory_fraction"))
    # a harness-side batcher in front of the engines (Server / Interactive): queries leave it in
    # batches, each batch to the next replica
    hb = dep.get("harness_batcher") if scenario != "Offline" else None
    batcher = (int(hb["batch"]), float(hb["timeout_s"])) if hb else None
    # how the harness spreads Server requests over the engines (Offline: round-robin shares)
    if routing is not None and routing not in ROUTINGS:
        raise ValueError(f"routing must be one of {ROUTINGS}, got '{routing}'")
    routing = (routing or dep.get("server_routing", "round_robin")) if scenario != "Offline" else "round_robin"
    if routing not in ROUTINGS:  # a deployment's server_routing
        raise ValueError(f"routing must be one of {ROUTINGS}, got '{routing}'")
    if routing != "round_robin" and batcher is not None:
        raise ValueError(f"{info['benchmark']} on {sysspec.chip}: the deployment's harness batcher sends its batches "
                         "round-robin; routing must be 'round_robin' with it")
    if sysspec.count % ((dep.get("tp") or 1) * (dep.get("pp") or 1)):
        kw["tp"] = kw["pp"] = None  # the submitters' layout does not divide this system: plan it
    bounds: dict = {} if scenario == "Offline" else _slo(info["benchmark"], scenario)
    slo = SLO(ttft_p99_s=bounds.get("ttft_p99_s"), tpot_p99_s=bounds.get("tpot_p99_s"))

    @lru_cache(maxsize=1)
    def plan():
        return plan_serving(info["model"], sysspec, tp=kw["tp"], pp=kw["pp"], dtype=kw["dtype"],
                            kv_dtype=kw["kv_dtype"], stack=kw["stack"], kv_memory_fraction=kw["kv_memory_fraction"],
                            scheduler=sched)

    def run(rate: float | None, seed: int = seed) -> ServingReport:
        if rate is None and requests is None:
            return run_offline()
        return serve_llm(info["model"], sysspec, qps=rate, requests=n_offline if rate is None else n_server,
                         slo=slo if scenario != "Offline" else None, warmup_fraction=0.0 if rate is None else 0.5,
                         harness_batcher=None if rate is None else batcher,
                         routing="round_robin" if rate is None else routing, **{**kw, "seed": seed})

    def run_offline() -> ServingReport:
        """MLPerf's Offline run lasts >= 10 minutes, repeating the sample set, so every replica
        serves many batches. Data-parallel replicas are alike (requests go round-robin), so one is
        simulated, with its share of the sample set but at least OFFLINE_BATCHES_PER_LANE batches
        of max_num_seqs per pipeline lane (a shorter run overstates the steady-state rate while
        the first batch's KV caches are still short), and its rates are scaled by the replicas."""
        p = plan()
        n = max(-(-n_offline // p.dp), OFFLINE_BATCHES_PER_LANE * sched.max_num_seqs * p.pp)
        one = sysspec.model_copy(update={"count": p.tp * p.pp * p.ep})
        rep = serve_llm(info["model"], one, qps=None, requests=n, **{**kw, "tp": p.tp, "pp": p.pp})
        return _replicas_scaled(rep, p, sysspec.name, f"Offline: one of the {p.dp} data-parallel replicas "
                                                         f"simulated ({n:,} requests)")

    def probe(rate: float, seed: int = seed) -> ServingReport:
        """A Server probe of the QPS search: one data-parallel replica (requests go round-robin,
        so it takes every dp-th arrival of the Poisson stream at ``rate``, or every dp-th batch of
        the deployment's ``harness_batcher``) for SERVER_MIN_DURATION_S of its arrivals, within
        SERVER_PROBE_REQUESTS; rates scaled by the replicas."""
        p = plan()
        lo_n, hi_n = SERVER_PROBE_REQUESTS
        n = int(min(max(rate / p.dp * SERVER_MIN_DURATION_S, lo_n), hi_n))
        if routing == "least_pending":  # replicas that share a stream are simulated together
            g = min(p.dp, LEAST_PENDING_PROBE_REPLICAS)
            group = sysspec.model_copy(update={"count": p.tp * p.pp * p.ep * g})
            rep = serve_llm(info["model"], group, qps=rate * g / p.dp, requests=n * g, slo=slo, warmup_fraction=0.5,
                            routing=routing, **{**kw, "seed": seed, "tp": p.tp, "pp": p.pp})
            scaled = _replicas_scaled(rep, p, sysspec.name, f"Server probe: {g} of the {p.dp} data-parallel "
                                         f"replicas simulated together ({n * g:,} requests), each request to the "
                                         "one with the fewest in flight", replicas=g)
            return scaled.model_copy(update={"qps": rate})
        stream = generate(n * p.dp, rate, dataset=info["dataset"], seed=seed)
        mine = (route_round_robin(stream, p.dp) if batcher is None
                else route_batches_round_robin(harness_batches(stream, *batcher), p.dp))[0]
        one = sysspec.model_copy(update={"count": p.tp * p.pp * p.ep})
        rep = serve_llm(info["model"], one, qps=rate / p.dp, request_list=mine, slo=slo, warmup_fraction=0.5,
                        **{**kw, "tp": p.tp, "pp": p.pp})
        scaled = _replicas_scaled(rep, p, sysspec.name, f"Server probe: one of the {p.dp} data-parallel "
                                                           f"replicas simulated ({n:,} requests)")
        return scaled.model_copy(update={"qps": rate})

    def offline_rates(rep: ServingReport) -> tuple[float, float]:
        """(output tokens/s, requests/s) of an Offline run before its drain tail: MLPerf's Offline
        runs last >= 10 minutes (the sample set repeats), which amortises the tail."""
        tok = rep.saturated_output_tokens_per_s or rep.output_tokens_per_s
        per_request = rep.output_tokens_per_s / rep.requests_per_s if rep.requests_per_s else 1.0
        return tok, tok / per_request

    def ok(rep: ServingReport) -> bool:
        if "e2e_p99_s" in bounds:
            return rep.completed == rep.requests and (rep.e2e_s.p99 or 0) <= bounds["e2e_p99_s"]
        return bool(rep.meets_slo)

    def slack(rep: ServingReport) -> float:
        """The run's tightest p99 over its bound (ranks the runs of a probe)."""
        pairs = [(rep.e2e_s.p99, bounds.get("e2e_p99_s")), (rep.ttft_s.p99, bounds.get("ttft_p99_s")),
                 (rep.tpot_s.p99, bounds.get("tpot_p99_s"))]
        return max((v or 0.0) / b for v, b in pairs if b)

    if scenario == "Offline":
        rep = run(None)
    elif qps is not None:
        rep = run(qps)
    else:
        # a server cannot sustain more than the Offline throughput (measured over the benchmark's
        # whole sample set); short Server probes would otherwise pass overloads whose queue has
        # not yet grown past the bounds. A load is accepted when SERVER_RUNS runs all meet the
        # bounds (or one run meets them by a wide margin, SURE_PASS_SLACK); each latency
        # percentile is reported as its median over SERVER_RUNS runs (reliable_run, median_report).
        # The cap is probed first: where it meets the bounds it is the answer (bisection below it
        # would only approach it, at SERVER_RUNS runs a step: llama2-70b on 8 H100s took 60 s so),
        # else the largest passing load below it is found by bisection.
        cap = offline_rates(run(None))[1]
        probe_run = run if requests is not None else probe  # an explicit request count is honoured
        best = reliable_run(lambda s: probe_run(cap, s), ok, slack, seed, sure_slack=SURE_PASS_SLACK,
                            combine=median_report)
        lo, hi = (cap, cap) if best is not None else (0.0, cap)
        for _ in range(search_steps if best is None else 0):
            mid = (lo + hi) / 2  # (a first load that failed is not probed again at every step)
            rep = reliable_run(lambda s, q=mid: probe_run(q, s), ok, slack, seed, sure_slack=SURE_PASS_SLACK,
                               combine=median_report)
            if rep is not None:
                lo, best = mid, rep
            else:
                hi = mid
        if best is not None and slack(best) <= SURE_PASS_SLACK:  # accepted on one run: report the medians
            best = reliable_run(lambda s: probe_run(lo, s), lambda r: True, slack, seed, combine=median_report)
        rep = best or _no_load_passed(probe_run(0.01 * cap), hi, cap, bounds)
    tok, samples = offline_rates(rep) if rep.qps is None else (rep.output_tokens_per_s, rep.requests_per_s)
    if rep.qps is not None and rep.completed:
        # A Server run lasts >= 10 minutes, so its completed rate equals the offered rate when the
        # bounds hold; a few thousand simulated requests would instead count their own drain tail.
        samples = rep.qps * rep.completed / rep.requests
        tok = samples * (rep.output_tokens_per_s * rep.duration_s / rep.completed)
    return MLPerfPrediction(
        benchmark=info["benchmark"], system=sysspec.name, scenario=scenario, qps=rep.qps, tokens_per_s=tok,
        samples_per_s=samples, p99_ttft_s=rep.ttft_s.p99, p99_tpot_s=rep.tpot_s.p99,
        p99_e2e_s=rep.e2e_s.p99, meets_bounds=None if scenario == "Offline" else ok(rep), deployment=dep, report=rep,
        latency_s=None if scenario == "Offline" else rep.e2e_s)
