"""A training step's graph from PyTorch autograd: the joint forward/backward graph of a module
and its loss, captured on meta tensors and lowered to the IR.

``torch.export`` traces the module (with its loss), then ``_export_forward_backward`` runs
AOT autograd over it: the result is one graph whose outputs are the loss and the gradient of
every trainable parameter, with the backward written in Core ATen ops. Nothing here knows a
model's backward formula; the ops' gradients are PyTorch's own.

Scaled-dot-product attention is routed to ``mtiasim::attention`` (custom op with a registered
backward) while tracing, so the step shows FlashAttention's forward and backward kernels rather
than the score-matrix math PyTorch would otherwise decompose it into."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import mtiasim.frontend.custom_ops  # noqa: F401  (registers mtiasim::attention)
from mtiasim.frontend.capture import CaptureError, decompose_unlowered, lower
from mtiasim.graph.ir import Graph

LossFn = Callable[[Any], torch.Tensor]


@dataclass(frozen=True)
class TrainingGraph:
    """The joint graph and what its tensors mean.

    ``grads`` maps each trainable parameter's IR tensor to its gradient's; ``forward`` names the
    nodes the loss depends on (the forward pass and the loss), every other node is backward."""

    graph: Graph
    loss: str
    grads: dict[str, str]
    forward: frozenset[str]

    @property
    def trainable_params(self) -> int:
        return sum(self.graph.tensors[p].numel for p in self.grads)

    @property
    def sparse(self) -> frozenset[str]:
        """Embedding tables a fused TBE backward updates in place (no dense gradient, no optimizer
        step of their own, sharded over the chips rather than replicated)."""
        return frozenset(n.inputs[2] for n in self.graph.nodes if n.op == "tbe_backward")

    @property
    def sparse_params(self) -> int:
        return sum(self.graph.tensors[p].numel for p in self.sparse)

    @property
    def sparse_rows(self) -> int:
        return sum(self.graph.tensors[p].shape[0] for p in self.sparse)

    @property
    def pooled_embedding_elements(self) -> int:
        """Elements of the pooled embeddings the TBEs produce (what model parallelism exchanges)."""
        return sum(self.graph.tensors[n.outputs[0]].numel for n in self.graph.nodes if n.op == "tbe")

    @property
    def frozen_params(self) -> int:
        return sum(self.graph.tensors[p].numel for p in self.graph.params()
                   if p not in self.grads and self.graph.tensors[p].kind == "param")


def default_loss(out: Any) -> torch.Tensor:
    """The module's own loss when it returns one (a scalar tensor, or an output with ``.loss``
    as Hugging Face models do when given labels); else the mean square of its first tensor
    output, a stand-in whose cost is one elementwise pass and whose gradient reaches every op."""
    loss = getattr(out, "loss", None)
    if isinstance(loss, torch.Tensor):
        return loss
    if isinstance(out, torch.Tensor) and out.dim() == 0:
        return out
    first = _first_tensor(out)
    if first is None:
        raise CaptureError("the module returned no tensor to train against; pass loss_fn=")
    return first.float().square().mean()


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict) or hasattr(out, "values"):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        for x in out:
            t = _first_tensor(x)
            if t is not None:
                return t
    return None


class _WithLoss(torch.nn.Module):
    def __init__(self, module: torch.nn.Module, loss_fn: LossFn):
        super().__init__()
        self.module, self.loss_fn = module, loss_fn

    def forward(self, *inputs: Any) -> torch.Tensor:
        return self.loss_fn(self.module(*inputs))


class _TrainingOps(TorchFunctionMode):
    """While tracing: ``F.scaled_dot_product_attention`` becomes ``mtiasim::attention``;
    ``torch.where`` gets a Python number operand as a 0-dim tensor and ``F.cross_entropy``
    becomes its formula written without such a ``where`` (in torch 2.13, a ``where`` with a
    number operand, as in cross-entropy's decomposition, drops the gradient when autograd is
    traced on meta tensors; the formula's ops are those of PyTorch's decomposition)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return _sdpa(*args, **kwargs)
        if func is F.cross_entropy:
            return _cross_entropy(func, *args, **kwargs)
        if func is torch.where and len(args) == 3 and not kwargs:
            return func(*_scalars_as_tensors(*args))
        return func(*args, **kwargs)


def _scalars_as_tensors(cond, x, other):
    """``torch.where(c, x, 0.0)`` with a Python number as 0-dim tensor of the other operand's dtype."""
    if isinstance(other, (int, float)) and isinstance(x, torch.Tensor):
        other = x.new_full((), other)
    elif isinstance(x, (int, float)) and isinstance(other, torch.Tensor):
        x = other.new_full((), x)
    return cond, x, other


def _cross_entropy(original, input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                   reduction="mean", label_smoothing=0.0):
    if (weight is not None or size_average is not None or reduce is not None or label_smoothing
            or target.is_floating_point() or input.dim() < 2 or reduction not in ("mean", "sum", "none")):
        return original(input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing)
    logp = torch.log_softmax(input, dim=1)
    valid = target != ignore_index
    picked = -logp.gather(1, target.masked_fill(~valid, 0).unsqueeze(1)).squeeze(1)
    picked = picked.masked_fill(~valid, 0.0)
    if reduction == "none":
        return picked
    return picked.sum() / valid.sum() if reduction == "mean" else picked.sum()


def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    # dropout inside attention is a mask generated in the kernel: no extra pass, so not modelled
    return torch.ops.mtiasim.attention(q, k, v, attn_mask, is_causal, scale, enable_gqa)


def capture_training(module: torch.nn.Module, example_inputs: Sequence[Any], *, loss_fn: LossFn | None = None,
                     name: str | None = None, allow_cpu_fallback: bool = False) -> TrainingGraph:
    """The joint forward/backward graph of ``loss_fn(module(*example_inputs))`` (default:
    :func:`default_loss`). Parameters with ``requires_grad=False`` are frozen: no gradient, no
    optimizer state (a LoRA base). Meta tensors work: nothing is allocated."""
    from torch.export.experimental import _export_forward_backward

    name = name or type(module).__name__
    wrapped = _WithLoss(module.train(), loss_fn or default_loss)
    if not any(p.requires_grad for p in module.parameters()):
        raise CaptureError(f"{name}: no parameter requires grad; there is nothing to train")
    try:
        with _TrainingOps(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.13's own pytree deprecation in export
            ep = torch.export.export(wrapped, tuple(example_inputs), strict=False)
            joint = _export_forward_backward(ep, joint_loss_index=0)
    except CaptureError:
        raise
    except Exception as e:  # torch raises many types; keep its first line, which names the cause
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CaptureError(f"{name}: autograd could not trace a training step: {type(e).__name__}: {first}") from e
    graph = lower(decompose_unlowered(joint), name=name, allow_cpu_fallback=allow_cpu_fallback)
    return _annotate(graph, joint)


def _annotate(graph: Graph, joint: torch.export.ExportedProgram) -> TrainingGraph:
    # parameters by the user's module's names (the loss wrapper adds a 'module.' prefix)
    targets = {t: target.removeprefix("module.") for t, target in graph.meta.get("targets", {}).items()}
    graph.meta["targets"] = targets
    by_target = {target: t for t, target in targets.items()}
    specs = joint.graph_signature.output_specs
    if len(specs) != len(graph.outputs):
        raise CaptureError(f"{graph.name}: {len(specs)} outputs in the joint graph, {len(graph.outputs)} lowered")
    loss, grads = None, {}
    for spec, tensor in zip(specs, graph.outputs):
        kind = spec.kind.name
        if kind == "LOSS_OUTPUT":
            loss = tensor
        elif kind == "GRADIENT_TO_PARAMETER":
            grads[by_target[spec.target.removeprefix("module.")]] = tensor
    if loss is None:
        raise CaptureError(f"{graph.name}: the joint graph has no loss output")
    return TrainingGraph(graph=graph, loss=loss, grads=grads, forward=frozenset(ancestors(graph, loss)))


def ancestors(graph: Graph, tensor: str) -> set[str]:
    """Names of the nodes ``tensor`` depends on (including its producer)."""
    producer = graph.producers()
    seen: set[str] = set()
    stack = [tensor]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        stack.extend(node.inputs)
    return seen
