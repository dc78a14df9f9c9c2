"""Hugging Face ``transformers`` models, captured as they come (``pip install mtiasim[hf]``).

A ``PreTrainedModel`` returns a dataclass holding a ``DynamicCache``, which ``torch.export``
cannot flatten, and takes its inputs by keyword. :class:`HFForward` calls it as a serving stack
runs a prompt (a prefill): its main input by keyword, ``use_cache=False`` where the model takes
it, and the first output (logits, or the last hidden state of a base model). Decode steps with a
KV cache are modelled by the zoo's own KV-cache graphs. The example inputs are built from
``batch`` and ``seq_len`` (token ids) or from the config (images, audio features).

``transformers`` is imported only by :func:`from_config_file`; the rest only looks at classes.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: the sequence length a token model is timed at when none is given
DEFAULT_SEQ_LEN = 512


def is_hf_model(module: Any) -> bool:
    """A ``transformers.PreTrainedModel`` (checked by class, without importing transformers)."""
    return isinstance(module, nn.Module) and any(
        c.__name__ == "PreTrainedModel" and c.__module__.startswith("transformers")
        for c in type(module).__mro__)


class HFForward(nn.Module):
    """``model(**{input_name: x}, use_cache=False)[0]``: one prefill of a transformers model."""

    def __init__(self, model: nn.Module, input_name: str):
        super().__init__()
        self.model = model
        self.input_name = input_name
        params = inspect.signature(model.forward).parameters
        self.extra = {k: v for k, v in (("use_cache", False), ("return_dict", True)) if k in params}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(**{self.input_name: x}, **self.extra)
        return out[0]


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def example_input(model: nn.Module, batch: int, seq_len: int | None) -> tuple[str, torch.Tensor, str]:
    """(input name, example input, item unit) for a transformers model: ``batch`` x ``seq_len``
    token ids (zeros), or ``batch`` images / audio clips of the size its config gives."""
    batch = _positive("batch", batch)
    cfg = model.config
    name = getattr(model, "main_input_name", "input_ids")
    dev = _device(model)
    if name == "input_ids":
        s = _positive("seq_len", seq_len if seq_len is not None else DEFAULT_SEQ_LEN)
        limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        if isinstance(limit, int) and s > limit:
            raise ValueError(f"seq_len {s} exceeds the model's {limit} positions (config max_position_embeddings)")
        return name, torch.zeros(batch, s, dtype=torch.long, device=dev), "token"
    if name == "pixel_values":
        vc = getattr(cfg, "vision_config", cfg)
        size = getattr(vc, "image_size", 224)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return name, torch.zeros(batch, getattr(vc, "num_channels", 3), h, w, device=dev), "sample"
    if name == "input_features":  # Whisper: log-mel frames for max_source_positions after a stride-2 conv
        frames = 2 * getattr(cfg, "max_source_positions", 1500)
        return name, torch.zeros(batch, getattr(cfg, "num_mel_bins", 80), frames, device=dev), "sample"
    raise ValueError(f"{type(model).__name__}: no example input for main input {name!r}; pass example_inputs")


def wrap(model: nn.Module, batch: int | None, seq_len: int | None) -> tuple[nn.Module, tuple[torch.Tensor], dict]:
    """(module to capture, its example inputs, result metadata) for a transformers model."""
    b = 1 if batch is None else batch
    name, x, unit = example_input(model, b, seq_len)
    items = b * x.shape[1] if unit == "token" else b
    meta = dict(model=type(model).__name__, phase="prefill" if unit == "token" else "forward", batch=b,
                seq_len=int(x.shape[1]) if unit == "token" else None, kv_len=None, items=items, item_unit=unit)
    return HFForward(model, name), (x,), meta


def config_dtype(model: nn.Module) -> str | None:
    """The precision a transformers config names (``dtype``/``torch_dtype``), as an IR dtype."""
    from mtiasim.graph.dtypes import from_torch

    dt = getattr(model.config, "dtype", None) or getattr(model.config, "torch_dtype", None)
    if isinstance(dt, str):
        dt = getattr(torch, dt, None)
    try:
        return from_torch(dt) if isinstance(dt, torch.dtype) else None
    except ValueError:
        return None


def from_config_file(path: str | Path) -> nn.Module:
    """A transformers model built on meta tensors (no weights, no network) from a local
    ``config.json``: a causal LM where the architecture has one, else the base model."""
    try:
        import transformers
    except ImportError:
        raise ImportError("reading a Hugging Face config needs transformers: pip install 'mtiasim[hf]'") from None
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise FileNotFoundError(f"--hf-config: no such file {p}")
    try:
        json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--hf-config {p}: not a JSON config ({e})") from None
    cfg = transformers.AutoConfig.from_pretrained(str(p.parent) if p.name == "config.json" else str(p))
    with torch.device("meta"):
        for auto in (transformers.AutoModelForCausalLM, transformers.AutoModel):
            try:
                return auto.from_config(cfg)
            except ValueError:
                continue
    raise ValueError(f"--hf-config {p}: transformers has no model class for model_type {cfg.model_type!r}")
