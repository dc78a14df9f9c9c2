"""LoRA adapters (Hu et al., "LoRA", ICLR'22): a frozen base model whose chosen linear layers gain
a trainable rank-r update, y = W x + (alpha / r) B A x."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: the MLPerf Training llama2_70b_lora reference: rank 16 on the fused QKV and output projections
#: (mlcommons/training, llama2_70b_lora/run_llama_70B_scrolls_r16.sh: --lora_r 16 --lora_alpha 32
#: --lora_target_modules "qkv_proj,o_proj")
DEFAULT_TARGETS = ("qkv_proj", "o_proj")


class LoRALinear(nn.Module):
    """``base`` (frozen) plus ``b @ a`` of rank ``rank``; ``b`` starts at zero as in the paper."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        self.base, self.scale = base, (alpha if alpha is not None else 2.0 * rank) / rank
        dev, dtype = base.weight.device, base.weight.dtype
        self.a = nn.Parameter(torch.empty(rank, base.in_features, device=dev, dtype=dtype))
        self.b = nn.Parameter(torch.zeros(base.out_features, rank, device=dev, dtype=dtype))
        if dev.type != "meta":
            nn.init.kaiming_uniform_(self.a, a=5**0.5)

    def forward(self, x):
        return self.base(x) + self.scale * F.linear(F.linear(x, self.a), self.b)


def apply_lora(module: nn.Module, rank: int, targets: Sequence[str] = DEFAULT_TARGETS) -> int:
    """Freeze every parameter of ``module`` and wrap each ``nn.Linear`` whose attribute name is in
    ``targets`` with a rank-``rank`` adapter, in place. Returns how many layers were wrapped."""
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"lora_rank must be a positive integer, got {rank!r}")
    module.requires_grad_(False)
    hits = [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
            if name in targets and isinstance(child, nn.Linear)]
    if not hits:
        linears = sorted({n.rsplit(".", 1)[-1] for n, m in module.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"no nn.Linear named {list(targets)} to adapt; the model's linear layers are {linears}")
    for parent, name, child in hits:
        setattr(parent, name, LoRALinear(child, rank))
    return len(hits)
