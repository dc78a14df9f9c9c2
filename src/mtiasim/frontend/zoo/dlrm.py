"""MLPerf Inference DLRM-v2: DLRM-DCNv2 (TorchRec ``DLRM_DCN``) on Criteo 1TB multi-hot.

Config from mlperf.md 1.1 (mlcommons/inference ``recommendation/dlrm_v2`` reference, Intel v4.1
``backend_pytorch_native.py`` instantiation, multi-hot sizes from ASUSTeK v4.1 README):
13 dense features -> bottom MLP 13->512->256->128 (ReLU after every layer, TorchRec ``DenseArch``);
26 tables x dim 128, 204,184,588 rows, 214 lookups per user-item pair, sum-pooled by ONE
``torch.ops.mtiasim.tbe``; interaction: concat(dense[B,128], emb[B,26*128]) = [B,3456] through 3
low-rank (rank 512) DCNv2 cross layers (``torch.ops.mtiasim.dcn_cross``, TorchRec ``LowRankCrossNet``);
over arch 3456->1024->1024->512->256 (ReLU) ->1, sigmoid.
"""

from __future__ import annotations

import dataclasses
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
    linear_params,
    mlp,
    tbe_indices,
    uniform_param,
)

MLPERF_ROWS = (40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282,
               10, 2209, 11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36)
MLPERF_POOLING = (3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1)


@dataclass(frozen=True)
class DLRMv2Config:
    n_dense: int = 13
    rows: tuple = MLPERF_ROWS
    pooling: tuple = MLPERF_POOLING
    emb_dim: int = 128
    bottom: tuple = (512, 256, 128)  # dense_arch_layer_sizes (input n_dense)
    top: tuple = (1024, 1024, 512, 256, 1)  # over_arch_layer_sizes (input = interaction width)
    dcn_layers: int = 3
    dcn_rank: int = 512

    @property
    def n_tables(self) -> int:
        return len(self.rows)

    @property
    def inter_dim(self) -> int:
        return self.bottom[-1] + self.n_tables * self.emb_dim

    def validate(self) -> None:
        check_positive(n_dense=self.n_dense, emb_dim=self.emb_dim, dcn_rank=self.dcn_rank)
        if not isinstance(self.dcn_layers, int) or self.dcn_layers < 0:
            raise ValueError(f"dlrm-v2: dcn_layers must be an int >= 0, got {self.dcn_layers!r}")
        if len(self.rows) != len(self.pooling) or not self.rows:
            raise ValueError(f"dlrm-v2: rows ({len(self.rows)}) and pooling ({len(self.pooling)}) "
                             "must be non-empty and the same length (one per table)")
        for key in ("rows", "pooling", "bottom", "top"):
            vals = getattr(self, key)
            if not vals or any(not isinstance(v, int) or v < 1 for v in vals):
                raise ValueError(f"dlrm-v2: {key} must be a non-empty list of positive ints")
        if self.bottom[-1] != self.emb_dim:
            raise ValueError(f"dlrm-v2: bottom[-1] ({self.bottom[-1]}) must equal emb_dim "
                             f"({self.emb_dim}) as in TorchRec DLRM_DCN")

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["n_tables"], d["inter_dim"] = self.n_tables, self.inter_dim
        return d


class DLRMv2(nn.Module):
    """forward(dense[B,n_dense] float, indices[B,sum(pooling)] int64) -> [B,1] click probability."""

    def __init__(self, cfg: DLRMv2Config):
        super().__init__()
        self.rows, self.pooling = list(cfg.rows), list(cfg.pooling)
        self.bottom = mlp([cfg.n_dense, *cfg.bottom], last_act=True)
        # All tables stacked row-wise: [sum(rows), D] (FBGEMM TBE layout).
        self.emb_weights = uniform_param((sum(cfg.rows), cfg.emb_dim), max(cfg.rows))
        d, r = cfg.inter_dim, cfg.dcn_rank
        self.dcn_u = nn.ParameterList(uniform_param((r, d), d) for _ in range(cfg.dcn_layers))
        self.dcn_v = nn.ParameterList(uniform_param((d, r), r) for _ in range(cfg.dcn_layers))
        self.dcn_b = nn.ParameterList(uniform_param((d,), r) for _ in range(cfg.dcn_layers))
        self.top = mlp([d, *cfg.top], last_act=False)

    def forward(self, dense, indices):
        x_dense = self.bottom(dense)
        emb = torch.ops.mtiasim.tbe(indices, self.emb_weights, self.pooling, self.rows)
        x0 = torch.cat([x_dense, emb.flatten(1)], dim=1)
        xl = x0
        for u, v, b in zip(self.dcn_u, self.dcn_v, self.dcn_b):
            xl = torch.ops.mtiasim.dcn_cross(x0, xl, u, v, b)
        return torch.sigmoid(self.top(xl))


def dlrm_v2_param_count(cfg: DLRMv2Config) -> int:
    d, r = cfg.inter_dim, cfg.dcn_rank
    return (sum(cfg.rows) * cfg.emb_dim + linear_params([cfg.n_dense, *cfg.bottom])
            + cfg.dcn_layers * (2 * r * d + d) + linear_params([d, *cfg.top]))


class DLRMv2Model(ZooModel):
    name = "dlrm-v2"
    family = "ranking"
    phases = ("forward",)
    default_batch = 2048
    default_seq_len = None
    default_dtype = "int8"  # MLPerf NVIDIA v4.1 ran bottom/emb/interaction/top in INT8
    source = ("MLPerf Inference dlrm-v2 reference (mlcommons/inference recommendation/dlrm_v2; "
              "TorchRec DLRM_DCN), config as in mlperf.md 1.1")
    description = ("DLRM-DCNv2 (MLPerf dlrm-v2): 13 dense, 26 tables x 128 (204,184,588 rows, 214 "
                   "multi-hot lookups/pair), bottom 13-512-256-128, 3 low-rank (512) DCNv2 cross "
                   "layers on [B,3456], top 1024-1024-512-256-1 + sigmoid. One item = one user-item "
                   "pair; an MLPerf LoadGen sample aggregates ~270 pairs (100-700).")

    def __init__(self):
        self.cfg = DLRMv2Config()

    def config(self) -> dict:
        return self.cfg.as_dict()

    def param_count(self, **overrides) -> int:
        return dlrm_v2_param_count(apply_overrides(self.cfg, overrides, self.name))

    def build(self, batch=None, seq_len=None, phase=None, kv_len=None, device="meta", **overrides):
        cfg = apply_overrides(self.cfg, overrides, self.name)
        cfg.validate()
        batch = self.default_batch if batch is None else batch
        check_positive(batch=batch)
        if phase not in (None, "forward") or seq_len is not None or kv_len is not None:
            raise ValueError(f"{self.name}: ranking model takes only phase='forward' and no seq_len/kv_len")
        with torch.device(device):
            module = DLRMv2(cfg).eval()
        inputs = (dense_input(batch, cfg.n_dense, device),
                  tbe_indices(batch, cfg.pooling, cfg.rows, device))
        return Workload(
            name=self.name, module=module, example_inputs=inputs, phase="forward", batch=batch,
            seq_len=None, kv_len=None, items=batch, item_unit="sample",
            default_dtype=self.default_dtype,
            cache_key=cache_key(self.name, "forward", batch, None, None, cfg.as_dict()),
        )


register(DLRMv2Model())
