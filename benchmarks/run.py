"""Speed benchmarks (one command: `make bench` or `python benchmarks/run.py`).

Targets from the foundation issue:
- analytical prediction of dlrm-v2 at batch 2048: < 50 ms (capture cached)
- llama2-70b prefill of 1024 tokens + one decode step: < 200 ms (capture cached)
- capture of llama3.1-405b (1,024-token input, meta tensors, cold cache; two layers traced by
  torch.export and the rest replicated, as ``api.workload_graph`` does): < 10 s and < 1 GB peak memory
Serving issue:
- a Server-scenario QPS search for llama2-70b on 8 GPUs: < 60 s
- a serving run of 10,000 requests: < 10 s; wall time per 1,000 simulated requests at several
  loads (light, near capacity, overload, offline), growing linearly with the request count
Fleet issue:
- a mix of 6 workloads over 10 chip types plans in < 60 s
The capture benchmark runs in a fresh subprocess (no cache) so its peak RSS is its own.
Results are printed as a table and written to benchmarks/results/latest.json.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import mtiasim

HERE = Path(__file__).resolve().parent


def _median_s(fn, repeat: int) -> float:
    fn()  # warm: capture cache + in-process memo
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def bench_dlrm() -> dict:
    s = _median_s(lambda: mtiasim.simulate("dlrm-v2", chip="mtia-200", batch=2048), 20)
    return {"name": "dlrm-v2 batch 2048 on mtia-200, analytical", "value_s": s, "target_s": 0.050}


def bench_llama() -> dict:
    def both():
        mtiasim.simulate("llama2-70b", chip="h100-sxm-80gb", seq_len=1024, phase="prefill")
        mtiasim.simulate("llama2-70b", chip="h100-sxm-80gb", phase="decode", kv_len=1024)

    s = _median_s(both, 7)
    return {"name": "llama2-70b prefill 1024 + 1 decode step on h100-sxm-80gb", "value_s": s, "target_s": 0.200}


CAPTURE_405B = """
import os, resource, tempfile, time, torch
os.environ["MTIASIM_CACHE_DIR"] = tempfile.mkdtemp()  # cold: nothing cached on disk
from mtiasim.api import workload_graph
t = time.perf_counter()
g, w = workload_graph("llama3.1-405b", batch=1, seq_len=1024, phase="prefill")
dt = time.perf_counter() - t
print(dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, len(g.nodes))
"""


def bench_capture_405b() -> dict:
    out = subprocess.run([sys.executable, "-c", CAPTURE_405B], capture_output=True, text=True, check=True)
    dt, rss_kb, nodes = out.stdout.split()
    return {"name": f"capture llama3.1-405b, 1024 tokens, meta ({nodes} IR nodes)", "value_s": float(dt),
            "target_s": 10.0, "peak_rss_bytes": int(rss_kb) * 1024, "target_rss_bytes": 1 << 30}


CAPTURE_HF_8B = """
import resource, time, torch, transformers
from mtiasim.frontend import hf
from mtiasim.frontend.capture import capture
cfg = transformers.LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                               num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072)
t = time.perf_counter()
with torch.device("meta"):
    m = transformers.AutoModelForCausalLM.from_config(cfg)
g = capture(*hf.wrap(m, 8, 2048)[:2])
dt = time.perf_counter() - t
print(dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, len(g.nodes))
"""


def bench_capture_hf_8b() -> dict | None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return None
    out = subprocess.run([sys.executable, "-c", CAPTURE_HF_8B], capture_output=True, text=True, check=True)
    dt, rss_kb, nodes = out.stdout.split()
    return {"name": f"capture HF Llama-3.1-8B shape, 8x2048 tokens, meta ({nodes} IR nodes)", "value_s": float(dt),
            "target_s": 10.0, "peak_rss_bytes": int(rss_kb) * 1024, "target_rss_bytes": 1 << 30}


TRAIN_405B = """
import time, mtiasim
kw = dict(system="h100-sxm-80gb:16384", global_batch=16384, seq_len=8192, zero_stage=3)
t = time.perf_counter()
mtiasim.train("llama3.1-405b", **kw)
cold = time.perf_counter() - t
t = time.perf_counter()
mtiasim.train("llama3.1-405b", **kw)
print(cold, time.perf_counter() - t)
"""


def bench_train_405b() -> dict:
    """One training-step prediction of llama3.1-405b on 16,384 GPUs (data parallel, ZeRO-3), in a
    fresh process: the first call captures the one- and two-layer joint graphs, the second reuses them."""
    out = subprocess.run([sys.executable, "-c", TRAIN_405B], capture_output=True, text=True, check=True)
    cold, warm = (float(x) for x in out.stdout.split())
    return {"name": f"train step llama3.1-405b on h100-sxm-80gb:16384, first call (then {warm * 1e3:.0f} ms)",
            "value_s": cold, "target_s": 2.0}


SEARCH_405B = """
import time
from mtiasim.training.search import search
t = time.perf_counter()
res = search("llama3.1-405b", "h100-sxm-80gb:16384", 2048, seq_len=8192)
print(time.perf_counter() - t, res.evaluated, res.fitting)
"""


def bench_train_search_405b() -> dict:
    """``mtiasim train llama3.1-405b --system h100-sxm-80gb:16384 --search`` in a fresh process
    (captures included)."""
    out = subprocess.run([sys.executable, "-c", SEARCH_405B], capture_output=True, text=True, check=True)
    dt, evaluated, fitting = out.stdout.split()
    return {"name": f"train --search llama3.1-405b on 16,384 H100s ({evaluated} layouts, {fitting} fit)",
            "value_s": float(dt), "target_s": 60.0}


FLEET = """
import sys, time
from mtiasim.fleet.mix import load_mix
from mtiasim.fleet.planner import plan_fleet
mix = load_mix(sys.argv[1])
copies = int(sys.argv[4])  # the mix repeated (renamed copies): copies x the points, the same kinds
mix = mix.model_copy(update={"workloads": [w.model_copy(update={"name": f"{w.name}-{k}"})
                                           for k in range(copies) for w in mix.workloads]})
ray = None if sys.argv[3] == "none" else sys.argv[3]
t = time.perf_counter()
plan_fleet(mix, jobs=int(sys.argv[2]), ray=ray)
print(time.perf_counter() - t, len(mix.workloads), len(mix.chips))
"""


def _fleet(jobs: int = 1, ray: str = "none", copies: int = 1) -> tuple[float, str, str]:
    out = subprocess.run([sys.executable, "-c", FLEET, str(HERE / "fleet_mix.yaml"), str(jobs), ray, str(copies)],
                         capture_output=True, text=True, check=True)
    dt, w, c = out.stdout.split()[-3:]
    return float(dt), w, c


def bench_fleet() -> dict:
    """``mtiasim fleet benchmarks/fleet_mix.yaml`` (6 workloads over 10 chip types) in a fresh
    process: captures from the on-disk cache, serving cost grids built as it goes."""
    dt, workloads, chips = _fleet()
    return {"name": f"fleet plan, {workloads} workloads over {chips} chip types", "value_s": dt, "target_s": 60.0}


def bench_fleet_ray() -> list[dict]:
    """The same sweep on a local Ray cluster of 2 workers (no slower than in one process), and the
    mix twice over (twice the points: time in proportion, within 25%). Skipped without Ray."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return []
    local, _, _ = _fleet()
    once, _, _ = _fleet(2, "local", 1)
    twice, _, _ = _fleet(2, "local", 2)
    return [{"name": "fleet plan on a local Ray cluster of 2 workers (6 workloads)", "value_s": once,
             "target_s": local},
            {"name": "the same on Ray with the mix twice over (12 workloads; target 2.5x the 6)", "value_s": twice,
             "target_s": once * 2.5}]


def bench_validate_training() -> dict:
    """``validate --training`` over the packaged MLPerf Training calibration CSV (164 rows)."""
    from mtiasim.validate.training import validate_training

    t = time.perf_counter()
    rep = validate_training()
    return {"name": f"validate --training, {rep.total.rows} rows ({rep.total.predicted} predicted, "
                    f"MAPE {rep.total.mape_pct:.1f}%)", "value_s": time.perf_counter() - t, "target_s": 300.0}


def bench_serving() -> tuple[dict, list[dict]]:
    """llama2-70b FP8 on h100-sxm-80gb:8 (TP=1 x DP=8), OpenOrca-like lengths. The step-cost grids
    are built once per process (first call) and excluded, like the capture cache above."""
    from mtiasim.serving import serve_llm

    serve_llm("llama2-70b", "h100-sxm-80gb:8", qps=1.0, requests=50, dtype="fp8")  # builds the cost grids
    offline = serve_llm("llama2-70b", "h100-sxm-80gb:8", qps=None, requests=2000, dtype="fp8")
    cap = offline.requests_per_s
    scaling = []
    for label, qps in (("light (25% of capacity)", 0.25 * cap), ("near capacity (90%)", 0.9 * cap),
                       ("overload (200%)", 2.0 * cap), ("offline (all at t=0)", None)):
        for n in (1000, 2000, 5000, 10000):
            t = time.perf_counter()
            rep = serve_llm("llama2-70b", "h100-sxm-80gb:8", qps=qps, requests=n, dtype="fp8")
            dt = time.perf_counter() - t
            scaling.append({"load": label, "qps": qps, "requests": n, "wall_s": dt, "wall_s_per_1000": dt / n * 1000,
                            "steps_tokens_per_s": rep.output_tokens_per_s, "p99_ttft_s": rep.ttft_s.p99})
    worst10k = max(r["wall_s"] for r in scaling if r["requests"] == 10000)
    return ({"name": "serving run, 10,000 requests, llama2-70b on h100-sxm-80gb:8 (slowest load)",
             "value_s": worst10k, "target_s": 10.0}, scaling)


def bench_qps_search() -> dict:
    """MLPerf Server QPS search for llama2-70b on h100-sxm-80gb:8 (cost grids already built)."""
    from mtiasim.serving.mlperf import predict_llm

    t = time.perf_counter()
    p = predict_llm("llama2-70b-99", "h100-sxm-80gb:8", "Server")
    return {"name": f"Server QPS search, llama2-70b on h100-sxm-80gb:8 ({p.qps:.1f} q/s found)",
            "value_s": time.perf_counter() - t, "target_s": 60.0}


def bench_batched_server() -> dict:
    """MLPerf Server QPS search for resnet50 on h100-sxm-80gb:8 (one image per query, dynamic
    batching; the batch-time grid is built in a warm-up call and excluded)."""
    from mtiasim.serving.mlperf import predict

    predict("resnet50", "h100-sxm-80gb:8", "Offline")  # builds the batch-time grid
    t = time.perf_counter()
    p = predict("resnet50", "h100-sxm-80gb:8", "Server")
    return {"name": f"Server QPS search, resnet50 on h100-sxm-80gb:8 ({p.qps:,.0f} q/s found)",
            "value_s": time.perf_counter() - t, "target_s": 60.0}


def main() -> int:
    serving, scaling = bench_serving()
    rows = [bench_dlrm(), bench_llama(), bench_capture_405b(), bench_capture_hf_8b(), bench_train_405b(),
            bench_train_search_405b(), bench_validate_training(), serving, bench_qps_search(), bench_batched_server(),
            bench_fleet(), *bench_fleet_ray()]
    rows = [r for r in rows if r is not None]
    ok = True
    print(f"{'benchmark':70s} {'value':>10s} {'target':>10s}  ok")
    for r in rows:
        good = r["value_s"] < r["target_s"] and r.get("peak_rss_bytes", 0) <= r.get("target_rss_bytes", 1 << 62)
        ok &= good
        extra = f"  peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB (< 1024)" if "peak_rss_bytes" in r else ""
        print(f"{r['name']:70s} {r['value_s'] * 1e3:8.1f}ms {r['target_s'] * 1e3:8.0f}ms  {'yes' if good else 'NO'}{extra}")
    print(f"\n{'load':26s} {'requests':>9s} {'wall':>9s} {'per 1000':>9s}")
    for r in scaling:
        print(f"{r['load']:26s} {r['requests']:9d} {r['wall_s']:8.2f}s {r['wall_s_per_1000']:8.3f}s")
    info = {"machine": platform.platform(), "serving_scaling": scaling, "processor": platform.processor(), "python": platform.python_version(),
            "torch": torch.__version__, "mtiasim": mtiasim.__version__,
            "cpus": len(__import__("os").sched_getaffinity(0)), "rows": rows,
            "self_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "latest.json").write_text(json.dumps(info, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
