"""Fusion pass: group IR nodes into kernels.

- Views and constants are free and vanish (their consumers read the underlying bytes).
- ``cat([cache, new])`` feeding an attention's K or V, with the cache coming from a graph input,
  becomes an in-place ``kv_append`` (paged KV cache): only the new rows move, and the attention
  learns how many keys came from the cache.
- A pointwise node (or a concat) is fused into the kernel that produces one of its inputs when
  that intermediate has no other consumer (epilogue fusion, as TorchInductor and the MTIA graph
  compiler do): the intermediate is never written to or read from memory. Of several such
  producers it joins the one with the largest output (the most traffic saved).
- Hand-fused regions (``CompileOptions.fuse_regions``: module paths) become one kernel each, as
  a submitter's fused plugin runs a whole block with its intermediates on chip.
Kernel work is then the sum of its nodes' work, minus traffic to tensors internal to the kernel.
"""

from __future__ import annotations

from mtiasim.graph.ir import Graph, Node
from mtiasim.graph.ops import get_op
from mtiasim.graph.ops.base import Work


def view_bases(graph: Graph) -> dict[str, str]:
    """tensor -> the tensor that owns its storage (through chains of views)."""
    base: dict[str, str] = {}
    for node in graph.nodes:
        if get_op(node.op).is_view and node.inputs:
            root = base.get(node.inputs[0], node.inputs[0])
            for o in node.outputs:
                base[o] = root
    return base


def find_kv_appends(graph: Graph) -> tuple[set[str], dict[str, int], set[str]]:
    """(concat nodes that are KV-cache appends, attention node -> cached keys, cache inputs)."""
    base = view_bases(graph)
    by_out = {o: n for n in graph.nodes for o in n.outputs}
    appends: set[str] = set()
    cached: dict[str, int] = {}
    cache_inputs: set[str] = set()
    for node in graph.nodes:
        if node.op != "attention":
            continue
        for t in node.inputs[1:3]:
            src = by_out.get(t)
            while src is not None and get_op(src.op).is_view:
                src = by_out.get(src.inputs[0])
            if src is None or src.op != "concat" or len(src.inputs) != 2:
                continue
            root = base.get(src.inputs[0], src.inputs[0])
            if graph.tensors[root].kind != "input":
                continue
            appends.add(src.name)
            cache_inputs.add(root)
            dim = src.attrs.get("dim", 0)
            cached[node.name] = graph.tensors[src.inputs[0]].shape[dim]
    return appends, cached, cache_inputs


def _fusable(node: Node) -> bool:
    return get_op(node.op).pointwise or node.op == "concat"


def _region_of(node: Node, regions: list[list[str]]) -> int | None:
    scope = node.scope
    if scope is None:
        return None
    for i, prefixes in enumerate(regions):
        if any(scope == p or scope.startswith(p + ".") for p in prefixes):
            return i
    return None


def group(graph: Graph, fuse: bool, kv_appends: set[str], regions: list[list[str]] | None = None) -> list[list[Node]]:
    """Nodes grouped into kernels, in order. ``regions`` (lists of module-path prefixes) are
    hand-fused: all ops whose scope falls in one region form one kernel."""
    regions = regions or []
    base = view_bases(graph)
    consumers: dict[str, int] = {}
    for node in graph.nodes:
        if get_op(node.op).is_view:
            continue
        for t in node.inputs:
            b = base.get(t, t)
            consumers[b] = consumers.get(b, 0) + 1
    for t in graph.outputs:
        consumers[base.get(t, t)] = consumers.get(base.get(t, t), 0) + 1

    groups: list[list[Node]] = []
    owner: dict[str, int] = {}  # tensor -> index of the group producing it
    region_group: dict[int, int] = {}  # region -> index of its kernel
    for node in graph.nodes:
        op = get_op(node.op)
        if op.is_view or node.op == "const":
            continue
        target = None
        region = _region_of(node, regions) if fuse and regions else None
        if region is not None:
            target = region_group.get(region)
            if target is None:
                groups.append([node])
                target = region_group[region] = len(groups) - 1
            else:
                groups[target].append(node)
            for o in node.outputs:
                owner[o] = target
            continue
        if fuse and _fusable(node) and node.name not in kv_appends:
            # of the producers it could join, the one whose output is largest: that intermediate
            # is the most traffic saved (a concat's big input is written straight into its slice
            # of the output, as TensorRT's DLRMv2 embedding plugin writes the interaction input)
            best = -1.0
            for t in node.inputs:
                b = base.get(t, t)
                g = owner.get(b)
                if g is not None and consumers.get(b, 0) == 1 and groups[g][0].op not in ("cpu_fallback", "kv_append"):
                    size = graph.tensors[b].nbytes
                    if size > best:
                        target, best = g, size
        if target is None:
            groups.append([node])
            target = len(groups) - 1
        else:
            groups[target].append(node)
        for o in node.outputs:
            owner[o] = target
    if fuse:
        _check_regions(graph, regions, region_group)
    return groups


def _check_regions(graph: Graph, regions: list[list[str]], region_group: dict[int, int]) -> None:
    """Each region must match some op, and its ops must run back to back: an op of another scope
    between them would consume one of its results and feed another (no single kernel can)."""
    for i, prefixes in enumerate(regions):
        if i not in region_group:
            scopes = sorted({n.scope for n in graph.nodes if n.scope})[:3]
            raise ValueError(f"fuse_regions[{i}] {prefixes} matches no op of '{graph.name}' "
                             f"(op scopes look like {scopes or 'nothing: the graph has no module paths'})")
    nodes = [n for n in graph.nodes if not get_op(n.op).is_view and n.op != "const"]
    runs = [_region_of(n, regions) for n in nodes]
    for i, prefixes in enumerate(regions):
        at = [j for j, r in enumerate(runs) if r == i]
        gap = next((j for j in range(at[0], at[-1]) if runs[j] != i), None)
        if gap is not None:
            raise ValueError(f"fuse_regions[{i}] {prefixes} is not contiguous: op '{nodes[gap].name}' "
                             f"(scope '{nodes[gap].scope}') runs between its ops; add its module to the region")


_WORK: dict[tuple, Work] = {}


def node_work(graph: Graph, n: Node) -> Work:
    """``OpDef.work`` of a node, memoised on (op, operand specs, attributes): the layers of a
    transformer repeat the same few shapes. Callers must not mutate the returned Work."""
    ins = tuple(graph.tensors[t] for t in n.inputs)
    outs = tuple(graph.tensors[t] for t in n.outputs)
    key = (n.op, ins, outs, repr(sorted((k, v) for k, v in n.attrs.items() if k != "call")))
    w = _WORK.get(key)
    if w is None:
        if len(_WORK) > 100_000:
            _WORK.clear()
        w = _WORK[key] = get_op(n.op).work(list(ins), list(outs), n.attrs)
    return w


def kernel_work(graph: Graph, nodes: list[Node], base: dict[str, str], external: set[str]) -> Work:
    """Sum of the nodes' work, without traffic to tensors produced and consumed inside the kernel,
    each tensor from outside read once however many of its ops read it.

    ``external`` are tensors (storage bases) that are needed outside this kernel."""
    produced = {base.get(o, o) for n in nodes for o in n.outputs}
    total = Work()
    for n in nodes:
        w = node_work(graph, n)
        total.matrix_flops += w.matrix_flops
        total.vector_flops += w.vector_flops
        total.gemms.extend(w.gemms)
        for key, b in w.bytes_read.items():
            t = n.inputs[int(key[2:])]
            if base.get(t, t) in produced:
                continue
            # a tensor several of the kernel's ops read is loaded once (held on chip)
            total.bytes_read[t] = max(total.bytes_read.get(t, 0.0), b)
            if key in w.gather:
                total.gather[t] = w.gather[key]
        for key, b in w.bytes_written.items():
            t = n.outputs[int(key[3:])]
            if n.op == "kv_append" or base.get(t, t) in external:
                total.bytes_written[t] = total.bytes_written.get(t, 0.0) + b
    return total
