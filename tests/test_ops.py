"""Op registry: shape inference and work (flops, bytes) against hand calculations."""

import pytest
import torch

from mtiasim.graph import TensorSpec, get_op
from mtiasim.graph.ops.attention import score_pairs
from mtiasim.graph.ops.base import OpError


def T(shape, dtype="fp16", kind="activation"):
    return TensorSpec(tuple(shape), dtype, kind)


def test_linear_flops_and_bytes_by_hand():
    # x [32, 512] @ w[1024, 512]^T + b[1024], fp16
    x, w, b = T((32, 512)), T((1024, 512), kind="param"), T((1024,), kind="param")
    op = get_op("linear")
    (y,) = op.infer([x, w, b], {})
    assert y.shape == (32, 1024)
    work = op.work([x, w, b], [y], {})
    assert work.matrix_flops == 2 * 32 * 1024 * 512 == 33_554_432  # 2 ops per MAC
    assert work.vector_flops == 32 * 1024  # bias add
    assert work.bytes_read == {"in0": 32 * 512 * 2, "in1": 1024 * 512 * 2, "in2": 1024 * 2}
    assert work.bytes_written == {"out0": 32 * 1024 * 2}
    assert [(g.m, g.n, g.k) for g in work.gemms] == [(32, 1024, 512)]


def test_linear_rejects_mismatched_k():
    with pytest.raises(OpError, match="linear"):
        get_op("linear").infer([T((4, 8)), T((16, 9))], {})


def test_causal_gqa_attention_by_hand():
    # B=2, H=8 query heads, Hkv=2 (GQA), S=L=128, hd=64, causal
    q, k, v = T((2, 8, 128, 64)), T((2, 2, 128, 64)), T((2, 2, 128, 64))
    op = get_op("attention")
    (o,) = op.infer([q, k, v], {"causal": True})
    assert o.shape == (2, 8, 128, 64)
    w = op.work([q, k, v], [o], {"causal": True})
    pairs = 128 * 129 // 2  # query i sees keys 0..i
    assert pairs == 8256 == score_pairs(128, 128, True)
    assert w.matrix_flops == 2 * (2 * 2 * 8 * pairs * 64)  # QK^T and PV
    assert w.vector_flops == 5 * 2 * 8 * pairs
    # flash attention: Q, K, V read once (K/V shared by the 4 query heads of a group), O written once
    assert w.bytes_read == {"in0": 2 * 8 * 128 * 64 * 2, "in1": 2 * 2 * 128 * 64 * 2, "in2": 2 * 2 * 128 * 64 * 2}
    assert w.bytes_written == {"out0": 2 * 8 * 128 * 64 * 2}


def test_decode_attention_reads_whole_kv_cache():
    # one new token attending to 1024 cached + itself, Llama2-70B shapes (64 q heads, 8 kv heads)
    q, k, v = T((1, 64, 1, 128)), T((1, 8, 1025, 128)), T((1, 8, 1025, 128))
    w = get_op("attention").work([q, k, v], [T((1, 64, 1, 128))], {"causal": False})
    assert w.matrix_flops == 2 * 2 * 64 * 1025 * 128
    assert w.bytes_read["in1"] == 8 * 1025 * 128 * 2  # the whole K cache once


def test_causal_prefill_with_context():
    # 4 new queries at the end of 10 keys: 4*6 full rows + 4*5/2 triangle
    assert score_pairs(4, 10, True) == 4 * 6 + 10


def test_embedding_bag_by_hand():
    # table [1000, 64] fp32, 40 lookups in 8 bags, sum pooling
    table, idx, off = T((1000, 64), "fp32", "param"), T((40,), "int64"), T((8,), "int64")
    op = get_op("embedding_bag")
    (y,) = op.infer([table, idx, off], {"mode": "sum"})
    assert y.shape == (8, 64)
    w = op.work([table, idx, off], [y], {"mode": "sum"})
    assert w.vector_flops == 40 * 64  # one add per looked-up element
    assert w.bytes_read == {"in0": 40 * 64 * 4, "in1": 40 * 8, "in2": 8 * 8}  # rows, not the table
    assert w.gather == {"in0": 64 * 4}
    assert w.bytes_written == {"out0": 8 * 64 * 4}
    # per-sample weights add one multiply per element
    w2 = op.work([table, idx, off, T((40,), "fp32")], [y], {"mode": "sum"})
    assert w2.vector_flops == 2 * 40 * 64


def test_tbe_dlrm_v2_lookups_by_hand():
    # DLRM-v2: 214 lookups per pair (sum of the MLPerf multi-hot sizes), D=128, int8 rows of 128 B
    pooling = [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1]
    assert sum(pooling) == 214
    rows = [10] * 26
    idx, wts = T((4, 214), "int64"), T((260, 128), "int8", "param")
    op = get_op("tbe")
    (y,) = op.infer([idx, wts], {"pooling_factors": pooling, "rows": rows})
    assert y.shape == (4, 26, 128)
    w = op.work([idx, wts], [y], {"pooling_factors": pooling, "rows": rows})
    assert w.bytes_read["in1"] == 4 * 214 * 128  # 4 pairs x 214 rows x 128 B
    assert w.vector_flops == 4 * 214 * 128


def test_dcn_cross_layer_is_two_gemm_kernels_by_hand():
    # B=16, D=3456, rank 512 (MLPerf DLRMv2): down-projection [16,3456]x[3456,512], then the
    # up-projection [16,512]x[512,3456] whose epilogue reads x0 and xl and writes x_{l+1}
    x, u, v, b = T((16, 3456)), T((512, 3456), kind="param"), T((3456, 512), kind="param"), T((3456,), kind="param")
    (h,) = get_op("dcn_down").infer([x, u], {})
    assert h.shape == (16, 512)
    down = get_op("dcn_down").work([x, u], [h], {})
    assert down.matrix_flops == 2 * 16 * 3456 * 512 and down.vector_flops == 0
    up = get_op("dcn_up").work([x, x, h, v, b], [x], {})
    assert up.matrix_flops == 2 * 16 * 3456 * 512
    assert up.vector_flops == 3 * 16 * 3456  # bias, product with x0, residual
    # the epilogue's traffic: x0, xl and h in (fp16: 2 B), V and bias, x_{l+1} out
    assert up.bytes_read == {"in0": 16 * 3456 * 2, "in1": 16 * 3456 * 2, "in2": 16 * 512 * 2,
                             "in3": 3456 * 512 * 2, "in4": 3456 * 2}
    assert up.bytes_written == {"out0": 16 * 3456 * 2}
    # both answer to the layer's precision override (MLPerf DLRM 99.9%: {'dcn_cross': 'fp16'})
    assert get_op("dcn_down").precision_key == get_op("dcn_up").precision_key == "dcn_cross"
    assert get_op("linear").precision_key == "linear"


def test_dcn_kernels_reject_mismatched_shapes():
    x, u = T((16, 3456)), T((512, 1000), kind="param")
    with pytest.raises(ValueError, match="dcn_down.*weight is"):
        get_op("dcn_down").infer([x, u], {})
    h, v, b = T((16, 512)), T((3456, 256), kind="param"), T((3456,), kind="param")
    with pytest.raises(ValueError, match="dcn_up.*V"):
        get_op("dcn_up").infer([x, x, h, v, b], {})


def test_moe_expert_kernels_count_routed_tokens_and_their_intermediates():
    # 64 tokens, 8 experts, top-2, D=4096, F=14336 (Mixtral): up 4*T*k*D*F flops, down 2*T*k*D*F
    x, ids = T((64, 4096)), T((64, 2), "int64")
    w13, w2 = T((8, 14336, 4096), "bf16", "param"), T((8, 4096, 14336), "bf16", "param")
    (h2,) = get_op("moe_expert_up").infer([x, ids, w13, w13], {})
    # one 2F-wide gate|up row per (token, expert) slot, as vLLM's fused_moe writes intermediate_cache1
    assert h2.shape == (128, 2 * 14336)
    up = get_op("moe_expert_up").work([x, ids, w13, w13], [h2], {})
    assert up.matrix_flops == 4 * 64 * 2 * 4096 * 14336 and up.vector_flops == 0
    # with 128 routed slots all 8 experts are hit (1-(6/8)^64 ~ 1): every expert's weights are read,
    # each token's row is read once per slot, and the intermediate is written: 128 x 28672 x 2 B
    assert up.bytes_read["in2"] == pytest.approx(8 * 14336 * 4096 * 2, rel=1e-6)
    assert up.bytes_read["in0"] == 2 * 64 * 4096 * 2 and up.bytes_written["out0"] == 128 * 28672 * 2
    # the gated activation is a kernel of its own: reads 2F, writes F per slot, 6 ops per output
    (h,) = get_op("silu_and_mul").infer([h2], {})
    act = get_op("silu_and_mul").work([h2], [h], {})
    assert h.shape == (128, 14336) and act.matrix_flops == 0 and act.vector_flops == 6 * 128 * 14336
    assert act.bytes_read["in0"] == 128 * 28672 * 2 and act.bytes_written["out0"] == 128 * 14336 * 2
    (y,) = get_op("moe_expert_down").infer([h, ids, w2], {})
    down = get_op("moe_expert_down").work([h, ids, w2], [y], {})
    assert y.shape == (128, 4096) and down.matrix_flops == 2 * 64 * 2 * 4096 * 14336
    # 128 slots over 8 expected experts hit, 8 * (1 - 0.75^64) = 7.99999...: ceil -> 17 rows each
    assert down.gemms[0].batch == 8 and down.gemms[0].m == 17
    # one token reads only its 2 experts
    one = get_op("moe_expert_up").work([T((1, 4096)), T((1, 2), "int64"), w13, w13], [T((2, 28672))], {})
    assert one.bytes_read["in2"] == pytest.approx(2 * 14336 * 4096 * 2)
    with pytest.raises(ValueError, match="even last dimension"):
        get_op("silu_and_mul").infer([T((4, 7))], {})


def test_moe_kernels_reproduce_the_fused_op():
    from mtiasim.frontend.custom_ops import moe_ffn

    torch.manual_seed(0)
    t, d, f, e, k = 5, 16, 24, 4, 2
    x, router = torch.randn(t, d), torch.randn(e, d)
    w1, w3, w2 = torch.randn(e, f, d), torch.randn(e, f, d), torch.randn(e, d, f)
    gates, ids = get_op("moe_router").reference(x, router, top_k=k)
    h2 = get_op("moe_expert_up").reference(x, ids, w1, w3)
    h = get_op("silu_and_mul").reference(h2)
    y = get_op("moe_expert_down").reference(h, ids, w2)
    out = get_op("moe_combine").reference(y, gates)
    torch.testing.assert_close(out, moe_ffn(x, router, w1, w3, w2, k), rtol=1e-5, atol=1e-4)


def test_concat_and_stack_shapes():
    a, b = T((2, 3)), T((2, 5))
    assert get_op("concat").infer([a, b], {"dim": 1})[0].shape == (2, 8)
    assert get_op("concat").infer([a, a], {"dim": 0, "stack": True})[0].shape == (2, 2, 3)
    with pytest.raises(OpError, match="concat"):
        get_op("concat").infer([a, b], {"dim": 0})


def test_pointwise_broadcast_and_errors():
    assert get_op("add").infer([T((4, 1, 8)), T((3, 1))], {})[0].shape == (4, 3, 8)
    with pytest.raises(OpError):
        get_op("mul").infer([T((4, 8)), T((3, 8))], {})
    w = get_op("gelu").work([T((10,))], [T((10,))], {})
    assert w.vector_flops == 80 and w.bytes_read == {"in0": 20}


def test_unknown_op_is_named():
    with pytest.raises(OpError, match="no_such_op"):
        get_op("no_such_op")


def test_conv2d_implicit_gemm_by_hand():
    # ResNet stem: x [8, 3, 224, 224], w [64, 3, 7, 7], stride 2, padding 3 -> [8, 64, 112, 112];
    # implicit GEMM M = 8*112*112 = 100,352 pixels, N = 64 filters, K = 3*7*7 = 147
    x, w = T((8, 3, 224, 224), "int8"), T((64, 3, 7, 7), "int8", "param")
    op = get_op("conv2d")
    attrs = {"stride": [2, 2], "padding": [3, 3], "dilation": [1, 1], "groups": 1}
    (y,) = op.infer([x, w], attrs)
    assert y.shape == (8, 64, 112, 112)
    work = op.work([x, w], [y], attrs)
    assert [(g.batch, g.m, g.n, g.k) for g in work.gemms] == [(1, 100_352, 64, 147)]
    assert work.matrix_flops == 2 * 100_352 * 64 * 147 == 1_888_223_232
    assert work.bytes_read == {"in0": 8 * 3 * 224 * 224, "in1": 64 * 147}


def test_grouped_conv_and_errors():
    op = get_op("conv2d")
    # depthwise-style: 32 groups of 1 channel -> batch of 32 GEMMs with N = 1, K = 9
    attrs = {"stride": 1, "padding": 1, "groups": 32}
    (y,) = op.infer([T((1, 32, 10, 10)), T((32, 1, 3, 3), kind="param")], attrs)
    work = op.work([T((1, 32, 10, 10)), T((32, 1, 3, 3), kind="param")], [y], attrs)
    assert [(g.batch, g.m, g.n, g.k) for g in work.gemms] == [(32, 100, 1, 9)]
    with pytest.raises(OpError, match="conv2d.*C_in=16"):
        op.infer([T((1, 16, 8, 8)), T((4, 8, 3, 3))], {"groups": 1})
    with pytest.raises(OpError, match="too small"):
        op.infer([T((1, 3, 2, 2)), T((4, 3, 5, 5))], {})


@pytest.mark.parametrize("attrs,hw", [({"kind": "max", "kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]}, 56),
                                      ({"kind": "avg", "kernel": 2, "stride": 2}, 56),
                                      ({"kind": "max", "kernel": 3, "stride": 2, "ceil_mode": True}, 56),
                                      ({"kind": "avg", "output_size": [1, 1]}, 1)])
def test_pool_shapes_match_pytorch(attrs, hw):
    import torch

    op = get_op("pool2d")
    x = torch.randn(1, 4, 112, 112)
    (y,) = op.infer([T(x.shape)], attrs)
    ref = op.reference(x, **attrs)
    assert y.shape == tuple(ref.shape) and ref.shape[-1] == hw
