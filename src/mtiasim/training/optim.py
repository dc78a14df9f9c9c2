"""Optimizers: the update each applies to a flat shard of parameters, written in PyTorch ops and
captured like any module, so its cost comes from the same compiler and engines as the model.

Each optimizer is a registry entry with its state (fp32 tensors per parameter) and its update,
the formula of the ``torch.optim`` class it names (checked against it in the tests). The step
count is a constant of the captured graph: the bias corrections are scalars, not tensors."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from mtiasim.frontend.capture import capture
from mtiasim.graph.ir import Graph


class Optimizer(ABC):
    """One optimizer. ``states`` fp32 tensors the size of the parameters are kept per parameter."""

    name: ClassVar[str]
    states: ClassVar[int]
    description: ClassVar[str]

    def __init__(self, lr: float = 1e-3, weight_decay: float = 0.0):
        self.lr, self.weight_decay = lr, weight_decay

    @abstractmethod
    def update(self, p: torch.Tensor, g: torch.Tensor, *state: torch.Tensor, step: int = 1
               ) -> tuple[torch.Tensor, ...]:
        """The new parameter and state tensors after one step (``step`` counts from 1)."""


_REGISTRY: dict[str, type[Optimizer]] = {}


def register(cls: type[Optimizer]) -> type[Optimizer]:
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> type[Optimizer]:
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer '{name}'; known: {', '.join(names())}") from None


@register
class SGD(Optimizer):
    """``torch.optim.SGD`` with momentum (dampening 0, not Nesterov): b = mu b + g (+ wd p); p -= lr b."""

    name = "sgd"
    states = 1
    description = "SGD with momentum: one fp32 buffer per parameter"

    def __init__(self, lr: float = 1e-2, weight_decay: float = 0.0, momentum: float = 0.9):
        super().__init__(lr, weight_decay)
        self.momentum = momentum

    def update(self, p, g, buf, step=1):
        if self.weight_decay:
            g = g + self.weight_decay * p
        buf = g if step == 1 else self.momentum * buf + g  # torch.optim.SGD starts the buffer at g
        return p - self.lr * buf, buf


@register
class AdamW(Optimizer):
    """``torch.optim.AdamW`` (Loshchilov and Hutter, ICLR'19, Algorithm 2): decoupled weight decay
    p *= 1 - lr wd, moments m and v, bias-corrected step lr m^ / (sqrt(v^) + eps)."""

    name = "adamw"
    states = 2
    description = "AdamW: first and second moments, two fp32 tensors per parameter"

    def __init__(self, lr: float = 1e-3, weight_decay: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        super().__init__(lr, weight_decay)
        self.betas, self.eps = betas, eps

    def update(self, p, g, m, v, step=1):
        b1, b2 = self.betas
        p = p * (1 - self.lr * self.weight_decay)
        m = m * b1 + g * (1 - b1)
        v = v * b2 + g * g * (1 - b2)
        denom = (v / (1 - b2**step)).sqrt() + self.eps
        return p - (self.lr / (1 - b1**step)) * m / denom, m, v


@register
class LAMB(Optimizer):
    """LAMB (You et al., ICLR'20, Algorithm 2; NVIDIA's MLPerf BERT uses apex's FusedLAMB): Adam's
    bias-corrected step plus weight decay, r = m^ / (sqrt(v^) + eps) + wd p, scaled per layer by
    the trust ratio ||p|| / ||r||. The update here is one layer's (over a flat shard of many layers
    the trust ratio would be the shard's), and it is costed as one fused kernel reading each tensor
    once; apex's FusedLAMB makes two passes (the norms, then the update), so its memory traffic is
    somewhat higher than charged here."""

    name = "lamb"
    states = 2
    description = "LAMB: Adam moments plus a per-layer trust ratio, two fp32 tensors per parameter"

    def __init__(self, lr: float = 1e-3, weight_decay: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6):
        super().__init__(lr, weight_decay)
        self.betas, self.eps = betas, eps

    def update(self, p, g, m, v, step=1):
        b1, b2 = self.betas
        m = m * b1 + g * (1 - b1)
        v = v * b2 + g * g * (1 - b2)
        r = (m / (1 - b1**step)) / ((v / (1 - b2**step)).sqrt() + self.eps) + self.weight_decay * p
        trust = p.norm() / r.norm()
        return p - self.lr * trust * r, m, v


@register
class Adagrad(Optimizer):
    """``torch.optim.Adagrad`` (no decay): s += g^2; p -= lr g / (sqrt(s) + eps)."""

    name = "adagrad"
    states = 1
    description = "Adagrad: one fp32 sum of squares per parameter"

    def __init__(self, lr: float = 1e-2, weight_decay: float = 0.0, eps: float = 1e-10):
        super().__init__(lr, weight_decay)
        self.eps = eps

    def update(self, p, g, s, step=1):
        if self.weight_decay:
            g = g + self.weight_decay * p
        s = s + g * g
        return p - self.lr * g / (s.sqrt() + self.eps), s


class _Update(torch.nn.Module):
    def __init__(self, opt: Optimizer):
        super().__init__()
        self.opt = opt

    def forward(self, p, g, *state):
        return self.opt.update(p, g, *state, step=2)  # a step past the first: the general formula


class _Step(torch.nn.Module):
    """The update as submodule ``update``: the module path a fused region names."""

    def __init__(self, opt: Optimizer):
        super().__init__()
        self.update = _Update(opt)

    def forward(self, p, g, *state):
        return self.update(p, g, *state)


#: the optimizer's ops run as one kernel, as ``torch.optim``'s ``fused=True`` implementations and
#: apex/Megatron's multi-tensor kernels do: each tensor read once and written once
FUSED_REGION = ["update"]


@functools.lru_cache(maxsize=64)
def update_graph(name: str, numel: int, hyper: tuple[tuple[str, float], ...] = ()) -> Graph:
    """The IR graph of one optimizer step over ``numel`` fp32 parameters (a flat shard), with
    hyperparameters ``hyper`` (name, value) pairs (they change the numbers, not the cost)."""
    opt = get(name)(**dict(hyper))
    n = max(1, int(numel))
    flat = [torch.empty(n, device="meta") for _ in range(2 + opt.states)]
    graph = capture(_Step(opt), flat, name=f"{name}-step")
    graph.meta["numel"] = n
    return graph


def state_bytes_per_param(name: str) -> float:
    """fp32 optimizer state per parameter, in bytes."""
    return 4.0 * get(name).states

