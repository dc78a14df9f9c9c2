"""llama2-70b on AMD's 8 x MI300X as AMD ran it in MLPerf v4.1 (vLLM 0.4.3, one engine per GPU,
harness batcher, prefill-first scheduler), checked against that run's own LoadGen log
(``data/calibration/measured/mlperf_logs/server_latency.yaml``, key ``llama2-70b-99-mi300x``).

The log's whole TPOT distribution is narrow (mean 143 ms, p50 144, p99 198): AMD's p99 TPOT
near the 200 ms bound is a steady state of ~384 sequences decoding at once per GPU with the run at
its capacity, not a tail of a few requests. With the H100 kernels' compute/memory overlap the
model's decode throughput is flat above ~130 sequences and it served the same load with ~110
(mean TPOT 52 ms); the vllm-rocm-0.4 stack (gpu.yaml: no overlap, fitted to this log and AMD's
Offline rate) gives 101 ms. The bands below are the accuracy the model has today
(BENCHMARKS.md session 28)."""

import pytest

from mtiasim.serving import plan_serving
from mtiasim.serving.mlperf import deployment, predict_llm
from mtiasim.serving.traffic import datasets
from mtiasim.system.spec import SystemSpec
from mtiasim.validate import server_latency_logs


def _log() -> dict:
    return server_latency_logs()["llama2-70b-99-mi300x"]


@pytest.fixture(scope="module")
def at_amds_load():
    """The model at the arrival rate LoadGen scheduled in AMD's run (73.66 queries/s over 8 GPUs)."""
    log = _log()
    return predict_llm(log["benchmark"], log["system"], "Server", mlperf_round=log["round"],
                       qps=log["scheduled_samples_per_s"], requests=20_000)


def test_amd_log_agrees_with_the_published_output_length():
    # 21,028.23 tokens/s over 71.74 completed queries/s = 293.1 tokens per query: the reference's
    # published mean output (294.45, datasets.yaml) to within 0.5%, so the log's rates and the
    # dataset the model draws from describe the same work.
    log = _log()
    per_query = log["completed_tokens_per_s"] / log["completed_samples_per_s"]
    assert per_query == pytest.approx(datasets()["openorca"]["output"]["mean"], rel=0.005)


def test_amd_run_held_its_backlog_within_the_engine_limits():
    # Little's law on the log: 71.74 / 8 = 8.97 queries/s per GPU, each in the system 42.84 s on
    # average, so ~384 requests per engine at once. That is under the engine's 1,024-sequence limit
    # (the Server harness main's --max-num-seqs default, deployments.yaml) and their KV (prompt,
    # the dataset mean, 313 tokens, plus on average at least half the output, 147) fills about a quarter of the FP8 KV
    # cache one MI300X holds beside the FP8 weights: the run was limited by neither, so its TPOT is
    # step time, not preemption or admission stalls.
    log = _log()
    gpus = SystemSpec.parse(log["system"]).count
    in_flight = log["completed_samples_per_s"] / gpus * log["latency_ms"]["mean"] / 1e3
    assert in_flight == pytest.approx(384, abs=1)
    dep = deployment("llama2-70b", "mi300x", mlperf_round="v4.1", scenario="Server")
    assert in_flight < dep["server_max_num_seqs"] == 1024
    lengths = datasets()["openorca"]
    held = in_flight * (lengths["input"]["mean"] + lengths["output"]["mean"] / 2)
    cap = plan_serving("llama2-70b", SystemSpec.parse("mi300x:1"), tp=1, pp=1, dtype="fp8", kv_dtype="fp8",
                       stack=dep["stack"]).kv_capacity_tokens
    assert held < cap / 2
    # and it ran at its capacity: LoadGen scheduled 73.66 queries/s, 71.74 completed
    assert log["completed_samples_per_s"] / log["scheduled_samples_per_s"] == pytest.approx(0.974, abs=0.001)


def test_model_keeps_up_with_amds_load_at_its_throughput_and_ttft(at_amds_load):
    log = _log()
    p, r = at_amds_load, at_amds_load.report
    assert r.completed == r.requests
    assert p.tokens_per_s == pytest.approx(log["completed_tokens_per_s"], rel=0.05)
    # prefill-first steps of whole harness batches: TTFT within 15% at every logged point (the
    # model reads 1.11 s mean, 1.76 s p99 against 1.01 s and 1.60 s)
    for stat in ("mean", "p50", "p90", "p99"):
        assert getattr(r.ttft_s, stat) * 1e3 == pytest.approx(log["ttft_ms"][stat], rel=0.15), stat


def test_model_decodes_amds_load_as_a_deep_steady_state(at_amds_load):
    # The log's run sat ~384 sequences deep; the model's TPOT at that load comes from the same
    # mechanism only if its decode steps lengthen with the batch: mean TPOT within 35% of the
    # log's (101 vs 143 ms: the stack's overlap fit sits at its bound, 0) and its distribution as
    # narrow (p99 / mean 1.4 measured). With the H100 kernels' overlap it read 52 ms.
    log = _log()
    tpot = at_amds_load.report.tpot_s
    assert tpot.mean * 1e3 == pytest.approx(log["tpot_ms"]["mean"], rel=0.35)
    assert tpot.p99 / tpot.mean < 1.5 * log["tpot_ms"]["p99"] / log["tpot_ms"]["mean"]
    assert tpot.p99 * 1e3 < 200.0  # the run's bound holds at the load AMD passed
