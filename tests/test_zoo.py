"""Tests for the model zoo (mtiasim.frontend.zoo)."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from mtiasim.frontend import zoo
from mtiasim.frontend.zoo import Workload, ZooModel

EXPECTED_NAMES = {
    "dlrm-v2", "ranking-lc", "ranking-hc", "llama2-7b", "llama2-13b", "llama2-70b", "llama3.1-8b",
    "llama3.1-70b", "llama3.1-405b", "mixtral-8x7b", "gptj-6b", "gpt3-175b", "bert-large", "resnet50",
}
TINY_LLAMA = {"n_layers": 2, "hidden": 64, "n_heads": 4, "n_kv_heads": 2, "ffn": 128, "vocab": 100}


# ---------------------------------------------------------------- registry / interface

def test_names_and_lookup():
    assert set(zoo.names()) == EXPECTED_NAMES
    assert zoo.names() == sorted(zoo.names())
    assert zoo.get("LLaMA2-70B") is zoo.get("llama2-70b")
    for n in zoo.names():
        m = zoo.get(n)
        assert isinstance(m, ZooModel) and m.name == n
        assert m.family in ("ranking", "llm", "encoder", "vision") and m.source and m.description
        assert m.phases == (("prefill", "decode") if m.family == "llm" else ("forward",))


def test_unknown_name_lists_names():
    with pytest.raises(ValueError, match="llama2-7b") as e:
        zoo.get("gpt-5")
    assert isinstance(e.value, KeyError)


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_every_model_builds_on_meta(name):
    m = zoo.get(name)
    for phase in m.phases:
        w = m.build(phase=phase)
        assert isinstance(w, Workload) and w.name == name and w.phase == phase
        assert all(t.device.type == "meta" for t in w.example_inputs)
        assert all(p.device.type == "meta" for p in w.module.parameters())
        assert w.default_dtype == m.default_dtype and w.batch == m.default_batch
        # every parameter is accounted for by the analytic count
        assert sum(p.numel() for p in w.module.parameters()) == m.param_count()
        if m.family in ("ranking", "vision"):
            assert (w.seq_len, w.kv_len, w.items, w.item_unit) == (None, None, w.batch, "sample")
        elif m.family == "encoder":
            assert (w.seq_len, w.kv_len, w.items, w.item_unit) == (384, None, w.batch, "sample")
        elif phase == "prefill":
            assert (w.seq_len, w.kv_len, w.item_unit) == (1024, None, "token")
            assert w.items == w.batch * 1024 and w.example_inputs[0].shape == (1, 1024)
        else:
            assert (w.seq_len, w.kv_len, w.items) == (1, 1024, w.batch)
            cfg = m.config()
            assert w.example_inputs[1].shape == (
                cfg["n_layers"], 2, 1, cfg["n_kv_heads"], 1024, cfg["head_dim"])


EXPORTS = [("dlrm-v2", "forward"), ("ranking-lc", "forward"), ("ranking-hc", "forward"),
           ("llama2-7b", "prefill"), ("llama2-7b", "decode"), ("mixtral-8x7b", "prefill"),
           ("mixtral-8x7b", "decode"), ("gptj-6b", "decode")]


@pytest.mark.parametrize("name,phase", EXPORTS)
def test_export_on_meta(name, phase):
    w = zoo.get(name).build(phase=phase)
    ep = torch.export.export(w.module, w.example_inputs)
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    if name == "dlrm-v2":
        assert {"mtiasim.tbe.default", "mtiasim.dcn_cross.default"} <= targets
        assert sum(str(n.target) == "mtiasim.tbe.default" for n in ep.graph.nodes) == 1
    elif name.startswith("ranking"):
        assert {"mtiasim.tbe.default", "mtiasim.dot_interaction.default"} <= targets
    else:
        assert "aten.scaled_dot_product_attention.default" in targets
        assert ("mtiasim.moe_ffn.default" in targets) == (name == "mixtral-8x7b")
    out = next(n for n in ep.graph.nodes if n.op == "output").args[0][0].meta["val"]
    if zoo.get(name).family == "llm":
        assert tuple(out.shape) == (1, 1, zoo.get(name).config()["vocab"])
    else:
        assert tuple(out.shape) == (w.batch, 1)


def test_llm_build_options():
    m = zoo.get("llama2-7b")
    w = m.build(batch=4, seq_len=128, phase="decode", kv_len=300)
    assert (w.batch, w.kv_len, w.items) == (4, 300, 4)
    assert w.example_inputs[0].shape == (4, 1) and w.example_inputs[1].shape[-2] == 300
    assert m.build(batch=4, seq_len=128).items == 512
    assert m.build(seq_len=100, phase="decode").kv_len == 100
    with pytest.raises(ValueError, match="max_positions"):
        m.build(seq_len=5000)
    with pytest.raises(ValueError, match="phase"):
        m.build(phase="forward")
    with pytest.raises(ValueError, match="kv_len"):
        m.build(kv_len=10)


def test_unknown_override_names_key_and_valid_ones():
    with pytest.raises(ValueError, match="n_layer'.*n_layers"):
        zoo.get("llama2-7b").build(n_layer=2)
    with pytest.raises(ValueError, match="foo.*dcn_rank"):
        zoo.get("dlrm-v2").build(foo=1)
    with pytest.raises(ValueError, match="bar.*mflops_per_sample"):
        zoo.get("ranking-lc").build(bar=1)


def test_cache_key_deterministic_and_discriminating():
    m = zoo.get("llama2-7b")
    k = m.build().cache_key
    assert k == m.build().cache_key
    others = {m.build(batch=2).cache_key, m.build(seq_len=512).cache_key,
              m.build(phase="decode").cache_key, m.build(phase="decode", kv_len=7).cache_key,
              m.build(n_layers=2).cache_key, zoo.get("llama2-13b").build().cache_key}
    assert k not in others and len(others) == 6
    d = zoo.get("dlrm-v2")
    assert d.build().cache_key != d.build(dcn_rank=256).cache_key


def test_405b_builds_fast():
    m = zoo.get("llama3.1-405b")
    m.build(n_layers=1)  # warm torch's lazy meta initialisation
    t = time.perf_counter()
    w = m.build()
    assert time.perf_counter() - t < 2.0
    assert len(w.module.layers) == 126


# ---------------------------------------------------------------- analytic parameter counts

def test_param_count_llama2_7b():
    attn = 4 * 4096 * 4096  # q, k, v, o (32 KV heads = MHA)
    mlp = 3 * 4096 * 11008  # gate, up, down
    norms = 2 * 4096
    per_layer = attn + mlp + norms  # 202,383,360
    total = 32 * per_layer + 2 * 32000 * 4096 + 4096  # + embed & lm_head + final norm
    assert total == 6_738_415_616
    assert zoo.get("llama2-7b").param_count() == 6_738_415_616


def test_param_count_llama2_70b():
    attn = 2 * 8192 * 8192 + 2 * 8192 * (8 * 128)  # q, o + k, v (GQA, 8 KV heads of 128)
    mlp = 3 * 8192 * 28672
    per_layer = attn + mlp + 2 * 8192  # 855,654,400
    total = 80 * per_layer + 2 * 32000 * 8192 + 8192
    assert total == 68_976_648_192
    assert zoo.get("llama2-70b").param_count() == total
    assert zoo.get("llama2-70b").param_count() == pytest.approx(68.98e9, rel=1e-3)


def test_param_count_other_llms():
    # Mixtral: attention 2*4096^2 + 2*4096*1024; 8 experts of 3*4096*14336; router 8*4096; 2 norms
    mix = 32 * (2 * 4096**2 + 2 * 4096 * 1024 + 8 * 3 * 4096 * 14336 + 8 * 4096 + 2 * 4096)
    mix += 2 * 32000 * 4096 + 4096
    assert mix == 46_702_792_704 == zoo.get("mixtral-8x7b").param_count()
    # GPT-J: ln_1 (w+b), qkv+o 4*4096^2 (no bias), fc_in/fc_out with biases; ln_f; lm_head + bias
    gptj = 28 * (2 * 4096 + 4 * 4096**2 + (4096 * 16384 + 16384) + (16384 * 4096 + 4096))
    gptj += 50400 * 4096 + 2 * 4096 + (50400 * 4096 + 50400)
    assert gptj == 6_050_882_784 == zoo.get("gptj-6b").param_count()
    assert zoo.get("llama3.1-8b").param_count() == 8_030_261_248
    assert zoo.get("llama3.1-70b").param_count() == 70_553_706_496
    assert zoo.get("llama3.1-405b").param_count() == 405_853_388_800
    assert zoo.get("llama2-13b").param_count() == 13_015_864_320
    # GPT-3 175B, d = 12288: per layer QKV and output with biases 4d^2 + 4d, FFN 8d^2 + 5d, two
    # LayerNorms 4d: 12d^2 + 13d = 1,812,099,072; x 96 layers, plus the 50257 x d embedding and an
    # untied LM head of the same size and the final LayerNorm 2d: 175,196,651,520 (the paper's
    # 175.0B ties the head and adds 2048 x d learned positions)
    assert zoo.get("gpt3-175b").param_count() == 96 * (12 * 12288**2 + 13 * 12288) + 2 * 50257 * 12288 + 2 * 12288
    assert zoo.get("gpt3-175b").param_count() == 175_196_651_520


def test_param_count_dlrm_v2():
    cfg = zoo.get("dlrm-v2").config()
    assert cfg["n_tables"] == 26 and sum(cfg["rows"]) == 204_184_588
    assert sum(cfg["pooling"]) == 214 and cfg["inter_dim"] == 128 + 26 * 128 == 3456
    emb = 204_184_588 * 128  # 26,135,627,264
    bottom = (13 * 512 + 512) + (512 * 256 + 256) + (256 * 128 + 128)  # 171,392
    dcn = 3 * (512 * 3456 + 3456 * 512 + 3456)  # U, V, bias per layer: 10,627,200
    top = (3456 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 512 + 512) + (512 * 256 + 256) + (256 + 1)
    assert (emb, bottom, dcn, top) == (26_135_627_264, 171_392, 10_627_200, 5_245_953)
    assert zoo.get("dlrm-v2").param_count() == emb + bottom + dcn + top == 26_151_671_809


# ---------------------------------------------------------------- numerics on CPU

def _tiny_llm_check(name, **over):
    torch.manual_seed(0)
    m = zoo.get(name)
    s = 9
    full = m.build(batch=2, seq_len=s + 1, device="cpu", **over).module
    ids = torch.randint(0, over["vocab"], (2, s + 1))
    pre = m.build(batch=2, seq_len=s, device="cpu", **over).module
    dec = m.build(batch=2, seq_len=s, phase="decode", device="cpu", **over)
    pre.load_state_dict(full.state_dict())
    dec.module.load_state_dict(full.state_dict())
    assert dec.kv_len == s
    with torch.no_grad():
        ref = full(ids)
        _, cache = pre.prefill_with_cache(ids[:, :s])
        assert cache.shape == dec.example_inputs[1].shape
        out = dec.module(ids[:, s:], cache)
        stale = dec.module(ids[:, s:], torch.zeros_like(cache))
    assert ref.shape == (2, 1, over["vocab"])
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(stale, ref, atol=1e-3)  # the cache really matters


def test_llama_decode_matches_prefill():
    _tiny_llm_check("llama2-7b", **TINY_LLAMA)


def test_llama31_decode_matches_prefill():  # rope_theta 5e5 + llama3 rope scaling
    _tiny_llm_check("llama3.1-8b", **TINY_LLAMA)


def test_gptj_decode_matches_prefill():  # partial rotary, parallel residual, LayerNorm, GELU, biases
    _tiny_llm_check("gptj-6b", n_layers=2, hidden=64, n_heads=4, n_kv_heads=4, ffn=128,
                    vocab=100, rotary_dim=8)


def test_mixtral_tiny_moe_runs_and_decodes():
    over = dict(TINY_LLAMA, n_experts=4, top_k=2)
    w = zoo.get("mixtral-8x7b").build(batch=2, seq_len=5, device="cpu", **over)
    assert tuple(w.module.layers[0].mlp.w1.shape) == (4, 128, 64)
    out = w.module(*w.example_inputs)
    assert out.shape == (2, 1, 100) and torch.isfinite(out).all()
    _tiny_llm_check("mixtral-8x7b", **over)


def test_rotary_dim_must_fit_head():
    with pytest.raises(ValueError, match="rotary_dim"):
        zoo.get("gptj-6b").build(hidden=64, n_heads=4, n_kv_heads=4)  # rotary 64 > head_dim 16


def test_dlrm_v2_tiny_forward():
    torch.manual_seed(0)
    w = zoo.get("dlrm-v2").build(batch=8, device="cpu", rows=[50] * 26)
    dense, idx = w.example_inputs
    assert dense.shape == (8, 13) and idx.shape == (8, 214) and idx.dtype == torch.int64
    assert w.module.emb_weights.shape == (50 * 26, 128)
    out = w.module(dense, idx)
    assert out.shape == (8, 1)
    assert ((out > 0) & (out < 1)).all()
    # the embeddings matter: different indices, different scores
    assert not torch.equal(out, w.module(dense, (idx + 1) % 50))


def test_dlrm_v2_override_validation():
    with pytest.raises(ValueError, match="rows"):
        zoo.get("dlrm-v2").build(rows=[10] * 3)  # pooling still has 26 tables
    w = zoo.get("dlrm-v2").build(rows=[10] * 3, pooling=[1, 2, 3], emb_dim=16, bottom=[32, 16],
                                 dcn_layers=1, dcn_rank=8, top=[8, 1])
    assert w.example_inputs[1].shape == (2048, 6)
    assert w.module.dcn_u[0].shape == (8, 16 + 3 * 16)


def test_ranking_tiny_forward():
    w = zoo.get("ranking-lc").build(batch=4, device="cpu", n_tables=4, rows=20, pooling=3,
                                    emb_dim=16, bottom=[32, 16], n_dense=8, mflops_per_sample=15)
    out = w.module(*w.example_inputs)
    assert out.shape == (4, 1) and ((out > 0) & (out < 1)).all()


def test_determinism_same_seed_same_params():
    def params(name, **kw):
        torch.manual_seed(0)
        w = zoo.get(name).build(device="cpu", **kw)
        return w.module.state_dict(), w.example_inputs

    for name, kw in [("llama2-7b", dict(TINY_LLAMA, batch=1, seq_len=4)),
                     ("mixtral-8x7b", dict(TINY_LLAMA, n_experts=4, top_k=2, seq_len=4)),
                     ("dlrm-v2", {"rows": [20] * 26, "dcn_rank": 16, "batch": 4})]:
        (a, ia), (b, ib) = params(name, **kw), params(name, **kw)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert all(torch.equal(x, y) for x, y in zip(ia, ib))
    torch.manual_seed(1)
    c = zoo.get("llama2-7b").build(device="cpu", seq_len=4, **TINY_LLAMA).module.state_dict()
    assert not torch.equal(c["embed.weight"], params("llama2-7b", **TINY_LLAMA)[0]["embed.weight"])


# ---------------------------------------------------------------- ranking FLOPs targets

def _matmul_flops_per_sample(w: Workload, n_tables: int, emb_dim: int) -> int:
    lin = sum(2 * m.in_features * m.out_features for m in w.module.modules() if isinstance(m, nn.Linear))
    f = n_tables + 1
    return lin + 2 * f * f * emb_dim  # + dot interaction (full F x F Gram matrix)


@pytest.mark.parametrize("name,targets", [("ranking-lc", [15, 60, 105]),
                                          ("ranking-hc", [480, 750, 1000])])
def test_ranking_flops_match_target(name, targets):
    for t in targets:
        for w in (zoo.get(name).build(mflops_per_sample=t), zoo.get(f"{name}:{t}").build()):
            cfg = zoo.get(name).config()
            got = _matmul_flops_per_sample(w, cfg["n_tables"], cfg["emb_dim"])
            assert abs(got - t * 1e6) <= 0.05 * t * 1e6, (name, t, got)
    lo, hi = targets[0], targets[-1]
    assert zoo.get(f"{name}:{lo}").param_count() < zoo.get(f"{name}:{hi}").param_count()


def test_ranking_defaults_and_range():
    lc, hc = zoo.get("ranking-lc"), zoo.get("ranking-hc")
    assert lc.config()["mflops_per_sample"] == 60 and hc.config()["mflops_per_sample"] == 500
    assert lc.default_batch == hc.default_batch == 512 and lc.default_dtype == "fp16"
    assert "not published" in lc.source and "not published" in hc.source
    assert zoo.get("Ranking-HC:940").config()["mflops_per_sample"] == 940
    for bad in [("ranking-lc", 14), ("ranking-lc", 106), ("ranking-hc", 479), ("ranking-hc", 1001)]:
        with pytest.raises(ValueError, match="mflops_per_sample"):
            zoo.get(bad[0]).build(mflops_per_sample=bad[1])
        with pytest.raises(ValueError, match="mflops_per_sample"):
            zoo.get(f"{bad[0]}:{bad[1]}")
    with pytest.raises(ValueError, match="mflops_per_sample"):
        zoo.get("ranking-lc:abc")
    with pytest.raises(ValueError, match="parameter"):
        zoo.get("llama2-7b:3")


# ---------------------------------------------------------------- bert-large, resnet50
def test_resnet50_matches_torchvision_counts():
    # torchvision's resnet50 (v1.5) model card: num_params 25,557,032 and "GFLOPS 4.09" per 224x224
    # image, which counts multiply-accumulates; the IR counts 2 flops per MAC.
    from mtiasim.api import workload_graph
    from mtiasim.compiler.fusion import node_work

    assert zoo.get("resnet50").param_count() == 25_557_032
    g, _ = workload_graph("resnet50", batch=1)
    macs = sum(node_work(g, n).matrix_flops for n in g.nodes) / 2
    assert macs == pytest.approx(4.09e9, rel=0.005)
    assert sum(n.op == "conv2d" for n in g.nodes) == 53  # 16 bottlenecks x 3 + the stem + 4 projection shortcuts


def test_bert_large_shapes_and_params():
    m = zoo.get("bert-large")
    # HF bert-large-uncased has 335,141,888 parameters; it has a pooler (1024 x 1024 + 1024) and no
    # SQuAD head (1024 x 2 + 2): 335,141,888 - 1,049,600 + 2,050
    assert m.param_count() == 335_141_888 - 1_049_600 + 2_050
    with pytest.raises(ValueError, match="max_positions"):
        m.build(seq_len=600)


@pytest.mark.parametrize("name,kw", [("resnet50", {"batch": 2, "image": 64}),
                                     ("bert-large", {"batch": 2, "seq_len": 12, "n_layers": 2})])
def test_vision_and_encoder_ir_equals_pytorch(name, kw):
    from mtiasim.frontend.capture import capture
    from mtiasim.graph.execute import execute, module_feeds

    w = zoo.get(name).build(device="cpu", **kw)
    g = capture(w.module, w.example_inputs)
    with torch.no_grad():
        ref = w.module(*w.example_inputs)
        feeds = module_feeds(g, w.module, w.example_inputs)
        out = execute(g, feeds)[0]
        own = execute(g, feeds, reference_ops={"conv2d", "batchnorm", "pool2d", "layernorm", "attention"})[0]
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(own, ref, rtol=1e-4, atol=1e-4)
