"""Model zoo: PyTorch definitions of the workloads the simulator runs.

Every entry is a :class:`ZooModel`; ``get(name).build(...)`` returns a :class:`Workload` whose
``module`` and ``example_inputs`` can be captured with ``torch.export.export``. Modules are
built on the ``meta`` device by default, so even Llama3.1-405B or the 204M-row DLRM-v2 embedding
table cost no memory.

Entries (``names()``): ``dlrm-v2`` (MLPerf DLRM-DCNv2), ``ranking-lc`` / ``ranking-hc`` (public
stand-ins for MTIA 2i's unpublished LC/HC production models; ``"ranking-hc:940"`` selects
``mflops_per_sample=940``), Llama2 7B/13B/70B, Llama3.1 8B/70B/405B, Mixtral-8x7B, GPT-J 6B,
``bert-large`` (MLPerf bert) and ``resnet50`` (MLPerf resnet50).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Workload:
    """One capturable run of a zoo model (module + inputs + what one run produces)."""

    name: str  # zoo name, e.g. "llama2-70b"
    module: torch.nn.Module  # built on `device` (default "meta": no weight memory)
    example_inputs: tuple  # tensors on the same device
    phase: str  # "forward" (ranking) | "prefill" | "decode" (LLMs)
    batch: int
    seq_len: int | None  # prompt tokens (prefill); 1 = new tokens per sequence (decode); None (ranking)
    kv_len: int | None  # tokens already in the KV cache for decode; None otherwise
    items: int  # samples (ranking: batch), tokens (prefill: batch*seq_len, decode: batch)
    item_unit: str  # "sample" or "token"
    default_dtype: str  # e.g. "int8" (dlrm-v2), "fp8" (llama2-70b), "bf16", "fp16"
    cache_key: str  # deterministic string of everything that defines the graph
    #: activation storage dtype that goes with ``default_dtype`` (None: the compiler's 16-bit policy)
    default_act_dtype: str | None = None


class UnknownModelError(ValueError, KeyError):
    """Raised by :func:`get` for a name that is not registered (both a ValueError and a KeyError)."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ZooModel(ABC):
    """One registered zoo entry. Subclasses set the attributes below in ``__init__``."""

    name: str
    family: str  # "ranking" | "llm" | "encoder" | "vision"
    description: str
    source: str  # where the config comes from
    default_batch: int
    default_seq_len: int | None
    default_dtype: str
    phases: tuple[str, ...]  # ("forward",) or ("prefill", "decode")

    @abstractmethod
    def config(self) -> dict:
        """The (published) config values as a plain dict."""

    @abstractmethod
    def param_count(self) -> int:
        """Analytic parameter count computed from :meth:`config`."""

    @abstractmethod
    def build(
        self,
        batch: int | None = None,
        seq_len: int | None = None,
        phase: str | None = None,
        kv_len: int | None = None,
        device: str = "meta",
        **overrides,
    ) -> Workload:
        """Build the module and example inputs; ``overrides`` replace config fields."""

    def variant(self, arg: str) -> ZooModel:
        """The model selected by ``"name:arg"`` in :func:`get`; most entries take no argument."""
        raise ValueError(f"zoo model {self.name!r} takes no ':' parameter (got {arg!r})")

    def __repr__(self) -> str:
        return f"<ZooModel {self.name} ({self.family})>"


_REGISTRY: dict[str, ZooModel] = {}


def register(model: ZooModel) -> ZooModel:
    """Add ``model`` under ``model.name`` (lower-cased). Re-registering the same class replaces it."""
    key = model.name.lower()
    old = _REGISTRY.get(key)
    if old is not None and type(old) is not type(model):
        raise ValueError(f"zoo name {model.name!r} is already registered by {type(old).__name__}")
    _REGISTRY[key] = model
    return model


def names() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> ZooModel:
    """Look up a model, case-insensitively. ``"base:arg"`` selects a parameterised variant
    (``"ranking-hc:940"`` is ranking-hc with ``mflops_per_sample=940``)."""
    base, sep, arg = name.strip().lower().partition(":")
    model = _REGISTRY.get(base)
    if model is None:
        raise UnknownModelError(f"unknown zoo model {name!r}; known models: {', '.join(names())}")
    return model.variant(arg) if sep else model


# Registration of the concrete families (imported last: they import the names above).
from . import bert, dlrm, llm, ranking, resnet  # noqa: E402, F401

__all__ = ["UnknownModelError", "Workload", "ZooModel", "get", "names", "register"]
