"""Deep decoder graphs from a two-layer capture.

``torch.export`` traces every layer of a decoder, so a 126-layer model takes seconds to capture
although its layers are the same ops on differently named weights. A graph captured with two
layers holds everything a deeper one has: the ops before the layers, layer 0, the "block" of
layer 1 (its ops and the top-level ops that run between layer 0 and layer 1, such as the decode
graph's views into its KV-cache input), and the ops after the layers. ``replicate_layers`` copies
that block for layers 2 .. L-1, with the weights of layer ``k`` named as ``torch.export`` names them
(``p_layers_k_...``), and chains the copies through the one tensor that flows from layer to layer
(the residual stream). Graph inputs whose leading dimension counts layers (the decode graph's
``kv_cache`` [L, 2, ...]) get L rows. The result equals a direct capture op for op, shape for shape
and, on real tensors, value for value (tests/test_capture.py).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from mtiasim.graph.ir import Graph, Node, TensorSpec

_LAYER = re.compile(r"^layers\.(\d+)(?:\.|$)")


def _layer_of(node: Node) -> int | None:
    m = _LAYER.match(node.scope or "")
    return int(m.group(1)) if m else None


def _rename(a: Any, names: dict[str, str]) -> Any:
    if isinstance(a, tuple) and len(a) == 2 and a[0] == "__tensor__":
        return ("__tensor__", names.get(a[1], a[1]))
    if isinstance(a, (list, tuple)):
        return type(a)(_rename(x, names) for x in a)
    if isinstance(a, dict):
        return {k: _rename(v, names) for k, v in a.items()}
    return a


def _selects_row(node: Node, tensor: str, row: int) -> bool:
    call = node.attrs.get("call")
    return (call is not None and call[0] == "aten.select.int" and len(call[1]) == 3
            and call[1][0] == ("__tensor__", tensor) and call[1][1] == 0 and call[1][2] == row)


def replicate_layers(graph: Graph, n_layers: int) -> Graph:
    """``graph`` (a decoder captured with exactly two layers, ``layers.0`` and ``layers.1``)
    extended to ``n_layers`` layers. Raises ValueError when the graph does not have that shape."""
    if n_layers < 2:
        raise ValueError(f"replicate_layers needs n_layers >= 2, got {n_layers}")
    where = [(i, _layer_of(n)) for i, n in enumerate(graph.nodes)]
    if {layer for _, layer in where if layer is not None} != {0, 1}:
        raise ValueError(f"{graph.name}: not a two-layer decoder capture (no layers.0 and layers.1 scopes)")
    last0 = max(i for i, layer in where if layer == 0)
    last1 = max(i for i, layer in where if layer == 1)
    block = graph.nodes[last0 + 1 : last1 + 1]
    tail = graph.nodes[last1 + 1 :]
    if any(_layer_of(n) not in (1, None) for n in block) or any(_layer_of(n) is not None for n in tail):
        raise ValueError(f"{graph.name}: layer 1's ops are not contiguous")
    if n_layers == 2:
        return graph

    targets: dict[str, str] = dict(graph.meta.get("targets", {}))
    # what layer 1 takes from layer 0 (not what every layer shares, e.g. the rotary tables)
    produced_before = {o for n in graph.nodes[: last0 + 1] if _layer_of(n) == 0 for o in n.outputs}
    produced = {o for n in block for o in n.outputs}
    used_after = {t for n in tail for t in n.inputs} | set(graph.outputs)
    carry_in = sorted({t for n in block for t in n.inputs if t in produced_before})
    carry_out = sorted(t for t in produced if t in used_after)
    # the residual stream: one tensor enters from layer 0 and one leaves for the tail; views of
    # the stream taken before the block would be "produced before" too, so insist on one each
    if len(carry_in) != 1 or len(carry_out) != 1:
        raise ValueError(f"{graph.name}: expected one tensor flowing between layers, found {carry_in} -> {carry_out}")
    layer_params = {t for t, fqn in targets.items() if fqn.startswith("layers.1.")}
    # inputs with a row per layer: the block selects row 1 of them (kv_cache[1])
    per_layer_inputs = {t for t in graph.inputs if graph.tensors[t].shape[:1] == (2,)
                        and any(_selects_row(n, t, 1) for n in block)}

    tensors = dict(graph.tensors)
    for t in per_layer_inputs:
        spec = tensors[t]
        tensors[t] = TensorSpec((n_layers, *spec.shape[1:]), spec.dtype, spec.kind)
    nodes = list(graph.nodes[: last1 + 1])
    stream = carry_out[0]
    for k in range(2, n_layers):
        # a multi-output op's results are named "<op>:<i>" (execute names them after the op)
        names = {t: (f"{t.split(':')[0]}@{k}:{t.split(':')[1]}" if ":" in t else f"{t}@{k}") for t in produced}
        for p in layer_params:
            names[p] = p.replace("layers_1_", f"layers_{k}_", 1)
            if names[p] == p:  # export named it some other way: copies would share layer 1's weights
                raise ValueError(f"{graph.name}: cannot name layer {k}'s copy of parameter '{p}'")
            targets[names[p]] = targets[p].replace("layers.1.", f"layers.{k}.", 1)
        names[carry_in[0]] = stream
        for t, new in names.items():
            if t in produced or t in layer_params:
                tensors[new] = graph.tensors[t]
        for n in block:
            attrs = dict(n.attrs)
            if "call" in attrs:
                target, args, kwargs = attrs["call"]
                args = _rename(args, names)
                # a view into a per-layer input (kv_cache[1]) selects row k in the copy
                if any(_selects_row(n, t, 1) for t in per_layer_inputs):
                    args = (args[0], 0, k)
                attrs["call"] = (target, args, _rename(kwargs, names))
            nodes.append(replace(n, name=f"{n.name}@{k}", inputs=[names.get(t, t) for t in n.inputs],
                                 outputs=[names.get(t, t) for t in n.outputs], attrs=attrs,
                                 scope=re.sub(r"^layers\.1(?=\.|$)", f"layers.{k}", n.scope or "") if _layer_of(n) == 1
                                 else n.scope))
        stream = names[carry_out[0]]
    last = {carry_out[0]: stream}
    for n in tail:
        attrs = dict(n.attrs)
        if "call" in attrs:
            target, args, kwargs = attrs["call"]
            attrs["call"] = (target, _rename(args, last), _rename(kwargs, last))
        nodes.append(replace(n, inputs=[last.get(t, t) for t in n.inputs], attrs=attrs))
    outputs = [last.get(t, t) for t in graph.outputs]
    return Graph(graph.name, tensors, nodes, list(graph.inputs), outputs, {**graph.meta, "targets": targets})
