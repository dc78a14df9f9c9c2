"""Training: the joint graph from autograd against PyTorch, flop counts worked by hand, the
optimizers against torch.optim, ZeRO memory against the paper's example, communication overlap
by hand, and the step model's physical laws."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import mtiasim
from mtiasim.chips import load_chip
from mtiasim.cli import app
from mtiasim.frontend import zoo
from mtiasim.frontend.zoo.llm import CausalLMLoss
from mtiasim.graph.execute import execute, module_feeds
from mtiasim.graph.ir import TensorSpec
from mtiasim.graph.ops import get_op
from mtiasim.training import optim
from mtiasim.training.capture import capture_training
from mtiasim.training.cost import extrapolate, micro_batch_cost
from mtiasim.training.memory import model_state_bytes
from mtiasim.training.sync import BUCKET_BYTES, bucketed, data_parallel_sync


class Block(nn.Module):
    """A pre-norm transformer block with GQA attention (2 KV heads for 4 query heads)."""

    def __init__(self, d: int = 32, h: int = 4, kv: int = 2):
        super().__init__()
        self.h, self.kv, self.hd = h, kv, d // h
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.RMSNorm(d)
        self.q, self.kv_proj, self.o = nn.Linear(d, d), nn.Linear(d, 2 * kv * self.hd), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, s, d = x.shape
        y = self.norm1(x)
        q = self.q(y).view(b, s, self.h, self.hd).transpose(1, 2)
        k, v = self.kv_proj(y).view(b, s, 2, self.kv, self.hd).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, s, d))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class LoRALinear(nn.Module):
    """A frozen base weight plus a trainable rank-r update (Hu et al., LoRA, ICLR'22): W x + B A x."""

    def __init__(self, d_in: int, d_out: int, r: int):
        super().__init__()
        self.base = nn.Linear(d_in, d_out)
        self.base.requires_grad_(False)
        self.a = nn.Parameter(torch.randn(r, d_in) / d_in**0.5)
        self.b = nn.Parameter(torch.randn(d_out, r) / r)

    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x, self.a), self.b)


def _check_gradients(module: nn.Module, inputs: tuple, loss_fn=None) -> None:
    """The joint graph executed on real tensors gives PyTorch's loss and parameter gradients."""
    tg = capture_training(module, inputs, loss_fn=loss_fn)
    env = dict(zip(tg.graph.outputs, execute(tg.graph, module_feeds(tg.graph, module, inputs))))
    module.zero_grad()
    out = module(*inputs)
    loss = loss_fn(out) if loss_fn else out.float().square().mean()
    loss.backward()
    torch.testing.assert_close(env[tg.loss], loss.detach())
    params = dict(module.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert {tg.graph.meta["targets"][p] for p in tg.grads} == trainable
    for p, g in tg.grads.items():
        name = tg.graph.meta["targets"][p]
        torch.testing.assert_close(env[g], params[name].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_mlp_gradients_equal_pytorch():
    torch.manual_seed(0)
    _check_gradients(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)), (torch.randn(4, 16),))


def test_transformer_block_gradients_equal_pytorch():
    torch.manual_seed(0)
    _check_gradients(Block(), (torch.randn(2, 8, 32),))


def test_lora_gradients_only_for_the_adapter():
    torch.manual_seed(0)
    m = LoRALinear(16, 16, 4)
    _check_gradients(m, (torch.randn(4, 16),))
    tg = capture_training(m.to("meta"), (torch.empty(4, 16, device="meta"),))
    assert tg.trainable_params == 2 * 4 * 16 and tg.frozen_params == 16 * 16 + 16


def test_causal_lm_gradients_equal_pytorch():
    """A two-layer zoo decoder trained with cross-entropy over every position."""
    torch.manual_seed(0)
    w = zoo.get("llama3.1-8b").build(batch=2, seq_len=8, n_layers=2, hidden=32, n_heads=4, n_kv_heads=2, ffn=64,
                                     vocab=50, device="cpu")
    ids = w.example_inputs[0]
    labels = torch.randint(0, 50, ids.shape)
    _check_gradients(CausalLMLoss(w.module), (ids, labels), loss_fn=lambda loss: loss)


def test_attention_backward_matches_autograd():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    do = torch.randn(2, 4, 6, 8)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    F.scaled_dot_product_attention(*leaves, is_causal=True, enable_gqa=True).backward(do)
    got = get_op("attention_backward").reference(do, q, k, v, causal=True)
    for g, leaf in zip(got, leaves):
        torch.testing.assert_close(g, leaf.grad)


def test_mlp_training_flops_by_hand():
    """Linear(1024->4096), ReLU, Linear(4096->1024) on 512 rows: the forward is two GEMMs of
    2*512*1024*4096 = 4.295 GFLOP. The backward adds three more: dX and dW of the second layer,
    dW of the first (the input needs no gradient): 5 x 4.295 = 21.47 GFLOP, 2.5x the forward
    (3x for layers whose input needs a gradient too)."""
    m = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 1024)).to("meta")
    tg = capture_training(m, (torch.empty(512, 1024, device="meta"),))
    cost, _ = micro_batch_cost(tg, load_chip("h100-sxm-80gb"), "bf16")
    gemm = 2 * 512 * 1024 * 4096
    assert cost.matrix_flops == pytest.approx(5 * gemm, rel=1e-9)
    assert cost.forward_s > 0 and cost.backward_s > cost.forward_s


def test_attention_backward_is_two_and_a_half_forwards():
    """FlashAttention-2 backward: five GEMMs over the score pairs against the forward's two."""
    q, kv = TensorSpec((2, 8, 128, 64), "bf16"), TensorSpec((2, 2, 128, 64), "bf16")
    attrs = {"causal": True}
    fwd = get_op("attention").work([q, kv, kv], [q], attrs)
    bwd = get_op("attention_backward").work([q, q, kv, kv], [q, kv, kv], attrs)
    assert bwd.matrix_flops == pytest.approx(2.5 * fwd.matrix_flops)


@pytest.mark.parametrize("name,torch_cls,kwargs", [
    ("adamw", torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    ("sgd", torch.optim.SGD, dict(lr=1e-2, momentum=0.9, weight_decay=0.01)),
    ("adagrad", torch.optim.Adagrad, dict(lr=1e-2)),
])
def test_optimizer_update_equals_torch_optim(name, torch_cls, kwargs):
    """Two steps of our update formula, the second one through the captured graph, land where
    torch.optim does."""
    torch.manual_seed(0)
    p0, g1, g2 = torch.randn(64), torch.randn(64), torch.randn(64)
    ref = nn.Parameter(p0.clone())
    opt = torch_cls([ref], **kwargs)
    for g in (g1, g2):
        ref.grad = g.clone()
        opt.step()
    ours = optim.get(name)(**kwargs)
    state = [torch.zeros(64) for _ in range(ours.states)]
    p, *state = ours.update(p0.clone(), g1, *state, step=1)
    graph = optim.update_graph(name, 64, tuple(sorted(kwargs.items())))
    feeds = dict(zip(graph.inputs, [p, g2, *state]))
    torch.testing.assert_close(execute(graph, feeds)[0], ref.detach())


def test_fused_optimizer_reads_and_writes_each_tensor_once():
    """AdamW over N fp32 parameters: p, g, m, v read and p, m, v written: 28 N bytes."""
    from mtiasim.compiler import CompileOptions, compile

    n = 10**6
    program = compile(optim.update_graph("adamw", n), load_chip("h100-sxm-80gb"),
                      CompileOptions(dtype="fp32", fuse_regions=[optim.FUSED_REGION]), default_dtype="fp32")
    assert len(program.kernels) == 1
    assert program.kernels[0].work.bytes == pytest.approx(28 * n)


def test_zero_memory_matches_the_papers_example():
    """ZeRO (SC'20) Figure 1: 7.5B parameters, Adam in mixed precision (K = 12), 64 data-parallel
    ranks: 120 GB per chip without ZeRO, 31.4 GB with stage 1, 16.6 GB with 2, 1.9 GB with 3."""
    expected_gb = {0: 120.0, 1: 31.4, 2: 16.6, 3: 1.9}
    for stage, gb in expected_gb.items():
        parts = model_state_bytes(7_500_000_000, 0, weight_bytes=2, grad_bytes=2, master_bytes=4,
                                  optimizer_state_bytes=8, zero_stage=stage, dp=64)
        assert sum(parts) / 1e9 == pytest.approx(gb, abs=0.05)


def test_bucket_overlap_by_hand():
    """Four 25 MiB buckets ready at 0.25, 0.5, 0.75 and 1.0 s of a 1 s backward. At 0.1 s per
    bucket only the last one shows (0.1 s); at 0.5 s each they queue: done at 2.25 s, 1.25 s exposed."""
    chip = load_chip("h100-sxm-80gb")
    for per_bucket_s, exposed in ((0.1, 0.1), (0.5, 1.25)):
        def coll(_chip, nbytes, _n, t=per_bucket_s):
            return t * nbytes / BUCKET_BYTES
        o = bucketed(1.0, 4 * BUCKET_BYTES, coll, chip, 8)
        assert o.exposed_s == pytest.approx(exposed) and o.total_s == pytest.approx(4 * per_bucket_s)


def test_zero3_moves_half_again_the_bytes_of_data_parallel():
    """ZeRO section 7: plain DP and stages 1-2 move 2 Psi per chip, stage 3 moves 3 Psi."""
    chip = load_chip("h100-sxm-80gb")
    kw = dict(dp=8, param_count=1e9, weight_bytes=2, grad_bytes=2, forward_s=1.0, backward_s=2.0, micro_batches=1)
    sent = {z: data_parallel_sync(chip, zero_stage=z, **kw).bytes_per_chip for z in (0, 1, 3)}
    assert sent[1] == pytest.approx(sent[0])
    assert sent[3] == pytest.approx(1.5 * sent[0])
    assert data_parallel_sync(chip, zero_stage=0, **{**kw, "dp": 1}).total_s == 0.0


def test_deep_model_extrapolation_equals_direct_capture():
    """c(L) = c(1) + (L-1)(c(2) - c(1)) reproduces a four-layer capture: the layers are identical."""
    entry = zoo.get("llama3.1-8b")
    cfg = dict(hidden=256, n_heads=4, n_kv_heads=2, ffn=512, vocab=1000)
    chip = load_chip("mtia-300")

    def cost(layers):
        w = entry.build(batch=2, seq_len=64, n_layers=layers, **cfg)
        tg = capture_training(CausalLMLoss(w.module), (w.example_inputs[0], torch.zeros_like(w.example_inputs[0])))
        return micro_batch_cost(tg, chip, "bf16")[0]

    direct, est = cost(4), extrapolate(cost(1), cost(2), 4)
    for field in ("forward_s", "backward_s", "matrix_flops", "trainable_params", "activation_bytes"):
        assert getattr(est, field) == pytest.approx(getattr(direct, field), rel=1e-3), field


@pytest.fixture(scope="module")
def llama_steps():
    kw = dict(global_batch=16, seq_len=512)
    return {n: mtiasim.train("llama3.1-8b", system=f"h100-sxm-80gb:{n}", zero_stage=1, **kw) for n in (2, 8)}


def test_step_laws(llama_steps):
    peak = load_chip("h100-sxm-80gb").peak("bf16")
    for r in llama_steps.values():
        b = r.breakdown_s
        assert r.step_time_s == pytest.approx(b.forward + b.backward + b.optimizer + b.communication_exposed
                                              + b.pipeline_bubble)
        # nothing beats the roofline: the model's flops at the dense peak of every chip
        assert r.step_time_s >= r.model_flops_per_step / (peak * r.chips)
        assert 0 < r.mfu < 1 and r.energy_per_step_j > 0
        assert r.tokens_per_s == pytest.approx(r.samples_per_s * 512)
        assert r.global_batch == r.micro_batch * r.data_parallel * r.micro_batches
    two, eight = llama_steps[2], llama_steps[8]
    # more data-parallel chips: faster steps, never better than linear, less optimizer state per chip
    assert eight.samples_per_s > two.samples_per_s
    assert eight.samples_per_s <= 4 * two.samples_per_s * 1.0001
    assert eight.memory_breakdown_bytes.optimizer_state == pytest.approx(two.memory_breakdown_bytes.optimizer_state / 4)


def test_zero3_shards_weights_and_costs_communication():
    kw = dict(global_batch=8, seq_len=256, system="h100-sxm-80gb:8")
    plain, z3 = mtiasim.train("llama3.1-8b", **kw), mtiasim.train("llama3.1-8b", zero_stage=3, **kw)
    assert z3.memory_per_chip_bytes < plain.memory_per_chip_bytes
    assert z3.memory_breakdown_bytes.weights == pytest.approx(plain.memory_breakdown_bytes.weights / 8)
    assert z3.communication_total_s > plain.communication_total_s


def test_time_to_train_and_fit():
    r = mtiasim.train("llama3.1-8b", system="h100-sxm-80gb:1", global_batch=1, seq_len=256,
                      samples_to_converge=1000)
    assert r.time_to_train_s == pytest.approx(1000 / r.samples_per_s)
    assert not r.fits and "does not fit" in r.notes[0]  # 8B with AdamW states alone is 128 GB


@pytest.mark.parametrize("kwargs,match", [
    (dict(global_batch=12, micro_batch=1, system="h100-sxm-80gb:8"), "not a multiple"),
    (dict(optimizer="lion"), "unknown optimizer"),
    (dict(precision="int8"), "unknown training precision"),
    (dict(zero_stage=4), "zero_stage"),
    (dict(samples_to_converge=-1.0), "samples_to_converge"),
])
def test_bad_training_input_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mtiasim.train("llama3.1-8b", **{"seq_len": 128, **kwargs})


def test_module_without_example_inputs_is_refused():
    with pytest.raises(ValueError, match="example_inputs"):
        mtiasim.train(nn.Linear(4, 4))


def test_cli_train_json():
    res = CliRunner().invoke(app, ["train", "llama3.1-8b", "--system", "mtia-300:8", "--global-batch", "16",
                                   "--seq-len", "256", "--zero", "1", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    for key in ("step_time_s", "samples_per_s", "tokens_per_s", "mfu", "memory_per_chip_bytes", "fits",
                "breakdown_s", "time_to_train_s"):
        assert key in d
    assert set(d["breakdown_s"]) == {"forward", "backward", "optimizer", "communication_exposed", "pipeline_bubble"}


def test_lamb_step_by_hand():
    """First LAMB step, no weight decay: m^ = g, v^ = g^2, so r = g / (|g| + eps) = sign(g). With
    p = (2, 2, 2, 2): ||p|| = 4, ||r|| = 2, trust ratio 2, so p' = p - lr * 2 * sign(g)."""
    opt = optim.get("lamb")(lr=0.1, weight_decay=0.0, eps=1e-12)
    p, g = torch.full((4,), 2.0), torch.tensor([0.5, -3.0, 1e-3, -2.0])
    new_p, m, v = opt.update(p, g, torch.zeros(4), torch.zeros(4), step=1)
    torch.testing.assert_close(new_p, p - 0.1 * 2 * torch.sign(g))


def test_hierarchical_allreduce_by_hand():
    """1 GB over 16 H100s = two NVLink domains of 8 joined by one 50 GB/s NIC per GPU (links at
    78% efficiency, 5 us per ring step): within a domain 2 x (7/8 x 1 GB / 351 GB/s + 7 x 5 us)
    = 5.056 ms, between the two domains each GPU's NIC carries 1/8 of the buffer:
    2 x (1/2 x 125 MB / 39 GB/s + 5 us) = 3.215 ms; 8.271 ms in all."""
    from mtiasim.system.collectives import allreduce_s

    h100 = load_chip("h100-sxm-80gb")
    assert allreduce_s(h100, 1e9, 16) == pytest.approx(8.271e-3, rel=1e-3)
    # within one domain the scale-out link is not used; more scale-out bandwidth never slows it
    assert allreduce_s(h100, 1e9, 8) < allreduce_s(h100, 1e9, 16)
    faster = load_chip("h100-sxm-80gb", {"scale_out.bandwidth_bytes_per_s": "100 GB/s"})
    assert allreduce_s(faster, 1e9, 16) < allreduce_s(h100, 1e9, 16)
    assert allreduce_s(faster, 1e9, 8) == allreduce_s(h100, 1e9, 8)


def _shard_graph(tp: int):
    entry = zoo.get("llama3.1-8b")
    w = entry.build(batch=1, seq_len=128, n_layers=1, hidden=256, n_heads=8, n_kv_heads=4, ffn=512, vocab=1000,
                    head_dim=32)
    return capture_training(CausalLMLoss(w.module), (w.example_inputs[0], torch.zeros_like(w.example_inputs[0])))


def test_sequence_parallel_shrinks_only_the_residual_stream():
    """Splitting the model-width tensors over 4 chips shrinks the activations, but by less than
    4x: the attention and MLP internals of a shard are not model-width tensors."""
    from mtiasim.training.memory import activation_peak_bytes

    tg = _shard_graph(1)
    whole, split = activation_peak_bytes(tg, 2.0), activation_peak_bytes(tg, 2.0, (256, 4))
    assert whole / 4 < split < whole


def test_lora_wraps_the_named_projections():
    """Llama with LoRA rank 8 on qkv_proj and o_proj: per layer A is r x in and B is out x r;
    qkv_proj is 256 -> (8 + 2 x 4) x 32 = 512, o_proj 256 -> 256."""
    from mtiasim.training.lora import apply_lora

    w = zoo.get("llama3.1-8b").build(batch=1, seq_len=16, n_layers=2, hidden=256, n_heads=8, n_kv_heads=4,
                                     ffn=512, vocab=1000, head_dim=32)
    assert apply_lora(w.module, 8) == 4
    trainable = sum(p.numel() for p in w.module.parameters() if p.requires_grad)
    assert trainable == 2 * (8 * 256 + 512 * 8 + 8 * 256 + 256 * 8)
    with pytest.raises(ValueError, match="no nn.Linear named"):
        apply_lora(nn.Sequential(nn.Linear(4, 4)), 2)


def test_tensor_parallel_divides_weights_and_adds_communication():
    """One TP=4 group (no data parallelism): its only collectives are Megatron's 4 all-reduces per
    layer of the layer's output, 1 x 512 tokens x 4096 x 2 bytes, over the 4 chips, 32 layers."""
    from mtiasim.system.collectives import allreduce_s

    one = mtiasim.train("llama3.1-8b", global_batch=1, seq_len=512, system="h100-sxm-80gb:1")
    tp4 = mtiasim.train("llama3.1-8b", global_batch=1, seq_len=512, system="h100-sxm-80gb:4", tp=4)
    assert tp4.data_parallel == 1 and tp4.sequence_parallel
    assert tp4.memory_breakdown_bytes.weights == pytest.approx(one.memory_breakdown_bytes.weights / 4, rel=0.02)
    expected = 32 * 4 * allreduce_s(load_chip("h100-sxm-80gb"), 512 * 4096 * 2, 4)
    assert tp4.breakdown_s.communication_exposed == pytest.approx(expected)
    # a quarter of the GEMM work per chip: faster, never better than 4x (the shapes are smaller)
    assert one.breakdown_s.forward / 4 <= tp4.breakdown_s.forward < one.breakdown_s.forward
    with pytest.raises(ValueError, match="does not divide"):
        mtiasim.train("llama3.1-8b", tp=3, global_batch=1, seq_len=512, system="h100-sxm-80gb:6")


def test_full_recompute_trades_time_for_memory():
    kw = dict(global_batch=1, seq_len=1024, system="h100-sxm-80gb:1")
    none, full = mtiasim.train("llama3.1-8b", **kw), mtiasim.train("llama3.1-8b", recompute="full", **kw)
    assert full.memory_breakdown_bytes.activations < none.memory_breakdown_bytes.activations / 4
    assert full.breakdown_s.backward == pytest.approx(none.breakdown_s.backward + none.breakdown_s.forward)
    assert full.model_flops_per_step == none.model_flops_per_step  # model flops exclude the recompute


def test_hugging_face_model_trains_without_example_inputs():
    """A transformers Llama on meta tensors: inputs from micro_batch and seq_len, every parameter
    trained (the GQA repeat_kv of HF's eager attention folded into the fused attention op)."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8,
                                   num_key_value_heads=4, vocab_size=1000)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    r = mtiasim.train(model, system="h100-sxm-80gb:8", micro_batch=2, seq_len=128, global_batch=16)
    assert r.trainable_params == sum(p.numel() for p in model.parameters())
    assert r.micro_batches == 1 and r.tokens_per_s == pytest.approx(r.samples_per_s * 128)


def test_recommendation_op_gradients_equal_their_formulas():
    """The registered backward of each fused recommendation op against autograd through the op's
    defining formula (DCNv2 cross layer, DLRM dot interaction, pooled embedding lookup)."""
    torch.manual_seed(0)
    b, d, r = 5, 8, 3
    x0, xl = torch.randn(b, d, requires_grad=True), torch.randn(b, d, requires_grad=True)
    u, v, bias = (torch.randn(r, d, requires_grad=True), torch.randn(d, r, requires_grad=True),
                  torch.randn(d, requires_grad=True))
    dense, sparse = torch.randn(b, d, requires_grad=True), torch.randn(b, 3, d, requires_grad=True)
    table, idx = torch.randn(20, d, requires_grad=True), torch.randint(0, 10, (b, 3))

    def dot(dn, sp):
        f = torch.cat([dn.unsqueeze(1), sp], 1)
        li, lj = torch.tril_indices(4, 4, offset=-1)
        return torch.cat([dn, (f @ f.transpose(1, 2))[:, li, lj]], 1)

    def pooled(t):
        return torch.stack([t[idx[:, :2]].sum(1), t[idx[:, 2:] + 10].sum(1)], 1)

    cases = [
        (lambda: torch.ops.mtiasim.dcn_cross(x0, xl, u, v, bias), lambda: x0 * F.linear(F.linear(xl, u), v, bias) + xl,
         (x0, xl, u, v, bias)),
        (lambda: torch.ops.mtiasim.dot_interaction(dense, sparse), lambda: dot(dense, sparse), (dense, sparse)),
        (lambda: torch.ops.mtiasim.tbe(idx, table, [2, 1], [10, 10]), lambda: pooled(table), (table,)),
    ]
    for fused, formula, leaves in cases:
        out = fused()
        grad = torch.randn_like(out)
        got = torch.autograd.grad(out, leaves, grad)
        want = torch.autograd.grad(formula(), leaves, grad)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)


def test_tbe_backward_work_by_hand():
    """4 samples x 6 lookups into fp32 tables of width 8: every lookup reads and writes its
    32-byte row and its 4-byte rowwise-Adagrad accumulator: 4 x 6 x 36 = 864 bytes each way."""
    grad, idx, w = TensorSpec((4, 2, 8), "fp32"), TensorSpec((4, 6), "int64"), TensorSpec((100, 8), "fp32")
    work = get_op("tbe_backward").work([grad, idx, w], [w], {"pooling_factors": [4, 2], "rows": [60, 40]})
    assert work.bytes_read["in2"] == 864 and work.bytes_written["out0"] == 864
    assert work.bytes_read["in0"] == grad.nbytes


def test_dlrm_trains_with_sharded_tables_and_no_dense_table_gradients():
    """DLRM-DCNv2 on 8 chips: the 204M-row tables are sharded (1/8 per chip), have no gradient
    buffer and keep one fp32 Adagrad accumulator per row; pooled embeddings cross in two
    all-to-alls per step."""
    r = mtiasim.train("dlrm-v2", system="h100-sxm-80gb:8", global_batch=8 * 1024, optimizer="adagrad")
    rows, dim = sum(zoo.get("dlrm-v2").config()["rows"]), 128
    dense = r.trainable_params - rows * dim
    assert 0 < dense < 30e6  # the MLPs and the cross layers
    assert r.memory_breakdown_bytes.gradients == pytest.approx(dense * 2)
    assert r.memory_breakdown_bytes.weights == pytest.approx(dense * 2 + rows * dim * 2 / 8)
    assert r.memory_breakdown_bytes.optimizer_state == pytest.approx(dense * (4 + 4) + rows * 4 / 8)
    single = mtiasim.train("dlrm-v2", system="h100-sxm-80gb:1", global_batch=1024, optimizer="adagrad")
    assert r.communication_total_s > 0 and single.communication_total_s == 0


def test_one_f_one_b_bubble_by_hand():
    """Stage times 1 s forward and 2 s backward, 4 micro-batches over 8 stages: 4 x (1 + 2) = 12 s
    of work and a (8 - 1) x 3 = 21 s bubble (Narayanan et al., SC'21, section 2.2); two virtual
    stages per chip halve the bubble; the first stage holds min(8, 4) = 4 micro-batches."""
    from mtiasim.training.cost import MicroBatchCost
    from mtiasim.training.pipeline import one_f_one_b

    stage = MicroBatchCost(1.0, 2.0, 0.0, 0.0, None, 0.0, 0.0, 0.0)
    s = one_f_one_b(stage, 4, 8)
    assert (s.forward_s, s.backward_s, s.bubble_s, s.in_flight) == (4.0, 8.0, 21.0, 4)
    assert one_f_one_b(stage, 4, 8, virtual=2).bubble_s == 10.5


def test_pipeline_parallel_step():
    one = mtiasim.train("llama3.1-8b", global_batch=8, seq_len=512, system="h100-sxm-80gb:1")
    pp4 = mtiasim.train("llama3.1-8b", global_batch=8, micro_batch=1, seq_len=512, system="h100-sxm-80gb:4", pp=4)
    assert pp4.pipeline_parallel == 4 and pp4.micro_batches == 8
    assert pp4.breakdown_s.pipeline_bubble > 0
    # the stage that sets the pace holds 8 of the 32 layers plus the embedding and the LM head
    # (128256 x 4096 each, 1.05 G together): more than a quarter of the weights, less than half
    assert one.memory_breakdown_bytes.weights / 4 < pp4.memory_breakdown_bytes.weights
    assert pp4.memory_breakdown_bytes.weights < one.memory_breakdown_bytes.weights / 2
    assert one.step_time_s / 4 < pp4.step_time_s < one.step_time_s
    # uneven stages are allowed (ceil(32 / 5) = 7 layers on the fullest), more stages than layers not
    assert mtiasim.train("llama3.1-8b", global_batch=5, micro_batch=1, seq_len=512, system="h100-sxm-80gb:5",
                         pp=5).breakdown_s.pipeline_bubble > 0
    with pytest.raises(ValueError, match="at least"):
        mtiasim.train("llama3.1-8b", global_batch=1, seq_len=512, system="h100-sxm-80gb:64", pp=64)


def test_tree_allreduce_between_domains_by_hand():
    """64 GPUs, one per node (a data-parallel group of model-parallel shards), 50 GB/s NICs at 78%:
    for 1 MB the ring's 2 x 63 steps of 5 us cost more than NCCL's tree (2 x 1 MB / 39 GB/s +
    2 x 6 x 5 us = 0.111 ms); for 1 GB the ring wins (2 x (63/64 x 1 GB / 39 GB/s + 63 x 5 us)
    = 51.1 ms against the tree's 51.3 ms)."""
    from mtiasim.system.collectives import allreduce_s

    h100 = load_chip("h100-sxm-80gb")
    assert allreduce_s(h100, 1e6, 64, per_domain=1) == pytest.approx(1.113e-4, rel=2e-3)
    assert allreduce_s(h100, 1e9, 64, per_domain=1) == pytest.approx(51.11e-3, rel=1e-3)


def test_layout_search_ranks_fitting_layouts():
    """llama3.1-8b on 8 H100s, 32 sequences of 4096: every ranked layout fits, they come fastest
    first, and none is faster than the roofline of its flops."""
    from mtiasim.training.search import search

    res = search("llama3.1-8b", "h100-sxm-80gb:8", 32, seq_len=4096)
    assert res.evaluated == res.fitting + sum(res.rejected.values())  # every layout fits or is counted out
    assert res.ranked and len(res.ranked) == min(10, res.fitting) and all(r.fits for r in res.ranked)
    times = [r.step_time_s for r in res.ranked]
    assert times == sorted(times)
    peak = load_chip("h100-sxm-80gb").peak("bf16")
    assert all(r.step_time_s >= r.model_flops_per_step / (8 * peak) for r in res.ranked)
    with pytest.raises(ValueError, match="decoder LLMs"):
        search("dlrm-v2", "h100-sxm-80gb:8", 1024)


def test_a_zoo_model_refuses_inputs_and_a_loss_it_would_ignore():
    with pytest.raises(ValueError, match="example_inputs and loss_fn apply to a module you pass"):
        mtiasim.train("bert-large", "h100-sxm-80gb:1", example_inputs=(torch.zeros(1, 8),),
                      loss_fn=lambda out, *inputs: out.sum())


def test_virtual_stages_from_the_command_line_divide_the_bubble():
    """Megatron's interleaved schedule: v model chunks per stage cut the 1F1B bubble by v."""
    args = ["train", "llama3.1-8b", "--system", "h100-sxm-80gb:8", "--global-batch", "64", "--seq-len", "2048",
            "--pp", "4", "--micro-batch", "1", "--json"]
    bubbles = []
    for v in ("1", "2"):
        res = CliRunner().invoke(app, [*args, "--virtual-stages", v])
        assert res.exit_code == 0, res.output
        bubbles.append(json.loads(res.output)["breakdown_s"]["pipeline_bubble"])
    assert bubbles[1] == pytest.approx(bubbles[0] / 2, rel=0.02)
