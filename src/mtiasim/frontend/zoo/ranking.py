"""ranking-lc / ranking-hc: public stand-ins for MTIA 2i's LC1-LC5 and HC1-HC4 production models.

The ISCA'25 MTIA 2i paper gives only the complexity ranges (LC 15-105 MFLOPs/sample, HC 480-1000
MFLOPs/sample; mtia.md section 3); embedding dims, table counts, pooling factors and MLP sizes are
NOT published. These models are DLRM-style (Naumov et al., arXiv 1906.00091): TBE embeddings
(``torch.ops.mtiasim.tbe``) + bottom MLP + pairwise dot interaction
(``torch.ops.mtiasim.dot_interaction``) + top MLP + sigmoid, with estimated (labelled) sparse
sizes: lc 64 tables x 128, pooling 20, 1M rows each; hc 128 tables x 128, pooling 30, 4M rows each.

Width rule (deterministic): the bottom MLP is fixed (n_dense -> 512 -> 256 -> emb_dim, ReLU). The
top MLP is ``I -> W -> ... -> W -> 1`` with ``top_depth`` hidden layers of width W, where
``I = emb_dim + F(F-1)/2`` (F = n_tables + 1) is the interaction width. Forward matmul FLOPs/sample
    flops(W) = 2*sum(bottom in*out) + 2*F*F*emb_dim + 2*(I*W + (top_depth-1)*W*W + W)
are solved for ``flops(W) = mflops_per_sample * 1e6`` (positive root of the quadratic) and W is
rounded to the multiple of ``width_multiple`` (16) whose flops are closest to the target (W >= 16);
the result is within 5% of the target (else ValueError). top_depth is 3 for lc and 4 for hc.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

import mtiasim.frontend.custom_ops  # noqa: F401  (registers torch.ops.mtiasim.*)

from . import Workload, ZooModel, register
from ._common import (
    apply_overrides,
    cache_key,
    check_positive,
    dense_input,
    linear_flops,
    linear_params,
    mlp,
    tbe_indices,
    uniform_param,
)

RANGES = {"ranking-lc": (15.0, 105.0), "ranking-hc": (480.0, 1000.0)}


@dataclass(frozen=True)
class RankingConfig:
    mflops_per_sample: float
    n_tables: int
    emb_dim: int
    pooling: int | tuple  # one per table, or one value for all
    rows: int | tuple  # one per table, or one value for all
    n_dense: int
    bottom: tuple = (512, 256, 128)
    top_depth: int = 3
    width_multiple: int = 16

    def _per_table(self, key: str) -> list[int]:
        val = getattr(self, key)
        vals = [val] * self.n_tables if isinstance(val, int) else list(val)
        if len(vals) != self.n_tables or any(not isinstance(v, int) or v < 1 for v in vals):
            raise ValueError(f"{key} must be a positive int or {self.n_tables} positive ints")
        return vals

    @property
    def pooling_list(self) -> list[int]:
        return self._per_table("pooling")

    @property
    def rows_list(self) -> list[int]:
        return self._per_table("rows")

    @property
    def inter_dim(self) -> int:
        f = self.n_tables + 1
        return self.emb_dim + f * (f - 1) // 2

    def fixed_flops(self) -> int:
        """Bottom MLP + dot interaction (2*F*F*D for the full Gram matrix) FLOPs per sample."""
        f = self.n_tables + 1
        return linear_flops([self.n_dense, *self.bottom]) + 2 * f * f * self.emb_dim

    def flops(self, width: int) -> int:
        return self.fixed_flops() + linear_flops(self.top_sizes(width))

    def top_sizes(self, width: int) -> list[int]:
        return [self.inter_dim, *([width] * self.top_depth), 1]

    def width(self) -> int:
        """The top-MLP width W of the module docstring's rule."""
        target = self.mflops_per_sample * 1e6
        a, b = 2.0 * (self.top_depth - 1), 2.0 * (self.inter_dim + 1)
        c = self.fixed_flops() - target
        w = -c / b if a == 0 else (-b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)
        m = self.width_multiple
        cands = {max(m, math.floor(w / m) * m), max(m, math.ceil(w / m) * m)}
        best = min(sorted(cands), key=lambda x: abs(self.flops(x) - target))
        if abs(self.flops(best) - target) > 0.05 * target:
            raise ValueError(
                f"mflops_per_sample={self.mflops_per_sample}: cannot get within 5% with this "
                f"config (fixed part alone is {self.fixed_flops() / 1e6:.2f} MFLOPs/sample)")
        return best

    def validate(self, name: str) -> None:
        check_positive(n_tables=self.n_tables, emb_dim=self.emb_dim, n_dense=self.n_dense,
                       top_depth=self.top_depth, width_multiple=self.width_multiple)
        self.pooling_list, self.rows_list  # noqa: B018  (validates)
        if not self.bottom or any(not isinstance(v, int) or v < 1 for v in self.bottom):
            raise ValueError(f"{name}: bottom must be a non-empty list of positive ints")
        if self.bottom[-1] != self.emb_dim:
            raise ValueError(f"{name}: bottom[-1] ({self.bottom[-1]}) must equal emb_dim "
                             f"({self.emb_dim}) for the dot interaction")

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        w = self.width()
        d.update(top_width=w, top_sizes=self.top_sizes(w), inter_dim=self.inter_dim,
                 flops_per_sample=self.flops(w))
        return d


class RankingDLRM(nn.Module):
    """forward(dense[B,n_dense], indices[B,sum(pooling)] int64) -> [B,1] probability."""

    def __init__(self, cfg: RankingConfig):
        super().__init__()
        self.rows, self.pooling = cfg.rows_list, cfg.pooling_list
        self.bottom = mlp([cfg.n_dense, *cfg.bottom], last_act=True)
        self.emb_weights = uniform_param((sum(self.rows), cfg.emb_dim), max(self.rows))
        self.top = mlp(cfg.top_sizes(cfg.width()), last_act=False)

    def forward(self, dense, indices):
        x = self.bottom(dense)
        emb = torch.ops.mtiasim.tbe(indices, self.emb_weights, self.pooling, self.rows)
        return torch.sigmoid(self.top(torch.ops.mtiasim.dot_interaction(x, emb)))


class RankingModel(ZooModel):
    family = "ranking"
    phases = ("forward",)
    default_batch = 512
    default_seq_len = None
    default_dtype = "fp16"

    def __init__(self, name: str, cfg: RankingConfig, label: str):
        self.base, self.label = name.split(":")[0], label
        self._check_range(cfg.mflops_per_sample)
        self.cfg = cfg
        self.name = name
        lo, hi = RANGES[self.base]
        self.source = (f"Stand-in: MTIA 2i (ISCA'25) {label} complexity range {lo:g}-{hi:g} "
                       "MFLOPs/sample (mtia.md 3); the production configs are not published. "
                       "Architecture: DLRM (arXiv 1906.00091); sizes are estimates.")
        self.description = (
            f"{name}: DLRM-style stand-in for MTIA 2i {label} models at "
            f"{cfg.mflops_per_sample:g} MFLOPs/sample (real configs unpublished). "
            f"{cfg.n_tables} tables x {cfg.emb_dim}, pooling {cfg.pooling}, {cfg.rows} rows/table "
            f"(estimates), bottom {cfg.n_dense}-{'-'.join(map(str, cfg.bottom))}, dot interaction, "
            f"top MLP of {cfg.top_depth} x width W (solved for the FLOPs target) + sigmoid.")

    def _check_range(self, mflops) -> None:
        lo, hi = RANGES[self.base]
        if not isinstance(mflops, (int, float)) or not lo <= mflops <= hi:
            raise ValueError(f"{self.base}: mflops_per_sample must be in [{lo:g}, {hi:g}] "
                             f"({self.label} range, ISCA'25), got {mflops!r}")

    def variant(self, arg: str) -> RankingModel:
        try:
            mflops = float(arg)
        except ValueError:
            raise ValueError(f"{self.base}: ':' parameter is mflops_per_sample, got {arg!r}") from None
        cfg = dataclasses.replace(self.cfg, mflops_per_sample=mflops)
        return RankingModel(f"{self.base}:{mflops:g}", cfg, self.label)

    def _cfg(self, overrides: dict) -> RankingConfig:
        cfg = apply_overrides(self.cfg, overrides, self.name)
        self._check_range(cfg.mflops_per_sample)
        cfg.validate(self.name)
        return cfg

    def config(self) -> dict:
        return self.cfg.as_dict()

    def param_count(self, **overrides) -> int:
        cfg = self._cfg(overrides)
        return (sum(cfg.rows_list) * cfg.emb_dim + linear_params([cfg.n_dense, *cfg.bottom])
                + linear_params(cfg.top_sizes(cfg.width())))

    def build(self, batch=None, seq_len=None, phase=None, kv_len=None, device="meta", **overrides):
        cfg = self._cfg(overrides)
        batch = self.default_batch if batch is None else batch
        check_positive(batch=batch)
        if phase not in (None, "forward") or seq_len is not None or kv_len is not None:
            raise ValueError(f"{self.name}: ranking model takes only phase='forward' and no seq_len/kv_len")
        with torch.device(device):
            module = RankingDLRM(cfg).eval()
        inputs = (dense_input(batch, cfg.n_dense, device),
                  tbe_indices(batch, cfg.pooling_list, cfg.rows_list, device))
        return Workload(
            name=self.name, module=module, example_inputs=inputs, phase="forward", batch=batch,
            seq_len=None, kv_len=None, items=batch, item_unit="sample",
            default_dtype=self.default_dtype,
            cache_key=cache_key(self.name, "forward", batch, None, None, cfg.as_dict()),
        )


register(RankingModel("ranking-lc", RankingConfig(
    mflops_per_sample=60.0, n_tables=64, emb_dim=128, pooling=20, rows=1_000_000, n_dense=256,
    top_depth=3), "LC1-LC5"))
register(RankingModel("ranking-hc", RankingConfig(
    mflops_per_sample=500.0, n_tables=128, emb_dim=128, pooling=30, rows=4_000_000, n_dense=512,
    top_depth=4), "HC1-HC4"))
