"""The serving runtime's step workspace: the intermediate tensors of the largest step a scheduler
runs, set aside before the KV cache takes its fraction of what is left (serving/cost.py
``LLMStepCost.activation_bytes_per_chip``, system/plan.py ``plan_llm``)."""

import pytest

from mtiasim.serving import default_scheduler, plan_serving, step_cost
from mtiasim.system.spec import SystemSpec

ONE_H100 = SystemSpec.parse("h100-sxm-80gb:1")
TWO_H100 = SystemSpec.parse("h100-sxm-80gb:2")


def test_mixtral_workspace_by_hand():
    # Mixtral-8x7B on one H100, FP8 weights (activations bf16, 2 B): hidden 4096, 32 query and
    # 8 KV heads of 128, expert FFN 14336, top-2 routing, vocabulary 32000.
    # attention per token: normed input 4096 + Q/K/V (32 + 2 x 8) x 128 = 6144 + output 4096
    #   + o-proj 4096 = 18,432 elements;
    # MoE per token (TensorRT-LLM's CUTLASS MoE workspace): normed input 4096 + permuted input
    #   2 x 4096 + gated FC1 output 2 x 2 x 14336 + activated FC1 2 x 14336 + FC2 result 2 x 4096
    #   + output 4096 = 110,592 elements (larger: it sets the peak);
    # with the residual stream (4096): (4096 + 110,592) x 2 B = 229,376 B per token, x 16,384
    # tokens (NVIDIA's max_num_tokens) = 3,758,096,384 B; the fp32 logits of 896 sequences'
    # last tokens: 896 x 32000 x 4 = 114,688,000 B.
    cost = step_cost("mixtral-8x7b", ONE_H100, 1, "fp8", "fp8", 1, 1, "tensorrt-llm")
    assert cost.activation_bytes_per_chip(16_384, 896) == 3_758_096_384 + 114_688_000


def test_tensor_parallel_workspace_by_hand():
    # llama2-70b TP2 (per chip 32 query / 4 KV heads, FFN 14336, vocabulary 16000), 4096 tokens,
    # 896 sequences: attention 8192 + (32 + 8) x 128 + 32 x 128 + 8192 = 25,600; gated MLP
    # 8192 + 2 x 14336 + 14336 + 8192 = 59,392 (the peak); (8192 + 59,392) x 2 B x 4096 tokens
    # = 553,648,128 B, logits 896 x 16000 x 4 = 57,344,000 B.
    cost = step_cost("llama2-70b", TWO_H100, 2, "fp8", "fp8", 1, 1, "tensorrt-llm")
    assert cost.activation_bytes_per_chip(4096, 896) == 553_648_128 + 57_344_000


def test_kv_cache_gets_its_fraction_of_what_weights_workspace_and_runtime_leave():
    sched = default_scheduler(max_num_seqs=896, max_num_batched_tokens=16_384)
    kw = dict(tp=1, pp=1, dtype="fp8", kv_dtype="fp8", stack="tensorrt-llm", kv_memory_fraction=0.9)
    plan = plan_serving("mixtral-8x7b", ONE_H100, scheduler=sched, **kw)
    cost = step_cost("mixtral-8x7b", ONE_H100, 1, "fp8", "fp8", 1, 1, "tensorrt-llm")
    act = cost.activation_bytes_per_chip(16_384, 896)
    runtime = cost.runtime_memory_bytes_per_chip
    assert runtime == 3.8e9  # TensorRT-LLM's runtime_memory_bytes (gpu.yaml, fitted on NVIDIA's Mixtral log)
    expected = int((plan.chip_memory_bytes - cost.weight_bytes_per_chip - act - runtime) * 0.9
                   // cost.kv_bytes_per_token_per_chip)
    assert plan.kv_capacity_tokens == expected
    # 85.02 GB - 46.70 weights - 3.87 workspace - 3.80 runtime = 30.64 GB; x 0.9 / 65,536 B per token
    assert plan.kv_capacity_tokens == 420_802
    assert plan.activation_bytes_per_chip == act and plan.runtime_memory_bytes_per_chip == runtime
    assert "step workspace 3.9 GB/chip, runtime 3.8 GB/chip" in plan.describe()


def test_runtime_memory_belongs_to_the_stack():
    # vLLM sizes its cache after a profiling run and has no runtime_memory_bytes of its own here:
    # the same engine limits leave it 3.8 GB x 0.9 more cache than TensorRT-LLM on the same chip
    sched = default_scheduler(max_num_seqs=896, max_num_batched_tokens=16_384)
    kw = dict(tp=1, pp=1, dtype="fp8", kv_dtype="fp8", kv_memory_fraction=0.9, scheduler=sched)
    trt = plan_serving("mixtral-8x7b", ONE_H100, stack="tensorrt-llm", **kw)
    vllm = plan_serving("mixtral-8x7b", ONE_H100, stack="vllm", **kw)
    assert vllm.runtime_memory_bytes_per_chip == 0.0
    per_token = step_cost("mixtral-8x7b", ONE_H100, 1, "fp8", "fp8", 1, 1, "vllm").kv_bytes_per_token_per_chip
    assert vllm.kv_capacity_tokens - trt.kv_capacity_tokens == pytest.approx(3.8e9 * 0.9 / per_token, abs=1)
    # a chip timed by the analytical engine (MTIA) carries no GPU stack's runtime memory
    assert step_cost("llama2-7b", SystemSpec.parse("mtia-400:1"), 1, "bf16").runtime_memory_bytes_per_chip == 0.0


def test_a_larger_step_never_leaves_more_kv_cache():
    kw = dict(tp=1, pp=1, dtype="fp8", kv_dtype="fp8", stack="tensorrt-llm")
    caps = [plan_serving("mixtral-8x7b", ONE_H100, scheduler=default_scheduler(max_num_seqs=256,
                                                                              max_num_batched_tokens=n),
                         **kw).kv_capacity_tokens for n in (256, 2048, 8192, 16_384, 32_768)]
    assert caps == sorted(caps, reverse=True) and caps[0] > caps[-1]
    # a step of 32,768 tokens holds 7.5 GB of intermediates on this chip (256 tokens: 0.09 GB):
    # ~22% of the 34.5 GB that weights (46.7 GB) and runtime memory (3.8 GB) leave of 85.0 GB
    assert caps[-1] / caps[0] == pytest.approx(0.80, abs=0.03)
