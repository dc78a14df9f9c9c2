"""``train(model, system, ...)``: one training step of any model on a system of tensor- and
data-parallel chips, from its autograd graph to step time, throughput, MFU, memory per chip,
energy and time to train."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mtiasim.chips import ChipSpec
from mtiasim.compiler.quantize import activation_dtype, compute_dtype
from mtiasim.fleet import average_chip_power_w, system_cost
from mtiasim.frontend import zoo
from mtiasim.graph.dtypes import nbytes
from mtiasim.system.spec import SystemSpec
from mtiasim.training import optim
from mtiasim.training.capture import LossFn
from mtiasim.training.cost import (
    MicroBatchCost,
    extrapolate,
    full_recompute,
    micro_batch_cost,
    optimizer_cost,
)
from mtiasim.training.lora import DEFAULT_TARGETS
from mtiasim.training.memory import TrainingMemory, model_state_bytes
from mtiasim.training.pipeline import one_f_one_b, stage_cost, stage_layers
from mtiasim.training.report import StepBreakdown, TrainingReport
from mtiasim.training.sync import (
    BUCKET_BYTES,
    data_parallel_sync,
    embedding_exchange_s,
    megatron_bucket_bytes,
    pipeline_p2p_s,
    tensor_parallel_s,
)
from mtiasim.training.workload import Trainee, module_trainee, zoo_trainee

#: bytes per parameter of (weights, gradients, fp32 master copy) by training precision: 16-bit and
#: FP8 training keep 16-bit weights and gradients beside fp32 master weights (ZeRO, section 3.1;
#: NVIDIA Transformer Engine keeps FP8 only for the GEMM operands)
PRECISIONS: dict[str, tuple[float, float, float]] = {
    "fp32": (4.0, 4.0, 0.0), "bf16": (2.0, 2.0, 4.0), "fp16": (2.0, 2.0, 4.0), "fp8": (2.0, 2.0, 4.0)}
RECOMPUTE = ("none", "full")


def _check_int(name: str, value: Any, *, lo: int = 1) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < lo):
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")


def _trainee(model_or_name: Any, *, dp: int, tp: int, global_batch: int | None, micro_batch: int | None,
             seq_len: int | None, example_inputs: Sequence[Any] | None, loss_fn: LossFn | None,
             lora_rank: int | None, lora_targets: Sequence[str]) -> Trainee:
    if isinstance(model_or_name, str):
        given = [n for n, v in (("example_inputs", example_inputs), ("loss_fn", loss_fn)) if v is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} apply to a module you pass; the zoo model {model_or_name!r} "
                             "builds its own inputs and loss (from micro_batch and seq_len)")
        entry = zoo.get(model_or_name)
        if micro_batch is None:
            micro_batch = global_batch // dp if global_batch and global_batch % dp == 0 else entry.default_batch
        if entry.family == "llm":
            seq_len = seq_len or entry.default_seq_len
        return zoo_trainee(model_or_name, micro_batch, seq_len, tp=tp, lora_rank=lora_rank, lora_targets=lora_targets)
    if isinstance(model_or_name, torch.nn.Module):
        if tp > 1:
            raise ValueError("tensor parallelism is modelled for the zoo's decoder LLMs only (tp=1 for a module)")
        if lora_rank:
            raise ValueError("lora_rank applies to zoo models; add the adapters to your module (training/lora.py)")
        return module_trainee(model_or_name, example_inputs, micro_batch, seq_len, loss_fn)
    raise TypeError(f"model_or_name must be a zoo name or an nn.Module, got {type(model_or_name).__name__}")


def train(model_or_name: str | torch.nn.Module, system: str | SystemSpec = "mtia-300:1",
          global_batch: int | None = None, *, example_inputs: Sequence[Any] | None = None,
          micro_batch: int | None = None, seq_len: int | None = None, optimizer: str = "adamw",
          precision: str | None = None, zero_stage: int = 0, tp: int = 1, pp: int = 1, virtual_stages: int = 1,
          sequence_parallel: bool = True, recompute: str = "none", lora_rank: int | None = None,
          lora_targets: Sequence[str] = DEFAULT_TARGETS, loss_fn: LossFn | None = None,
          samples_to_converge: float | None = None, engine: str = "analytical",
          engine_options: Mapping[str, Any] | None = None) -> TrainingReport:
    """Predict one training step of ``model_or_name`` on ``system`` (``"CHIP:COUNT"``): ``tp``-way
    tensor-parallel groups and ``pp`` pipeline stages (zoo decoders; 1F1B, ``virtual_stages`` for
    the interleaved schedule), the rest data-parallel ranks (ZeRO ``zero_stage`` 0-3).

    ``model_or_name`` is a zoo name (LLMs train as causal LMs on ``seq_len``-token sequences),
    a Hugging Face model (inputs from ``micro_batch`` and ``seq_len``) or any ``nn.Module`` with
    ``example_inputs`` for one micro-batch; its loss is its own scalar output, else ``loss_fn``,
    else a mean-square stand-in. ``global_batch`` samples per step (default: one micro-batch per
    data-parallel rank) are split into micro-batches of ``micro_batch`` per rank with gradient
    accumulation. ``precision``: fp32, bf16, fp16 or fp8 (mixed precision with fp32 master
    weights; default bf16 for zoo models, fp32 for modules). ``recompute``: none or full (zoo
    decoders). With ``tp`` > 1 the residual stream is split along the sequence
    (``sequence_parallel``, Megatron's default with TP; same communication volume). ``lora_rank``
    freezes the model and trains rank-r adapters on ``lora_targets``. ``samples_to_converge``
    gives ``time_to_train_s``."""
    sys_spec = system if isinstance(system, SystemSpec) else SystemSpec.parse(system)
    chip: ChipSpec = sys_spec.load_chip()
    opt_cls = optim.get(optimizer)
    _check_args(sys_spec.count, global_batch=global_batch, micro_batch=micro_batch, seq_len=seq_len, tp=tp, pp=pp,
                virtual_stages=virtual_stages, zero_stage=zero_stage, recompute=recompute,
                samples_to_converge=samples_to_converge)
    dp = sys_spec.count // (tp * pp)
    precision = precision or ("bf16" if isinstance(model_or_name, str) else "fp32")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown training precision '{precision}'; known: {', '.join(PRECISIONS)}")

    job = _trainee(model_or_name, dp=dp, tp=tp, global_batch=global_batch, micro_batch=micro_batch, seq_len=seq_len,
                   example_inputs=example_inputs, loss_fn=loss_fn, lora_rank=lora_rank, lora_targets=lora_targets)
    if pp > 1 and (job.layers is None or job.layers < pp * virtual_stages):
        raise ValueError(f"pp={pp} x virtual_stages={virtual_stages} needs a zoo decoder with at least that many "
                         f"layers ({job.layers if job.layers is not None else 'not a zoo decoder'})")
    micro_batch = job.micro_batch
    global_batch = global_batch or micro_batch * dp
    if global_batch % (micro_batch * dp):
        raise ValueError(f"global_batch {global_batch} is not a multiple of micro_batch {micro_batch} x "
                         f"{dp} data-parallel ranks")
    micro_batches = global_batch // (micro_batch * dp)

    split = (job.hidden, tp) if tp > 1 and sequence_parallel and job.hidden else None
    run = dict(engine=engine, engine_options=engine_options, batch=micro_batch, seq_len=job.seq_len,
               sequence_split=split)
    costs = [micro_batch_cost(g, chip, precision, **run)[0] for g in job.graphs]
    deep = job.layers is not None and len(costs) == 2
    mb: MicroBatchCost = extrapolate(costs[0], costs[1], job.layers) if deep else costs[-1]
    act_bytes = nbytes(activation_dtype(precision))
    layer_io = micro_batch * (job.seq_len or 0) * (job.hidden or 0) * act_bytes  # a layer's input (or output)
    stage = stage_cost(mb, costs[0], costs[-1], job.layers or 1, pp)
    if recompute == "full":
        if not deep:
            raise ValueError("recompute='full' needs a zoo decoder (its layers are where activations are dropped)")
        stage = full_recompute(stage, costs[0], costs[1], stage_layers(job.layers, pp), layer_io / (tp if split else 1))
    sched = one_f_one_b(stage, micro_batches, pp, virtual_stages)

    weight_b, grad_b, master_b = PRECISIONS[precision]
    dense = stage.trainable_params - stage.sparse_params  # embedding tables: updated in the TBE backward, sharded
    weights, grads, opt_state = model_state_bytes(
        dense, stage.frozen_params, weight_bytes=weight_b, grad_bytes=grad_b, master_bytes=master_b,
        optimizer_state_bytes=optim.state_bytes_per_param(opt_cls.name), zero_stage=zero_stage, dp=dp)
    weights += stage.sparse_params * weight_b / sys_spec.count
    opt_state += stage.sparse_rows * 4.0 / sys_spec.count  # a rowwise-Adagrad accumulator per row
    memory = TrainingMemory(weights=weights, gradients=grads, optimizer_state=opt_state,
                            activations=stage.activation_bytes * sched.in_flight)

    opt = optimizer_cost(opt_cls.name, dense / dp if zero_stage >= 1 else dense, chip, engine=engine,
                         engine_options=engine_options)
    domain = chip.scale_up.domain_size.value if chip.scale_up and chip.scale_up.domain_size else None
    sync = data_parallel_sync(chip, dp=dp, zero_stage=zero_stage, param_count=dense, weight_bytes=weight_b,
                              grad_bytes=grad_b, forward_s=stage.forward_s, backward_s=stage.backward_s,
                              micro_batches=micro_batches,  # a DP group's members per scale-up domain:
                              per_domain=max(1, int(domain) // (tp * pp)) if domain else None,
                              bucket_bytes=megatron_bucket_bytes(dp, grad_b) if tp * pp > 1 else BUCKET_BYTES)
    comm = (micro_batches * tensor_parallel_s(chip, tp=tp, layers=stage_layers(job.layers or 0, pp),
                                              activation_bytes=layer_io,
                                              recompute=recompute == "full")
            + micro_batches * embedding_exchange_s(chip, chips=sys_spec.count,
                                                   pooled_bytes=stage.pooled_embedding_elements * act_bytes)
            + pipeline_p2p_s(chip, tp=tp, pp=pp, activation_bytes=layer_io / (tp if split else 1)))
    breakdown = StepBreakdown(forward=sched.forward_s, backward=sched.backward_s, optimizer=opt.time_s,
                              communication_exposed=sync.exposed_s + comm, pipeline_bubble=sched.bubble_s)
    step_s = sum(breakdown.model_dump().values())
    replicas = micro_batches * dp * tp  # whole-model micro-batches of one TP shard, over the step
    model_flops = replicas * mb.matrix_flops  # recompute's repeated forward not counted
    peak = chip.peak(compute_dtype(chip, precision))
    energy = None if mb.energy_j is None or opt.energy_j is None else (
        replicas * mb.energy_j + sys_spec.count * opt.energy_j)
    samples_per_s = global_batch / step_s
    chip_w = average_chip_power_w(chip, energy_j=energy, chips=sys_spec.count, duration_s=step_s,
                                  static_counted_s=replicas * (mb.forward_s + mb.backward_s)
                                  + sys_spec.count * opt.time_s)
    run_cost = system_cost(chip, chips=sys_spec.count, chip_power_w=chip_w, throughput_per_s=samples_per_s)
    capacity = chip.dram.capacity_bytes.value or 0.0
    notes = list(job.notes)
    if capacity and memory.total > capacity:
        notes.insert(0, f"does not fit: {memory.total / 1e9:.1f} GB per chip (weights {weights / 1e9:.1f}, gradients "
                     f"{grads / 1e9:.1f}, optimizer {opt_state / 1e9:.1f}, activations "
                     f"{memory.activations / 1e9:.1f}) > {capacity / 1e9:.0f} GB on {chip.name}")
    if deep:
        notes.append(f"{job.layers} layers extrapolated from one- and two-layer captures (identical layers)")
    return TrainingReport(
        model=job.name, system=sys_spec.name, chip=chip.name, chips=sys_spec.count, engine=engine,
        precision=precision, optimizer=opt_cls.name, data_parallel=dp, tensor_parallel=tp, pipeline_parallel=pp,
        virtual_stages=virtual_stages, sequence_parallel=split is not None, zero_stage=zero_stage,
        recompute=recompute, global_batch=global_batch, micro_batch=micro_batch, micro_batches=micro_batches,
        seq_len=job.seq_len, trainable_params=int(mb.trainable_params), frozen_params=int(mb.frozen_params),
        step_time_s=step_s, breakdown_s=breakdown, communication_total_s=sync.total_s + comm,
        samples_per_s=samples_per_s, tokens_per_s=samples_per_s * job.seq_len if job.seq_len else None,
        model_flops_per_step=model_flops, mfu=model_flops / (step_s * sys_spec.count * peak) if peak else None,
        memory_per_chip_bytes=memory.total, memory_breakdown_bytes=memory, memory_capacity_bytes=capacity,
        fits=not capacity or memory.total <= capacity, energy_per_step_j=energy, cost=run_cost,
        samples_to_converge=samples_to_converge,
        time_to_train_s=samples_to_converge / samples_per_s if samples_to_converge else None, notes=notes)


def _check_args(count: int, *, global_batch: int | None, micro_batch: int | None, seq_len: int | None, tp: int,
                pp: int, virtual_stages: int, zero_stage: int, recompute: str,
                samples_to_converge: float | None) -> None:
    for n, v in (("global_batch", global_batch), ("micro_batch", micro_batch), ("seq_len", seq_len), ("tp", tp),
                 ("pp", pp), ("virtual_stages", virtual_stages)):
        _check_int(n, v)
    if zero_stage not in (0, 1, 2, 3) or isinstance(zero_stage, bool):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    if recompute not in RECOMPUTE:
        raise ValueError(f"recompute must be one of {', '.join(RECOMPUTE)}, got {recompute!r}")
    if samples_to_converge is not None and not (math.isfinite(samples_to_converge) and samples_to_converge > 0):
        raise ValueError(f"samples_to_converge must be a positive finite number, got {samples_to_converge}")
    if count % (tp * pp):
        raise ValueError(f"tp={tp} x pp={pp} does not divide the system's {count} chips")
