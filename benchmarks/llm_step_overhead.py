"""What a fixed extra time per serving step would do to llama2-70b on 8 H100s (MLPerf v4.1).

A diagnostic for the LLM p99 latency rows (BENCHMARKS.md, session 18): for each extra time per
step it predicts the Offline throughput, then runs the Server scenario at the DGX v4.1
submission's relative load (21,606 / 24,525 = 88.1% of its own Offline throughput, the load
``mtiasim validate`` read the latency rows at until session 19; it now reads them at the
predicted Server operating point) and prints the p99 TPOT and TTFT beside the
measured ones. The extra time is added on top of ``LLMStepCost.step_s`` for this process only.

Run: ``.venv/bin/python benchmarks/llm_step_overhead.py [extra_ms ...]`` (default 0 20 50 100;
about 10 s per value on a 2-core machine).
"""

from __future__ import annotations

import sys

from mtiasim.serving import cost
from mtiasim.serving.mlperf import predict_llm

MEASURED = {"offline_tokens_per_s": 24_524.9, "server_tokens_per_s": 21_605.8, "p99_tpot_ms": 175.4,
            "p99_ttft_ms": 461.3}  # calibration CSV: v4.1 DGX-H100_H100-SXM-80GBx8_TRT, llama2-70b-99


def main(extra_ms: list[float]) -> None:
    base = cost.LLMStepCost.step_s
    load = MEASURED["server_tokens_per_s"] / MEASURED["offline_tokens_per_s"]
    print(f"{'extra/step':>10s} {'Offline tok/s':>14s} {'p99 TPOT':>9s} {'p99 TTFT':>9s}   (measured: "
          f"{MEASURED['offline_tokens_per_s']:,.0f} tok/s, {MEASURED['p99_tpot_ms']:.0f} ms, "
          f"{MEASURED['p99_ttft_ms']:.0f} ms at {load:.1%} of Offline)")
    try:
        for ms in extra_ms:
            cost.LLMStepCost.step_s = lambda self, step, e=ms * 1e-3: base(self, step) + (e if step.tokens else 0.0)
            off = predict_llm("llama2-70b-99", "h100-sxm-80gb:8", "Offline", mlperf_round="v4.1")
            srv = predict_llm("llama2-70b-99", "h100-sxm-80gb:8", "Server", mlperf_round="v4.1",
                              qps=load * off.samples_per_s)
            print(f"{ms:8.0f}ms {off.tokens_per_s:14,.0f} {srv.p99_tpot_s * 1e3:7.0f}ms {srv.p99_ttft_s * 1e3:7.0f}ms",
                  flush=True)
    finally:
        cost.LLMStepCost.step_s = base


if __name__ == "__main__":
    main([float(a) for a in sys.argv[1:]] or [0.0, 20.0, 50.0, 100.0])
