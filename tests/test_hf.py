"""Hugging Face transformers models simulate as they come: no flags, no host fallback, and the
captured graph computes what the model computes (small configs, random weights)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import mtiasim  # noqa: E402
from mtiasim.frontend import hf  # noqa: E402
from mtiasim.frontend.capture import capture  # noqa: E402
from mtiasim.graph.execute import execute, module_feeds  # noqa: E402

DEC = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
           vocab_size=128, max_position_embeddings=256)
ENC = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)

# name -> (config, auto class); decoders as causal LMs, encoders as base models
ARCHS = {
    "llama": (lambda: transformers.LlamaConfig(**DEC), "causal"),
    "mistral": (lambda: transformers.MistralConfig(**DEC, sliding_window=8), "causal"),
    "qwen2": (lambda: transformers.Qwen2Config(**DEC), "causal"),
    "qwen2-moe": (lambda: transformers.Qwen2MoeConfig(**DEC, num_experts=4, num_experts_per_tok=2,
                                                      moe_intermediate_size=32, shared_expert_intermediate_size=64),
                  "causal"),
    "mixtral": (lambda: transformers.MixtralConfig(**DEC, num_local_experts=4, num_experts_per_tok=2), "causal"),
    "gpt2": (lambda: transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=256,
                                             bos_token_id=0, eos_token_id=0), "causal"),
    "gpt-neox": (lambda: transformers.GPTNeoXConfig(**ENC, vocab_size=128, bos_token_id=0, eos_token_id=0),
                 "causal"),
    "phi3": (lambda: transformers.Phi3Config(**DEC, pad_token_id=0, bos_token_id=0, eos_token_id=0), "causal"),
    "gemma2": (lambda: transformers.Gemma2Config(**DEC, head_dim=16, sliding_window=8), "causal"),
    "olmo": (lambda: transformers.OlmoConfig(**DEC, pad_token_id=0, bos_token_id=0, eos_token_id=0), "causal"),
    "bert": (lambda: transformers.BertConfig(**ENC, vocab_size=128), "base"),
    "t5-encoder": (lambda: transformers.T5Config(d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16,
                                                 vocab_size=128), "t5-encoder"),
    "vit": (lambda: transformers.ViTConfig(**ENC, image_size=32, patch_size=8), "base"),
    "whisper-encoder": (lambda: transformers.WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=4,
                                                           encoder_ffn_dim=128, decoder_layers=1,
                                                           decoder_attention_heads=4, decoder_ffn_dim=128,
                                                           num_mel_bins=16, max_source_positions=32,
                                                           vocab_size=128, pad_token_id=0, bos_token_id=0,
                                                           eos_token_id=0, decoder_start_token_id=0),
                        "whisper-encoder"),
}
if hasattr(transformers, "DeepseekV3Config"):
    ARCHS["deepseek-v3"] = (lambda: transformers.DeepseekV3Config(
        **{**DEC, "num_key_value_heads": 4}, moe_intermediate_size=32, n_routed_experts=4, num_experts_per_tok=2,
        n_shared_experts=1, n_group=1, topk_group=1, first_k_dense_replace=1, q_lora_rank=32, kv_lora_rank=16,
        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16), "causal")
#: architectures transformers runs only with eager attention (Gemma-2's logit soft-capping): their
#: attention is charged as the GEMMs, soft-cap and softmax kernels eager PyTorch runs
EAGER_ONLY = {"gemma2"}


def build(name: str, device: str = "cpu"):
    make, kind = ARCHS[name]
    cfg = make()
    with torch.device(device):
        if kind == "causal":
            m = transformers.AutoModelForCausalLM.from_config(cfg)
        elif kind == "t5-encoder":
            m = transformers.T5EncoderModel(cfg)
        elif kind == "whisper-encoder":
            m = transformers.WhisperModel(cfg).get_encoder()
        else:
            m = transformers.AutoModel.from_config(cfg, add_pooling_layer=False) if name in ("bert", "vit") \
                else transformers.AutoModel.from_config(cfg)
    return m.eval()


@pytest.mark.parametrize("name", list(ARCHS))
def test_simulates_on_meta_with_no_flags(name):
    m = build(name, "meta")
    r = mtiasim.simulate(m, chip="mtia-400", batch=2, seq_len=32)
    assert r.latency_s > 0 and r.energy_j > 0
    assert not [o.name for o in r.ops if o.bound == "host"]  # nothing falls back to the host CPU
    assert any(o.op in ("linear", "addmm", "matmul") for o in r.ops)
    if ARCHS[name][1] == "causal":
        assert r.items == 2 * 32 and r.item_unit == "token"
    if name not in EAGER_ONLY:
        assert sum(o.op == "attention" for o in r.ops) == 2  # one attention kernel per layer


@pytest.mark.parametrize("name", list(ARCHS))
def test_captured_graph_computes_what_the_model_computes(name):
    torch.manual_seed(0)
    m = build(name)
    module, inputs, _ = hf.wrap(m, 2, 16)
    if inputs[0].dtype == torch.long:
        inputs = (torch.randint(0, 128, inputs[0].shape),)
    else:
        inputs = (torch.randn(inputs[0].shape),)
    g = capture(module, inputs)
    with torch.no_grad():
        want = module(*inputs)
        got = execute(g, module_feeds(g, module, inputs))[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_gqa_repeat_and_causal_mask_cost_nothing():
    """HF Llama builds a [B, 1, S, S] mask and repeats K/V heads (repeat_kv) before SDPA; the
    capture folds the mask into a causal attention and feeds the unrepeated K/V as GQA."""
    g = capture(*hf.wrap(build("llama", "meta"), 2, 16)[:2])
    attn = [n for n in g.nodes if n.op == "attention"]
    assert len(attn) == 2
    for n in attn:
        q, k, v = (g.tensors[t].shape for t in n.inputs)
        assert len(n.inputs) == 3 and n.attrs["causal"] is True  # no mask operand is read
        assert q[1] == 4 and k[1] == v[1] == 2  # 4 query heads share 2 KV heads
    assert not [n for n in g.nodes if n.op == "copy" and g.tensors[n.outputs[0]].shape[1:3] == (2, 2)]


def test_sliding_window_mask_is_kept_when_it_masks():
    """Mistral with a window shorter than the prompt: the mask is not the causal triangle, so
    the attention keeps it (and reads it)."""
    g = capture(*hf.wrap(build("mistral", "meta"), 1, 16)[:2])
    assert all(len(n.inputs) == 4 for n in g.nodes if n.op == "attention")
    g = capture(*hf.wrap(build("mistral", "meta"), 1, 8)[:2])  # window 8 covers an 8-token prompt
    assert all(len(n.inputs) == 3 and n.attrs["causal"] for n in g.nodes if n.op == "attention")


def test_hf_inputs_are_checked():
    m = build("llama", "meta")
    with pytest.raises(ValueError, match="seq_len 100000 exceeds"):
        mtiasim.simulate(m, chip="mtia-400", seq_len=100000)
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        mtiasim.simulate(m, chip="mtia-400", batch=0)


def test_cli_runs_a_local_hf_config(tmp_path):
    """`mtiasim run --hf-config DIR` builds the model from a local config.json (no network, no
    weights) and times a prefill of batch x seq-len tokens."""
    import json

    from typer.testing import CliRunner

    from mtiasim.cli import app

    cfg = transformers.Qwen2Config(**DEC)
    cfg.save_pretrained(tmp_path)
    res = CliRunner().invoke(app, ["run", "--hf-config", str(tmp_path), "--chip", "mtia-400", "--batch", "2",
                                   "--seq-len", "64", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["latency_s"] > 0 and d["throughput_per_s"] == pytest.approx(2 * 64 / d["latency_s"])
    bad = CliRunner().invoke(app, ["run", "--hf-config", str(tmp_path / "missing.json")])
    assert bad.exit_code != 0 and "no such file" in bad.output
    both = CliRunner().invoke(app, ["run", "llama2-7b", "--hf-config", str(tmp_path)])
    assert both.exit_code != 0 and "one of them" in both.output
