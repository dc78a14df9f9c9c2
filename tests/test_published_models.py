"""The GPU engine against whole-model latencies NVIDIA publishes for its TensorRT BERT engines
(data/calibration/measured/published/tensorrt-demo-bert.yaml: BERT-Large on an A100, fixed
sequence lengths 128 and 384)."""

import pytest

from mtiasim.compiler import CompileOptions
from mtiasim.engines.measured import summary
from mtiasim.engines.published import check_published, load_published


@pytest.fixture(scope="module")
def checks():
    return check_published("tensorrt-demo-bert", min_batch=32)  # the GPU is full from B = 32 (4,096+ tokens)


def test_published_set_names_its_source_gpu_and_preset():
    data = load_published("tensorrt-demo-bert")
    assert "NVIDIA/TensorRT" in data["source"] and "768d994b" in data["source"]
    assert data["gpu"] == "NVIDIA A100 (40GB)" and data["preset"] == "a100-sxm-80gb"
    assert set(data["latency_ms"]) == {"int8", "fp16"}


def test_unknown_published_set_is_named():
    with pytest.raises(ValueError, match="no published measurements 'nope'"):
        load_published("nope")


def test_int8_engines_within_ten_percent_at_full_batches(checks):
    # The INT8 fused-attention efficiency (gpu.yaml tensorrt-fmha int8 = 0.15) is fitted to these
    # six points; the GEMMs around it are not (the chip's measured GEMM efficiency).
    int8 = [c for c in checks if " int8 " in c.kind]
    assert len(int8) == 6
    for c in int8:
        assert abs(c.error_pct) < 10, (c.kind, c.label, c.error_pct)


def test_attention_grows_the_int8_engine_as_measured_from_s128_to_s384(checks):
    # Measured: 89.04 / 25.39 = 3.51x for 3x the tokens at B=128; the extra 0.5x is attention
    # (quadratic in S). Timing INT8 attention at the INT8 GEMM rate gave 3.16x.
    by = {(c.kind, c.label): c for c in checks}
    s128, s384 = by[("bert-large int8 S=128", "B=128")], by[("bert-large int8 S=384", "B=128")]
    measured = s384.measured_s / s128.measured_s
    predicted = s384.predicted_s / s128.predicted_s
    assert measured == pytest.approx(3.507, abs=0.01)
    assert predicted == pytest.approx(measured, rel=0.05)


def test_int8_fused_attention_is_not_faster_than_fp16_on_the_tensorrt_stack():
    # The demo's quadratic term per sequence (from S = 128 and 384 at B = 128) is 1.006e-6 ms x S^2
    # in INT8 and 0.705e-6 ms x S^2 in FP16: its INT8 attention kernel is the slower one, although
    # the INT8 peak is twice the FP16 peak.
    from mtiasim.api import simulate

    def attention_s(dtype):
        r = simulate("bert-large", chip="a100-sxm-80gb", batch=64, seq_len=384, engine="gpu",
                     engine_options={"stack": "tensorrt"}, options=CompileOptions(dtype=dtype, act_dtype=dtype))
        return sum(o.time_s for o in r.ops if o.op == "attention")

    assert attention_s("int8") > attention_s("fp16")


def test_fp16_gap_is_recorded_not_hidden(checks):
    # The FP16 engines run 20-26% slower than predicted at every S and B >= 32 alike: a GEMM-side gap
    # on A100 (BENCHMARKS.md), not fitted. This pins today's bias so a change that moves it is seen.
    s = summary([c for c in checks if " fp16 " in c.kind])
    assert all(-30 < v["bias_pct"] < -15 for v in s.values()), s


def test_one_by_one_launches_set_the_small_batch_floor():
    # perf.py times one execute_async_v2 call per batch, every kernel launched on its own (no CUDA
    # graph). The measured INT8 S=128 line through B = 32 and 128 meets B = 0 at 0.99 ms:
    # 7.09 - 32 x (25.39 - 7.09) / 96. The tensorrt stack's 5.0 us per launch (fitted to the demo)
    # brings B = 1-16 within 12%, where graph-replay launches (1.08 us) left them 15-57% fast.
    measured = load_published("tensorrt-demo-bert")["latency_ms"]["int8"][128]
    assert 7.09 - 32 * (measured[-1] - 7.09) / 96 == pytest.approx(0.99, abs=0.01)
    small = [c for c in check_published("tensorrt-demo-bert") if c.kind == "bert-large int8 S=128"
             and int(c.label.removeprefix("B=")) <= 16]
    assert len(small) == 6
    for c in small:
        assert abs(c.error_pct) < 12, (c.label, c.error_pct)


def test_graph_replay_saves_at_most_the_launch_difference_on_every_kernel():
    # The same BERT-Large program under both TensorRT launch paths: each kernel's launch costs
    # (5.0 - 1.08) us less from a graph. The graph run is never slower, and saves at most that much:
    # kept busier, it draws more power, so at the H100's 700 W its clocks may settle lower (here 0.95).
    from mtiasim.api import simulate

    def run(stack):
        return simulate("bert-large", chip="h100-sxm-80gb", batch=8, seq_len=128, engine="gpu",
                        engine_options={"stack": stack}, options=CompileOptions(dtype="int8", act_dtype="int8"))

    eager, graph = run("tensorrt"), run("tensorrt-graphs")
    n = len(eager.ops)
    assert n == len(graph.ops) > 100
    saved = n * (5.0e-6 - 1.08e-6)
    assert sum(o.overhead_s for o in eager.ops) - sum(o.overhead_s for o in graph.ops) == pytest.approx(saved, rel=1e-9)
    assert 0 < eager.latency_s - graph.latency_s <= saved * (1 + 1e-9)
    assert graph.clock_scale <= eager.clock_scale
