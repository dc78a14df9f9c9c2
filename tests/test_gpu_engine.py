"""GPU engine: FlashAttention efficiency and launch overheads per software stack."""

import pytest

import mtiasim
from mtiasim.chips import load_chip
from mtiasim.compiler import CompileOptions, compile
from mtiasim.engines.analytical import AnalyticalEngine
from mtiasim.engines.gpu import GPUEngine
from mtiasim.graph import Graph, Node, TensorSpec

META = dict(model="t", phase="prefill", batch=1, seq_len=None, kv_len=None, dtype="bf16", items=1, item_unit="token")


def attention_program(chip="h100-sxm-80gb", s=4096):
    t = {"q": TensorSpec((1, 32, s, 128), "bf16", "input"), "k": TensorSpec((1, 8, s, 128), "bf16", "input"),
         "v": TensorSpec((1, 8, s, 128), "bf16", "input"), "o": TensorSpec((1, 32, s, 128), "bf16")}
    g = Graph("a", t, [Node("attn", "attention", ["q", "k", "v"], ["o"], {"causal": True})], ["q", "k", "v"], ["o"])
    return compile(g, load_chip(chip), CompileOptions(dtype="bf16"))


def test_prefill_attention_runs_at_the_flashattention3_figure():
    # FlashAttention-3 (arXiv 2407.08608): 740 TFLOPS BF16 on H100 = 75% of 989. A causal 4096-token
    # prefill, 32 query heads over 8 KV heads, hd 128: flops = 4 * 32 * 128 * 4096*4097/2
    p = attention_program()
    (op,) = GPUEngine(p).run(**META).ops
    flops = 4 * 32 * 128 * (4096 * 4097 // 2)
    tile = min(m.efficiency for m in p.kernels[0].mappings)
    assert op.compute_s == pytest.approx(flops / (989e12 * 0.75 * tile), rel=1e-9)
    assert op.bound == "compute" and op.time_s >= op.roofline_s


def test_stacks_differ_where_software_differs():
    p = attention_program()
    trt = GPUEngine(p, stack="tensorrt-llm").run(**META)
    eager = GPUEngine(p, stack="pytorch-eager").run(**META)  # FlashAttention-2 at ~35% of peak
    assert eager.latency_s > 2 * trt.latency_s
    assert eager.ops[0].overhead_s == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="unknown software stack 'nope'"):
        GPUEngine(p, stack="nope")


def test_non_attention_kernels_match_the_analytical_engine_up_to_launch_cost():
    a = mtiasim.simulate("llama2-7b", chip="h100-sxm-80gb", seq_len=256)
    g = mtiasim.simulate("llama2-7b", chip="h100-sxm-80gb", seq_len=256, engine="gpu")
    for x, y in zip(a.ops, g.ops):
        if x.op != "attention":
            assert y.compute_s == pytest.approx(x.compute_s) and y.memory_s == pytest.approx(x.memory_s)
    assert g.engine == "gpu"


def test_gpu_engine_refuses_pe_grid_chips():
    with pytest.raises(ValueError, match="PE-grid chip"):
        GPUEngine(attention_program("mtia-300"))
    assert AnalyticalEngine(attention_program("mtia-300")).run(**META).latency_s > 0
