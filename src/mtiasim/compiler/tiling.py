"""Tiling and mapping of GEMMs onto the compute units (PE grid or SMs).

A GEMM's M x N output is cut into the chip's per-unit tiles (``compute.gemm_tile``); tiles run in
waves over the ``compute.units`` units. When there are fewer tiles than units, K is split across
units (MTIA: K-split with the reduction engine, ISCA'23 [S] FC mapping; GPUs: split-K), as far as
K has tiles to split. Efficiency = (useful MACs / padded MACs) x (busy slots / all slots).
"""

from __future__ import annotations

import math
from functools import lru_cache

from mtiasim.chips.schema import ChipSpec
from mtiasim.compiler.program import GemmMapping
from mtiasim.graph.ops.base import GemmShape


@lru_cache(maxsize=65536)
def map_gemm(g: GemmShape, units: int, tm: int, tn: int, tk: int) -> GemmMapping:
    mt, nt, kt = math.ceil(g.m / tm), math.ceil(g.n / tn), math.ceil(g.k / tk)
    pad = (g.m * g.n * g.k) / (mt * tm * nt * tn * kt * tk)
    tiles = g.batch * mt * nt
    split = max(1, min(units // tiles, kt)) if tiles < units else 1
    work_items = tiles * split
    waves = math.ceil(work_items / units)
    return GemmMapping(g, tiles, split, waves, pad, work_items / (waves * units))


def tile_candidates(tm: int, tn: int) -> list[tuple[int, int]]:
    """The chip's tile and its halvings/transposes: kernel libraries (cuBLAS heuristics, the MTIA FC
    kernel selector of ISCA'25 section 4) pick among several block shapes per GEMM."""
    out = []
    for m, n in ((tm, tn), (tn, tm), (tm // 2, tn), (tm, tn // 2), (tm // 2, tn // 2)):
        if m >= 16 and n >= 16 and (m, n) not in out:
            out.append((m, n))
    return out


def map_gemm_on(chip: ChipSpec, g: GemmShape) -> GemmMapping:
    """Best mapping of ``g`` over the chip's tile candidates (ties go to the larger tile)."""
    t = chip.compute.gemm_tile
    return _best(g, int(chip.compute.units.value or 1), t.m, t.n, t.k)


@lru_cache(maxsize=65536)
def _best(g: GemmShape, units: int, tm: int, tn: int, tk: int) -> GemmMapping:
    best = None
    for m, n in tile_candidates(tm, tn):
        cand = map_gemm(g, units, m, n, tk)
        if best is None or cand.efficiency > best.efficiency + 1e-12:
            best = cand
    assert best is not None
    return best
