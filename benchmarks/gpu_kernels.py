"""Measure real GPU kernels with PyTorch, for the GPU engine's calibration (issue 4).

Run on a machine with an NVIDIA GPU (not in CI):

    python benchmarks/gpu_kernels.py --out measured.json [--quick]

It times, each with CUDA events through ``triton.testing.do_bench`` (median, L2 flushed between
repeats, random inputs, never zeros):
- GEMMs over a grid of M and the (N, K) of the zoo models' linear layers, in bf16 (cuBLAS),
  fp8 e4m3 (``torch._scaled_mm``) and int8 (``torch._int_mm``);
- fused attention prefill (causal) through PyTorch's FlashAttention-2 and cuDNN backends;
- decode attention (one query row per sequence, GQA) over a KV cache of growing length;
- device-to-device copy and read bandwidth over a range of sizes;
- embedding-bag gathers from a table far larger than L2 (DLRM's sparse lookups);
- a few memory-bound pointwise and normalisation kernels;
- kernel launch overhead, eager and replayed from a CUDA graph;
- with ``--only sustained``: one large GEMM per dtype held for a minute, its rate per second beside
  nvidia-smi's SM clock, power and temperature (the clock a chip holds at its power limit, which
  the short timings above do not see; ``mtiasim.engines.measured.held_rate_fraction``).

The output names the GPU, driver, CUDA and torch versions. ``mtiasim`` reads the committed
copy under ``src/mtiasim/data/calibration/measured/`` (see ``mtiasim.engines.measured``).
"""

# ruff: noqa: B023  (the timed lambdas close over loop variables and run within their iteration)
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import subprocess
import time

import torch
import torch.nn.functional as F
from triton.testing import do_bench

# (N, K) of linear layers: (name, N, K)
GEMM_NK = [
    ("square-1024", 1024, 1024), ("square-2048", 2048, 2048), ("square-4096", 4096, 4096),
    ("square-8192", 8192, 8192),
    ("llama2-70b-tp8-qkv", 1280, 8192), ("llama2-70b-tp8-o", 8192, 1024),
    ("llama2-70b-tp8-gateup", 7168, 8192), ("llama2-70b-tp8-down", 8192, 3584),
    ("gptj-qkv", 12288, 4096), ("gptj-fc1", 16384, 4096), ("gptj-fc2", 4096, 16384),
    ("bert-ffn1", 4096, 1024), ("bert-ffn2", 1024, 4096),
    ("mixtral-expert-w1", 14336, 4096), ("mixtral-expert-w2", 4096, 14336),
    ("dlrm-top-mlp", 1024, 1024), ("dlrm-bot-mlp", 512, 256), ("dlrm-top-out", 256, 512),
]
M_GRID = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
M_QUICK = [1, 16, 128, 1024, 8192]


def bench_ms(fn, warmup=10, rep=40) -> float:
    return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def measure(rec: dict, fn, flops: float | None = None, moved_bytes: float | None = None) -> dict:
    """Time ``fn`` into ``rec`` (``time_s`` plus its rate), or record why it could not run."""
    try:
        t = bench_ms(fn) * 1e-3
    except Exception as e:  # noqa: BLE001 - an unsupported shape or backend is data, not a crash
        rec["error"] = repr(e)[:200]
        return rec
    rec["time_s"] = t
    if flops is not None:
        rec.update(flops=flops, tflops=flops / t / 1e12)
    if moved_bytes is not None:
        rec["bytes_per_s"] = moved_bytes / t
    return rec


def env() -> dict:
    p = torch.cuda.get_device_properties(0)
    smi = {}
    try:
        q = "name,driver_version,clocks.max.sm,clocks.max.memory,power.limit,memory.total"
        out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        smi = dict(zip(q.split(","), [s.strip() for s in out.split(",")]))
    except Exception as e:  # noqa: BLE001 - report, do not fail the run
        smi = {"error": repr(e)}
    return {
        "gpu": p.name, "sm_count": p.multi_processor_count,
        "l2_bytes": getattr(p, "L2_cache_size", None), "memory_bytes": p.total_memory,
        "compute_capability": f"{p.major}.{p.minor}", "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "nvidia_smi": smi,
        "python": platform.python_version(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def gemm_records(quick: bool) -> list[dict]:
    out = []
    ms = M_QUICK if quick else M_GRID
    dev = "cuda"
    for name, n, k in GEMM_NK:
        w16 = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        w8 = (torch.randn(n, k, device=dev) * 0.5).to(torch.float8_e4m3fn)
        wi8 = torch.randint(-64, 64, (n, k), device=dev, dtype=torch.int8)
        one = torch.ones((), device=dev, dtype=torch.float32)
        for m in ms:
            if m * k * 2 > 4e9:
                continue
            a16 = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            cases = {"bf16": lambda: torch.mm(a16, w16.t())}
            if m % 16 == 0:
                a8 = (torch.randn(m, k, device=dev) * 0.5).to(torch.float8_e4m3fn)
                cases["fp8"] = lambda: torch._scaled_mm(a8, w8.t(), one, one, out_dtype=torch.bfloat16)
            if m > 16 and m % 8 == 0:
                ai8 = torch.randint(-64, 64, (m, k), device=dev, dtype=torch.int8)
                cases["int8"] = lambda: torch._int_mm(ai8, wi8.t())
            for dtype, fn in cases.items():
                rec = {"kind": "gemm", "layer": name, "dtype": dtype, "m": m, "n": n, "k": k}
                out.append(measure(rec, fn, flops=2.0 * m * n * k))
        print(f"gemm {name}: done", flush=True)
    return out


def attention_prefill_records(quick: bool) -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    out = []
    shapes = [  # (batch, heads, seq, head_dim)
        (1, 8, 1024, 128), (1, 8, 2048, 128), (1, 8, 4096, 128), (1, 8, 8192, 128),
        (4, 8, 2048, 128), (16, 64, 512, 128), (8, 16, 384, 64), (64, 16, 384, 64),
        (4, 16, 2048, 256), (1, 32, 16384, 128),
    ]
    if quick:
        shapes = shapes[:3]
    backends = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
    for b, h, s, d in shapes:
        q, kk, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        for causal in (True, False):
            flops = 4.0 * b * h * s * s * d * (0.5 if causal else 1.0)
            for bname, be in backends.items():
                rec = {"kind": "attention_prefill", "backend": bname, "dtype": "bf16", "batch": b, "heads": h,
                       "seq": s, "head_dim": d, "causal": causal}
                with sdpa_kernel([be]):
                    out.append(measure(rec, lambda: F.scaled_dot_product_attention(q, kk, v, is_causal=causal),
                                       flops=flops))
    print("attention prefill: done", flush=True)
    return out


def attention_decode_records(quick: bool) -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    out = []
    # (batch, q_heads, kv_heads, head_dim): llama2-70b TP8 shard (8 q / 1 kv head), gpt-j (16/16, 256)
    cfgs = [(b, 8, 1, 128) for b in (1, 16, 64, 256)] + [(b, 32, 8, 128) for b in (8, 64)] + \
           [(b, 16, 16, 256) for b in (8, 64)]
    kvs = [512, 2048, 8192] if quick else [256, 1024, 2048, 4096, 8192]
    for b, hq, hkv, d in cfgs:
        for kv in kvs:
            if b * hkv * kv * d * 2 * 2 > 8e9:
                continue
            q = torch.randn(b, hq, 1, d, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(b, hkv, kv, d, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(b, hkv, kv, d, device="cuda", dtype=torch.bfloat16)
            kv_bytes = 2.0 * b * hkv * kv * d * 2
            for bname, be in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                              ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                rec = {"kind": "attention_decode", "backend": bname, "dtype": "bf16", "batch": b, "q_heads": hq,
                       "kv_heads": hkv, "head_dim": d, "kv_len": kv, "kv_bytes": kv_bytes}
                with sdpa_kernel([be]):
                    out.append(measure(rec, lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=hq != hkv),
                                       moved_bytes=kv_bytes))
    print("attention decode: done", flush=True)
    return out


def memory_records(quick: bool) -> list[dict]:
    out = []
    sizes = [2 ** p for p in range(16, 32, 1 if not quick else 3)]  # 64 KiB .. 2 GiB
    for nbytes in sizes:
        x = torch.randn(nbytes // 2, device="cuda", dtype=torch.bfloat16)
        y = torch.empty_like(x)
        for op, fn, moved in (("copy", lambda: y.copy_(x), 2 * nbytes), ("read", lambda: x.sum(), nbytes),
                              ("pointwise_silu", lambda: torch.nn.functional.silu(x, inplace=False), 2 * nbytes)):
            t = bench_ms(fn) * 1e-3
            out.append({"kind": "memory", "op": op, "bytes": nbytes, "moved_bytes": moved, "time_s": t,
                        "bytes_per_s": moved / t})
    # normalisation over token rows, as in a transformer layer
    for tokens, hidden in ((1, 8192), (64, 8192), (1024, 8192), (8192, 8192), (16384, 4096), (49152, 1024)):
        x = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(hidden, device="cuda", dtype=torch.bfloat16)
        t = bench_ms(lambda: F.layer_norm(x, (hidden,), w, w)) * 1e-3
        moved = 2 * x.numel() * 2
        out.append({"kind": "memory", "op": "layer_norm", "tokens": tokens, "hidden": hidden, "bytes": x.numel() * 2,
                    "moved_bytes": moved, "time_s": t, "bytes_per_s": moved / t})
    print("memory: done", flush=True)
    return out


def gemm_chain_records() -> list[dict]:
    """A transformer layer's four GEMMs (Llama2-70B TP8 shard, bf16) replayed back to back from a CUDA
    graph, 8 layers deep with distinct weights (so no weight stays in L2): the per-GEMM time a
    serving stack sees, to set against the same GEMMs timed one at a time."""
    out = []
    layers = 8
    shapes = [(n, k) for name, n, k in GEMM_NK if name.startswith("llama2-70b-tp8")]
    ws = [[torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for n, k in shapes] for _ in range(layers)]
    for m in (1, 16, 64, 256, 1024, 4096):
        xs = {k: torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _, k in shapes}

        def chain():
            for lw in ws:
                for w in lw:
                    torch.mm(xs[w.shape[1]], w.t())
        chain()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            chain()
        t = bench_ms(graph.replay, warmup=10, rep=60) * 1e-3
        alone = sum(bench_ms(lambda w=w: torch.mm(xs[w.shape[1]], w.t())) * 1e-3 for w in ws[0]) * layers
        out.append({"kind": "gemm_chain", "dtype": "bf16", "m": m, "gemms": layers * len(shapes),
                    "shapes": shapes, "time_s": t, "isolated_sum_s": alone})
    print("gemm chain: done", flush=True)
    return out


def grouped_gemm_records() -> list[dict]:
    """MoE expert GEMMs as one grouped GEMM (torch._grouped_mm, bf16): Mixtral-8x7B's w1 (N=14336,
    K=4096) and w2 (N=4096, K=14336) over 8 experts, T tokens routed top-2 evenly (2T/8 rows each)."""
    out = []
    e = 8
    for name, n, k in (("mixtral-w1", 14336, 4096), ("mixtral-w2", 4096, 14336)):
        b = torch.randn(e, n, k, device="cuda", dtype=torch.bfloat16).transpose(-2, -1)  # (E, K, N), K-major
        for t in (64, 256, 1024, 4096, 16384):
            m = 2 * t // e
            a = torch.randn(e * m, k, device="cuda", dtype=torch.bfloat16)
            offs = torch.arange(m, e * m + 1, m, device="cuda", dtype=torch.int32)
            rec = {"kind": "grouped_gemm", "layer": name, "dtype": "bf16", "groups": e, "m": m, "n": n, "k": k}
            out.append(measure(rec, lambda: torch._grouped_mm(a, b, offs=offs, out_dtype=torch.bfloat16),
                               flops=2.0 * e * m * n * k))
    print("grouped gemm: done", flush=True)
    return out


def l2_records() -> list[dict]:
    """Copy a buffer that fits in L2 again and again (no flush between copies): L2 bandwidth."""
    out = []
    for nbytes in (1 << 20, 4 << 20, 8 << 20, 16 << 20, 24 << 20):
        x = torch.randn(nbytes // 2, device="cuda", dtype=torch.bfloat16)
        y = torch.empty_like(x)
        reps = 200
        for _ in range(10):
            y.copy_(x)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(reps):
                y.copy_(x)
        graph.replay()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(5):
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e-3 / reps)
        t = sorted(times)[len(times) // 2]
        out.append({"kind": "l2", "op": "copy_resident", "bytes": nbytes, "moved_bytes": 2 * nbytes, "time_s": t,
                    "bytes_per_s": 2 * nbytes / t})
    print("l2: done", flush=True)
    return out


def embedding_records(quick: bool) -> list[dict]:
    out = []
    g = torch.Generator(device="cuda").manual_seed(0)
    for rows, dim, dtype in ((20_000_000, 128, torch.float16), (10_000_000, 128, torch.float32),
                             (40_000_000, 64, torch.float16)):
        table = torch.randn(rows, dim, device="cuda", dtype=dtype)
        row_bytes = dim * table.element_size()
        for bags, pooling in ((2048, 1), (2048, 20), (2048, 100), (16384, 20), (65536, 1)):
            if quick and bags > 2048:
                continue
            idx = torch.randint(0, rows, (bags * pooling,), device="cuda", generator=g)
            offsets = torch.arange(0, bags * pooling, pooling, device="cuda")
            t = bench_ms(lambda: F.embedding_bag(idx, table, offsets, mode="sum")) * 1e-3
            gathered = bags * pooling * row_bytes
            out.append({"kind": "embedding_bag", "rows": rows, "dim": dim, "row_bytes": row_bytes,
                        "dtype": str(dtype).replace("torch.", ""), "bags": bags, "pooling": pooling,
                        "gathered_bytes": gathered, "time_s": t, "bytes_per_s": gathered / t})
    print("embedding: done", flush=True)
    return out


def launch_records() -> list[dict]:
    out = []
    x = torch.randn(256, device="cuda")
    n = 5000
    for _ in range(200):
        x.add_(1.0)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        x.add_(1.0)
    torch.cuda.synchronize()
    out.append({"kind": "launch", "mode": "eager", "kernels": n, "time_s": (time.perf_counter() - t0) / n})
    # replayed from a CUDA graph: the per-kernel cost a serving stack pays
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            x.add_(1.0)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    per_graph = 1000
    with torch.cuda.graph(graph):
        for _ in range(per_graph):
            x.add_(1.0)
    graph.replay()
    torch.cuda.synchronize()
    t = bench_ms(graph.replay, warmup=20, rep=200) * 1e-3
    out.append({"kind": "launch", "mode": "cuda_graph", "kernels": per_graph, "time_s": t / per_graph})
    # an empty-ish kernel timed alone with events (device-side duration of a tiny kernel)
    t1 = bench_ms(lambda: x.add_(1.0), warmup=20, rep=100) * 1e-3
    out.append({"kind": "launch", "mode": "event_single", "kernels": 1, "time_s": t1})
    print("launch: done", flush=True)
    return out


def conv_records(quick: bool) -> list[dict]:
    out = []
    torch.backends.cudnn.benchmark = True
    # ResNet-50 v1.5 convolutions (C_in, C_out, H, kernel, stride) at batch 256, channels_last fp16
    shapes = [(64, 64, 56, 3, 1), (64, 256, 56, 1, 1), (256, 128, 56, 1, 1), (128, 128, 28, 3, 1),
              (256, 256, 14, 3, 1), (1024, 256, 14, 1, 1), (512, 512, 7, 3, 1), (3, 64, 224, 7, 2)]
    if quick:
        shapes = shapes[:2]
    for cin, cout, hw, ks, stride in shapes:
        n = 256
        x = torch.randn(n, cin, hw, hw, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
        conv = torch.nn.Conv2d(cin, cout, ks, stride, ks // 2, bias=False).cuda().half().to(
            memory_format=torch.channels_last)
        with torch.no_grad():
            t = bench_ms(lambda: conv(x)) * 1e-3
        ho = (hw + 2 * (ks // 2) - ks) // stride + 1
        flops = 2.0 * n * cout * ho * ho * cin * ks * ks
        out.append({"kind": "conv2d", "dtype": "fp16", "batch": n, "c_in": cin, "c_out": cout, "hw": hw,
                    "kernel": ks, "stride": stride, "time_s": t, "flops": flops, "tflops": flops / t / 1e12})
    print("conv: done", flush=True)
    return out


def sustained_records(quick: bool) -> list[dict]:
    """Hold one large GEMM per dtype for a minute (40 s with --quick), timing it in
    one-second windows with CUDA events, while ``nvidia-smi -lms 500`` samples the SM clock, board
    power and temperature. The first window runs at the boost clock the short timings above see;
    the last ones at the clock the chip holds at its power limit (power.yaml
    ``sustained_gemm_clock_fraction``)."""
    seconds = 40.0 if quick else 60.0  # both past the 30 s held_rate_fraction settles for
    dev, n = "cuda", 8192
    one = torch.ones((), device=dev, dtype=torch.float32)
    a16, b16 = (torch.randn(n, n, device=dev, dtype=torch.bfloat16) for _ in range(2))
    a8, b8 = ((torch.randn(n, n, device=dev) * 0.5).to(torch.float8_e4m3fn) for _ in range(2))
    cases = {"fp8": lambda: torch._scaled_mm(a8, b8.t(), one, one, out_dtype=torch.bfloat16),
             "bf16": lambda: torch.mm(a16, b16.t())}
    out = []
    for dtype, fn in cases.items():
        q = "timestamp,clocks.sm,power.draw,temperature.gpu"
        smi = subprocess.Popen(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader,nounits", "-lms", "500"],
                               stdout=subprocess.PIPE, text=True)
        windows, t0 = [], time.time()
        while time.time() - t0 < seconds:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            calls, w0 = 0, time.time()
            start.record()
            while time.time() - w0 < 1.0:
                for _ in range(8):
                    fn()
                calls += 8
                torch.cuda.synchronize()
            end.record()
            end.synchronize()
            t = start.elapsed_time(end) * 1e-3
            windows.append({"t_s": round(w0 - t0, 3), "calls": calls, "tflops": 2.0 * n**3 * calls / t / 1e12})
        smi.terminate()
        samples = []
        for line in smi.communicate(timeout=10)[0].splitlines():
            parts = [x.strip() for x in line.split(",")]
            try:
                samples.append({"clock_sm_mhz": float(parts[1]), "power_w": float(parts[2]),
                                "temperature_c": float(parts[3])})
            except (IndexError, ValueError):
                continue
        out.append({"kind": "sustained_gemm", "dtype": dtype, "m": n, "n": n, "k": n, "seconds": seconds,
                    "windows": windows, "smi": samples})
        print(f"sustained {dtype}: {windows[0]['tflops']:.0f} -> {windows[-1]['tflops']:.0f} TFLOPS", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--quick", action="store_true", help="a small grid, for a smoke test")
    ap.add_argument("--only", default="", help="comma-separated sections to run (default: all)")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    result = {"env": env(), "command": "python benchmarks/gpu_kernels.py" + (" --quick" if a.quick else ""),
              "records": []}
    print(json.dumps(result["env"]), flush=True)
    sections = {"launch": launch_records, "memory": lambda: memory_records(a.quick),
                "gemm": lambda: gemm_records(a.quick), "attention_prefill": lambda: attention_prefill_records(a.quick),
                "attention_decode": lambda: attention_decode_records(a.quick),
                "embedding": lambda: embedding_records(a.quick), "l2": l2_records, "gemm_chain": gemm_chain_records,
                "grouped_gemm": grouped_gemm_records, "conv": lambda: conv_records(a.quick),
                "sustained": lambda: sustained_records(a.quick)}
    only = [s for s in a.only.split(",") if s]
    for name, fn in sections.items():
        if (only and name not in only) or (not only and name == "sustained"):
            continue  # the minute-long sustained runs only when asked for
        t0 = time.time()
        try:
            result["records"].extend(fn())
        except Exception as e:  # noqa: BLE001 - keep the other sections
            result["records"].append({"kind": name, "error": repr(e)[:300]})
        print(f"section {name}: {time.time() - t0:.1f} s", flush=True)
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    ok = [r for r in result["records"] if "error" not in r]
    print(f"{len(ok)} measurements, {len(result['records']) - len(ok)} errors -> {a.out}")
    if not math.isfinite(sum(r.get("time_s", 0.0) for r in ok)):
        raise SystemExit("non-finite timing")


if __name__ == "__main__":
    main()
