"""BERT-large for extractive question answering: MLPerf Inference ``bert-99`` / ``bert-99.9``.

Config (Devlin et al., NAACL'19, Table/section 3 "BERT_LARGE (L=24, H=1024, A=16, Total
Parameters=340M)"; HF ``bert-large-uncased`` config: intermediate 4096, vocab 30522, 512
positions, 2 token types, GELU, LayerNorm eps 1e-12); MLPerf runs it on SQuAD v1.1 with
max_seq_length 384 and a span-prediction head (Linear 1024 -> 2; mlperf.md 1.2 bounds table).

The module is post-LayerNorm BERT built from nn.Linear / nn.LayerNorm / nn.Embedding,
F.scaled_dot_product_attention (no mask: the sequences of a batch are taken unpadded, as the
variable-length kernels of MLPerf submitters run them) and F.gelu. One item is one sample
(a question-context pair of ``seq_len`` tokens).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import Workload, ZooModel, register
from ._common import apply_overrides, cache_key, check_positive


@dataclass(frozen=True)
class BertConfig:
    n_layers: int = 24
    hidden: int = 1024
    n_heads: int = 16
    ffn: int = 4096
    vocab: int = 30522
    max_positions: int = 512
    type_vocab: int = 2
    norm_eps: float = 1e-12
    n_outputs: int = 2  # SQuAD span head: start and end logits

    def validate(self, name: str) -> None:
        check_positive(n_layers=self.n_layers, hidden=self.hidden, n_heads=self.n_heads, ffn=self.ffn,
                       vocab=self.vocab, max_positions=self.max_positions, n_outputs=self.n_outputs)
        if self.hidden % self.n_heads:
            raise ValueError(f"{name}: hidden ({self.hidden}) must be a multiple of n_heads ({self.n_heads})")


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.hidden)
        self.ln1 = nn.LayerNorm(cfg.hidden, eps=cfg.norm_eps)
        self.up = nn.Linear(cfg.hidden, cfg.ffn)
        self.down = nn.Linear(cfg.ffn, cfg.hidden)
        self.ln2 = nn.LayerNorm(cfg.hidden, eps=cfg.norm_eps)

    def forward(self, x):
        b, s, d = x.shape
        h = self.cfg.n_heads
        q, k, v = self.qkv(x).view(b, s, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, d)
        x = self.ln1(x + self.out(a))
        return self.ln2(x + self.down(F.gelu(self.up(x))))


class BertQA(nn.Module):
    """forward(input_ids [B, S], token_type_ids [B, S]) -> start/end logits [B, S, 2]."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.words = nn.Embedding(cfg.vocab, cfg.hidden)
        self.positions = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.types = nn.Embedding(cfg.type_vocab, cfg.hidden)
        self.ln = nn.LayerNorm(cfg.hidden, eps=cfg.norm_eps)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.n_layers))
        self.qa = nn.Linear(cfg.hidden, cfg.n_outputs)

    def forward(self, ids, types):
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.ln(self.words(ids) + self.positions(pos) + self.types(types))
        for layer in self.layers:
            x = layer(x)
        return self.qa(x)


def bert_param_count(cfg: BertConfig) -> int:
    d, f = cfg.hidden, cfg.ffn
    layer = (d * 3 * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
    emb = (cfg.vocab + cfg.max_positions + cfg.type_vocab) * d + 2 * d
    return emb + cfg.n_layers * layer + d * cfg.n_outputs + cfg.n_outputs


class BertLargeModel(ZooModel):
    name = "bert-large"
    family = "encoder"
    phases = ("forward",)
    default_batch = 256
    default_seq_len = 384
    default_dtype = "int8"  # MLPerf bert-99: INT8 (v4.1 measurements JSON precision column)
    source = ("Devlin et al., NAACL'19 (BERT-large: L=24, H=1024, A=16); HF bert-large-uncased config; "
              "MLPerf Inference bert (SQuAD v1.1, max_seq_length 384)")
    description = ("BERT-large (335M params): 24 post-LN encoder layers, hidden 1024, 16 heads, FFN 4096, "
                   "GELU; SQuAD span head. One item = one question-context sample of seq_len tokens.")

    def __init__(self):
        self.cfg = BertConfig()

    def config(self) -> dict:
        return dataclasses.asdict(self.cfg)

    def param_count(self, **overrides) -> int:
        return bert_param_count(apply_overrides(self.cfg, overrides, self.name))

    def build(self, batch=None, seq_len=None, phase=None, kv_len=None, device="meta", **overrides):
        cfg = apply_overrides(self.cfg, overrides, self.name)
        cfg.validate(self.name)
        batch = self.default_batch if batch is None else batch
        seq_len = self.default_seq_len if seq_len is None else seq_len
        check_positive(batch=batch, seq_len=seq_len)
        if phase not in (None, "forward") or kv_len is not None:
            raise ValueError(f"{self.name}: an encoder takes only phase='forward' and no kv_len")
        if seq_len > cfg.max_positions:
            raise ValueError(f"{self.name}: seq_len {seq_len} exceeds max_positions={cfg.max_positions}")
        with torch.device(device):
            module = BertQA(cfg).eval()
        ids = torch.zeros((batch, seq_len), dtype=torch.int64, device=device)
        types = torch.zeros((batch, seq_len), dtype=torch.int64, device=device)
        if ids.device.type != "meta":
            gen = torch.Generator().manual_seed(0)
            ids = torch.randint(0, cfg.vocab, (batch, seq_len), generator=gen).to(device)
            types = torch.randint(0, cfg.type_vocab, (batch, seq_len), generator=gen).to(device)
        return Workload(
            name=self.name, module=module, example_inputs=(ids, types), phase="forward", batch=batch,
            seq_len=seq_len, kv_len=None, items=batch, item_unit="sample", default_dtype=self.default_dtype,
            default_act_dtype="int8",
            cache_key=cache_key(self.name, "forward", batch, seq_len, None, dataclasses.asdict(cfg)),
        )


register(BertLargeModel())
