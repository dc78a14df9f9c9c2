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


def attention_graph_program(b, h, hkv, s, causal, chip="h100-sxm-80gb"):
    t = {"q": TensorSpec((b, h, s, 128), "bf16", "input"), "k": TensorSpec((b, hkv, s, 128), "bf16", "input"),
         "v": TensorSpec((b, hkv, s, 128), "bf16", "input"), "o": TensorSpec((b, h, s, 128), "bf16")}
    g = Graph("a", t, [Node("attn", "attention", ["q", "k", "v"], ["o"], {"causal": causal})], ["q", "k", "v"], ["o"])
    return compile(g, load_chip(chip), CompileOptions(dtype="bf16"))


def test_long_causal_prefill_runs_at_the_measured_attention_rate():
    # TensorRT-LLM's stack runs fused attention at 0.62 of the BF16 peak (fitted to cuDNN attention
    # measured on an H100). Causal 4096-token prefill, 32 query heads over 8 KV heads, hd 128:
    # flops = 4 * 32 * 128 * 4096*4097/2 = 137,472,507,904. Work items: 8 KV heads x 16384 packed
    # rows / 128 = 1024 over 132 SMs; the even share (1.04e9 flops per SM) beats the longest item
    # (128 rows x 4096 keys x 2 x 256 = 2.7e8), so time = flops / (989e12 * 0.62) = 224.2 us at the
    # clock the rate was measured at; a run held at TDP divides the rate by its clock scale.
    p = attention_program()
    r = GPUEngine(p).run(**META)
    (op,) = r.ops
    flops = 4 * 32 * 128 * (4096 * 4097 // 2)
    assert op.compute_s == pytest.approx(flops / (989e12 * 0.62 * r.clock_scale), rel=1e-9)
    assert op.compute_s * r.clock_scale == pytest.approx(224.2e-6, rel=1e-3)
    assert op.bound == "compute" and op.time_s >= op.roofline_s


def test_short_prefill_is_bound_by_its_longest_work_item_causal_or_not():
    # B=1, 8 heads, S=1024: 8 x 1024/128 = 64 work items on 132 SMs, one wave. Each SM's item is
    # 128 rows x 1024 keys x 2 x (128 + 128) = 67,108,864 flops at 989e12 * 0.62 / 132 flop/s
    # = 14.45 us. A causal mask halves the flops but not the last query block, which sees every
    # key: measured on the H100, cuDNN took 22.0 us causal and 20.7 us without the mask.
    t = {}
    for causal in (False, True):
        r = GPUEngine(attention_graph_program(1, 8, 8, 1024, causal)).run(**META)
        t[causal] = r.ops[0].compute_s * r.clock_scale  # at the measured clock
    assert t[False] == pytest.approx(67_108_864 * 132 / (989e12 * 0.62), rel=1e-9)
    assert t[True] == pytest.approx(t[False], rel=1e-9)
    # many waves: the causal kernel approaches half the non-causal time. Non-causal: 4096 equal items
    # on 132 SMs take 32 waves (31.03 of work), causal ones share evenly: ratio (1/2) * 31.03/32 = 0.485
    rn = GPUEngine(attention_graph_program(1, 32, 32, 16384, False)).run(**META)
    rc = GPUEngine(attention_graph_program(1, 32, 32, 16384, True)).run(**META)
    nc, c = rn.ops[0].compute_s * rn.clock_scale, rc.ops[0].compute_s * rc.clock_scale
    assert c / nc == pytest.approx(0.5 * 16384 * 16385 / 16384**2 * (4096 / 132) / 32, rel=1e-6)


def test_stacks_differ_where_software_differs():
    p = attention_program()
    trt = GPUEngine(p, stack="tensorrt-llm").run(**META)
    eager = GPUEngine(p, stack="pytorch-eager").run(**META)
    # PyTorch 2.11 dispatches SDPA to cuDNN on an H100 (profiled), TensorRT-LLM's FMHA is proxied by it
    assert eager.ops[0].compute_s * eager.clock_scale == pytest.approx(trt.ops[0].compute_s * trt.clock_scale)
    assert eager.ops[0].overhead_s == pytest.approx(9.7e-6)  # eager launches, measured on the H100
    assert trt.ops[0].overhead_s == pytest.approx(1.08e-6)  # CUDA-graph replay, measured
    fa2 = GPUEngine(p, stack="pytorch-eager", attention_kernel="flash-attention-2").run(**META)
    assert fa2.ops[0].compute_s * fa2.clock_scale * 0.33 == pytest.approx(
        trt.ops[0].compute_s * trt.clock_scale * 0.62, rel=1e-9)
    with pytest.raises(ValueError, match="unknown software stack 'nope'"):
        GPUEngine(p, stack="nope")
    with pytest.raises(ValueError, match="unknown attention kernel 'fa9'"):
        GPUEngine(p, attention_kernel="fa9")


def test_gpu_calibration_rejects_a_stack_naming_an_unknown_attention_kernel():
    from mtiasim.engines.gpu import GPUCalibration, gpu_calibration

    raw = gpu_calibration().model_dump()
    raw["stacks"]["vllm"]["attention_kernel"] = "flashinfer-9"
    with pytest.raises(ValueError, match="stacks.vllm.attention_kernel: unknown kernel 'flashinfer-9'"):
        GPUCalibration.model_validate(raw)


def test_gpu_engine_differs_from_the_analytical_engine_only_where_gpu_kernels_were_measured_to():
    a = mtiasim.simulate("llama2-7b", chip="h100-sxm-80gb", seq_len=256)
    g = mtiasim.simulate("llama2-7b", chip="h100-sxm-80gb", seq_len=256, engine="gpu")
    gemms = 0
    for x, y in zip(a.ops, g.ops):
        if x.op == "attention":
            continue
        # same tile/wave model, same base efficiency (each run held at TDP at its own clock)
        assert y.compute_s * g.clock_scale == pytest.approx(x.compute_s * a.clock_scale)
        if x.flops and x.gemm_efficiency is not None:  # a GEMM: weights stream at 0.72 of HBM, not 0.90
            gemms += 1
            assert y.memory_s >= x.memory_s
            hidden = min(y.compute_s, y.memory_s)  # 10% of the shorter term is not hidden
            assert y.time_s == pytest.approx(max(y.compute_s, y.memory_s) + 0.1 * hidden + 1.08e-6)
        else:  # pointwise and normalisation kernels stream like a copy, as measured
            assert y.memory_s == pytest.approx(x.memory_s)
            assert y.time_s == pytest.approx(max(y.compute_s, y.memory_s) + 1.08e-6)
    assert gemms >= 4 * 32 and g.engine == "gpu"


def test_a_stack_whose_gemms_do_not_overlap_adds_compute_and_memory():
    # vllm-rocm-0.4 (AMD's MLPerf v4.1 MI300X stack) runs a GEMM's compute and its operand
    # streaming one after the other: time = compute + memory + launch, where the measured kernels'
    # overlap (vllm) hides 90% of the shorter term. Decode-shaped GEMMs (64 tokens through a
    # 8192 x 8192 FP8 weight) are the ones it slows; everything but the stall term is the same.
    g = Graph("gemm", {"x": TensorSpec((64, 8192), "fp8", "input"), "w": TensorSpec((8192, 8192), "fp8", "weight"),
                       "y": TensorSpec((64, 8192), "fp8")},
              [Node("mm", "matmul", ["x", "w"], ["y"])], ["x"], ["y"])
    p = compile(g, load_chip("mi300x"), CompileOptions(dtype="fp8"))
    old = GPUEngine(p, stack="vllm").run(**META).ops[0]
    new = GPUEngine(p, stack="vllm-rocm-0.4").run(**META).ops[0]
    assert (new.compute_s, new.memory_s, new.overhead_s) == pytest.approx((old.compute_s, old.memory_s, old.overhead_s))
    assert new.time_s == pytest.approx(new.compute_s + new.memory_s + new.overhead_s)
    assert old.time_s == pytest.approx(max(old.compute_s, old.memory_s) + 0.1 * min(old.compute_s, old.memory_s)
                                       + old.overhead_s)
    assert new.time_s > old.time_s


def test_gpu_engine_refuses_pe_grid_chips():
    with pytest.raises(ValueError, match="PE-grid chip"):
        GPUEngine(attention_program("mtia-300"))
    assert AnalyticalEngine(attention_program("mtia-300")).run(**META).latency_s > 0


def _mixtral_layer_ops(tokens: int, stack: str) -> dict[str, list]:
    """One Mixtral-8x7B layer (FP8, TP1) over ``tokens`` tokens on an H100: per op, its kernels as
    (op result, compute term at the clock the rates were measured at)."""
    from mtiasim.api import run_program, workload_graph

    seq = min(tokens, 1024)
    g, w = workload_graph("mixtral-8x7b", batch=tokens // seq, seq_len=seq, phase="prefill", n_layers=1)
    p = compile(g, load_chip("h100-sxm-80gb"), CompileOptions(dtype="fp8"), default_dtype=w.default_dtype)
    r = run_program(p, "gpu", {"stack": stack}, **{**META, "dtype": "fp8", "items": tokens})
    ops: dict[str, list] = {}
    for o in r.ops:
        ops.setdefault(o.op, []).append((o, o.compute_s * r.clock_scale))
    return ops


def test_tensorrt_llm_times_its_moe_expert_gemms_below_its_dense_gemms():
    # TensorRT-LLM's FP8 MoE expert GEMMs run at 0.53 of the dense-GEMM rate (gpu.yaml, fitted to
    # NVIDIA's v4.1 Mixtral Offline log). The 'tensorrt-graphs' stack launches as cheaply and has no
    # such term, so against it: dense GEMMs alike, compute-bound expert GEMMs 1/0.53 slower, and
    # memory-bound ones (one token reads two experts' weights) no slower: the scale is a rate.
    from mtiasim.engines.gpu import gpu_calibration

    scale = gpu_calibration().stacks["tensorrt-llm"].grouped_gemm_efficiency_scale["fp8"].value
    assert scale == pytest.approx(0.53)
    big = {s: _mixtral_layer_ops(4096, s) for s in ("tensorrt-llm", "tensorrt-graphs")}
    for (_, a), (_, b) in zip(big["tensorrt-llm"]["linear"], big["tensorrt-graphs"]["linear"]):
        assert a == pytest.approx(b, rel=1e-12)
    for op in ("moe_expert_up", "moe_expert_down"):
        ((a, ca),), ((b, cb),) = big["tensorrt-llm"][op], big["tensorrt-graphs"][op]
        assert a.bound == b.bound == "compute"
        assert ca == pytest.approx(cb / scale, rel=1e-12)
        assert a.memory_s == pytest.approx(b.memory_s, rel=1e-12)
    small = {s: _mixtral_layer_ops(1, s) for s in ("tensorrt-llm", "tensorrt-graphs")}
    for op in ("moe_expert_up", "moe_expert_down"):
        ((a, _),), ((b, _),) = small["tensorrt-llm"][op], small["tensorrt-graphs"][op]
        assert a.bound == b.bound == "memory" and a.memory_s == pytest.approx(b.memory_s, rel=1e-12)
        # only the 10% of the (tile-padded) compute term that overlap does not hide shows: a few %,
        # where a compute-bound kernel is 89% slower
        assert b.time_s < a.time_s < 1.05 * b.time_s
