"""End-to-end serving against a published measurement that is not in the calibration set.

NVIDIA's NIM benchmarking page (docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance, as
recorded in ../shared/research/mlperf.md section 4.3c) ran Llama-3.3-70B-Instruct on 2 H100-SXM
80 GB, FP8, tensor parallel 2 (NIM 1.8.0, a TensorRT-LLM engine), with a fixed number of requests
in flight (closed loop):

| concurrency | input / output tokens | measured                                  |
|-------------|-----------------------|-------------------------------------------|
| 1           | 5000 / 500            | TTFT 406.77 ms, inter-token latency 18.58 ms |
| 1           | 500 / 2000            | TTFT 47.77 ms, inter-token latency 18.91 ms  |
| >= 100      | 5000 / 500            | saturates near 917-921 output tokens/s, ITL ~93 ms |

Llama-3.3-70B has Llama-3.1-70B's architecture (the zoo's llama3.1-70b). A closed loop of N
requests is an Offline run whose batch holds at most N sequences: every request is waiting at
t = 0 and the next one is admitted as soon as one finishes. Nothing here was fitted to these
numbers; the bands are the accuracy the model has today (the figures are in BENCHMARKS.md), so a
change that moves a prediction outside them has to explain why.
"""

import pytest

from mtiasim.serving import serve_llm
from mtiasim.serving.llm import SchedulerConfig

NIM = dict(model="llama3.1-70b", system="h100-sxm-80gb:2", tp=2, dtype="fp8", kv_dtype="fp8", stack="tensorrt-llm")


def closed_loop(concurrency: int, prompt: int, output: int, requests: int):
    return serve_llm(NIM["model"], NIM["system"], qps=None, requests=requests, prompt_tokens=prompt,
                     output_tokens=output, tp=NIM["tp"], dtype=NIM["dtype"], kv_dtype=NIM["kv_dtype"],
                     stack=NIM["stack"],
                     scheduler=SchedulerConfig(max_num_seqs=concurrency, max_num_batched_tokens=8192))


@pytest.mark.parametrize("prompt,output,ttft_s,itl_s", [(5000, 500, 0.40677, 0.01858), (500, 2000, 0.04777, 0.01891)])
def test_single_user_latencies_match_nim(prompt, output, ttft_s, itl_s):
    r = closed_loop(1, prompt, output, requests=1)
    # decode at batch 1 reads every weight once per token: the inter-token latency is the
    # memory-bound step, within 10% of the measured one
    assert r.tpot_s.p50 == pytest.approx(itl_s, rel=0.10)
    if prompt > 1000:  # the 5000-token prefill is compute-bound: within 20%
        assert r.ttft_s.p50 == pytest.approx(ttft_s, rel=0.20)
    else:  # the measured 500-token TTFT also holds the service's request handling, which the
        # model leaves out, so the prediction may only be lower
        assert 0.6 * ttft_s < r.ttft_s.p50 < ttft_s


def test_saturated_throughput_and_itl_at_concurrency_100_match_nim():
    r = closed_loop(100, 5000, 500, requests=600)
    # mixed steps (a 5000-token prefill chunk beside ~100 decodes) dominate: output tokens/s in
    # steady state within 20% of NIM's and the inter-token latency the decodes see within 25%.
    # Each such step is compute-bound and held at the H100's 700 W (power.yaml
    # sustained_gemm_clock_fraction): -17% and +24% (at the clock the GEMMs were measured at they
    # were -11% and +14%, while the single-user 5000-token TTFT above was -13%; it is now -1%)
    assert r.saturated_output_tokens_per_s == pytest.approx(919.0, rel=0.20)
    assert r.tpot_s.mean == pytest.approx(0.093, rel=0.25)
    # Little's law: 100 requests in flight, each for its prefill plus 499 inter-token gaps, so the
    # time between tokens cannot exceed 100 / (output tokens/s) x 500/499; the prefill's share of
    # the time in flight keeps it below
    bound_s = 100 / r.saturated_output_tokens_per_s * 500 / 499
    assert 0.7 * bound_s < r.tpot_s.mean <= bound_s
