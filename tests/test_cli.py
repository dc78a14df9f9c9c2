"""Smoke tests of the ``mtiasim`` command line (typer's CliRunner, in-process).

Captured graphs are cached under ``MTIASIM_CACHE_DIR``, pointed at a temp dir shared by this module
so the tests never touch ``~/.cache``; each zoo workload is captured once per run.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtiasim.chips import list_chips, preset_path
from mtiasim.cli import app
from mtiasim.frontend import zoo

PRESETS = [
    "mtia-100", "mtia-200", "mtia-300", "mtia-400", "mtia-450", "mtia-500",
    "a100-sxm-80gb", "h100-sxm-80gb", "h100-pcie-80gb", "h100-nvl-94gb", "h200-sxm-141gb",
    "gh200-144gb", "b200-sxm-180gb", "mi300x", "mi325x", "mi355x", "gaudi2", "tpu-v5e",
]
BOUNDS = {"compute", "memory", "overhead", "host"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _capture_cache(tmp_path_factory):
    """One capture cache shared by every test here, outside the user's home (module-scoped, so the
    variable is restored for the test modules that run after this one)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MTIASIM_CACHE_DIR", str(tmp_path_factory.mktemp("mtiasim-cache")))
        yield


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def ok_json(*args: str):
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def flat(text: str) -> str:
    """Error text without the line wrapping rich adds on narrow terminals."""
    return re.sub(r"\s+", "", text)


def fails_with(args: list[str], *fragments: str) -> str:
    """Run ``args``, expect exit code 2 and every fragment in the output (wrapping ignored)."""
    r = invoke(*args)
    assert r.exit_code == 2, (r.exit_code, r.output)
    out = r.output
    for f in fragments:
        assert flat(f) in flat(out), f"{f!r} not in:\n{out}"
    return out


# ------------------------------------------------------------------------------ chips

def test_chips_json_lists_all_presets():
    rows = ok_json("chips", "--json")
    names = [r["name"] for r in rows]
    assert sorted(names) == sorted(PRESETS) == sorted(list_chips())
    assert len(names) == 18
    for r in rows:
        assert r["dram_bandwidth_bytes_per_s"] > 0, r
        assert {"display_name", "vendor", "kind", "peak_bf16_flops_per_s", "dram_capacity_bytes", "tdp_w"} <= set(r)
    by = {r["name"]: r for r in rows}
    assert by["mtia-200"]["dram_bandwidth_bytes_per_s"] == pytest.approx(204.8e9)
    assert by["tpu-v5e"]["tdp_w"] is None


def test_chips_table_names_presets():
    r = invoke("chips")
    assert r.exit_code == 0, r.output
    for name in ("mtia-200", "h100-sxm-80gb", "mi300x"):
        assert name in r.output


def test_chips_show_json_has_values_and_sources():
    spec = ok_json("chips", "show", "mtia-200", "--json")
    bw = spec["dram"]["bandwidth_bytes_per_s"]
    assert bw["value"] == pytest.approx(204.8e9, rel=1e-12)
    assert bw["source"].strip()
    assert spec["name"] == "mtia-200"
    assert spec["power"]["tdp_w"]["value"] == pytest.approx(85)


def test_chips_show_text_cites_sources():
    r = invoke("chips", "show", "mtia-200")
    assert r.exit_code == 0, r.output
    assert "ISCA'25" in r.output
    assert "dram.bandwidth_bytes_per_s" in r.output


def test_chips_show_selects_documented_alternative():
    spec = ok_json("chips", "show", "mtia-200", "--set", "power.tdp_w=alt:blog-2024", "--json")
    tdp = spec["power"]["tdp_w"]
    assert tdp["value"] == pytest.approx(90)
    assert tdp["source"].strip()
    assert tdp["alternatives"]["preset-default"]["value"] == pytest.approx(85)


def test_chips_show_set_with_unit():
    spec = ok_json("chips", "show", "mtia-200", "--set", "dram.bandwidth_bytes_per_s=3TB/s", "--json")
    assert spec["dram"]["bandwidth_bytes_per_s"]["value"] == pytest.approx(3e12)
    assert spec["dram"]["bandwidth_bytes_per_s"]["status"] == "estimate"


# ------------------------------------------------------------------------------ run

@pytest.fixture(scope="module")
def dlrm_run():
    return ok_json("run", "dlrm-v2", "--chip", "mtia-200", "--batch", "256", "--json")


def test_run_dlrm_totals(dlrm_run):
    d = dlrm_run
    assert (d["model"], d["chip"], d["batch"], d["item_unit"], d["phase"]) == (
        "dlrm-v2", "mtia-200", 256, "sample", "forward")
    assert d["latency_s"] > 0
    assert d["throughput_per_s"] == pytest.approx(256 / d["latency_s"], rel=1e-9)
    assert d["energy_j"] > 0 and d["power_w"] > 0
    assert d["power_w"] == pytest.approx(d["energy_j"] / d["latency_s"], rel=1e-9)
    assert d["perf_per_w"] == pytest.approx(d["throughput_per_s"] / d["power_w"], rel=1e-9)
    assert d["power_w"] <= d["tdp_w"] * (1 + 1e-6)
    assert d["dtype"] == "int8"  # the zoo default for dlrm-v2
    assert isinstance(d["notes"], list)


def test_run_dlrm_ops_explain_the_latency(dlrm_run):
    d = dlrm_run
    ops = d["ops"]
    assert ops
    for o in ops:
        assert {"name", "op", "time_s", "bound", "flops", "bytes"} <= set(o), o
        assert o["bound"] in BOUNDS, o
        assert o["time_s"] > 0 and o["flops"] >= 0 and o["bytes"] >= 0
    assert math.fsum(o["time_s"] for o in ops) == pytest.approx(d["latency_s"], rel=1e-9)
    assert d["bytes"] == pytest.approx(math.fsum(o["bytes"] for o in ops), rel=1e-9)
    kinds = {o["op"] for o in ops}
    assert "linear" in kinds  # the MLPs
    assert kinds & {"tbe", "embedding_bag", "embedding"}  # the sparse lookups


def test_run_dlrm_text_output():
    r = invoke("run", "dlrm-v2", "--chip", "mtia-200", "--batch", "256", "--top", "3")
    assert r.exit_code == 0, r.output
    assert "mtia-200" in r.output


def test_run_llama_decode():
    d = ok_json("run", "llama2-7b", "--chip", "h100-sxm-80gb", "--phase", "decode", "--kv-len", "128", "--json")
    assert (d["phase"], d["kv_len"], d["item_unit"]) == ("decode", 128, "token")
    assert d["latency_s"] > 0
    assert d["items"] == d["batch"]  # one new token per sequence
    assert d["throughput_per_s"] == pytest.approx(d["batch"] / d["latency_s"], rel=1e-9)
    assert math.fsum(o["time_s"] for o in d["ops"]) == pytest.approx(d["latency_s"], rel=1e-9)
    assert all(o["bound"] in BOUNDS for o in d["ops"])
    assert d["fits_in_memory"] is True


def test_run_chip_without_tdp_reports_no_energy():
    d = ok_json("run", "dlrm-v2", "--chip", "tpu-v5e", "--batch", "256", "--json")
    assert d["latency_s"] > 0
    assert d["energy_j"] is None and d["power_w"] is None and d["perf_per_w"] is None
    assert any("TDP unknown" in n for n in d["notes"])


def test_run_set_more_dram_bandwidth_is_not_slower(dlrm_run):
    d = ok_json("run", "dlrm-v2", "--chip", "mtia-200", "--batch", "256", "--json",
                "--set", "dram.bandwidth_bytes_per_s=2e12")
    assert d["latency_s"] <= dlrm_run["latency_s"] * (1 + 1e-9)


def test_run_fuse_region_makes_one_kernel_and_is_not_slower():
    args = ["run", "resnet50", "--chip", "h100-sxm-80gb", "--batch", "256", "--engine", "gpu", "--json"]
    plain = ok_json(*args)
    fused = ok_json(*args, "--fuse-region", "features.4,features.5,features.6")
    # res2's 10 convolutions (and their BN, ReLU and residual adds) become one kernel
    assert len(plain["ops"]) - len(fused["ops"]) == 9
    assert fused["latency_s"] < plain["latency_s"]
    assert sum(o["bytes"] for o in fused["ops"]) < sum(o["bytes"] for o in plain["ops"])


def test_run_fuse_region_that_matches_nothing_names_the_option():
    fails_with(["run", "resnet50", "--chip", "h100-sxm-80gb", "--fuse-region", "layer1"],
               "fuse_regions[0]", "'layer1'", "matches no op", "features.0")


# ------------------------------------------------------------------------------ compare

def test_compare_dlrm_json_and_plot(tmp_path):
    png = tmp_path / "c.png"
    d = ok_json("compare", "dlrm-v2", "--chips", "mtia-200,h100-sxm-80gb", "--batch", "256",
                "--json", "--plot", str(png))
    assert d["model"] == "dlrm-v2"
    assert [r["chip"] for r in d["rows"]] == ["mtia-200", "h100-sxm-80gb"]
    for r in d["rows"]:
        assert r["phase"] == "forward" and r["latency_s"] > 0
        assert r["throughput_per_s"] == pytest.approx(r["batch"] / r["latency_s"], rel=1e-9)
        assert r["dominant_bound"] in BOUNDS
    assert png.is_file() and png.read_bytes()[:8] == PNG_MAGIC


def test_compare_llama_has_prefill_and_decode_per_chip():
    d = ok_json("compare", "llama2-7b", "--chips", "mtia-200,h100-sxm-80gb", "--json")
    pairs = [(r["chip"], r["phase"]) for r in d["rows"]]
    assert sorted(pairs) == sorted((c, p) for c in ("mtia-200", "h100-sxm-80gb") for p in ("prefill", "decode"))
    for r in d["rows"]:
        assert r["item_unit"] == "token" and r["latency_s"] > 0
        if r["phase"] == "prefill":
            assert r["throughput_per_s"] == pytest.approx(r["batch"] * r["seq_len"] / r["latency_s"], rel=1e-9)
        else:
            assert r["kv_len"] and r["throughput_per_s"] == pytest.approx(r["batch"] / r["latency_s"], rel=1e-9)


# ------------------------------------------------------------------------------ errors

def test_unknown_chip_lists_presets():
    out = fails_with(["run", "dlrm-v2", "--chip", "mtia-9000", "--batch", "256"], "mtia-9000")
    for name in ("mtia-200", "h100-sxm-80gb", "tpu-v5e"):
        assert name in flat(out)
    assert "Traceback" not in out


def test_unknown_chip_in_compare():
    fails_with(["compare", "dlrm-v2", "--chips", "mtia-200,nochip", "--batch", "256"], "nochip", "mtia-200")


def test_set_unknown_field_names_it():
    fails_with(["run", "dlrm-v2", "--batch", "256", "--set", "dram.bandwidth=1"],
               "dram.bandwidth", "bandwidth_bytes_per_s")


def test_set_wrong_unit_names_the_unit():
    fails_with(["run", "dlrm-v2", "--batch", "256", "--set", "dram.bandwidth_bytes_per_s=3GHz"],
               "dram.bandwidth_bytes_per_s", "GHz")


def test_set_without_equals_is_a_usage_error():
    fails_with(["chips", "show", "mtia-200", "--set", "dram.bandwidth_bytes_per_s"], "PATH=VALUE")


def test_chip_yaml_with_unknown_field(tmp_path):
    text = preset_path("mtia-200").read_text()
    assert "\ndram:\n" in text
    bad = tmp_path / "my_chip.yaml"
    bad.write_text(text.replace("\ndram:\n", "\ndram:\n  bandwith_gbps: {value: 1, source: typo}\n", 1))
    for args in (["chips", "show", str(bad)], ["run", "dlrm-v2", "--chip", str(bad), "--batch", "256"]):
        fails_with(args, str(bad), "dram.bandwith_gbps")


def test_chip_yaml_with_wrong_unit(tmp_path):
    text = preset_path("mtia-200").read_text()
    start = text.index("\nclock_hz:")
    end = text.index("\ncompute:")
    bad = tmp_path / "clock.yaml"
    bad.write_text(text[:start] + '\nclock_hz: {value: "1 GB/s", source: x}' + text[end:])
    out = fails_with(["run", "dlrm-v2", "--chip", str(bad), "--batch", "256"], str(bad), "clock_hz", "GB/s")
    assert "Hz" in out


def test_unknown_model_lists_zoo():
    out = fails_with(["run", "gpt-5", "--chip", "mtia-200"], "gpt-5")
    for name in zoo.names():
        assert name in flat(out)


def test_unknown_dtype_is_reported():
    fails_with(["run", "dlrm-v2", "--batch", "256", "--dtype", "fp7"], "fp7")


# ------------------------------------------------------------------------------ help

@pytest.mark.parametrize("command", ["run", "compare"])
def test_help_mentions_json(command):
    r = invoke(command, "--help")
    assert r.exit_code == 0, r.output
    assert "--json" in r.output
    assert "--chip" in r.output


def test_cache_dir_is_isolated():
    assert Path(os.environ["MTIASIM_CACHE_DIR"]).is_dir()
    assert not str(Path(os.environ["MTIASIM_CACHE_DIR"])).startswith(str(Path.home() / ".cache"))


def test_bad_flags_are_named():
    # an unknown activation dtype names the field and the valid choices, without pydantic's wrapper
    r = runner.invoke(app, ["run", "resnet50", "--chip", "h100-sxm-80gb", "--act-dtype", "bogus"])
    assert r.exit_code == 2 and "act_dtype: unknown dtype 'bogus'" in r.output and "pydantic" not in r.output
    # LLM-only serving flags on a batched model are refused by name, not silently ignored
    r = runner.invoke(app, ["serve", "resnet50", "--system", "h100-sxm-80gb:1", "--qps", "10", "--beams", "4"])
    assert r.exit_code == 2 and "--beams applies to LLMs" in r.output
    r = runner.invoke(app, ["serve", "bert-large", "--system", "h100-sxm-80gb:1", "--qps", "10", "--prefill-first"])
    assert r.exit_code == 2 and "--prefill-first applies to LLMs" in r.output
    r = runner.invoke(app, ["serve", "llama2-7b", "--system", "h100-sxm-80gb:1", "--requests", "4",
                            "--prefill-first", "--max-prefill-chunk", "256"])
    assert r.exit_code == 2 and "max_prefill_chunk_tokens" in r.output
    # a GPU software stack on a non-GPU system is refused rather than ignored
    r = runner.invoke(app, ["serve", "llama2-7b", "--system", "mtia-400:1", "--requests", "4", "--stack", "vllm"])
    assert r.exit_code == 2 and "--stack" in r.output and "not a GPU" in r.output


def test_kernels_reports_the_gpu_engine_against_measured_kernels():
    d = ok_json("kernels", "--chip", "h200-sxm-141gb", "--json")
    assert d["env"]["gpu"] == "NVIDIA H200" and d["chip"] == "h200-sxm-141gb"
    kinds = d["by_kind"]
    # the H200 was not in any fit: its GEMMs are predicted from its spec and the H100 calibration
    assert kinds["gemm_bf16"]["n"] >= 200 and kinds["gemm_bf16"]["mape_pct"] < 10
    row = d["by_kernel"][0]
    assert row["measured_s"] > 0 and row["predicted_s"] > 0
    assert row["error_pct"] == pytest.approx((row["predicted_s"] - row["measured_s"]) / row["measured_s"] * 100)
    fails_with(["kernels", "--chip", "mtia-400"], "nokernelmeasurementsfor'mtia-400'")


def test_mlperf_offline_says_it_simulated_one_replica():
    r = invoke("mlperf", "llama3.1-8b", "--system", "h100-sxm-80gb:2", "--scenario", "offline")
    text = " ".join(r.output.split())
    assert r.exit_code == 0
    assert "one of the 2 data-parallel replicas simulated" in text and "scaled by 2" in text


def test_mlperf_batched_server_prints_its_latency_distribution():
    r = invoke("mlperf", "resnet50", "--system", "h100-sxm-80gb:1", "--scenario", "server", "--round", "v4.0")
    text = " ".join(r.output.split())
    assert r.exit_code == 0
    vals = re.search(r"query latency mean ([\d.]+) ms, p50 ([\d.]+) ms, p90 ([\d.]+) ms, p99 ([\d.]+) ms", text)
    assert vals, text
    p50, p90, p99 = (float(v) for v in vals.groups()[1:])
    assert 0 < p50 <= p90 <= p99 <= 15.0  # resnet50's Server bound is a 15 ms p99: the operating point meets it
    assert "latency bounds met" in text


def test_serve_batched_model_takes_a_gpu_stack_and_rejects_it_off_gpu():
    # --stack picks the kernels' calibration for batched models too: TensorRT's BERT engines
    # (stack tensorrt) run INT8 attention at 0.15 of the INT8 peak, slower than the default stack,
    # which times it at the INT8 GEMM rate, so the Offline throughput falls.
    def offline(*extra):
        r = runner.invoke(app, ["serve", "bert-large", "--system", "h100-sxm-80gb:1", "--dtype", "int8",
                                "--batch-pairs", "256", "--json", *extra])
        assert r.exit_code == 0, r.output
        return json.loads(r.output)["samples_per_s"]

    assert offline("--stack", "tensorrt") < offline()
    r = runner.invoke(app, ["serve", "bert-large", "--system", "mtia-200:1", "--stack", "tensorrt"])
    assert r.exit_code == 2 and "not a GPU" in r.output


def test_serve_max_prefill_chunk_spreads_prompts_over_steps():
    # four 1,000-token prompts at once into 1,024-token steps: uncapped, the steps take them one
    # after another whole (~1 prompt a step); capped at 256, they are chunked side by side, so every
    # first token waits until all four prompts are nearly prefilled and the first TTFT grows
    base = ["serve", "llama2-7b", "--system", "h100-sxm-80gb:1", "--requests", "4", "--input-len", "1000",
            "--output-len", "4", "--max-tokens", "1024", "--json"]
    plain = ok_json(*base)
    capped = ok_json(*base, "--max-prefill-chunk", "256")
    assert capped["ttft_s"]["p50"] > plain["ttft_s"]["p50"]


def test_serve_routing_least_pending():
    # eight llama2-7b replicas (one per H100) under a Poisson load: both routings serve every
    # request; a misspelled routing is refused by name
    base = ["serve", "llama2-7b", "--system", "h100-sxm-80gb:8", "--tp", "1", "--qps", "40", "--requests", "400",
            "--json"]
    rr, lp = ok_json(*base), ok_json(*base, "--routing", "least_pending")
    assert rr["completed"] == lp["completed"] == 400 and rr["dp"] == lp["dp"] == 8
    assert lp["ttft_s"] != rr["ttft_s"]  # the routing reaches the simulation
    r = runner.invoke(app, [*base, "--routing", "shortest"])
    assert r.exit_code != 0 and "routing must be one of" in r.output


@pytest.mark.parametrize("args,fragments", [
    (["serve", "gpt5"], ["unknown zoo model 'gpt5'"]),
    (["run", "ranking-lc", "--stack", "vllm"], ["--stack applies to --engine gpu"]),
    (["serve", "ranking-lc", "--system", "mtia-200:1", "--qps", "0"], ["--qps", "positive, finite"]),
    (["serve", "llama3.1-8b", "--system", "h100-sxm-80gb:1", "--qps", "nan"], ["--qps", "positive, finite"]),
    (["serve", "dlrm-v2", "--system", "mtia-200:1", "--qps", "10", "--batch-timeout", "1e999s"],
     ["--batch-timeout", "finite duration"]),
    (["serve", "llama3.1-8b", "--system", "h100-sxm-80gb:1", "--qps", "1", "--ttft-p99", "0"],
     ["--ttft-p99", "above 0"]),
    (["chips", "show", "mtia-200", "--set", "year=abc"], ["--set year: expected an integer, got 'abc'"]),
    (["run", "dlrm-v2", "--set", "compute.units=0.5"], ["--set compute.units", "whole number of at least 1"]),
    (["run", "dlrm-v2", "--set", "compute.units=0"], ["compute.units must be a whole number of at least 1"]),
    (["run", "dlrm-v2", "--set", "dram.bandwidth_bytes_per_s=nan"], ["--set dram.bandwidth_bytes_per_s", "cannot read"]),
    (["compare", "dlrm-v2", "--chips", "mtia-200", "--plot", "out.txt"], ["cannot write a '.txt' chart"]),
    (["compare", "dlrm-v2", "--chips", ""], ["--chips names no chip"]),
    (["serve", "llama2-70b", "--system", "h100-sxm-80gb:8", "--tp", "3"], ["tp=3", "does not divide the 8 chips"]),
])
def test_bad_input_gets_a_named_error(args, fragments):
    """Inputs that ended in a traceback or a hang: each now exits 2 with a message naming the
    option or field, before any simulation runs."""
    out = fails_with(args, *fragments)
    assert "Traceback" not in out


def test_a_model_without_operations_says_so():
    import torch

    import mtiasim

    r = mtiasim.simulate(torch.nn.Identity(), chip="mtia-200", example_inputs=(torch.randn(4, 8),))
    assert r.latency_s == 0 and r.ops == []
    assert any("runs no operation on the chip" in n for n in r.notes)


def test_a_batch_too_large_to_capture_names_the_size_problem():
    res = runner.invoke(app, ["run", "dlrm-v2", "--batch", "1000000000000000"])
    assert res.exit_code == 2
    assert "more elements than a 64-bit count holds" in res.output


def test_json_output_has_no_nan_or_infinity(capsys):
    from mtiasim.cli.common import _dump

    _dump({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf"), "e": 2.5}})
    assert json.loads(capsys.readouterr().out) == {"a": None, "b": [1.0, None], "c": {"d": None, "e": 2.5}}


def test_serving_options_for_batched_models_are_refused_on_an_llm():
    res = runner.invoke(app, ["serve", "llama2-70b", "--system", "h100-sxm-80gb:8", "--qps", "1", "--p99", "60ms",
                              "--batch-pairs", "512"])
    assert res.exit_code == 2
    assert "--p99, --batch-pairs apply to batched models; llama2-70b is an LLM" in " ".join(res.output.split())
