"""A harness-side batcher in front of the engines (AMD's v4.1 MLPerf vLLM harness,
--enable-batcher): queries wait in one queue and leave in batches, each batch to one engine;
latencies count from LoadGen's issue time (traffic.harness_batches, serve_llm harness_batcher)."""

import pytest

from mtiasim.serving import serve_llm
from mtiasim.serving.llm import route_batches_round_robin
from mtiasim.serving.mlperf import deployment, predict_llm
from mtiasim.serving.traffic import Request, harness_batches


def _reqs(times):
    return [Request(i, t, 100, 10) for i, t in enumerate(times)]


def test_a_batch_leaves_when_full_or_at_the_timeout_after_the_last_one():
    """batch 3, timeout 0.3 s, worked by hand:
    - 0.0, 0.1, 0.2: the third arrival fills the batch; all three leave at 0.2;
    - 1.0, 1.1 then 1.5: the timer runs from the last batch (0.2), so 1.0 leaves at once (0.8 s
      have passed); 1.1 waits for the timeout, 1.0 + 0.3 = 1.3, before 1.5 arrives;
    - 1.5 waits for 1.3 + 0.3 = 1.6 (nothing else comes)."""
    out = harness_batches(_reqs([0.0, 0.1, 0.2, 1.0, 1.1, 1.5]), batch=3, timeout_s=0.3)
    assert [[r.id for r in b] for b in out] == [[0, 1, 2], [3], [4], [5]]
    assert [b[0].arrival_s for b in out] == pytest.approx([0.2, 1.0, 1.3, 1.6])
    # the issue times are kept: latencies count from them
    assert [r.issued_s for b in out for r in b] == [0.0, 0.1, 0.2, 1.0, 1.1, 1.5]
    assert all(r.start_s == r.issued_s <= r.arrival_s for b in out for r in b)
    # a batch never holds more than `batch` requests: ten at once leave as 3 + 3 + 3 + 1
    burst = harness_batches(_reqs([0.0] * 10), batch=3, timeout_s=0.3)
    assert [len(b) for b in burst] == [3, 3, 3, 1]
    # whole batches go to the engines in turn
    parts = route_batches_round_robin(out, 2)
    assert [[r.id for r in p] for p in parts] == [[0, 1, 2, 4], [3, 5]]
    with pytest.raises(ValueError, match="harness batcher"):
        harness_batches(_reqs([0.0]), batch=0, timeout_s=0.3)


def test_a_lone_query_waits_the_timeout_and_its_ttft_counts_the_wait():
    """One request: the batcher's timer starts at its arrival and nothing else fills the batch,
    so it reaches the engine 0.3 s later; its TTFT and end-to-end latency are exactly 0.3 s longer
    than without the batcher (the engine's work is the same)."""
    kw = dict(qps=1.0, request_list=[Request(0, 5.0, 400, 20)], dtype="fp8", kv_dtype="fp8", stack="vllm")
    plain = serve_llm("llama2-70b", "mi300x:1", **kw)
    held = serve_llm("llama2-70b", "mi300x:1", harness_batcher=(96, 0.3), **kw)
    assert held.ttft_s.p50 - plain.ttft_s.p50 == pytest.approx(0.3, abs=1e-9)
    assert held.e2e_s.p50 - plain.e2e_s.p50 == pytest.approx(0.3, abs=1e-9)
    assert held.tpot_s.p50 == pytest.approx(plain.tpot_s.p50)


def test_amds_v41_server_deployment_has_the_batcher_and_offline_ignores_it():
    dep = deployment("llama2-70b", "mi300x", mlperf_round="v4.1", scenario="Server")
    assert dep["harness_batcher"] == {"batch": 96, "timeout_s": 0.3}
    assert "--enable-batcher" in dep["source"] and "--batcher-threshold 0.3" in dep["source"]
    # other rounds and NVIDIA's deployments have none
    assert "harness_batcher" not in deployment("llama2-70b", "mi300x", mlperf_round="v5.1")
    assert "harness_batcher" not in deployment("llama2-70b", "h100-sxm-80gb", mlperf_round="v4.1")


def test_amds_v41_server_runs_its_harness_engine_limits_and_offline_keeps_its_own(monkeypatch):
    """The v4.1 Server harness's --max-num-seqs / --max-num-batched-tokens defaults (1024 / 49152)
    size the Server engines; Offline keeps the deployment's 1792 / 40960. The scheduler each
    scenario hands the serving run is captured from a stand-in serve_llm."""
    import mtiasim.serving.mlperf as m

    dep = deployment("llama2-70b", "mi300x", mlperf_round="v4.1", scenario="Server")
    assert (dep["server_max_num_seqs"], dep["server_max_num_batched_tokens"]) == (1024, 49152)
    assert "--max-num-batched-tokens default 49152" in dep["source"]
    seen = []

    class Captured(Exception):
        pass

    def fake_serve(*args, scheduler, **kw):
        seen.append((scheduler.max_num_seqs, scheduler.max_num_batched_tokens))
        raise Captured

    monkeypatch.setattr(m, "serve_llm", fake_serve)
    for scenario, kw in (("Server", {"qps": 10.0}), ("Offline", {})):
        with pytest.raises(Captured):
            m.predict_llm("llama2-70b", "mi300x:8", scenario, mlperf_round="v4.1", **kw)
    assert seen == [(1024, 49152), (1792, 40960)]


def test_a_harness_batcher_refuses_least_pending_routing():
    # AMD's v4.1 harness batches queries before vLLM sees them and sends each batch to the next
    # engine: asking for least-pending routing on top is refused by name, not silently ignored
    with pytest.raises(ValueError, match="harness batcher"):
        predict_llm("llama2-70b-99", "mi300x:8", "Server", mlperf_round="v4.1", qps=10.0, routing="least_pending")
    with pytest.raises(ValueError, match="routing must be one of"):
        predict_llm("llama2-70b-99", "mi300x:8", "Offline", mlperf_round="v4.1", routing="nearest")
