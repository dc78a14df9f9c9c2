"""Collective costs on a chip's scale-up link, and hierarchically over its scale-out link when a
group spans several scale-up domains (ring algorithms, alpha-beta model).

Ring all-reduce over n chips moves 2 (n-1)/n of the buffer over each link in 2 (n-1) steps; all-
to-all moves (n-1)/n in n-1 steps (Thakur, Rabenseifner and Gropp, IJHPCA 2005). The achievable
fraction of the link bandwidth and the per-step latency are calibration data
(``data/calibration/collectives.yaml``), with their sources."""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources

import yaml

from mtiasim.calibration import CalValue, Fraction
from mtiasim.chips import ChipSpec


@lru_cache(maxsize=1)
def _cal() -> dict[str, CalValue]:
    raw = yaml.safe_load(resources.files("mtiasim").joinpath("data", "calibration", "collectives.yaml").read_text())
    return {"link_efficiency": Fraction.model_validate(raw["link_efficiency"]),
            "step_latency_s": CalValue.model_validate(raw["step_latency_s"])}


def link_bandwidth_bytes_per_s(chip: ChipSpec) -> float:
    link = chip.scale_up or chip.host_link
    bw = link.bandwidth_bytes_per_s.value
    if not bw:
        raise ValueError(f"chip '{chip.name}': scale-up bandwidth is unknown; set scale_up.bandwidth_bytes_per_s")
    return bw


def _ring_s(bandwidth_bytes_per_s: float, nbytes: float, n: int, phases: int) -> float:
    """``phases`` passes of a ring over ``n`` chips: each pass moves (n-1)/n of ``nbytes`` over
    every link in n-1 steps (alpha-beta model)."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    c = _cal()
    return phases * ((n - 1) / n * nbytes / (bandwidth_bytes_per_s * c["link_efficiency"].value)
                     + (n - 1) * c["step_latency_s"].value)


def _tree_s(bandwidth_bytes_per_s: float, nbytes: float, n: int) -> float:
    """NCCL's double binary tree all-reduce (Jeaugey, "Massively Scale Your Deep Learning Training
    with NCCL 2.4", NVIDIA developer blog, 2019): the buffer goes up a tree and back down,
    pipelined, so each chip moves it about twice at full bandwidth, in 2 log2(n) steps instead of
    the ring's 2 (n - 1)."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    c = _cal()
    return (2 * nbytes / (bandwidth_bytes_per_s * c["link_efficiency"].value)
            + 2 * math.ceil(math.log2(n)) * c["step_latency_s"].value)


def _domains(chip: ChipSpec, n: int, per_domain: int | None) -> tuple[int, int, float] | None:
    """(group members per scale-up domain, domains, scale-out bandwidth per chip) when ``n`` chips
    span several scale-up domains joined by the chip's scale-out link; None within one domain.
    ``per_domain`` says how many of the group share a domain (a data-parallel group whose other
    chips hold other model shards has fewer than the domain's size; 1: one per domain)."""
    size = per_domain or (chip.scale_up.domain_size.value if chip.scale_up and chip.scale_up.domain_size else None)
    out = chip.scale_out.bandwidth_bytes_per_s.value if chip.scale_out else None
    if not size or not out or n <= size or n % int(size):
        return None
    return int(size), n // int(size), out


def _ring_phases_s(chip: ChipSpec, nbytes: float, n: int, phases: int, per_domain: int | None = None) -> float:
    """``phases`` ring passes over ``n`` chips. Across scale-up domains the pass is hierarchical,
    as NCCL runs it on rail-optimised clusters: within each domain over the scale-up link, then
    between domains over every chip's own scale-out NIC in parallel, each carrying 1/g of the
    buffer (g group members per domain), then within the domain again. Between domains a full
    all-reduce (two passes) takes NCCL's tree where that is faster."""
    spans = _domains(chip, n, per_domain)
    if spans is None:
        return _ring_s(link_bandwidth_bytes_per_s(chip), nbytes, n, phases)
    g, domains, out_bw = spans
    inside = _ring_s(link_bandwidth_bytes_per_s(chip), nbytes, g, phases)
    between = _ring_s(out_bw, nbytes / g, domains, phases)
    if phases == 2:
        between = min(between, _tree_s(out_bw, nbytes / g, domains))
    return inside + between


def allreduce_s(chip: ChipSpec, nbytes: float, n: int, per_domain: int | None = None) -> float:
    """All-reduce: a ring reduce-scatter then an all-gather (two passes)."""
    return _ring_phases_s(chip, nbytes, n, 2, per_domain)


def alltoall_s(chip: ChipSpec, nbytes: float, n: int, per_domain: int | None = None) -> float:
    """All-to-all of ``nbytes`` per chip: (n-1)/n of it leaves each chip (one pass). Across
    scale-up domains the (n-g)/n bound for other domains leaves over the chip's scale-out link,
    which then sets the time."""
    spans = _domains(chip, n, per_domain)
    if spans is None:
        return _ring_s(link_bandwidth_bytes_per_s(chip), nbytes, n, 1)
    g, _, out_bw = spans
    c = _cal()
    return (n - g) / n * nbytes / (out_bw * c["link_efficiency"].value) + (n - 1) * c["step_latency_s"].value


def reduce_scatter_s(chip: ChipSpec, nbytes: float, n: int, per_domain: int | None = None) -> float:
    """Ring reduce-scatter of ``nbytes`` per chip: half an all-reduce (one pass)."""
    return _ring_phases_s(chip, nbytes, n, 1, per_domain)


def allgather_s(chip: ChipSpec, nbytes: float, n: int, per_domain: int | None = None) -> float:
    """Ring all-gather producing ``nbytes`` on every chip: one pass, as a reduce-scatter."""
    return _ring_phases_s(chip, nbytes, n, 1, per_domain)


def p2p_s(chip: ChipSpec, nbytes: float, bandwidth_bytes_per_s: float | None = None) -> float:
    """One point-to-point send between neighbouring chips (a pipeline stage boundary), over the
    scale-up link unless ``bandwidth_bytes_per_s`` names another."""
    if nbytes <= 0:
        return 0.0
    c = _cal()
    bw = bandwidth_bytes_per_s or link_bandwidth_bytes_per_s(chip)
    return nbytes / (bw * c["link_efficiency"].value) + c["step_latency_s"].value
