"""Reference execution of an IR graph on real tensors, to check capture and ops against PyTorch.

Nodes captured from aten run their recorded aten call (so the IR provably describes the module);
nodes the frontend or compiler synthesised (e.g. ``moe_router``) run their op's ``reference``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mtiasim.graph.ir import Graph
from mtiasim.graph.ops import get_op
from mtiasim.graph.ops.generic import bind, resolve


def substitute(template: Any, env: dict[str, Any]) -> Any:
    """A recorded call's arguments with each ``('__tensor__', name)`` replaced by ``env[name]``."""
    return bind(template, env, "__tensor__")


def execute(graph: Graph, feeds: dict[str, torch.Tensor], reference_ops: frozenset[str] | set[str] = frozenset()
            ) -> list[torch.Tensor]:
    """Run ``graph`` with ``feeds`` (every input, parameter and buffer by tensor name).

    Nodes whose op is in ``reference_ops`` run the op registry's reference numerics instead of
    the recorded aten call, which checks each op's ``reference`` against PyTorch."""
    missing = [t for t in graph.inputs + graph.params() if t not in feeds]
    if missing:
        raise ValueError(f"execute({graph.name}): no value fed for {missing[:5]}")
    env: dict[str, Any] = dict(feeds)
    for node in graph.nodes:
        call = node.attrs.get("call")
        if call is not None and node.op not in reference_ops:
            res = resolve(call[0])(*substitute(call[1], env), **substitute(call[2], env))
            if isinstance(res, (tuple, list)):
                for i, r in enumerate(res):
                    env[f"{node.name}:{i}"] = r
            else:
                env[node.outputs[0]] = res
        else:
            attrs = {k: v for k, v in node.attrs.items() if k != "call"}
            res = get_op(node.op).reference(*[env[t] for t in node.inputs], **attrs)
            for name, r in zip(node.outputs, res if isinstance(res, (tuple, list)) else [res]):
                env[name] = r
    return [env[t] for t in graph.outputs]


def module_feeds(graph: Graph, module: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Feeds for :func:`execute` from a real module and its inputs."""
    state = {**dict(module.named_parameters(remove_duplicate=False)), **dict(module.named_buffers(remove_duplicate=False))}
    feeds = {name: state[target] for name, target in graph.meta.get("targets", {}).items() if target in state}
    tensor_inputs = [t for t in inputs if isinstance(t, torch.Tensor)]
    feeds.update(dict(zip(graph.inputs, tensor_inputs)))
    return feeds
