"""Graph rewrites a compiler applies at capture, before any chip is known.

Each rewrite takes a lowered :class:`Graph` and returns it rewritten; ``REWRITES`` runs them in
order. They keep what the graph computes (``graph/execute.py`` still equals PyTorch) and change
what it costs:

- ``fold_constants``: a node that depends on no model input and no weight (position ids,
  ``arange``/``cumsum`` over sizes, causal and padding masks built from them, RoPE tables from an
  ``inv_freq`` buffer) is computed once at compile time, as TorchInductor's and TensorRT's
  constant folding do, and costs nothing per run.
- ``causal_masks``: an attention whose mask is such a constant is evaluated once; a mask that is
  the causal triangle (or all true) becomes ``causal`` attention without a mask operand, so the
  kernel skips the masked blocks (FlashAttention's causal mode) instead of reading a mask.
- ``gqa_repeats``: K/V heads repeated to the query heads before attention (Hugging Face's
  ``repeat_kv``, ``repeat_interleave``: an ``expand`` and a copy) feed the attention directly as
  grouped-query attention, which reads each KV head once (``enable_gqa``).
- ``drop_dead``: copies, views and constants nobody reads any more are removed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from mtiasim.graph.execute import substitute
from mtiasim.graph.ir import Graph, Node
from mtiasim.graph.ops import get_op
from mtiasim.graph.ops.generic import TO_TORCH, resolve

#: ops that never fold: their value is not a function of their inputs, or they run on the host
_NEVER_FOLD = {"random", "cpu_fallback"}
#: a constant mask larger than this many elements is kept as an operand rather than evaluated
MAX_EVAL_ELEMENTS = 1 << 27


def _producers(graph: Graph) -> dict[str, Node]:
    return {o: n for n in graph.nodes for o in n.outputs}


def fold_constants(graph: Graph) -> Graph:
    const = {t for t, s in graph.tensors.items() if s.kind in ("const", "buffer")}
    nodes, tensors = [], dict(graph.tensors)
    for n in graph.nodes:
        op = get_op(n.op)
        if n.op in _NEVER_FOLD or not all(t in const for t in n.inputs) or (not n.inputs and n.op != "const"):
            nodes.append(n)
            continue
        const.update(n.outputs)
        if op.is_view or n.op == "const" or len(n.outputs) > 1:
            nodes.append(n)
            continue
        for o in n.outputs:
            tensors[o] = replace(tensors[o], kind="const")
        spec = tensors[n.outputs[0]]
        attrs = {"shape": spec.shape, "dtype": spec.dtype, "folded": n.aten or n.op}
        if "call" in n.attrs:
            attrs["call"] = n.attrs["call"]
        nodes.append(replace(n, op="const", outputs=n.outputs[:1], attrs=attrs))
    return Graph(graph.name, tensors, nodes, graph.inputs, graph.outputs, graph.meta)


def _cpu(x: Any) -> Any:
    if isinstance(x, torch.device):
        return torch.device("cpu")
    if isinstance(x, (list, tuple)):
        return type(x)(_cpu(v) for v in x)
    if isinstance(x, dict):
        return {k: _cpu(v) for k, v in x.items()}
    return x


def evaluate_constant(graph: Graph, tensor: str) -> torch.Tensor | None:
    """The value of a constant tensor, computed on the CPU from the recorded aten calls; None when
    it depends on a buffer's values (which a model on meta tensors does not have) or is too large."""
    by_out = _producers(graph)
    env: dict[str, Any] = {}

    def value(t: str) -> Any:
        if t in env:
            return env[t]
        node = by_out.get(t)
        if node is None or "call" not in node.attrs or graph.tensors[t].numel > MAX_EVAL_ELEMENTS:
            raise LookupError(t)
        call = node.attrs["call"]
        args = _cpu(call[1])
        for x in sorted(_refs(node)):
            if node.op == "const" and not node.inputs:  # new_ones(x, ...): x's dtype and shape only
                spec = graph.tensors[x]
                env.setdefault(x, torch.zeros((), dtype=TO_TORCH[spec.dtype]).expand(spec.shape))
            else:
                value(x)
        res = resolve(call[0])(*substitute(args, env), **substitute(_cpu(call[2]), env))
        if isinstance(res, (tuple, list)):
            for i, r in enumerate(res):
                env[f"{node.name}:{i}"] = r
        else:
            env[node.outputs[0]] = res
        return env[t]

    try:
        out = value(tensor)
    except (LookupError, RuntimeError, NotImplementedError):
        return None
    return out if isinstance(out, torch.Tensor) and out.device.type == "cpu" else None


def _allowed(mask: torch.Tensor) -> torch.Tensor:
    """Which query-key pairs a mask lets through: a boolean mask as is, an additive float mask
    where it is not (close to) minus infinity."""
    if mask.dtype == torch.bool:
        return mask
    return mask > torch.finfo(mask.dtype).min / 2


def _is_causal(allowed: torch.Tensor) -> bool | None:
    """True for the causal triangle (queries at the end of the keys), False for all-true, None otherwise."""
    s, keys = allowed.shape[-2:]
    i = torch.arange(s)[:, None]
    j = torch.arange(keys)[None, :]
    tri = j <= i + (keys - s)
    if bool((allowed == tri).all()):
        return True
    if bool(allowed.all()):
        return False
    return None


def _set_call(node: Node, **changes: Any) -> dict[str, Any]:
    """The node's attrs with its recorded sdpa call changed (``key``, ``value``, ``attn_mask``,
    ``is_causal``, ``enable_gqa``), arguments by schema name."""
    if "call" not in node.attrs:
        return node.attrs
    target, args, kwargs = node.attrs["call"]
    names = [a.name for a in resolve(target)._schema.arguments]
    args, kwargs = list(args), dict(kwargs)
    for k, v in changes.items():
        i = names.index(k)
        if i < len(args):
            args[i] = v
        else:
            kwargs[k] = v
    return {**node.attrs, "call": (target, tuple(args), kwargs)}


def _constants(graph: Graph) -> set[str]:
    """Tensors known at compile time: constants and the views of them."""
    const = {t for t, s in graph.tensors.items() if s.kind == "const"}
    for n in graph.nodes:
        if get_op(n.op).is_view and n.inputs and n.inputs[0] in const:
            const.update(n.outputs)
    return const


def causal_masks(graph: Graph) -> Graph:
    nodes, const = [], _constants(graph)
    for n in graph.nodes:
        if n.op == "attention" and len(n.inputs) > 3 and n.inputs[3] in const:
            mask = evaluate_constant(graph, n.inputs[3])
            verdict = None if mask is None else _is_causal(_allowed(mask))
            if verdict is not None:
                attrs = _set_call(n, attn_mask=None, is_causal=verdict)
                n = replace(n, inputs=n.inputs[:3], attrs={**attrs, "causal": verdict, "mask": "folded"})
        nodes.append(n)
    return Graph(graph.name, graph.tensors, nodes, graph.inputs, graph.outputs, graph.meta)


def _unrepeated(graph: Graph, t: str, by_out: dict[str, Node]) -> str | None:
    """The KV tensor [B, Hkv, L, hd] that ``t`` [B, H, L, hd] repeats over heads (views, then an
    expand of a new head-repeat dimension, a copy and views back), or None."""
    seen_copy = seen_expand = False
    cur = t
    while (node := by_out.get(cur)) is not None:
        if node.op == "copy" and not seen_copy:
            seen_copy = True
        elif get_op(node.op).is_view:
            seen_expand |= seen_copy and (node.aten or "").startswith("aten.expand")
        else:
            break
        cur = node.inputs[0]
        src, dst = graph.tensors[cur].shape, graph.tensors[t].shape
        if (seen_expand and len(src) == 4 and src[0] == dst[0] and src[2:] == dst[2:]
                and src[1] < dst[1] and dst[1] % src[1] == 0):
            return cur
    return None


def gqa_repeats(graph: Graph) -> Graph:
    by_out = _producers(graph)
    nodes = []
    for n in graph.nodes:
        if n.op == "attention":
            k, v = (_unrepeated(graph, t, by_out) for t in n.inputs[1:3])
            if k is not None and v is not None:
                attrs = _set_call(n, key=("__tensor__", k), value=("__tensor__", v), enable_gqa=True)
                n = replace(n, inputs=[n.inputs[0], k, v, *n.inputs[3:]], attrs=attrs)
        nodes.append(n)
    return Graph(graph.name, graph.tensors, nodes, graph.inputs, graph.outputs, graph.meta)


def _named(x: Any, out: set[str]) -> set[str]:
    if isinstance(x, tuple) and len(x) == 2 and x[0] == "__tensor__":
        out.add(x[1])
    elif isinstance(x, (list, tuple)):
        for v in x:
            _named(v, out)
    elif isinstance(x, dict):
        for v in x.values():
            _named(v, out)
    return out


def _refs(node: Node) -> set[str]:
    """Tensors a node reads: its inputs and any its recorded call names."""
    return _named(node.attrs.get("call", ())[1:], set(node.inputs))


def drop_dead(graph: Graph) -> Graph:
    nodes = list(graph.nodes)
    while True:
        used = set(graph.outputs).union(*(_refs(n) for n in nodes))
        keep = [n for n in nodes if n.op not in ("view", "copy", "const") or any(o in used for o in n.outputs)]
        if len(keep) == len(nodes):
            break
        nodes = keep
    live = set(graph.inputs) | set(graph.outputs) | {t for n in nodes for t in (*n.inputs, *n.outputs)}
    tensors = {t: s for t, s in graph.tensors.items() if t in live or s.kind in ("param", "buffer")}
    return Graph(graph.name, tensors, nodes, graph.inputs, graph.outputs, graph.meta)


REWRITES: list[Callable[[Graph], Graph]] = [fold_constants, causal_masks, gqa_repeats, drop_dead]


def rewrite(graph: Graph) -> Graph:
    for fn in REWRITES:
        graph = fn(graph)
    return graph

