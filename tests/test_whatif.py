"""What-ifs move the prediction: a peak is clock x units x ops per cycle per unit, so halving any
of its parts halves the peaks it multiplies, and a compute-bound GEMM slows down."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mtiasim
from mtiasim.chips import load_chip

# (chip, --set path, value that halves the part); MTIA 2i: 1.35 GHz x 64 PEs (8 x 8) x 2048 BF16
# ops per cycle per PE = 177 TFLOPS, the published peak; H100 SXM: 132 SMs at 1830 MHz
HALVINGS = [
    ("mtia-200", "clock_hz", "0.675GHz"),
    ("mtia-200", "compute.units", "32"),
    ("mtia-200", "pe_grid.rows", "4"),
    ("mtia-200", "pe_grid.cols", "4"),
    ("mtia-200", "pe_grid.engines.dpe_ops_per_cycle.bf16", "1024"),
    ("h100-sxm-80gb", "gpu.boost_clock_hz", "915MHz"),
    ("h100-sxm-80gb", "gpu.sm_count", "66"),
    ("h100-sxm-80gb", "compute.units", "66"),
]


def _gemm_latency_s(chip) -> float:
    m = nn.Linear(8192, 8192, bias=False).to("meta")
    return mtiasim.simulate(m, chip=chip, example_inputs=(torch.empty(8192, 8192, device="meta"),),
                            dtype="bf16").latency_s


@pytest.mark.parametrize("chip,path,value", HALVINGS)
def test_halving_a_peak_part_halves_the_peak_and_slows_a_gemm(chip, path, value):
    base, half = load_chip(chip), load_chip(chip, {path: value})
    assert half.peak("bf16") == pytest.approx(base.peak("bf16") / 2)
    assert half.compute.peak_ops_per_s["bf16"].status == "derived"
    assert _gemm_latency_s(half) > 1.5 * _gemm_latency_s(base)


def test_one_dtype_engine_scales_only_its_peak():
    half = load_chip("mtia-200", {"pe_grid.engines.dpe_ops_per_cycle.bf16": "1024"})
    assert half.peak("int8") == load_chip("mtia-200").peak("int8")


def test_the_documented_clock_alternative_takes_effect():
    """clock_hz=alt:design-spec (the documented alternative) moves the peaks with the clock."""
    base = load_chip("mtia-200")
    alt = load_chip("mtia-200", {"clock_hz": "alt:design-spec"})
    ratio = alt.clock_hz.value / base.clock_hz.value
    assert ratio != 1
    assert alt.peak("bf16") == pytest.approx(base.peak("bf16") * ratio)
    assert _gemm_latency_s(alt) != pytest.approx(_gemm_latency_s(base))
