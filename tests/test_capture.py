"""Frontend: every zoo model captures; captured graphs compute what the module computes."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mtiasim.api import workload_graph
from mtiasim.frontend import zoo
from mtiasim.frontend.capture import CaptureError, capture
from mtiasim.graph import get_op
from mtiasim.graph.execute import execute, module_feeds

TINY = dict(n_layers=2, hidden=64, n_heads=4, n_kv_heads=2, ffn=128, vocab=100)


@pytest.mark.parametrize("name", zoo.names())
def test_every_zoo_model_captures(name):
    entry = zoo.get(name)
    for phase in entry.phases:
        g, w = workload_graph(name, phase=phase)
        assert g.nodes and g.outputs
        counts = g.op_counts()
        if entry.family == "llm":
            layers = entry.config()["n_layers"]
            assert counts["attention"] == layers
            assert counts.get("kv_append", 0) == 0  # that is the compiler's job, capture keeps the cat
        elif entry.family == "encoder":
            assert counts["attention"] == entry.config()["n_layers"]
        elif entry.family == "vision":
            assert counts["conv2d"] == 53 and counts["pool2d"] == 2
        else:
            assert counts["tbe"] == 1
        # shape inference of every op agrees with what torch.export recorded
        for node in g.nodes[:400]:
            specs = get_op(node.op).infer([g.tensors[t] for t in node.inputs], node.attrs)
            got = [g.tensors[o].shape for o in node.outputs]
            assert [s.shape for s in specs][: len(got)] == got, node


def test_llama2_70b_graph_has_the_published_gemm_shapes():
    g, _ = workload_graph("llama2-70b", batch=1, seq_len=16)
    shapes = {tuple(g.tensors[n.inputs[1]].shape) for n in g.nodes if n.op == "linear"}
    # vLLM weight_shapes.py (mlperf.md 1.2): QKV [8192->10240], O [8192->8192], gate+up [8192->57344],
    # down [28672->8192]; weights are [out, in]; plus the LM head [32000, 8192]
    assert shapes == {(10240, 8192), (8192, 8192), (57344, 8192), (8192, 28672), (32000, 8192)}


@pytest.mark.parametrize("name,phase,overrides", [
    ("llama2-7b", "prefill", TINY), ("llama3.1-8b", "decode", TINY), ("mixtral-8x7b", "prefill", TINY),
    ("gptj-6b", "decode", dict(n_layers=2, hidden=64, n_heads=4, n_kv_heads=4, ffn=128, vocab=100, rotary_dim=8)),
    ("dlrm-v2", "forward", dict(rows=[50] * 26)),
])
def test_captured_graph_matches_pytorch(name, phase, overrides):
    torch.manual_seed(0)
    seq = None if phase == "forward" else 8
    w = zoo.get(name).build(batch=2, seq_len=seq, phase=phase, device="cpu", **overrides)
    g = capture(w.module, w.example_inputs)
    with torch.no_grad():
        ref = w.module(*w.example_inputs)
        feeds = module_feeds(g, w.module, w.example_inputs)
        out = execute(g, feeds)[0]
        # the op registry's own reference numerics agree too
        ops = {"linear", "matmul", "attention", "rmsnorm", "layernorm", "softmax", "embedding", "tbe",
               "dcn_down", "dcn_up", "dot_interaction", "concat"}
        out_ref = execute(g, feeds, reference_ops=ops)[0]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_ref, ref, rtol=1e-4, atol=1e-5)


class StandardLayers(nn.Module):
    """Everything the standard torch.nn layers lower to."""

    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(100, 16, mode="sum")
        self.emb = nn.Embedding(50, 16)
        self.mha = nn.MultiheadAttention(16, 4, batch_first=True)
        self.ln = nn.LayerNorm(16)
        self.rms = nn.RMSNorm(16)
        self.fc = nn.Linear(64, 8)

    def forward(self, idx, offsets, psw, tok):
        a = self.bag(idx, offsets, per_sample_weights=psw)  # [B, 16]
        e = self.emb(tok)  # [B, 3, 16]
        x = torch.cat([a.unsqueeze(1), e], dim=1)  # [B, 4, 16]
        y, _ = self.mha(x, x, x)
        q = y.view(y.shape[0], 4, 4, 4).transpose(1, 2)  # [B, heads, seq, hd]
        z = F.scaled_dot_product_attention(q, q, q).transpose(1, 2).reshape(y.shape)
        h = self.rms(self.ln(z + x)) * 2.0 - 0.5
        s = torch.stack([F.gelu(h), torch.tanh(h), torch.sigmoid(h), F.silu(h)], dim=1).mean(dim=1)
        return torch.relu(self.fc(s.flatten(1))) / 3.0


def _std_inputs(b=4):
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 100, (b * 5,), generator=g)
    return (idx, torch.arange(0, b * 5, 5), torch.rand(b * 5, generator=g), torch.randint(0, 50, (b, 3), generator=g))


def test_user_module_with_standard_layers_captures_and_matches():
    torch.manual_seed(0)
    m = StandardLayers().eval()
    inputs = _std_inputs()
    g = capture(m, inputs)
    ops = g.op_counts()
    for op in ("embedding_bag", "embedding", "linear", "attention", "layernorm", "rmsnorm", "softmax", "concat"):
        assert op in ops, op
    with torch.no_grad():
        torch.testing.assert_close(execute(g, module_feeds(g, m, inputs))[0], m(*inputs), rtol=1e-5, atol=1e-6)


def test_user_module_on_meta_device_simulates():
    import mtiasim

    with torch.device("meta"):
        m = StandardLayers()
        inputs = tuple(t.to("meta") for t in _std_inputs(64))
    r = mtiasim.simulate(m, chip="mtia-200", example_inputs=inputs)
    assert r.latency_s > 0 and r.batch == 320  # first input's leading dim (64 bags x 5 indices); batch= overrides
    assert mtiasim.simulate(m, chip="mtia-200", example_inputs=inputs, batch=64).items == 64


@torch.library.custom_op("mtiasim_test::opaque_scan", mutates_args=())
def opaque_scan(x: torch.Tensor) -> torch.Tensor:
    """A user's own op: no IR lowering and no PyTorch decomposition."""
    return torch.cumsum(x, dim=-1)


@opaque_scan.register_fake
def _opaque_scan_fake(x):
    return torch.empty_like(x)


class Unsupported(nn.Module):
    def forward(self, x):
        return opaque_scan(x) * 2


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = Unsupported()

    def forward(self, x):
        return self.act(x)


def test_unsupported_op_is_named_with_its_source_line():
    with pytest.raises(CaptureError) as e:
        capture(nn.Sequential(nn.Linear(8, 8), Block()), (torch.randn(4, 8),))
    msg = str(e.value)
    assert "mtiasim_test.opaque_scan" in msg and "test_capture.py" in msg and "opaque_scan(x)" in msg
    assert "in module '1.act'" in msg  # the module path in the user's model
    assert "--allow-cpu-fallback" in msg


def test_cpu_fallback_runs_on_host_and_is_charged():
    import mtiasim

    x = torch.randn(4, 8)
    g = capture(Unsupported(), (x,), allow_cpu_fallback=True)
    assert [n.op for n in g.nodes] == ["cpu_fallback", "mul"]
    torch.testing.assert_close(execute(g, {g.inputs[0]: x})[0], torch.cumsum(x, -1) * 2)
    r = mtiasim.simulate(Unsupported(), chip="mtia-200", example_inputs=(x,), allow_cpu_fallback=True)
    host = [o for o in r.ops if o.bound == "host"]
    assert len(host) == 1 and host[0].time_s > 0
    assert any("mtiasim_test.opaque_scan" in n for n in r.notes)


class DataDependent(nn.Module):
    def forward(self, x):
        return x[x > 0].sum()  # boolean mask: output size depends on the data


def test_data_dependent_shape_is_reported_by_name():
    with pytest.raises(CaptureError) as e:
        capture(DataDependent(), (torch.randn(16),))
    assert "data-dependent" in str(e.value) or "DataDependent" in str(e.value)


def test_capture_cache_is_keyed_by_the_frontend_source(tmp_path, monkeypatch):
    from mtiasim.frontend import capture as cap

    monkeypatch.setenv("MTIASIM_CACHE_DIR", str(tmp_path))
    builds = []

    def build():
        builds.append(1)
        return torch.nn.Linear(4, 3), (torch.randn(2, 4),)

    first = cap.capture_cached("tiny-linear", build, name="tiny")
    cap.capture_cached("tiny-linear", build, name="tiny")
    assert len(builds) == 1 and [n.op for n in first.nodes] == ["linear"]  # the second call read the disk
    # a graph captured by other frontend code (e.g. before a lowering changed) is not reused
    monkeypatch.setattr(cap, "_frontend_digest", lambda: "another-frontend")
    cap.capture_cached("tiny-linear", build, name="tiny")
    assert len(builds) == 2


def test_capture_records_each_ops_module_path():
    # the module path lets a deployment name a block to hand-fuse (CompileOptions.fuse_regions)
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            return torch.relu(self.fc(x))

    m = nn.Sequential(Block(), Block()).eval()
    g = capture(m, (torch.randn(2, 8),))
    scopes = {n.op: [] for n in g.nodes}
    for n in g.nodes:
        scopes[n.op].append(n.scope)
    assert scopes["linear"] == ["0.fc", "1.fc"]
    assert scopes["relu"] == ["0", "1"]


def test_resnet50_res2_stage_is_the_zoo_modules_the_deployment_fuses():
    # NVIDIA's RnRes2FullFusion covers res2a-c: the zoo's features.4-6 hold its 10 convolutions
    # (3 bottlenecks x 3, plus res2a's projection shortcut)
    from mtiasim.serving.mlperf import deployment

    g, _ = workload_graph("resnet50", batch=1)
    (region,) = deployment("resnet50", "h100-sxm-80gb")["fuse_regions"]
    convs = [n for n in g.nodes if n.op == "conv2d" and any(n.scope.startswith(p + ".") for p in region)]
    assert len(convs) == 10
    assert {tuple(g.tensors[n.inputs[1]].shape[:2]) for n in convs} == {(64, 64), (256, 64), (64, 256)}


def _signature(g):
    return sorted((n.op, tuple(g.tensors[t].shape for t in n.inputs), tuple(g.tensors[t].shape for t in n.outputs))
                  for n in g.nodes)


@pytest.mark.parametrize("name", [n for n in zoo.names() if zoo.get(n).family == "llm"])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_replicated_layers_equal_a_direct_capture(name, phase):
    # four layers traced by torch.export vs two traced and copied: the same ops on the same
    # shapes, the same weights by name, the same graph inputs (the decode KV cache gets 4 rows)
    from mtiasim.frontend.replicate import replicate_layers

    kw = dict(batch=2, seq_len=16 if phase == "prefill" else None, phase=phase, kv_len=32 if phase == "decode" else None)
    w4, w2 = zoo.get(name).build(**kw, n_layers=4), zoo.get(name).build(**kw, n_layers=2)
    g4, rep = capture(w4.module, w4.example_inputs), replicate_layers(capture(w2.module, w2.example_inputs), 4)
    assert _signature(rep) == _signature(g4)
    assert sorted(rep.params()) == sorted(g4.params())
    assert [rep.tensors[t].shape for t in rep.inputs] == [g4.tensors[t].shape for t in g4.inputs]
    assert {n.scope.split(".")[1] for n in rep.nodes if (n.scope or "").startswith("layers.")} == {"0", "1", "2", "3"}


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_replicated_layers_compute_what_the_deep_module_computes(phase):
    from mtiasim.frontend.replicate import replicate_layers

    torch.manual_seed(0)
    kw = dict(batch=2, seq_len=8 if phase == "prefill" else None, phase=phase, kv_len=8 if phase == "decode" else None)
    deep = zoo.get("llama2-7b").build(**kw, device="cpu", **{**TINY, "n_layers": 5})
    two = zoo.get("llama2-7b").build(**kw, **{**TINY, "n_layers": 2})  # meta: only its graph is used
    g = replicate_layers(capture(two.module, two.example_inputs), 5)
    with torch.no_grad():
        ref = deep.module(*deep.example_inputs)
        out = execute(g, module_feeds(g, deep.module, deep.example_inputs))[0]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_replicate_refuses_a_graph_that_is_not_a_two_layer_decoder():
    from mtiasim.frontend.replicate import replicate_layers

    g, _ = workload_graph("dlrm-v2", batch=4, rows=(100,) * 26)
    with pytest.raises(ValueError, match="not a two-layer decoder"):
        replicate_layers(g, 8)


def test_workload_graph_falls_back_to_tracing_every_layer(monkeypatch):
    # replication is a speed-up: a decoder whose layout it does not know is traced whole
    import mtiasim.api as api

    def refuse(graph, n_layers):
        raise ValueError("not a two-layer decoder")

    monkeypatch.setattr(api, "replicate_layers", refuse)
    g, _ = api.workload_graph("llama2-7b", phase="prefill", seq_len=8, **{**TINY, "n_layers": 3, "vocab": 101})
    assert g.op_counts()["attention"] == 3
    assert not any("@" in n.name for n in g.nodes)
