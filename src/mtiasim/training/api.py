"""``train(model, system, ...)``: one training step of any model on a data-parallel system, from
its autograd graph to step time, throughput, MFU, memory per chip, energy and time to train."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mtiasim.chips import ChipSpec
from mtiasim.compiler.quantize import compute_dtype
from mtiasim.frontend import hf, zoo
from mtiasim.frontend.zoo.llm import CausalLMLoss
from mtiasim.system.spec import SystemSpec
from mtiasim.training import optim
from mtiasim.training.capture import LossFn, TrainingGraph, capture_training
from mtiasim.training.cost import MicroBatchCost, extrapolate, micro_batch_cost, optimizer_cost
from mtiasim.training.memory import TrainingMemory, model_state_bytes
from mtiasim.training.report import StepBreakdown, TrainingReport
from mtiasim.training.sync import data_parallel_sync

#: bytes per parameter of (weights, gradients, fp32 master copy) by training precision: 16-bit and
#: FP8 training keep 16-bit weights and gradients beside fp32 master weights (ZeRO, section 3.1;
#: NVIDIA Transformer Engine keeps FP8 only for the GEMM operands)
PRECISIONS: dict[str, tuple[float, float, float]] = {
    "fp32": (4.0, 4.0, 0.0), "bf16": (2.0, 2.0, 4.0), "fp16": (2.0, 2.0, 4.0), "fp8": (2.0, 2.0, 4.0)}

_GRAPHS: dict[tuple, TrainingGraph] = {}


def _memo(key: tuple, build: Any) -> TrainingGraph:
    if key not in _GRAPHS:
        if len(_GRAPHS) >= 16:
            _GRAPHS.pop(next(iter(_GRAPHS)))
        _GRAPHS[key] = build()
    return _GRAPHS[key]


def _zoo_graphs(name: str, micro_batch: int, seq_len: int | None) -> tuple[list[TrainingGraph], int | None, str]:
    """Training graphs of a zoo model: for a decoder LLM one- and two-layer captures (the rest
    extrapolated, layers being identical), else the whole model. Returns (graphs, layers, name)."""
    entry = zoo.get(name)
    if entry.family != "llm":
        w = entry.build(batch=micro_batch, seq_len=seq_len)
        g = _memo((entry.name, micro_batch, seq_len), lambda: capture_training(w.module, w.example_inputs,
                                                                              name=entry.name))
        return [g], None, entry.name
    layers = int(entry.config()["n_layers"])
    graphs = []
    for depth in sorted({min(layers, 1), min(layers, 2)}):
        w = entry.build(batch=micro_batch, seq_len=seq_len, phase="prefill", n_layers=depth)
        labels = torch.zeros_like(w.example_inputs[0])
        graphs.append(_memo((entry.name, micro_batch, w.seq_len, depth), lambda w=w, labels=labels: capture_training(
            CausalLMLoss(w.module), (w.example_inputs[0], labels), name=entry.name)))
    return graphs, layers, entry.name


def _module_graph(module: torch.nn.Module, example_inputs: Sequence[Any] | None, micro_batch: int | None,
                  seq_len: int | None, loss_fn: LossFn | None) -> tuple[TrainingGraph, int, int | None]:
    was_training = module.training
    try:
        if example_inputs is None:
            if not hf.is_hf_model(module):
                raise ValueError("train(module, ...) needs example_inputs (one micro-batch; meta tensors work); "
                                 "a Hugging Face model takes micro_batch= and seq_len= instead")
            wrapped, inputs, meta = hf.wrap(module, micro_batch or 1, seq_len)
            g = capture_training(wrapped, inputs, loss_fn=loss_fn, name=meta["model"])
            return g, meta["batch"], meta["seq_len"]
        g = capture_training(module, example_inputs, loss_fn=loss_fn)
        first = next((t for t in example_inputs if isinstance(t, torch.Tensor) and t.dim() > 0), None)
        return g, int(first.shape[0]) if first is not None else 1, seq_len
    finally:
        module.train(was_training)


def _check(name: str, value: Any, *, lo: float = 1) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < lo):
        raise ValueError(f"{name} must be an integer >= {lo:g}, got {value!r}")


def train(model_or_name: str | torch.nn.Module, system: str | SystemSpec = "mtia-300:1",
          global_batch: int | None = None, *, example_inputs: Sequence[Any] | None = None,
          micro_batch: int | None = None, seq_len: int | None = None, optimizer: str = "adamw",
          precision: str | None = None, zero_stage: int = 0, loss_fn: LossFn | None = None,
          samples_to_converge: float | None = None, engine: str = "analytical",
          engine_options: Mapping[str, Any] | None = None) -> TrainingReport:
    """Predict one training step of ``model_or_name`` on ``system`` (``"CHIP:COUNT"``), every chip a
    data-parallel rank (ZeRO ``zero_stage`` 0-3).

    ``model_or_name`` is a zoo name (LLMs train as causal LMs on ``seq_len``-token sequences),
    a Hugging Face model (inputs from ``micro_batch`` and ``seq_len``) or any ``nn.Module`` with
    ``example_inputs`` for one micro-batch; its loss is its own scalar output, else ``loss_fn``,
    else a mean-square stand-in. ``global_batch`` samples per step (default: one micro-batch per
    chip) are split into micro-batches of ``micro_batch`` per chip with gradient accumulation.
    ``precision``: fp32, bf16, fp16 or fp8 (mixed precision with fp32 master weights; default
    bf16 for zoo models, fp32 for modules). ``samples_to_converge`` gives ``time_to_train_s``."""
    sys_spec = system if isinstance(system, SystemSpec) else SystemSpec.parse(system)
    chip: ChipSpec = sys_spec.load_chip()
    dp = sys_spec.count
    opt_cls = optim.get(optimizer)
    for n, v in (("global_batch", global_batch), ("micro_batch", micro_batch), ("seq_len", seq_len)):
        _check(n, v)
    _check("zero_stage", zero_stage, lo=0)
    if zero_stage > 3:
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage}")
    if samples_to_converge is not None and not (math.isfinite(samples_to_converge) and samples_to_converge > 0):
        raise ValueError(f"samples_to_converge must be a positive finite number, got {samples_to_converge}")

    if isinstance(model_or_name, str):
        entry = zoo.get(model_or_name)
        if micro_batch is None:
            micro_batch = global_batch // dp if global_batch and global_batch % dp == 0 else entry.default_batch
        seq_len = seq_len or (entry.default_seq_len if entry.family == "llm" else None)
        graphs, layers, name = _zoo_graphs(model_or_name, micro_batch, seq_len)
        precision = precision or "bf16"
        seq_len = seq_len if entry.family == "llm" else None
    elif isinstance(model_or_name, torch.nn.Module):
        g, mb, seq_len = _module_graph(model_or_name, example_inputs, micro_batch, seq_len, loss_fn)
        if micro_batch is not None and example_inputs is not None and micro_batch != mb:
            raise ValueError(f"micro_batch={micro_batch} but example_inputs hold a batch of {mb}; "
                             "example_inputs are one micro-batch")
        graphs, layers, name, micro_batch = [g], None, g.graph.name, mb
        precision = precision or "fp32"
    else:
        raise TypeError(f"model_or_name must be a zoo name or an nn.Module, got {type(model_or_name).__name__}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown training precision '{precision}'; known: {', '.join(PRECISIONS)}")

    global_batch = global_batch or micro_batch * dp
    if global_batch % (micro_batch * dp):
        raise ValueError(f"global_batch {global_batch} is not a multiple of micro_batch {micro_batch} x "
                         f"{dp} data-parallel chips")
    micro_batches = global_batch // (micro_batch * dp)

    run = dict(engine=engine, engine_options=engine_options, batch=micro_batch, seq_len=seq_len)
    costs = [micro_batch_cost(g, chip, precision, **run)[0] for g in graphs]
    mb: MicroBatchCost = extrapolate(costs[0], costs[1], layers) if len(costs) == 2 and layers else costs[-1]

    weight_b, grad_b, master_b = PRECISIONS[precision]
    trainable, frozen = int(mb.trainable_params), int(mb.frozen_params)
    weights, grads, opt_state = model_state_bytes(
        trainable, frozen, weight_bytes=weight_b, grad_bytes=grad_b, master_bytes=master_b,
        optimizer_state_bytes=optim.state_bytes_per_param(opt_cls.name), zero_stage=zero_stage, dp=dp)
    memory = TrainingMemory(weights=weights, gradients=grads, optimizer_state=opt_state,
                            activations=mb.activation_bytes)

    shard = trainable / dp if zero_stage >= 1 else trainable
    opt = optimizer_cost(opt_cls.name, shard, chip, engine=engine, engine_options=engine_options)
    sync = data_parallel_sync(chip, dp=dp, zero_stage=zero_stage, param_count=trainable, weight_bytes=weight_b,
                              grad_bytes=grad_b, forward_s=mb.forward_s, backward_s=mb.backward_s,
                              micro_batches=micro_batches)
    breakdown = StepBreakdown(forward=micro_batches * mb.forward_s, backward=micro_batches * mb.backward_s,
                              optimizer=opt.time_s, communication_exposed=sync.exposed_s, pipeline_bubble=0.0)
    step_s = (breakdown.forward + breakdown.backward + breakdown.optimizer + breakdown.communication_exposed
              + breakdown.pipeline_bubble)
    model_flops = mb.matrix_flops * micro_batches * dp
    peak = chip.peak(compute_dtype(chip, precision))
    energy = None if mb.energy_j is None or opt.energy_j is None else dp * (micro_batches * mb.energy_j + opt.energy_j)
    samples_per_s = global_batch / step_s
    capacity = chip.dram.capacity_bytes.value or 0.0
    notes = []
    if capacity and memory.total > capacity:
        notes.append(f"does not fit: {memory.total / 1e9:.1f} GB per chip (weights {weights / 1e9:.1f}, gradients "
                     f"{grads / 1e9:.1f}, optimizer {opt_state / 1e9:.1f}, activations "
                     f"{memory.activations / 1e9:.1f}) > {capacity / 1e9:.0f} GB on {chip.name}")
    if layers and len(costs) == 2:
        notes.append(f"{layers} layers extrapolated from one- and two-layer captures (identical layers)")
    return TrainingReport(
        model=name, system=sys_spec.name, chip=chip.name, chips=dp, engine=engine, precision=precision,
        optimizer=opt_cls.name, data_parallel=dp, zero_stage=zero_stage, global_batch=global_batch,
        micro_batch=micro_batch, micro_batches=micro_batches, seq_len=seq_len, trainable_params=trainable,
        frozen_params=frozen, step_time_s=step_s, breakdown_s=breakdown, communication_total_s=sync.total_s,
        samples_per_s=samples_per_s, tokens_per_s=samples_per_s * seq_len if seq_len else None,
        model_flops_per_step=model_flops, mfu=model_flops / (step_s * dp * peak) if peak else None,
        memory_per_chip_bytes=memory.total, memory_breakdown_bytes=memory, memory_capacity_bytes=capacity,
        fits=not capacity or memory.total <= capacity, energy_per_step_j=energy,
        samples_to_converge=samples_to_converge,
        time_to_train_s=samples_to_converge / samples_per_s if samples_to_converge else None, notes=notes)
