"""Helpers shared by the zoo families: config overrides, cache keys, cheap init, MLPs, TBE inputs."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math

import torch
from torch import nn


def apply_overrides(cfg, overrides: dict, model_name: str):
    """``dataclasses.replace(cfg, **overrides)`` with a clear error for unknown keys.

    Lists are turned into tuples so the (frozen) config stays hashable and JSON-stable.
    """
    valid = [f.name for f in dataclasses.fields(cfg)]
    for key in overrides:
        if key not in valid:
            raise ValueError(
                f"{model_name}: unknown override {key!r}; valid keys: {', '.join(valid)}"
            )
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return dataclasses.replace(cfg, **fixed)


def cache_key(name: str, phase: str, batch: int, seq_len, kv_len, config: dict) -> str:
    """Deterministic key: readable prefix + sha256 of the canonical JSON of the full config."""
    blob = json.dumps(
        {"name": name, "phase": phase, "batch": batch, "seq_len": seq_len, "kv_len": kv_len,
         "config": config},
        sort_keys=True, separators=(",", ":"), default=list,
    )
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return f"{name}|{phase}|b{batch}|s{seq_len}|kv{kv_len}|{digest}"


def check_positive(**values) -> None:
    for key, val in values.items():
        if val is None:
            continue
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{key} must be a positive int, got {val!r}")


def uniform_param(shape, fan_in: int) -> nn.Parameter:
    """A parameter on the current default device, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) off meta.

    On meta nothing is initialised (there is no storage), so building is O(#tensors).
    """
    p = nn.Parameter(torch.empty(shape))
    if p.device.type != "meta":
        bound = 1.0 / math.sqrt(max(fan_in, 1))
        with torch.no_grad():
            p.uniform_(-bound, bound)
    return p


def mlp(sizes: list[int], last_act: bool) -> nn.Sequential:
    """Linear layers ``sizes[0]->sizes[1]->...`` with ReLU between (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_act:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def linear_params(sizes) -> int:
    """Parameters of a chain of biased Linear layers over ``sizes``."""
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def linear_flops(sizes) -> int:
    """Forward matmul FLOPs per sample (2*in*out) of a Linear chain over ``sizes``."""
    return sum(2 * a * b for a, b in itertools.pairwise(sizes))


def tbe_indices(batch: int, pooling, rows, device: str) -> torch.Tensor:
    """[batch, sum(pooling)] int64 indices; table t's columns are uniform in [0, rows[t])."""
    total = sum(pooling)
    if torch.device(device).type == "meta":
        return torch.zeros((batch, total), dtype=torch.int64, device=device)
    cols = [torch.randint(0, r, (batch, p), dtype=torch.int64) for p, r in zip(pooling, rows)]
    return torch.cat(cols, dim=1).to(device)


def dense_input(batch: int, n: int, device: str) -> torch.Tensor:
    """Dense features (non-negative, like log-transformed Criteo counts)."""
    if torch.device(device).type == "meta":
        return torch.empty((batch, n), device=device)
    return torch.rand((batch, n)).to(device)
