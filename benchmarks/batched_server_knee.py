"""The knee of a batched MLPerf Server run (bert, resnet50, dlrm-v2), seed by seed.

A batched benchmark's Server search ends at the rate of full batches (its cap) or below it, where
the p99 query latency meets the bound, and reads that one run's p99 (serving/mlperf.py
``BATCHED_SERVER_RUNS``). Near the cap the model's p99 can be bimodal: a run either keeps short
queues of small batches or, after one excursion, long ones of large batches. That happens when a
batch's engine time per item is not monotone in its size: a smaller batch that is cheaper per
item than a larger one is a stable state the batcher can fall into, and so is the larger one.

This prints, for each benchmark given:
1. the engine's time per item of a Server batch (unsorted, padded attention where the
   deployment's kernels pad) at batch sizes 16-1,024, flagging where it rises with the batch;
2. the p99 query latency at 90-100% of the cap for three arrival seeds.

Run: ``.venv/bin/python benchmarks/batched_server_knee.py [benchmark ...] [--system CHIP:N]
[--round vX.Y]`` (default: bert-99.9 and bert-99 on h100-sxm-80gb:8, round v4.1; about a minute
on a 2-core machine).
BENCHMARKS.md, session 34, quotes its bert-99.9 output.
"""

from __future__ import annotations

import argparse

from mtiasim.serving.mlperf import batched_cost, predict_batched
from mtiasim.system.spec import SystemSpec

BATCHES = (16, 32, 64, 128, 256, 512, 1024)
LOAD_FRACTIONS = (0.90, 0.95, 0.98, 1.00)
SEEDS = (0, 1, 2)


def per_item_s(benchmark: str, system: SystemSpec, mlperf_round: str) -> dict[int, float]:
    """Engine seconds per item of a Server batch of each size in BATCHES, as the Server search
    times it (serving/mlperf.py ``batched_cost``)."""
    _, _, cost, _ = batched_cost(benchmark, system, "Server", mlperf_round=mlperf_round)
    return {b: cost.batch_s(b) / b for b in BATCHES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("benchmarks", nargs="*", default=["bert-99.9", "bert-99"])
    ap.add_argument("--system", default="h100-sxm-80gb:8")
    ap.add_argument("--round", default="v4.1")
    args = ap.parse_args()
    system = SystemSpec.parse(args.system)
    for bench in args.benchmarks:
        costs = per_item_s(bench, system, args.round)
        cells = []
        for prev, b in zip((None, *BATCHES), BATCHES):
            rises = prev is not None and costs[b] > costs[prev]
            cells.append(f"{b}: {costs[b] * 1e6:.1f}" + (" (rises)" if rises else ""))
        line = "  ".join(cells)
        print(f"{bench} on {system.name} ({args.round}): engine time per item of a Server batch (us)")
        print(f"  {line}")
        cap = predict_batched(bench, system, "Server", mlperf_round=args.round)
        print(f"  Server search: {cap.qps:,.0f} queries/s, p99 {cap.p99_e2e_s * 1e3:.1f} ms")
        for f in LOAD_FRACTIONS:
            p99s = [predict_batched(bench, system, "Server", qps=cap.qps * f, seed=s, mlperf_round=args.round).p99_e2e_s
                    for s in SEEDS]
            print(f"  {f:4.0%} of that: p99 " + " / ".join(f"{x * 1e3:.1f}" for x in p99s) + f" ms (seeds {SEEDS})")


if __name__ == "__main__":
    main()
