"""The train command (and its layout search)."""

from __future__ import annotations

import typer

from mtiasim.chips import ChipError
from mtiasim.cli.common import (
    _dump,
    _fail,
    _print,
    _progress,
    app,
    out,
)
from mtiasim.frontend.capture import CaptureError
from mtiasim.graph.ops.base import OpError


@app.command("train")
def train_cmd(model: str = typer.Argument(..., help="Zoo model name (see `mtiasim models`)."),
              system: str = typer.Option("mtia-300:1", "--system", help="CHIP:COUNT (every chip a data-parallel "
                                         "rank) or a system YAML."),
              global_batch: int | None = typer.Option(None, "--global-batch", min=1,
                                                      help="Samples (sequences) per optimizer step."),
              micro_batch: int | None = typer.Option(None, "--micro-batch", min=1, help="Samples per chip per "
                                                     "forward/backward (default: global batch / chips)."),
              seq_len: int | None = typer.Option(None, "--seq-len", min=1, help="LLMs: tokens per sequence."),
              optimizer: str = typer.Option("adamw", "--optimizer", help="adamw, lamb, sgd or adagrad."),
              precision: str | None = typer.Option(None, "--precision", help="fp32, bf16 (default), fp16 or fp8 "
                                                   "(mixed precision, fp32 master weights)."),
              zero: int = typer.Option(0, "--zero", min=0, max=3, help="ZeRO stage: 1 shards the optimizer state, "
                                       "2 the gradients too, 3 the weights too."),
              tp: int = typer.Option(1, "--tp", min=1, help="Tensor-parallel degree (zoo decoders); the other "
                                     "chips are data-parallel ranks."),
              pp: int = typer.Option(1, "--pp", min=1, help="Pipeline stages (zoo decoders; 1F1B schedule)."),
              virtual_stages: int = typer.Option(1, "--virtual-stages", min=1, help="Model chunks per pipeline "
                                                 "stage (Megatron's interleaved 1F1B; needs --pp > 1)."),
              recompute: str = typer.Option("none", "--recompute", help="Activation recompute: none or full."),
              lora_rank: int | None = typer.Option(None, "--lora-rank", min=1, help="Freeze the model and train "
                                                   "rank-r LoRA adapters on its qkv_proj and o_proj."),
              samples_to_converge: float | None = typer.Option(None, "--samples-to-converge",
                                                               help="Samples to reach the target: gives time to train."),
              engine: str = typer.Option("analytical", "--engine", help="analytical (any chip) or gpu (GPU presets)."),
              search_layouts: bool = typer.Option(False, "--search", help="Zoo decoders: enumerate TP x PP x DP, "
                                                  "ZeRO, micro-batch and recompute; rank the layouts that fit."),
              top: int = typer.Option(10, "--top", min=1, help="--search: how many layouts to show."),
              as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Predict a training step: forward, backward (from PyTorch autograd), optimizer and exposed
    data-parallel communication; throughput, MFU, memory per chip, energy, time to train."""
    from mtiasim.training import train

    if search_layouts:
        _train_search(model, system, global_batch, seq_len, precision, optimizer, top, as_json)
        return
    try:
        r = train(model, system=system, global_batch=global_batch, micro_batch=micro_batch, seq_len=seq_len,
                  optimizer=optimizer, precision=precision, zero_stage=zero, tp=tp, pp=pp,
                  virtual_stages=virtual_stages, recompute=recompute,
                  lora_rank=lora_rank, samples_to_converge=samples_to_converge, engine=engine)
    except (ChipError, CaptureError, OpError, ValueError, KeyError) as e:
        _fail(e)
    if as_json:
        _dump(r.to_dict())
        return
    from mtiasim.report.tables import training_table

    _print(training_table(r), r.notes)


def _train_search(model: str, system: str, global_batch: int | None, seq_len: int | None, precision: str | None,
                  optimizer: str, top: int, as_json: bool) -> None:
    from mtiasim.training.search import search

    if global_batch is None:
        _fail(ValueError("--search needs --global-batch"))
    try:
        with _progress(1) as step:
            res = search(model, system, global_batch, seq_len=seq_len, precision=precision, optimizer=optimizer,
                         top=top, progress=step)
    except (ChipError, CaptureError, ValueError, KeyError) as e:
        _fail(e)
    if as_json:
        _dump({**res.model_dump(mode="json"), "ranked": [r.to_dict() for r in res.ranked]})
        return
    from mtiasim.report.tables import search_table

    out.print(search_table(res))
