"""What is trained: the joint graphs of a zoo model (a decoder LLM as one tensor-parallel shard,
captured with one and two layers), of a Hugging Face model or of any module."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mtiasim.frontend import hf, zoo
from mtiasim.frontend.zoo.llm import CausalLMLoss
from mtiasim.training.capture import LossFn, TrainingGraph, capture_training
from mtiasim.training.lora import DEFAULT_TARGETS, apply_lora


@dataclass(frozen=True)
class Trainee:
    """``graphs``: one joint graph, or the one- and two-layer graphs of a ``layers``-deep decoder.
    ``hidden`` is a decoder's model width (a layer's input is micro_batch x seq_len x hidden)."""

    name: str
    graphs: list[TrainingGraph]
    micro_batch: int
    seq_len: int | None
    layers: int | None = None
    hidden: int | None = None
    notes: tuple[str, ...] = ()


_GRAPHS: dict[tuple, TrainingGraph] = {}


def _memo(key: tuple, build: Any) -> TrainingGraph:
    if key not in _GRAPHS:
        if len(_GRAPHS) >= 16:
            _GRAPHS.pop(next(iter(_GRAPHS)))
        _GRAPHS[key] = build()
    return _GRAPHS[key]


def tp_shard(entry: zoo.ZooModel, tp: int) -> dict[str, int]:
    """Config overrides for one of ``tp`` Megatron tensor-parallel shards of a decoder (Shoeybi
    et al., 2019, section 3): its share of the heads, FFN columns and vocabulary."""
    c = entry.config()
    if c["n_heads"] % tp or c["ffn"] % tp:
        raise ValueError(f"{entry.name}: tensor parallelism {tp} does not divide {c['n_heads']} heads / "
                         f"ffn {c['ffn']}")
    if tp == 1:
        return {}
    return {"n_heads": c["n_heads"] // tp, "n_kv_heads": max(1, c["n_kv_heads"] // tp), "ffn": c["ffn"] // tp,
            "head_dim": c["head_dim"], "vocab": math.ceil(c["vocab"] / tp)}


def zoo_trainee(name: str, micro_batch: int, seq_len: int | None, *, tp: int = 1, lora_rank: int | None = None,
                lora_targets: Sequence[str] = DEFAULT_TARGETS) -> Trainee:
    entry = zoo.get(name)
    lora = (lora_rank, tuple(lora_targets)) if lora_rank else None
    if entry.family != "llm":
        if tp > 1:
            raise ValueError(f"{entry.name}: tensor parallelism is modelled for the zoo's decoder LLMs only")
        w = entry.build(batch=micro_batch, seq_len=seq_len)

        def build_whole() -> TrainingGraph:
            if lora:
                apply_lora(w.module, *lora)
            return capture_training(w.module, w.example_inputs, name=entry.name)

        return Trainee(entry.name, [_memo((entry.name, micro_batch, seq_len, lora), build_whole)], micro_batch, None)
    layers, shard, notes = int(entry.config()["n_layers"]), tp_shard(entry, tp), ()
    longest = int(entry.config()["max_positions"])
    if seq_len and seq_len > longest:  # fine-tuning past the pretrained context (MLPerf's 70B LoRA: 8192 > 4096)
        shard["max_positions"] = seq_len
        notes = (f"{entry.name} trained on {seq_len}-token sequences, beyond its {longest} pretrained positions",)
    graphs = []
    for depth in sorted({min(layers, 1), min(layers, 2)}):
        w = entry.build(batch=micro_batch, seq_len=seq_len, phase="prefill", n_layers=depth, **shard)

        def build(w=w) -> TrainingGraph:
            lm = CausalLMLoss(w.module)
            if lora:
                apply_lora(lm, *lora)
            return capture_training(lm, (w.example_inputs[0], torch.zeros_like(w.example_inputs[0])), name=entry.name)

        graphs.append(_memo((entry.name, micro_batch, w.seq_len, depth, tp, lora), build))
    return Trainee(entry.name, graphs, micro_batch, w.seq_len, layers, int(entry.config()["hidden"]), notes)


def module_trainee(module: torch.nn.Module, example_inputs: Sequence[Any] | None, micro_batch: int | None,
                   seq_len: int | None, loss_fn: LossFn | None) -> Trainee:
    """Any module (``example_inputs`` are one micro-batch) or a Hugging Face model (inputs from
    ``micro_batch`` and ``seq_len``). The module's train/eval mode is restored afterwards."""
    was_training = module.training
    try:
        if example_inputs is None:
            if not hf.is_hf_model(module):
                raise ValueError("train(module, ...) needs example_inputs (one micro-batch; meta tensors work); "
                                 "a Hugging Face model takes micro_batch= and seq_len= instead")
            wrapped, inputs, meta = hf.wrap(module, micro_batch or 1, seq_len)
            g = capture_training(wrapped, inputs, loss_fn=loss_fn, name=meta["model"])
            return Trainee(g.graph.name, [g], meta["batch"], meta["seq_len"])
        g = capture_training(module, example_inputs, loss_fn=loss_fn)
        first = next((t for t in example_inputs if isinstance(t, torch.Tensor) and t.dim() > 0), None)
        mb = int(first.shape[0]) if first is not None else 1
        if micro_batch is not None and micro_batch != mb:
            raise ValueError(f"micro_batch={micro_batch} but example_inputs hold a batch of {mb}; "
                             "example_inputs are one micro-batch")
        return Trainee(g.graph.name, [g], mb, seq_len)
    finally:
        module.train(was_training)
