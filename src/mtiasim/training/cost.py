"""What one micro-batch's forward and backward and one optimizer step cost on one chip: the joint
graph compiled and run by an engine, its kernels split into forward and backward by the loss's
dependencies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from mtiasim.chips import ChipSpec
from mtiasim.compiler import CompileOptions, compile
from mtiasim.compiler.quantize import activation_dtype
from mtiasim.engines import get_engine
from mtiasim.engines.result import Result
from mtiasim.graph.dtypes import nbytes
from mtiasim.training import optim
from mtiasim.training.capture import TrainingGraph
from mtiasim.training.memory import activation_peak_bytes


@dataclass(frozen=True)
class MicroBatchCost:
    """One micro-batch on one chip. Every field is additive over identical layers, so a deep
    model's cost follows from one- and two-layer captures (:func:`extrapolate`)."""

    forward_s: float
    backward_s: float
    matrix_flops: float  # on the matrix engine, forward and backward
    flops: float  # all arithmetic
    energy_j: float | None
    activation_bytes: float
    trainable_params: float
    frozen_params: float
    sparse_params: float = 0.0  # embedding tables updated in the fused TBE backward
    sparse_rows: float = 0.0
    pooled_embedding_elements: float = 0.0


def _run(program: Any, engine: str, engine_options: Mapping[str, Any] | None, **meta: Any) -> Result:
    return get_engine(engine)(program, **(engine_options or {})).run(**meta)


def micro_batch_cost(tg: TrainingGraph, chip: ChipSpec, precision: str, *, engine: str = "analytical",
                     engine_options: Mapping[str, Any] | None = None, batch: int = 1,
                     seq_len: int | None = None, sequence_split: tuple[int, int] | None = None
                     ) -> tuple[MicroBatchCost, Result]:
    program = compile(tg.graph, chip, CompileOptions(dtype=precision), default_dtype=precision)
    r = _run(program, engine, engine_options, model=tg.graph.name, phase="train", batch=batch, seq_len=seq_len,
             kv_len=None, dtype=precision, items=batch, item_unit="sample")
    fwd = sum(o.time_s for o in r.ops if o.name in tg.forward)
    cost = MicroBatchCost(
        forward_s=fwd, backward_s=r.latency_s - fwd,
        matrix_flops=sum(k.work.matrix_flops for k in program.kernels), flops=r.flops, energy_j=r.energy_j,
        activation_bytes=activation_peak_bytes(tg, nbytes(activation_dtype(precision)), sequence_split),
        trainable_params=tg.trainable_params, frozen_params=tg.frozen_params, sparse_params=tg.sparse_params,
        sparse_rows=tg.sparse_rows, pooled_embedding_elements=tg.pooled_embedding_elements)
    return cost, r


def extrapolate(one: MicroBatchCost, two: MicroBatchCost, layers: int) -> MicroBatchCost:
    """The cost of ``layers`` identical layers from captures with one and two:
    c(L) = c(1) + (L - 1) (c(2) - c(1)), field by field."""
    vals: dict[str, Any] = {}
    for f in fields(MicroBatchCost):
        a, b = getattr(one, f.name), getattr(two, f.name)
        vals[f.name] = None if a is None or b is None else a + (layers - 1) * (b - a)
    return replace(one, **vals)


@dataclass(frozen=True)
class OptimizerCost:
    time_s: float
    energy_j: float | None


def optimizer_cost(name: str, numel: float, chip: ChipSpec, *, engine: str = "analytical",
                   engine_options: Mapping[str, Any] | None = None) -> OptimizerCost:
    """One optimizer step over a shard of ``numel`` parameters, in fp32 (master weights)."""
    if numel <= 0:
        return OptimizerCost(0.0, 0.0)
    graph = optim.update_graph(name, int(numel))
    program = compile(graph, chip, CompileOptions(dtype="fp32", fuse_regions=[optim.FUSED_REGION]),
                      default_dtype="fp32")
    r = _run(program, engine, engine_options, model=graph.name, phase="optimizer", batch=1, seq_len=None,
             kv_len=None, dtype="fp32", items=1, item_unit="step")
    return OptimizerCost(r.latency_s, r.energy_j)


def full_recompute(cost: MicroBatchCost, one: MicroBatchCost, two: MicroBatchCost, layers: int,
                   layer_input_bytes: float) -> MicroBatchCost:
    """Full activation recompute (Chen et al., "Training Deep Nets with Sublinear Memory Cost",
    2016; Megatron's ``--recompute-granularity full``): each layer keeps only its input and runs its
    forward again in the backward. Activations: the non-layer part (embeddings, loss) plus one
    layer's full set plus every layer's input; backward time gains one forward (the loss head's
    forward is counted too, a slight overestimate); energy grows with the time."""
    per_layer = two.activation_bytes - one.activation_bytes
    base = one.activation_bytes - per_layer
    backward = cost.backward_s + cost.forward_s
    grow = (cost.forward_s + backward) / (cost.forward_s + cost.backward_s) if cost.backward_s else 1.0
    return replace(cost, backward_s=backward, energy_j=None if cost.energy_j is None else cost.energy_j * grow,
                   activation_bytes=max(0.0, base) + per_layer + layers * layer_input_bytes)
