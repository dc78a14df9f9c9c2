"""Kernel measurements on real GPUs, and the GPU engine's predictions of each of them.

``data/calibration/measured/kernels/<chip>.json`` holds kernels timed by ``benchmarks/gpu_kernels.py``
on a real GPU (which one, its driver and torch version are in the file's ``env``). ``check(chip)``
rebuilds every measured kernel as a one-op graph, compiles it for the preset chip, times it with
the GPU engine under the software stack that ran it, and returns prediction beside measurement. ``check_models(chip)`` does the same for whole zoo
models run end to end (``measured/models/<chip>.json``, ``benchmarks/gpu_e2e.py``).

The measurements time each kernel alone (CUDA events around one launch, L2 flushed before it), so
a prediction here is the kernel's body (compute and memory, their imperfect overlap) plus the
floor an isolated launch carries: the calibrated ``isolated_kernel_floor_s`` for tensor-core
kernels, the measured event time of a tiny kernel for the others. Serving runs use the stack's
CUDA-graph launch cost instead (``engines/gpu.py``).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from mtiasim.chips import load_chip
from mtiasim.compiler import CompileOptions, compile
from mtiasim.engines.gpu import GPUEngine, gpu_calibration
from mtiasim.graph import Graph, Node, TensorSpec

# which software stack's kernels each measurement ran
GEMM_STACK = "pytorch-eager"  # cuBLAS / cuBLASLt through torch.mm, torch._scaled_mm, torch._int_mm
ATTENTION_KERNEL = {"cudnn": "cudnn", "flash": "flash-attention-2"}  # SDPA backend -> attention kernel


@dataclass(frozen=True)
class KernelCheck:
    kind: str
    label: str
    measured_s: float
    predicted_s: float

    @property
    def error_pct(self) -> float:
        return (self.predicted_s - self.measured_s) / self.measured_s * 100.0


def measured_names(folder: str, suffix: str) -> list[str]:
    """The files in ``data/calibration/measured/<folder>/`` ending in ``suffix``, without it."""
    d = resources.files("mtiasim").joinpath("data", "calibration", "measured", folder)
    return sorted(p.name.removesuffix(suffix) for p in d.iterdir() if p.name.endswith(suffix))


def measured_file(folder: str, name: str, suffix: str, what: str):
    """``data/calibration/measured/<folder>/<name><suffix>``, or a ValueError that names ``what``
    was asked for and the ones there."""
    names = measured_names(folder, suffix)
    if name not in names:
        raise ValueError(f"no {what} '{name}'; available: {', '.join(names)}")
    return resources.files("mtiasim").joinpath("data", "calibration", "measured", folder, f"{name}{suffix}")


def measured_chips() -> list[str]:
    return measured_names("kernels", ".json")


@lru_cache(maxsize=8)
def load(chip: str) -> dict[str, Any]:
    return json.loads(measured_file("kernels", chip, ".json", "kernel measurements for").read_text())


@lru_cache(maxsize=8)
def load_models(chip: str) -> dict[str, Any]:
    path = resources.files("mtiasim").joinpath("data", "calibration", "measured", "models", f"{chip}.json")
    if not path.is_file():
        raise ValueError(f"no whole-model measurements for '{chip}'")
    return json.loads(path.read_text())


# how each end-to-end measurement ran: which stack's kernels and launch costs
MODEL_STACKS = {"eager_s": "pytorch-eager", "cuda_graph_s": "pytorch-cuda-graph"}


def check_models(chip: str = "h100-sxm-80gb") -> list[KernelCheck]:
    """The zoo models measured end to end on ``chip`` (``benchmarks/gpu_e2e.py``: the very module
    mtiasim captures, run by PyTorch) beside the GPU engine's prediction. PyTorch runs every op as
    its own kernel and ``torch.cat`` copies the whole KV cache, so the graph is compiled with
    fusion off and the KV-cache concat as a copy (``fuse=False, kv_in_place=False``)."""
    from mtiasim.api import simulate

    out = []
    for r in load_models(chip)["records"]:
        kw: dict[str, Any] = {"batch": r["batch"], "phase": r["phase"]}
        kw.update(seq_len=r["seq_len"]) if r["phase"] == "prefill" else kw.update(kv_len=r["kv_len"])
        n = r.get("seq_len", r.get("kv_len"))
        for key, stack in MODEL_STACKS.items():
            res = simulate(r["model"], chip=chip, engine="gpu", engine_options={"stack": stack},
                           options=CompileOptions(dtype="bf16", fuse=False, kv_in_place=False), **kw)
            out.append(KernelCheck(f"model_{r['phase']}_{key.removesuffix('_s')}",
                                   f"{r['model']} {r['phase']} B={r['batch']} {'S' if r['phase'] == 'prefill' else 'KV'}={n}",
                                   r[key], res.latency_s))
    return out


def _predict(graph: Graph, chip: str, stack: str, dtype: str, floor_s: float, act_dtype: str | None = None,
             attention_kernel: str | None = None) -> float:
    p = compile(graph, load_chip(chip), CompileOptions(dtype=dtype, act_dtype=act_dtype))
    eng = GPUEngine(p, stack=stack, attention_kernel=attention_kernel)
    total = 0.0
    for k in p.kernels:
        t = eng.kernel_time(k)
        total += t.time_s - t.overhead_s + floor_s
    return total


def _gemm(r: dict) -> Graph:
    m, n, k = r["m"], r["n"], r["k"]
    t = {"x": TensorSpec((m, k), "fp32", "input"), "w": TensorSpec((n, k), "fp32", "param"),
         "y": TensorSpec((m, n), "fp32")}
    return Graph("gemm", t, [Node("fc", "linear", ["x", "w"], ["y"])], ["x"], ["y"])


def _grouped(r: dict) -> Graph:
    """A grouped GEMM (MoE experts) as a batched matmul: x [G, M, K] @ w [G, K, N]."""
    g, m, n, k = r["groups"], r["m"], r["n"], r["k"]
    t = {"x": TensorSpec((g, m, k), "fp32", "input"), "w": TensorSpec((g, k, n), "fp32", "param"),
         "y": TensorSpec((g, m, n), "fp32")}
    return Graph("grouped", t, [Node("mm", "matmul", ["x", "w"], ["y"])], ["x"], ["y"])


def _attention(b: int, hq: int, hkv: int, s: int, kv: int, d: int, causal: bool) -> Graph:
    t = {"q": TensorSpec((b, hq, s, d), "bf16", "input"), "k": TensorSpec((b, hkv, kv, d), "bf16", "input"),
         "v": TensorSpec((b, hkv, kv, d), "bf16", "input"), "o": TensorSpec((b, hq, s, d), "bf16")}
    return Graph("attn", t, [Node("attn", "attention", ["q", "k", "v"], ["o"], {"causal": causal})],
                 ["q", "k", "v"], ["o"])


def _pointwise(op: str, shape: tuple[int, ...]) -> Graph:
    t = {"x": TensorSpec(shape, "bf16", "input"), "y": TensorSpec(shape, "bf16")}
    inputs = ["x"]
    if op == "layernorm":
        t["w"] = TensorSpec((shape[-1],), "bf16", "param")
        t["b"] = TensorSpec((shape[-1],), "bf16", "param")
        inputs = ["x", "w", "b"]
    return Graph(op, t, [Node(op, op, inputs, ["y"])], ["x"], ["y"])


def _conv(r: dict) -> Graph:
    n, cin, cout, hw, ks, st = r["batch"], r["c_in"], r["c_out"], r["hw"], r["kernel"], r["stride"]
    ho = (hw + 2 * (ks // 2) - ks) // st + 1
    t = {"x": TensorSpec((n, cin, hw, hw), "fp16", "input"), "w": TensorSpec((cout, cin, ks, ks), "fp16", "param"),
         "y": TensorSpec((n, cout, ho, ho), "fp16")}
    node = Node("conv", "conv2d", ["x", "w"], ["y"], {"stride": st, "padding": ks // 2})
    return Graph("conv", t, [node], ["x"], ["y"])


EMBEDDING_DTYPES = {"float16": "fp16", "float32": "fp32", "bfloat16": "bf16"}  # torch dtype -> mtiasim


def _embedding_bag(r: dict) -> Graph:
    """``F.embedding_bag(idx, table, offsets, mode="sum")`` over ``bags`` bags of ``pooling`` rows."""
    lookups, dt = r["bags"] * r["pooling"], EMBEDDING_DTYPES[r["dtype"]]
    t = {"w": TensorSpec((r["rows"], r["dim"]), dt, "param"), "idx": TensorSpec((lookups,), "int64", "input"),
         "off": TensorSpec((r["bags"],), "int64", "input"), "y": TensorSpec((r["bags"], r["dim"]), dt)}
    return Graph("embedding_bag", t, [Node("bag", "embedding_bag", ["w", "idx", "off"], ["y"], {"mode": "sum"})],
                 ["idx", "off"], ["y"])


def check(chip: str = "h100-sxm-80gb", min_bytes: float = 1 << 20) -> list[KernelCheck]:
    """Prediction beside measurement for every measured GEMM, attention (prefill and decode),
    streaming pointwise/normalisation kernel (those moving at least ``min_bytes``: below that the
    launch floor is the whole kernel), convolution and embedding bag of ``chip``."""
    data = load(chip)
    recs = [r for r in data["records"] if "error" not in r]
    tiny = [r["time_s"] for r in recs if r["kind"] == "launch" and r["mode"] == "event_single"]
    launch_floor = statistics.median(tiny) if tiny else gpu_calibration().kernel.isolated_kernel_floor_s.value
    floor = gpu_calibration().kernel.isolated_kernel_floor_s.value
    out: list[KernelCheck] = []
    for r in recs:
        kind = r["kind"]
        if kind == "gemm":
            dt = r["dtype"]
            pred = _predict(_gemm(r), chip, GEMM_STACK, dt, floor, act_dtype=dt if dt != "bf16" else None)
            label = f"{dt} {r['layer']} M={r['m']} N={r['n']} K={r['k']}"
        elif kind == "grouped_gemm":
            pred = _predict(_grouped(r), chip, GEMM_STACK, r["dtype"], floor)
            label = f"{r['dtype']} {r['layer']} G={r['groups']} M={r['m']} N={r['n']} K={r['k']}"
        elif kind == "attention_prefill" and r["backend"] in ATTENTION_KERNEL:
            g = _attention(r["batch"], r["heads"], r["heads"], r["seq"], r["seq"], r["head_dim"], r["causal"])
            pred = _predict(g, chip, GEMM_STACK, "bf16", floor, attention_kernel=ATTENTION_KERNEL[r["backend"]])
            label = (f"{r['backend']} B={r['batch']} H={r['heads']} S={r['seq']} D={r['head_dim']}"
                     f"{' causal' if r['causal'] else ''}")
        elif kind == "attention_decode" and r["backend"] in ATTENTION_KERNEL:
            g = _attention(r["batch"], r["q_heads"], r["kv_heads"], 1, r["kv_len"], r["head_dim"], False)
            pred = _predict(g, chip, GEMM_STACK, "bf16", floor, attention_kernel=ATTENTION_KERNEL[r["backend"]])
            label = f"{r['backend']} B={r['batch']} Hq={r['q_heads']} Hkv={r['kv_heads']} KV={r['kv_len']}"
        elif kind == "memory" and r["op"] in ("copy", "pointwise_silu", "layer_norm") and r["bytes"] >= min_bytes:
            shape = (r["tokens"], r["hidden"]) if r["op"] == "layer_norm" else (r["bytes"] // 2,)
            op = {"copy": "cast", "pointwise_silu": "silu", "layer_norm": "layernorm"}[r["op"]]
            pred = _predict(_pointwise(op, shape), chip, GEMM_STACK, "bf16", launch_floor)
            label = f"{r['op']} {r['bytes'] / 2**20:.0f} MiB"
        elif kind == "conv2d":
            pred = _predict(_conv(r), chip, GEMM_STACK, "fp16", floor)
            label = f"conv {r['c_in']}->{r['c_out']} {r['hw']}x{r['hw']} k{r['kernel']} s{r['stride']} N={r['batch']}"
        elif kind == "embedding_bag":  # F.embedding_bag: PyTorch's own kernel, not cuBLAS; a plain launch
            pred = _predict(_embedding_bag(r), chip, GEMM_STACK, EMBEDDING_DTYPES[r["dtype"]], launch_floor)
            label = f"{r['dtype']} rows={r['rows']:,} D={r['dim']} bags={r['bags']} pooling={r['pooling']}"
        else:
            continue
        out.append(KernelCheck(kind if kind != "gemm" else f"gemm_{r['dtype']}", label, r["time_s"], pred))
    return out


def summary(checks: list[KernelCheck]) -> dict[str, dict[str, float]]:
    """Per kind: count, MAPE, median APE and mean signed error, in percent."""
    kinds: dict[str, list[KernelCheck]] = {}
    for c in checks:
        kinds.setdefault(c.kind, []).append(c)
    out = {}
    for kind, cs in sorted(kinds.items()):
        ape = [abs(c.error_pct) for c in cs]
        out[kind] = {"n": len(cs), "mape_pct": statistics.mean(ape), "median_ape_pct": statistics.median(ape),
                     "bias_pct": statistics.mean(c.error_pct for c in cs)}
    return out


def held_rate_fraction(record: dict[str, Any], settle_s: float = 30.0) -> float:
    """Of a GEMM held for a minute (a ``sustained_gemm`` record, ``benchmarks/gpu_kernels.py
    --only sustained``): the rate it keeps once settled (median of the one-second windows from
    ``settle_s`` on) over its burst rate (the best of its first three windows, at the clock the
    short kernel timings run at). For a compute-bound GEMM this is the clock fraction power.yaml's
    ``sustained_gemm_clock_fraction`` holds."""
    windows = record.get("windows") or []
    late = [w["tflops"] for w in windows if w["t_s"] >= settle_s]
    if len(windows) < 3 or not late:
        raise ValueError(f"sustained_gemm record ({record.get('dtype')}) needs >= 3 windows and some from "
                         f"{settle_s:.0f} s on; has {len(windows)} over {record.get('seconds')} s")
    return statistics.median(late) / max(w["tflops"] for w in windows[:3])


def check_sustained(chip: str = "h100-sxm-80gb") -> list[tuple[str, float, float]]:
    """(dtype, measured held fraction, the fraction power.yaml uses) per ``sustained_gemm`` record
    of ``chip``; empty when none was measured."""
    from mtiasim.power import held_clock_fraction

    model = held_clock_fraction(chip)
    return [(r["dtype"], held_rate_fraction(r), model)
            for r in load(chip)["records"] if r.get("kind") == "sustained_gemm" and "error" not in r]
