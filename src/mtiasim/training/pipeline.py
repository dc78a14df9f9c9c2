"""Pipeline parallelism: a decoder's layers split into ``pp`` stages run by the 1F1B schedule
(Narayanan et al., "Efficient Large-Scale Language Model Training on GPU Clusters Using
Megatron-LM", SC'21, section 2.2).

With m micro-batches per step and stage times t_f, t_b, a step takes (m + (p - 1) / v)(t_f + t_b):
the pipeline bubble is (p - 1)(t_f + t_b) / v, v the interleaved schedule's virtual stages per chip
(section 2.2.2; v = 1 is plain 1F1B). The first stage holds the activations of p micro-batches in
flight (section 2.2.1). The stage that sets the pace holds ceil(L/p) layers plus the embedding and
the loss head (a slight overestimate when a submitter balances them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from mtiasim.training.cost import MicroBatchCost


def stage_layers(layers: int, pp: int) -> int:
    """Layers on the fullest stage: ceil(L / p) (stages need not be equal)."""
    return math.ceil(layers / pp)


def stage_cost(whole: MicroBatchCost, one: MicroBatchCost, two: MicroBatchCost, layers: int, pp: int
               ) -> MicroBatchCost:
    """The slowest stage's cost of one micro-batch: its ceil(L/p) layers (each c(2) - c(1)) plus
    the non-layer part (c(1) minus a layer), parameters included."""
    if pp == 1:
        return whole
    n = stage_layers(layers, pp)

    def share(field: str) -> float:
        a, b = getattr(one, field), getattr(two, field)
        per_layer = b - a
        return max(0.0, a - per_layer) + n * per_layer

    return replace(whole, **{f: share(f) for f in ("forward_s", "backward_s", "activation_bytes", "trainable_params",
                                                    "frozen_params")})


@dataclass(frozen=True)
class Schedule:
    forward_s: float
    backward_s: float
    bubble_s: float
    in_flight: int  # micro-batches whose activations the first stage holds


def one_f_one_b(stage: MicroBatchCost, micro_batches: int, pp: int, virtual: int = 1) -> Schedule:
    bubble = (pp - 1) / virtual * (stage.forward_s + stage.backward_s)
    return Schedule(micro_batches * stage.forward_s, micro_batches * stage.backward_s, bubble,
                    min(pp, micro_batches))
