"""Measured MLPerf Server latency distributions (LoadGen logs) and the model's at its operating point."""

import pytest

from mtiasim.serving.mlperf import benchmark_info, predict_batched
from mtiasim.system.spec import SystemSpec
from mtiasim.validate import server_latency_logs


def test_logged_distributions_are_sourced_and_ordered():
    data = server_latency_logs()
    assert {"llama2-70b-99", "bert-99", "dlrm-v2-99", "resnet50"} <= set(data)
    for bench, m in data.items():
        benchmark_info(m.get("benchmark", bench))  # a supported benchmark
        SystemSpec.parse(m["system"])
        assert "mlperf_log_" in m["source"] and m["completed_samples_per_s"] > 0
        for key in ("latency_ms", "ttft_ms", "tpot_ms"):
            if key in m:
                d = m[key]
                assert d["p50"] <= d["p90"] <= d["p99"], (bench, key)
                assert d.get("min", 0.0) <= d["mean"] <= d["p99"], (bench, key)


def test_batched_server_prediction_carries_its_latency_distribution():
    p = predict_batched("resnet50", "h100-sxm-80gb:1", "Server", mlperf_round="v4.0")
    lat = p.latency_s
    assert lat is not None and 0 < lat.p50 <= lat.p90 <= lat.p99
    assert lat.p99 == pytest.approx(p.p99_e2e_s)  # the p99 row validate reads is this distribution's
    assert lat.p99 <= 0.015  # resnet50's Server bound: the operating point meets it
