"""The Python API: ``simulate(model_or_name, chip=..., ...)`` runs capture -> compile -> engine."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from mtiasim.chips import ChipSpec, load_chip
from mtiasim.compiler import CompileOptions, Program, compile
from mtiasim.engines import get_engine
from mtiasim.engines.result import Result
from mtiasim.fleet import Site, economics, load_site
from mtiasim.frontend import hf, zoo
from mtiasim.frontend.capture import capture, capture_cached
from mtiasim.frontend.replicate import replicate_layers
from mtiasim.graph.ir import Graph
from mtiasim.power.platform import PlatformError

_GRAPHS: dict[tuple, tuple[Graph, zoo.Workload]] = {}
_GRAPHS_MAX = 32


def workload_graph(name: str, *, batch: int | None = None, seq_len: int | None = None, phase: str | None = None,
                   kv_len: int | None = None, allow_cpu_fallback: bool = False,
                   **overrides: Any) -> tuple[Graph, zoo.Workload]:
    """A zoo model's graph: from this process's memo, else the on-disk capture cache, else captured.
    A decoder LLM deeper than two layers is captured with two and its second layer copied
    (``frontend/replicate.py``): the same graph op for op, in a fraction of the time.

    ``overrides`` change config fields (e.g. a tensor-parallel shard's head count). The returned
    workload has its module dropped (``module=None``) so memoised entries stay small."""
    key = (name.lower(), batch, seq_len, phase, kv_len, allow_cpu_fallback, tuple(sorted(overrides.items())))
    hit = _GRAPHS.get(key)
    if hit is not None:
        return hit
    entry = zoo.get(name)
    depth = overrides.get("n_layers", entry.config().get("n_layers")) if entry.family == "llm" else None
    n_layers = depth if isinstance(depth, int) else 0  # a bad value is left to build() to report
    graph: Graph | None = None
    if n_layers > 2:
        # a decoder's layers are the same ops: capture two and copy the second (frontend/replicate.py)
        w = entry.build(batch=batch, seq_len=seq_len, phase=phase or entry.phases[0], kv_len=kv_len,
                        **{**overrides, "n_layers": 2})
        two = capture_cached(w.cache_key, lambda: (w.module, w.example_inputs), name=w.name,
                             allow_cpu_fallback=allow_cpu_fallback)
        try:
            graph = replicate_layers(two, n_layers)
            w = dataclasses.replace(w, cache_key=f"{w.cache_key}|replicated to {n_layers} layers")
        except ValueError:  # not the layout replication knows (a new zoo decoder): trace every layer
            graph = None
    if graph is None:
        w = entry.build(batch=batch, seq_len=seq_len, phase=phase or entry.phases[0], kv_len=kv_len, **overrides)
        graph = capture_cached(w.cache_key, lambda: (w.module, w.example_inputs), name=w.name,
                               allow_cpu_fallback=allow_cpu_fallback)
    w = dataclasses.replace(w, module=None, example_inputs=())
    if len(_GRAPHS) >= _GRAPHS_MAX:
        _GRAPHS.pop(next(iter(_GRAPHS)))
    _GRAPHS[key] = (graph, w)
    return graph, w


def simulate(
    model_or_name: str | torch.nn.Module,
    chip: str | ChipSpec = "mtia-200",
    batch: int | None = None,
    seq_len: int | None = None,
    example_inputs: Sequence[Any] | None = None,
    engine: str = "analytical",
    *,
    dtype: str | None = None,
    phase: str | None = None,
    kv_len: int | None = None,
    chip_overrides: Mapping[str, Any] | None = None,
    allow_cpu_fallback: bool = False,
    options: CompileOptions | None = None,
    engine_options: Mapping[str, Any] | None = None,
    act_dtype: str | None = None,
) -> Result:
    """Predict how ``model_or_name`` runs on ``chip``.

    ``model_or_name`` is a zoo name (``"dlrm-v2"``, ``"llama2-70b"``; see ``mtiasim.frontend.zoo``)
    or any ``nn.Module``, which then needs ``example_inputs`` (meta tensors are fine), or a Hugging
    Face ``transformers`` model, whose inputs are made from ``batch`` and ``seq_len`` (a prefill of
    ``batch`` prompts of ``seq_len`` tokens; images or audio from its config). For zoo LLMs
    ``phase`` is ``"prefill"`` (default; ``seq_len`` prompt tokens) or ``"decode"`` (one token per
    sequence with ``kv_len`` cached tokens). ``engine`` is ``"analytical"`` (any chip) or
    ``"gpu"`` (GPU presets; ``engine_options={"stack": "vllm"}`` picks the software stack).
    ``act_dtype`` stores activations between kernels in that dtype (default: the zoo model's
    deployment default when ``dtype`` is its default, e.g. INT8 for resnet50; else 16-bit).
    Returns a :class:`~mtiasim.engines.result.Result`.
    """
    spec = load_chip(chip, chip_overrides)
    if isinstance(model_or_name, str):
        graph, w = workload_graph(model_or_name, batch=batch, seq_len=seq_len, phase=phase, kv_len=kv_len,
                                  allow_cpu_fallback=allow_cpu_fallback)
        meta = dict(model=w.name, phase=w.phase, batch=w.batch, seq_len=w.seq_len, kv_len=w.kv_len,
                    items=w.items, item_unit=w.item_unit)
        default_dtype = w.default_dtype
        asked = options.dtype if options is not None else dtype
        if act_dtype is None and (options is None or options.act_dtype is None) and asked in (None, w.default_dtype):
            act_dtype = w.default_act_dtype  # the deployment default that goes with the default precision
    elif isinstance(model_or_name, torch.nn.Module) and example_inputs is None and hf.is_hf_model(model_or_name):
        module, inputs, meta = hf.wrap(model_or_name, batch, seq_len)
        graph = capture(module, inputs, name=meta["model"], allow_cpu_fallback=allow_cpu_fallback)
        default_dtype = dtype or hf.config_dtype(model_or_name) or "fp32"
    elif isinstance(model_or_name, torch.nn.Module):
        if example_inputs is None:
            raise ValueError("simulate(module, ...) needs example_inputs (a tuple of tensors; meta tensors work); "
                             "a Hugging Face model takes batch= and seq_len= instead")
        graph = capture(model_or_name, example_inputs, allow_cpu_fallback=allow_cpu_fallback)
        first = next((t for t in example_inputs if isinstance(t, torch.Tensor) and t.dim() > 0), None)
        b = int(first.shape[0]) if first is not None else 1
        meta = dict(model=type(model_or_name).__name__, phase=phase or "forward", batch=batch or b,
                    seq_len=seq_len, kv_len=kv_len, items=batch or b, item_unit="sample")
        default_dtype = "fp32" if dtype is None else dtype
    else:
        raise TypeError(f"model_or_name must be a zoo name or an nn.Module, got {type(model_or_name).__name__}")
    opts = options or CompileOptions(dtype=dtype)
    if act_dtype is not None:
        opts = CompileOptions(**{**opts.model_dump(), "act_dtype": act_dtype})  # validates the dtype
    program = compile(graph, spec, opts, default_dtype=default_dtype)
    return run_program(program, engine, engine_options, dtype=opts.dtype or default_dtype, **meta)


def run_program(program: Program, engine: str = "analytical", engine_options: Mapping[str, Any] | None = None,
                **meta: Any) -> Result:
    cls: Callable[..., Any] = get_engine(engine)
    return cls(program, **(engine_options or {})).run(**meta)


def compare(model: str, chips: Sequence[str], *, batch: int | None = None, seq_len: int | None = None,
            dtype: str | None = None, kv_len: int | None = None,
            chip_overrides: Mapping[str, Any] | None = None,
            cost_overrides: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per (chip, phase): every phase of a zoo model (prefill and decode for LLMs) on each chip,
    with the chip's power and the system's at the wall, and its cost of ownership (``fleet.economics``;
    ``cost_overrides`` set ``data/fleet/site.yaml`` parameters).

    For LLM decode the KV cache holds ``kv_len`` tokens (default: the prompt length)."""
    entry = zoo.get(model)
    site = load_site(cost_overrides)
    rows = []
    for chip in chips:
        spec = load_chip(chip, chip_overrides)
        for ph in entry.phases:
            r = simulate(model, chip=spec, batch=batch, seq_len=seq_len, dtype=dtype, phase=ph,
                         kv_len=kv_len if ph == "decode" else None)
            bounds = r.bound_breakdown_s()
            row = {
                "chip": r.chip, "phase": r.phase, "batch": r.batch, "seq_len": r.seq_len, "kv_len": r.kv_len,
                "dtype": r.dtype, "latency_s": r.latency_s, "throughput_per_s": r.throughput_per_s,
                "item_unit": r.item_unit, "energy_j": r.energy_j, "power_w": r.power_w,
                "perf_per_w": r.perf_per_w, "clock_scale": r.clock_scale,
                "dominant_bound": max(bounds, key=bounds.get) if bounds else "-",
                "fits_in_memory": r.fits_in_memory, "notes": list(r.notes),
            }
            extra = economics_row(spec, r, site)
            row["notes"] += extra.pop("economics_notes")
            rows.append({**row, **extra})
    return rows


def economics_row(spec: ChipSpec, r: Result, site: Site) -> dict[str, Any]:
    """A result's wall power and cost of ownership as flat fields (None where not known), and
    notes saying why a figure is missing."""
    keys = ("platform", "wall_power_w", "perf_per_wall_w", "usd_per_h", "items_per_usd",
            "kg_co2e_per_million_items")
    row: dict[str, Any] = dict.fromkeys(keys)
    try:
        t = economics(spec, chip_power_w=r.power_w, throughput_per_s=r.throughput_per_s, site=site)
    except PlatformError as e:
        return {**row, "economics_notes": [str(e)]}
    if t is None:
        return {**row, "economics_notes": [f"{spec.name}: power unknown (no TDP), so no wall power or cost"]}
    wall = t.busy.facility_w
    return {"platform": t.platform, "wall_power_w": wall,
            "perf_per_wall_w": r.throughput_per_s / wall if wall > 0 else None, "usd_per_h": t.usd_per_h,
            "items_per_usd": t.items_per_usd, "kg_co2e_per_million_items": t.kg_co2e_per_million_items,
            "economics_notes": t.notes}
