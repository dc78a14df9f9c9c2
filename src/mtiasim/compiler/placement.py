"""Memory placement: what lives in on-chip SRAM and what streams from DRAM.

Policy (ISCA'25 section 5.4's LLS/LLC autotune, simplified):
1. Weights (parameters of non-embedding ops) are pinned in a software-managed SRAM (MTIA's
   LLS/LLC, a scratchpad) first-fit-decreasing, within
   the SRAM left after reserving room for the largest kernel's activations (at most half the
   SRAM, so activation-heavy graphs still pin some weights; a policy choice, like the LLS/LLC
   split a user tunes). Pinned weights are read from SRAM on every run; the rest stream from
   DRAM once per run. A hardware-managed cache (a GPU's L2, AMD's Infinity Cache) pins nothing:
   a model's weights pass through it once per run and are evicted by the next layer's, so they
   stream from DRAM (measured: back-to-back GEMMs on an H100 stream their weights at the same rate
   whatever their size, ``data/calibration/measured``).
2. Activations whose size fits the activation reserve (shared by the copies of the program that
   run at once, ``CompileOptions.concurrent_batches``) live in SRAM; larger ones go to DRAM, and
   so do the graph's outputs, which leave the program (measured: an L2-sized copy on an H100
   runs at HBM speed, not L2 speed). A KV-cache append's output is the cache itself: it is read
   from and written to DRAM, whatever its size.
3. Embedding tables: a table that fits the SRAM left over is served from SRAM; otherwise a
   fraction ``max(sparse_sram_hit_fraction, free/table)`` of its row reads hit SRAM (hot rows,
   LLC) and the rest are random DRAM reads.
4. CPU-fallback kernels move their inputs and outputs over the host link.
Graph inputs (features, token ids, the KV cache) start in DRAM.
"""

from __future__ import annotations

from mtiasim.calibration import ChipCalibration
from mtiasim.chips.schema import ChipSpec
from mtiasim.compiler.program import Kernel, Traffic
from mtiasim.graph.ir import Graph

SOFTWARE_MANAGED = ("llc_lls", "scratchpad")


def plan(graph: Graph, chip: ChipSpec, kernels: list[Kernel], base: dict[str, str], cal: ChipCalibration,
         pin_weights: bool, concurrent: int = 1) -> tuple[float, float]:
    """Fill each kernel's ``traffic``. Returns (sram bytes pinned by weights, activation reserve).

    ``concurrent`` copies of the program run at once on the chip (a serving harness's inference
    streams): they share the weights but each needs its own activations, so each gets
    1/``concurrent`` of the activation room."""
    sram = chip.sram_bytes
    gathered = {base.get(t, t) for k in kernels for t in k.work.gather}
    largest_kernel = max((sum(graph.tensors[t].nbytes for t in k.work.bytes_read
                              if graph.tensors[base.get(t, t)].kind == "activation")
                          + sum(k.work.bytes_written.values()) for k in kernels), default=0.0)
    reserve = min(largest_kernel, sram / 2 / concurrent)
    weights = sorted(((graph.tensors[t].nbytes, t) for t in graph.params() if t not in gathered), reverse=True)
    pinned: set[str] = set()
    free = sram - reserve * concurrent
    if pin_weights and chip.sram is not None and chip.sram.kind in SOFTWARE_MANAGED:
        for size, t in weights:
            if size <= free:
                pinned.add(t)
                free -= size
    pinned_bytes = sram - reserve * concurrent - free

    outputs = set(graph.outputs)  # the program's results leave it through DRAM
    # a KV-cache append writes into the cache, which lives in DRAM: what reads it reads DRAM
    caches = {base.get(o, o) for k in kernels for n in k.nodes if n.op == "kv_append" for o in n.outputs}
    for k in kernels:
        tr = Traffic()
        if k.on_host:
            tr.host_bytes = k.work.bytes
            k.traffic = tr
            continue
        for t, b in k.work.bytes_read.items():
            root = base.get(t, t)
            spec = graph.tensors[root]
            if t in k.work.gather:
                table = spec.nbytes
                hit = 1.0 if table <= free else max(cal.sparse_sram_hit_fraction, free / table if table else 1.0)
                hit = hit if sram > 0 else 0.0
                tr.sram_bytes += b * hit
                tr.dram_gather_bytes += b * (1.0 - hit)
            elif root in pinned:
                tr.sram_bytes += b
            elif spec.kind == "activation" and spec.nbytes <= reserve and root not in caches:
                tr.sram_bytes += b
            else:
                tr.dram_bytes += b
        for t, b in k.work.bytes_written.items():
            root = base.get(t, t)
            spec = graph.tensors[root]
            if spec.kind == "activation" and spec.nbytes <= reserve and root not in outputs | caches:
                tr.sram_bytes += b
            else:
                tr.dram_bytes += b
        k.traffic = tr
    return pinned_bytes, reserve
