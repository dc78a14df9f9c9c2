"""Memory per chip for training: model states (weights, gradients, optimizer state, sharded by
ZeRO stage) and the activations a step keeps alive.

Model states follow Rajbhandari et al., "ZeRO", SC'20, section 3.1: mixed-precision Adam keeps
2 bytes of 16-bit weights and 2 of 16-bit gradients per parameter plus K = 12 bytes of fp32
master weights, momentum and variance (here: 4 for the master copy plus 4 per optimizer state).
ZeRO stage 1 partitions the optimizer state (and master weights) over the data-parallel
ranks, stage 2 the gradients too, stage 3 the weights too (section 5).

Activations are measured on the joint graph, not estimated: walking its nodes in order, a
tensor is allocated when produced and freed after its last use (views share their base's
storage); the peak of the live bytes is the activation memory, the forward's saved tensors
included. Parameters, inputs and the gradients (counted above) are left out. Floating-point
activations are counted at ``act_bytes`` per element, the precision the step runs in."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mtiasim.compiler.fusion import view_bases
from mtiasim.graph.dtypes import FLOAT_DTYPES, nbytes
from mtiasim.training.capture import TrainingGraph


class TrainingMemory(BaseModel):
    """Bytes per chip."""

    model_config = ConfigDict(extra="forbid")
    weights: float = Field(ge=0, description="parameters in the compute precision (trainable and frozen)")
    gradients: float = Field(ge=0)
    optimizer_state: float = Field(ge=0, description="fp32 master weights (mixed precision) and optimizer state")
    activations: float = Field(ge=0, description="peak live activations of one micro-batch's forward and backward")

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer_state + self.activations


def activation_peak_bytes(tg: TrainingGraph, act_bytes: float, sequence_split: tuple[int, int] | None = None
                          ) -> float:
    """Peak live activation bytes over the joint graph (see the module docstring).

    ``sequence_split = (hidden, tp)``: Megatron sequence parallelism (Korthikanti et al., "Reducing
    Activation Recomputation in Large Transformer Models", 2022, section 4.2.2) splits the tensors
    outside the tensor-parallel regions, the residual stream and the norms' inputs and outputs,
    along the sequence over the ``tp`` chips: in a shard's graph those are the activations whose
    last dimension is the model width ``hidden``, counted at 1/tp."""
    g = tg.graph
    base = view_bases(g)
    skip = {t for t, s in g.tensors.items() if s.kind != "activation"} | set(tg.grads.values())
    last: dict[str, int] = {}
    for i, node in enumerate(g.nodes):
        for t in node.inputs:
            last[base.get(t, t)] = i
    for t in g.outputs:
        last[base.get(t, t)] = len(g.nodes)

    def size(t: str) -> float:
        s = g.tensors[t]
        b = s.numel * (act_bytes if s.dtype in FLOAT_DTYPES else nbytes(s.dtype))
        if sequence_split and len(s.shape) >= 2 and s.shape[-1] == sequence_split[0]:
            b /= sequence_split[1]
        return b

    live = peak = 0.0
    frees: dict[int, float] = {}
    for i, node in enumerate(g.nodes):
        for t in node.outputs:
            if t in base or t in skip or t not in g.tensors:
                continue  # a view (no storage of its own), a gradient, or not a tensor
            b = size(t)
            live += b
            end = last.get(t, i)  # an unused output is freed at once
            frees[end] = frees.get(end, 0.0) + b
        peak = max(peak, live)
        live -= frees.pop(i, 0.0)
    return peak


def model_state_bytes(trainable: int, frozen: int, *, weight_bytes: float, grad_bytes: float,
                      master_bytes: float, optimizer_state_bytes: float, zero_stage: int, dp: int
                      ) -> tuple[float, float, float]:
    """(weights, gradients, optimizer state) per chip for ``trainable`` + ``frozen`` parameters,
    ``*_bytes`` per parameter, partitioned over ``dp`` ranks by ZeRO ``zero_stage`` (0-3)."""
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage}")
    opt = trainable * (master_bytes + optimizer_state_bytes) / (dp if zero_stage >= 1 else 1)
    grads = trainable * grad_bytes / (dp if zero_stage >= 2 else 1)
    weights = (trainable + frozen) * weight_bytes / (dp if zero_stage >= 3 else 1)
    return weights, grads, opt
