"""compile(graph, chip, options) -> Program: precision, fusion, tiling/mapping, memory placement."""

from __future__ import annotations

from dataclasses import replace

from mtiasim.calibration import for_chip
from mtiasim.chips.schema import ChipSpec
from mtiasim.compiler.fusion import find_kv_appends, group, kernel_work, view_bases
from mtiasim.compiler.layout import reads_strided, strided_tensors
from mtiasim.compiler.placement import plan
from mtiasim.compiler.program import CompileOptions, GemmMapping, Kernel, MemoryPlan, Program, Traffic
from mtiasim.compiler.quantize import activation_dtype, assign_dtypes, compute_dtype
from mtiasim.compiler.tiling import map_gemm_on
from mtiasim.graph.ir import Graph
from mtiasim.graph.ops import get_op

__all__ = ["CompileOptions", "GemmMapping", "Kernel", "MemoryPlan", "Program", "Traffic", "compile"]


def compile(graph: Graph, chip: ChipSpec, options: CompileOptions | None = None,
            default_dtype: str = "bf16") -> Program:  # noqa: A001  (the pipeline's verb)
    options = options or CompileOptions()
    requested = options.dtype or default_dtype
    notes: list[str] = []

    appends, cached_keys, cache_inputs = find_kv_appends(graph)
    # a graph built by hand (e.g. the serving step model's lone attention kernel) names its
    # KV-cache inputs, which no append reveals, so that they are stored in options.kv_dtype
    declared = set(graph.meta.get("kv_cache_inputs", ()))
    unknown = sorted(declared - {n for n, t in graph.tensors.items() if t.kind == "input"})
    if unknown:
        raise ValueError(f"graph '{graph.name}': meta kv_cache_inputs names {unknown}, which are not graph inputs")
    cache_inputs = cache_inputs | declared
    if not options.kv_in_place:
        appends = set()  # each concat stays a copy of the whole cache plus the new rows
    graph = assign_dtypes(graph, requested, cache_inputs, options.kv_dtype, options.op_dtypes,
                          options.act_dtype)
    nodes = []
    for n in graph.nodes:
        if n.name in appends:
            n = replace(n, op="kv_append")
        elif n.name in cached_keys:
            n = replace(n, attrs={**n.attrs, "kv_cache_len": cached_keys[n.name]})
        nodes.append(n)
    graph = Graph(graph.name, graph.tensors, nodes, graph.inputs, graph.outputs, graph.meta)

    mdtype = compute_dtype(chip, requested)
    if mdtype != requested:
        notes.append(f"{chip.name} has no {requested} matrix engine; computing in {mdtype} "
                     f"(weights stay {requested} in memory)")
    vdtype = activation_dtype(requested)
    adtype = compute_dtype(chip, options.act_dtype or vdtype)  # attention runs in the activation precision

    base = view_bases(graph)
    groups = group(graph, options.fuse, appends, options.fuse_regions)
    strided = strided_tensors(graph)
    owner = {base.get(o, o): i for i, g in enumerate(groups) for n in g for o in n.outputs}
    external: dict[int, set[str]] = {i: set() for i in range(len(groups))}
    for i, g in enumerate(groups):
        for n in g:
            for t in n.inputs:
                b = base.get(t, t)
                if b in owner and owner[b] != i:
                    external[owner[b]].add(b)
    for t in graph.outputs:
        b = base.get(t, t)
        if b in owner:
            external[owner[b]].add(b)

    kernels = []
    for i, g in enumerate(groups):
        work = kernel_work(graph, g, base, external[i])
        anchor = g[0]
        key = get_op(anchor.op).precision_key
        if key in options.op_dtypes:
            cdtype = compute_dtype(chip, options.op_dtypes[key])
        elif anchor.op == "attention":
            cdtype = adtype
        else:
            cdtype = mdtype if get_op(anchor.op).engine == "matrix" else vdtype
        k = Kernel(name=anchor.name, op=anchor.op, nodes=g, work=work, compute_dtype=cdtype,
                   vector_dtype=vdtype, source=anchor.source, on_host=anchor.op == "cpu_fallback")
        k.mappings = [map_gemm_on(chip, gm) for gm in work.gemms]
        k.strided = any(reads_strided(graph, n, strided) for n in g)
        kernels.append(k)

    cal = for_chip(chip)
    pinned, reserve = plan(graph, chip, kernels, base, cal, options.pin_weights_in_sram, options.concurrent_batches)
    kv_bytes = sum(graph.tensors[t].nbytes for t in cache_inputs)
    weights = graph.param_bytes()
    mem = MemoryPlan(weight_bytes=weights, kv_cache_bytes=kv_bytes, peak_activation_bytes=reserve,
                     dram_capacity_bytes=chip.dram.capacity_bytes.value or 0.0, sram_pinned_bytes=pinned,
                     sram_capacity_bytes=chip.sram_bytes)
    if not mem.fits:
        notes.append(f"does not fit: weights {weights / 1e9:.1f} GB + KV cache {kv_bytes / 1e9:.1f} GB + "
                     f"activations {reserve / 1e9:.2f} GB > {mem.dram_capacity_bytes / 1e9:.0f} GB "
                     f"{chip.dram.type} on {chip.name} (shard it over several chips)")
    if any(k.on_host for k in kernels):
        notes.append("ops run on the host CPU: " + ", ".join(sorted({k.nodes[0].attrs['aten'] for k in kernels
                                                                     if k.on_host})))
    return Program(graph, chip, options, kernels, mem, notes)
