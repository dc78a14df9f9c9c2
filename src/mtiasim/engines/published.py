"""Whole-model latencies a vendor publishes, and the GPU engine's predictions of each.

``data/calibration/measured/published/<name>.yaml`` holds latencies read from a vendor's own
published tables (its file names the page, the GPU, the engines and the preset to check them on);
unlike ``measured.py``'s files they were not timed by this project. ``check_published(name)``
simulates each point with the gpu engine under the stack that ran it and returns prediction beside
measurement as ``measured.KernelCheck``s (kind ``<model> <dtype> S=<S>``).

``tensorrt-demo-bert``: NVIDIA's TensorRT BERT-Large engines on an A100, fixed sequence lengths
128 and 384, batches 1-128, INT8 and FP16. The fused-attention efficiency of the ``tensorrt``
stack's INT8 kernel (``gpu.yaml`` ``attention_kernels.tensorrt-fmha``) is fitted to its INT8 points.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import yaml

from mtiasim.compiler import CompileOptions
from mtiasim.engines.measured import KernelCheck, measured_file, measured_names


def published_sets() -> list[str]:
    return measured_names("published", ".yaml")


@lru_cache(maxsize=8)
def load_published(name: str) -> dict[str, Any]:
    path = measured_file("published", name, ".yaml", "published measurements")
    data = yaml.safe_load(path.read_text())
    batches = data["batch"]
    for dtype, by_len in data["latency_ms"].items():
        for s, values in by_len.items():
            if len(values) != len(batches):
                raise ValueError(f"{path.name}: latency_ms.{dtype}.{s} has {len(values)} values for "
                                 f"{len(batches)} batch sizes")
    return data


def check_published(name: str = "tensorrt-demo-bert", min_batch: int = 1) -> list[KernelCheck]:
    """Every point of a published set with batch >= ``min_batch``, predicted by the gpu engine
    on the set's preset with the software stack that ran it (the set's ``stack``), weights and
    activations in the engine's dtype (as TensorRT's INT8 and FP16 engines keep them)."""
    from mtiasim.api import simulate

    data = load_published(name)
    out = []
    for dtype, by_len in data["latency_ms"].items():
        for s, values in by_len.items():
            for b, ms in zip(data["batch"], values):
                if b < min_batch:
                    continue
                res = simulate(data["model"], chip=data["preset"], batch=b, seq_len=int(s), engine="gpu",
                               engine_options={"stack": data["stack"]}, options=CompileOptions(dtype=dtype, act_dtype=dtype))
                out.append(KernelCheck(f"{data['model']} {dtype} S={s}", f"B={b}", ms * 1e-3, res.latency_s))
    return out
