"""Data-parallel communication of a training step and how much of it the compute hides.

What moves (Rajbhandari et al., "ZeRO", SC'20, section 7, for Psi parameters): plain data
parallel all-reduces the gradients (2 Psi over the ring); ZeRO stages 1 and 2 reduce-scatter
the gradients and all-gather the updated weights (the same 2 Psi); stage 3 all-gathers the
weights in the forward and again in the backward and reduce-scatters the gradients (3 Psi), on
every micro-batch.

How it overlaps: as PyTorch DDP does, gradients are grouped in buckets of ``BUCKET_BYTES``
(``bucket_cap_mb=25``, the ``DistributedDataParallel`` default; a model-parallel layout runs as
Megatron-LM does, with its larger buckets, ``megatron_bucket_bytes``), each bucket's collective
launched as soon as the backward has produced it. Buckets are taken to become ready evenly
through the backward, and their collectives run one after another on the links; what is still
running when the backward ends is exposed. The weight all-gathers overlap the forward the
same way. Not modelled yet: collectives slowing the compute beside them (on GPUs NCCL runs on
SMs). The collectives themselves (rings, hierarchical across scale-up domains, trees between
domains for all-reduces) are ``system/collectives.py``'s."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from mtiasim.chips import ChipSpec
from mtiasim.system import collectives

BUCKET_BYTES = 25 * 2**20

Collective = Callable[[ChipSpec, float, int], float]


@dataclass(frozen=True)
class Overlap:
    total_s: float  # every bucket's collective, end to end
    exposed_s: float  # what runs past the compute's end


def megatron_bucket_bytes(dp: int, grad_bytes: float) -> float:
    """Megatron-LM's gradient bucket: max(40M, 1M x data-parallel size) parameters
    (``DistributedDataParallelConfig.bucket_size``'s default), large enough that the per-bucket
    latency of a ring over many ranks does not dominate."""
    return max(40e6, 1e6 * dp) * grad_bytes


def bucketed(compute_s: float, nbytes: float, collective: Collective, chip: ChipSpec, n: int,
             bucket_bytes: float = BUCKET_BYTES) -> Overlap:
    """``nbytes`` of ``collective`` in buckets of ``bucket_bytes``, each ready after its share of
    ``compute_s`` (the compute that produces or consumes it) and run one after another."""
    if n <= 1 or nbytes <= 0:
        return Overlap(0.0, 0.0)
    buckets = max(1, math.ceil(nbytes / bucket_bytes))
    per_bucket_s = collective(chip, nbytes / buckets, n)
    done = 0.0
    for i in range(buckets):
        done = max(done, compute_s * (i + 1) / buckets) + per_bucket_s
    return Overlap(buckets * per_bucket_s, done - compute_s)


@dataclass(frozen=True)
class SyncCost:
    total_s: float  # all collectives of the step, end to end
    exposed_s: float  # what the compute does not hide
    bytes_per_chip: float  # sent by each chip


def data_parallel_sync(chip: ChipSpec, *, dp: int, zero_stage: int, param_count: float, weight_bytes: float,
                       grad_bytes: float, forward_s: float, backward_s: float, micro_batches: int,
                       per_domain: int | None = None, bucket_bytes: float = BUCKET_BYTES) -> SyncCost:
    """The data-parallel collectives of one step over ``dp`` chips (see the module docstring);
    ``forward_s``/``backward_s`` are one micro-batch's; ``per_domain`` of the ``dp`` chips share
    a scale-up domain (``system/collectives.py``); gradients travel in ``bucket_bytes`` buckets."""
    if dp <= 1:
        return SyncCost(0.0, 0.0, 0.0)
    grads, weights = param_count * grad_bytes, param_count * weight_bytes
    ring = (dp - 1) / dp
    ag, rs, ar = (partial(f, per_domain=per_domain) for f in (collectives.allgather_s, collectives.reduce_scatter_s,
                                                              collectives.allreduce_s))
    if zero_stage == 0:
        parts = [bucketed(backward_s, grads, ar, chip, dp, bucket_bytes)]
        sent, repeats = 2 * ring * grads, 1
    elif zero_stage in (1, 2):
        parts = [bucketed(backward_s, grads, rs, chip, dp, bucket_bytes),
                 bucketed(forward_s, weights, ag, chip, dp, bucket_bytes)]
        sent, repeats = ring * (grads + weights), 1
    else:  # stage 3: per micro-batch, weights gathered for the forward and again for the backward
        def both(c: ChipSpec, nbytes: float, n: int) -> float:  # a bucket's all-gather and reduce-scatter
            return ag(c, nbytes * weight_bytes / grad_bytes, n) + rs(c, nbytes, n)

        parts = [bucketed(forward_s, weights, ag, chip, dp, bucket_bytes),
                 bucketed(backward_s, grads, both, chip, dp, bucket_bytes)]
        sent, repeats = ring * (2 * weights + grads), micro_batches
    return SyncCost(repeats * sum(p.total_s for p in parts), repeats * sum(p.exposed_s for p in parts),
                    repeats * sent)


def tensor_parallel_s(chip: ChipSpec, *, tp: int, layers: int, activation_bytes: float, recompute: bool) -> float:
    """Megatron tensor parallelism's collectives for one micro-batch (Shoeybi et al., 2019,
    section 3, Figure 4): per layer an all-reduce of the layer's output activations after the
    attention and after the MLP in the forward (operator g) and two of their gradients in the
    backward (operator f), 4 per layer; full recompute repeats the forward's 2. With sequence
    parallelism each all-reduce becomes a reduce-scatter and an all-gather, the same volume
    (Korthikanti et al., 2022, section 4.2.2). They sit between dependent GEMMs, so none is hidden
    here (overlapping them with the GEMMs, as NeMo's tp_comm_overlap does, is not modelled)."""
    if tp <= 1:
        return 0.0
    per_layer = 4 + (2 if recompute else 0)
    return layers * per_layer * collectives.allreduce_s(chip, activation_bytes, tp)


def embedding_exchange_s(chip: ChipSpec, *, chips: int, pooled_bytes: float) -> float:
    """Model-parallel embeddings for one micro-batch (Naumov et al., DLRM, arXiv 1906.00091,
    section 4; TorchRec's sharded EmbeddingBagCollection): tables are spread over the chips, so
    the pooled embeddings of a chip's samples come back in an all-to-all in the forward and their
    gradients go out in another in the backward. Not overlapped here (TorchRec's train pipeline
    can hide part of them behind the dense compute)."""
    if chips <= 1 or pooled_bytes <= 0:
        return 0.0
    return 2 * collectives.alltoall_s(chip, pooled_bytes, chips)


def pipeline_p2p_s(chip: ChipSpec, *, tp: int, pp: int, activation_bytes: float) -> float:
    """Stage-to-stage sends of a 1F1B step left on the critical path: the fill and the drain, one
    micro-batch's boundary activations forward and their gradients back over each of the p - 1
    boundaries (the steady state's sends overlap the compute). A pipeline replica of tp x pp
    chips larger than the scale-up domain sends over the scale-out link."""
    if pp <= 1 or activation_bytes <= 0:
        return 0.0
    size = chip.scale_up.domain_size.value if chip.scale_up and chip.scale_up.domain_size else None
    if size and tp * pp > size and chip.scale_out and chip.scale_out.bandwidth_bytes_per_s.value:
        one = collectives.p2p_s(chip, activation_bytes, chip.scale_out.bandwidth_bytes_per_s.value)
    else:
        one = collectives.p2p_s(chip, activation_bytes)
    return 2 * (pp - 1) * one
