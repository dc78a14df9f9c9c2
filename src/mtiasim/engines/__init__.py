"""Engines interpret a compiled Program and return a Result. Registry: name -> engine class."""

from __future__ import annotations

from typing import Any

from mtiasim.engines.analytical import AnalyticalEngine
from mtiasim.engines.gpu import GPUEngine
from mtiasim.engines.result import OpResult, Result

ENGINES: dict[str, Any] = {"analytical": AnalyticalEngine, "gpu": GPUEngine}


def get_engine(name: str) -> Any:
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine '{name}'; available: {', '.join(ENGINES)}") from None


__all__ = ["ENGINES", "AnalyticalEngine", "GPUEngine", "OpResult", "Result", "get_engine"]
