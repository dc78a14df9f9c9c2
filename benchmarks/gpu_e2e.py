"""Measure the zoo's own models end to end on a real GPU, for the GPU engine's end-to-end check.

Run on a machine with an NVIDIA GPU (not in CI), from the repository root:

    PYTHONPATH=src python benchmarks/gpu_e2e.py --out e2e.json

The module is exactly the one ``mtiasim`` captures (``mtiasim.frontend.zoo``, here
``llama2-7b`` with random bf16 weights), so the simulated graph and the measured kernels are the
same ops. Each case runs two ways, timed with CUDA events (median after warm-up):
- ``eager``: one PyTorch launch per op, as an eager framework runs it;
- ``cuda_graph``: the same kernels captured once and replayed from a CUDA graph, which removes
  the host's launch gaps (what serving stacks do).
Prefill over batch x prompt length, one decode step over batch x cached length.
``mtiasim.engines.measured.check_models`` sets the GPU engine beside each, with the compiler's
fusion off (PyTorch runs every op as its own kernel) and stacks ``pytorch-eager`` /
``pytorch-cuda-graph``.
"""

# ruff: noqa: B023  (the timed lambdas close over loop variables and run within their iteration)
from __future__ import annotations

import argparse
import json
import statistics

import torch
from gpu_kernels import env  # same directory

PREFILL = ((1, 512), (1, 2048), (4, 512), (8, 1024), (16, 256))
DECODE = ((1, 512), (8, 1024), (32, 512), (64, 256), (128, 128))


def timed(fn, warmup: int = 3, reps: int = 10) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e-3)
    return statistics.median(times)


def graphed(fn):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def main() -> None:
    from mtiasim.frontend import zoo

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="llama2-7b")
    ap.add_argument("--phase", choices=("prefill", "decode"), help="only this phase (default: both)")
    a = ap.parse_args()
    torch.manual_seed(0)
    recs: list[dict] = []
    m = zoo.get(a.model)
    cases = [("prefill", b, s) for b, s in PREFILL] + [("decode", b, kv) for b, kv in DECODE]
    cases = [c for c in cases if a.phase in (None, c[0])]
    for phase, b, n in cases:
        kw = dict(seq_len=n) if phase == "prefill" else dict(kv_len=n)
        w = m.build(batch=b, phase=phase, device="cuda", **kw)
        module = w.module.to(torch.bfloat16)
        inputs = tuple(t.to(torch.bfloat16) if t.is_floating_point() else t for t in w.example_inputs)
        with torch.inference_mode():
            fn = lambda: module(*inputs)  # noqa: E731
            eager = timed(fn)
            graph = timed(graphed(fn))
        rec = {"kind": "model", "model": a.model, "phase": phase, "batch": b,
               ("seq_len" if phase == "prefill" else "kv_len"): n, "eager_s": eager, "cuda_graph_s": graph}
        recs.append(rec)
        print(rec, flush=True)
        save(a.out, recs, a.model)
        w = module = inputs = fn = None  # free the weights before the next case builds its own
        torch.cuda.empty_cache()


def save(path: str, recs: list[dict], model: str) -> None:
    with open(path, "w") as f:
        json.dump({"env": env(), "command": f"PYTHONPATH=src python benchmarks/gpu_e2e.py --model {model}",
                   "method": "zoo module on cuda, random bf16 weights; CUDA events, median of 10 after 3 warm-ups",
                   "records": recs}, f, indent=1)


if __name__ == "__main__":
    main()
