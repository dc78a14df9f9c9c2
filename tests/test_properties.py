"""Property tests (hypothesis) of compile + the analytical engine on small, hand-built IR graphs.

Graphs are built directly in the IR (no torch capture): one op (linear, batched matmul, attention
with GQA and causal masks, embedding_bag, rmsnorm, softmax, add) or a short MLP block that
exercises fusion, with random shapes, on every chip preset. The properties are physical laws the
simulator must obey whatever its calibration:

1. no kernel beats its roofline, neither the one the engine reports nor one recomputed here from
   the kernel's work and the chip's published peaks and bandwidths;
2. times and energies are never negative, energy is missing only when the TDP is, and the latency
   is the sum of the kernel times;
3. more DRAM bandwidth, more SRAM bandwidth or more compute never makes a program slower;
4. a large memory-bound elementwise op gets strictly faster with more DRAM bandwidth;
5. energy covers at least static power over the run, and average power stays within TDP.

Examples are derandomized so CI is deterministic. MTIASIM_PROP_EXAMPLES=N changes the number of
examples per property (default 300) and MTIASIM_PROP_RANDOM=1 draws fresh random examples, for
longer local bug hunts.
"""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from mtiasim.chips import ChipSpec, list_chips, load_chip
from mtiasim.compiler import CompileOptions, Program, compile
from mtiasim.engines.analytical import AnalyticalEngine
from mtiasim.engines.result import Result
from mtiasim.graph.ir import Graph, Node, TensorSpec
from mtiasim.graph.ops import get_op
from mtiasim.power import energy_model

CHIPS = list_chips()
#: chips whose shared SRAM has a published bandwidth (SRAM traffic is only timed on those)
CHIPS_WITH_SRAM_BW = [n for n in CHIPS if (c := load_chip(n)).sram is not None
                      and c.sram.bandwidth_bytes_per_s.value]
#: None keeps the default (bf16); the rest exercise the precision fallbacks of every chip
DTYPES = [None, "fp32", "bf16", "fp16", "fp8", "int8", "mx8", "mx4", "fp4", "int4"]
REL = 1e-9

PROPS = settings(max_examples=int(os.environ.get("MTIASIM_PROP_EXAMPLES", "300")), deadline=None,
                 derandomize=not os.environ.get("MTIASIM_PROP_RANDOM"), database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------ graph builders

def single_op_graph(op: str, inputs: dict[str, TensorSpec], attrs: dict | None = None) -> Graph:
    """One node of ``op`` reading ``inputs`` (in order); output specs come from the op registry."""
    attrs = attrs or {}
    outs = get_op(op).infer(list(inputs.values()), attrs)
    tensors = dict(inputs)
    names = []
    for i, o in enumerate(outs):
        tensors[f"y{i}"] = o
        names.append(f"y{i}")
    node = Node(f"{op}_0", op, list(inputs), names, attrs)
    return Graph(f"t_{op}", tensors, [node], [n for n, t in inputs.items() if t.kind == "input"], names)


def inp(*shape: int, dtype: str = "bf16") -> TensorSpec:
    return TensorSpec(tuple(shape), dtype, "input")


def param(*shape: int, dtype: str = "bf16") -> TensorSpec:
    return TensorSpec(tuple(shape), dtype, "param")


dims = st.one_of(st.sampled_from([1, 2, 16, 64, 128, 512, 1024, 4096]), st.integers(1, 4096))
small = st.integers(1, 16)


@st.composite
def linear_graphs(draw) -> Graph:
    m, k, n = draw(dims), draw(dims), draw(dims)
    ins = {"x": inp(m, k), "w": param(n, k)}
    if draw(st.booleans()):
        ins["b"] = param(n)
    return single_op_graph("linear", ins)


@st.composite
def matmul_graphs(draw) -> Graph:
    b = draw(small)
    m, k, n = draw(st.integers(1, 1024)), draw(st.integers(1, 1024)), draw(st.integers(1, 1024))
    if draw(st.booleans()):  # batched x batched
        ins = {"a": inp(b, m, k), "bm": inp(b, k, n)}
    else:  # batched x broadcast weight
        ins = {"a": inp(b, m, k), "bm": param(k, n)}
    return single_op_graph("matmul", ins)


@st.composite
def attention_graphs(draw) -> Graph:
    b, hkv, group = draw(st.integers(1, 8)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
    hd = draw(st.one_of(st.sampled_from([32, 64, 128]), st.integers(1, 256)))
    length = draw(dims)
    s = draw(st.one_of(st.just(1), st.just(length), st.integers(1, length)))
    ins = {"q": inp(b, hkv * group, s, hd), "k": inp(b, hkv, length, hd), "v": inp(b, hkv, length, hd)}
    return single_op_graph("attention", ins, {"causal": draw(st.booleans())})


@st.composite
def embedding_bag_graphs(draw) -> Graph:
    v = draw(st.one_of(st.integers(1, 4096), st.integers(4096, 4_000_000)))
    d = draw(st.integers(1, 512))
    lookups, bags = draw(st.integers(1, 65536)), draw(st.integers(1, 4096))
    ins = {"weight": param(v, d, dtype="fp32"), "indices": inp(lookups, dtype="int64"),
           "offsets": inp(bags, dtype="int64")}
    if draw(st.booleans()):
        ins["per_sample_weights"] = inp(lookups, dtype="fp32")
    return single_op_graph("embedding_bag", ins)


@st.composite
def rmsnorm_graphs(draw) -> Graph:
    m, d = draw(dims), draw(dims)
    return single_op_graph("rmsnorm", {"x": inp(m, d), "w": param(d)})


@st.composite
def softmax_graphs(draw) -> Graph:
    return single_op_graph("softmax", {"x": inp(draw(small), draw(dims), draw(dims))}, {"dim": -1})


@st.composite
def add_graphs(draw) -> Graph:
    m, n = draw(dims), draw(dims)
    other = draw(st.sampled_from([(m, n), (1, n), (n,)]))
    return single_op_graph("add", {"a": inp(m, n), "b": inp(*other)})


@st.composite
def mlp_graphs(draw) -> Graph:
    """x -> linear -> silu -> linear -> add(x) -> rmsnorm: epilogue fusion and SRAM activations."""
    m, d, f = draw(dims), draw(st.integers(1, 2048)), draw(st.integers(1, 8192))
    t = {"x": inp(m, d), "w1": param(f, d), "w2": param(d, f), "g": param(d)}
    nodes = []

    def add_node(name, op, ins, attrs=None):
        (spec,) = get_op(op).infer([t[i] for i in ins], attrs or {})
        t[name] = spec
        nodes.append(Node(f"n_{name}", op, ins, [name], attrs or {}))

    add_node("h", "linear", ["x", "w1"])
    add_node("a", "silu", ["h"])
    add_node("o", "linear", ["a", "w2"])
    add_node("r", "add", ["o", "x"])
    add_node("y", "rmsnorm", ["r", "g"])
    return Graph("t_mlp", t, nodes, ["x"], ["y"])


graphs = st.one_of(linear_graphs(), matmul_graphs(), attention_graphs(), embedding_bag_graphs(),
                   rmsnorm_graphs(), softmax_graphs(), add_graphs(), mlp_graphs())
chips = st.sampled_from(CHIPS)
dtypes = st.sampled_from(DTYPES)


# ------------------------------------------------------------------------------ helpers

def build(graph: Graph, chip: ChipSpec, dtype: str | None) -> Program:
    return compile(graph, chip, CompileOptions(dtype=dtype), default_dtype="bf16")


def execute(program: Program) -> Result:
    return AnalyticalEngine(program).run(model="t", phase="forward", batch=1, seq_len=None, kv_len=None,
                                         dtype="bf16", items=1, item_unit="sample")


def simulate(graph: Graph, chip: ChipSpec, dtype: str | None) -> tuple[Program, Result]:
    p = build(graph, chip, dtype)
    return p, execute(p)


def fastest_compute(chip: ChipSpec) -> float:
    """The largest op rate the chip publishes on any engine, any dtype: nothing computes faster."""
    rates = [s.value for s in chip.compute.peak_ops_per_s.values() if s.value]
    rates += [s.value for s in chip.compute.vector_ops_per_s.values() if s.value]
    return max(rates)


# ------------------------------------------------------------------------------ 1. roofline

@PROPS
@given(graph=graphs, chip_name=chips, dtype=dtypes)
def test_no_kernel_beats_its_roofline(graph, chip_name, dtype):
    chip = load_chip(chip_name)
    program, r = simulate(graph, chip, dtype)
    assert len(r.ops) == len(program.kernels) > 0
    dram_bw = chip.dram.bandwidth_bytes_per_s.value
    sram_bw = chip.sram.bandwidth_bytes_per_s.value if chip.sram is not None else None
    for k, o in zip(program.kernels, r.ops):
        assert o.name == k.name
        # the engine's own roofline
        assert o.time_s >= o.roofline_s * (1 - REL), o
        # recomputed here: matrix work at the chip's published peak for the kernel's compute dtype
        if k.work.matrix_flops > 0:
            peak = chip.peak(o.dtype)
            assert peak, f"{chip_name}: kernel {o.name} computes in {o.dtype}, which the chip has no peak for"
            assert o.time_s >= k.work.matrix_flops / peak * (1 - REL), (o, peak)
        # vector work: no engine of the chip is faster than its largest published rate
        assert o.time_s >= k.work.vector_flops / fastest_compute(chip) * (1 - REL), o
        # every byte from DRAM crosses the DRAM interface at most at its bandwidth
        assert o.time_s >= o.dram_bytes / dram_bw * (1 - REL), (o, dram_bw)
        if sram_bw:
            assert o.time_s >= o.sram_bytes / sram_bw * (1 - REL), (o, sram_bw)
        assert o.bytes == pytest.approx(o.dram_bytes + o.sram_bytes, rel=1e-12)
    # graph inputs (activations fed by the host, token ids, indices) start in DRAM: they are read
    # from there at least once, so the DRAM roofline above is not vacuous
    input_bytes = sum(program.graph.tensors[t].nbytes for t in program.graph.inputs)
    assert sum(o.dram_bytes for o in r.ops) >= input_bytes * (1 - REL)


@PROPS
@given(graph=graphs, chip_name=chips, dtype=dtypes)
def test_compute_dtype_is_one_the_chip_runs(graph, chip_name, dtype):
    """Kernels compute in a dtype the chip has a peak for, the requested one when the chip has it."""
    chip = load_chip(chip_name)
    program, r = simulate(graph, chip, dtype)
    requested = dtype or "bf16"
    for k, o in zip(program.kernels, r.ops):
        if k.work.matrix_flops > 0:
            assert chip.peak(o.dtype), (chip_name, o.name, o.dtype)
            if o.op != "attention" and chip.peak(requested):
                assert o.dtype == requested, (chip_name, o.name, o.dtype, requested)


# ------------------------------------------------------------------------------ 2. signs and sums

@PROPS
@given(graph=graphs, chip_name=chips, dtype=dtypes)
def test_times_energies_non_negative_and_latency_is_sum(graph, chip_name, dtype):
    chip = load_chip(chip_name)
    _, r = simulate(graph, chip, dtype)
    tdp_known = bool(chip.power.tdp_w.value)
    assert r.latency_s > 0
    assert r.latency_s == pytest.approx(math.fsum(o.time_s for o in r.ops), rel=1e-12)
    assert r.throughput_per_s == pytest.approx(r.items / r.latency_s, rel=1e-12)
    for o in r.ops:
        assert o.time_s >= 0 and o.compute_s >= 0 and o.memory_s >= 0 and o.overhead_s >= 0
        assert o.time_s == pytest.approx(max(o.compute_s, o.memory_s) + o.overhead_s, rel=1e-12)
        assert o.flops >= 0 and o.bytes >= 0
        assert o.bound in ("compute", "memory", "overhead", "host")
        if tdp_known:
            assert o.energy_j is not None and o.energy_j >= 0
        else:
            assert o.energy_j is None
    if tdp_known:
        assert r.energy_j is not None and r.energy_j >= 0
        assert r.power_w is not None and r.power_w >= 0
        assert r.energy_j == pytest.approx(math.fsum(o.energy_j for o in r.ops), rel=1e-9)
        assert r.power_w == pytest.approx(r.energy_j / r.latency_s, rel=1e-9)
        assert r.perf_per_w == pytest.approx(r.throughput_per_s / r.power_w, rel=1e-9)
    else:
        assert r.energy_j is None and r.power_w is None and r.perf_per_w is None


def test_energy_is_missing_exactly_for_chips_without_tdp():
    g = single_op_graph("add", {"a": inp(64, 64), "b": inp(64, 64)})
    unknown = [n for n in CHIPS if execute(build(g, load_chip(n), None)).energy_j is None]
    assert unknown == [n for n in CHIPS if not load_chip(n).power.tdp_w.value]
    assert "tpu-v5e" in unknown


# ------------------------------------------------------------------------------ 3. monotonicity

factors = st.floats(1.0, 10.0, allow_nan=False, allow_infinity=False)


@PROPS
@given(graph=graphs, chip_name=chips, dtype=dtypes, factor=factors)
def test_more_dram_bandwidth_is_never_slower(graph, chip_name, dtype, factor):
    chip = load_chip(chip_name)
    bw = chip.dram.bandwidth_bytes_per_s.value
    faster = load_chip(chip_name, {"dram.bandwidth_bytes_per_s": bw * factor})
    assert faster.dram.bandwidth_bytes_per_s.value == pytest.approx(bw * factor)
    _, base = simulate(graph, chip, dtype)
    _, new = simulate(graph, faster, dtype)
    assert new.latency_s <= base.latency_s * (1 + REL), (base.latency_s, new.latency_s)


@PROPS
@given(graph=graphs, chip_name=st.sampled_from(CHIPS_WITH_SRAM_BW), dtype=dtypes, factor=factors)
def test_more_sram_bandwidth_is_never_slower(graph, chip_name, dtype, factor):
    chip = load_chip(chip_name)
    bw = chip.sram.bandwidth_bytes_per_s.value
    faster = load_chip(chip_name, {"sram.bandwidth_bytes_per_s": bw * factor})
    _, base = simulate(graph, chip, dtype)
    _, new = simulate(graph, faster, dtype)
    assert new.latency_s <= base.latency_s * (1 + REL), (base.latency_s, new.latency_s)


@PROPS
@given(graph=graphs, chip_name=chips, dtype=dtypes, data=st.data())
def test_more_compute_is_never_slower(graph, chip_name, dtype, data):
    chip = load_chip(chip_name)
    overrides = {}
    for d, s in chip.compute.peak_ops_per_s.items():
        if s.value:
            overrides[f"compute.peak_ops_per_s.{d}"] = s.value * data.draw(factors, label=f"factor[{d}]")
    faster = load_chip(chip_name, overrides)
    _, base = simulate(graph, chip, dtype)
    _, new = simulate(graph, faster, dtype)
    assert new.latency_s <= base.latency_s * (1 + REL), (base.latency_s, new.latency_s)


@PROPS
@given(graph=graphs, chip_name=chips, dtype=dtypes, factor=factors)
def test_uniformly_faster_chip_is_never_slower(graph, chip_name, dtype, factor):
    """Every peak and bandwidth scaled up together."""
    chip = load_chip(chip_name)
    overrides = {"dram.bandwidth_bytes_per_s": chip.dram.bandwidth_bytes_per_s.value * factor}
    if chip_name in CHIPS_WITH_SRAM_BW:
        overrides["sram.bandwidth_bytes_per_s"] = chip.sram.bandwidth_bytes_per_s.value * factor
    for section in ("peak_ops_per_s", "vector_ops_per_s"):
        for d, s in getattr(chip.compute, section).items():
            if s.value:
                overrides[f"compute.{section}.{d}"] = s.value * factor
    faster = load_chip(chip_name, overrides)
    _, base = simulate(graph, chip, dtype)
    _, new = simulate(graph, faster, dtype)
    assert new.latency_s <= base.latency_s * (1 + REL), (base.latency_s, new.latency_s)


@PROPS
@given(graph=graphs, chip_name=chips, dtype=dtypes)
def test_fusion_is_never_slower(graph, chip_name, dtype):
    """Epilogue fusion only removes launches and intermediate traffic."""
    chip = load_chip(chip_name)
    fused = execute(compile(graph, chip, CompileOptions(dtype=dtype, fuse=True), default_dtype="bf16"))
    unfused = execute(compile(graph, chip, CompileOptions(dtype=dtype, fuse=False), default_dtype="bf16"))
    assert fused.latency_s <= unfused.latency_s * (1 + REL), (fused.latency_s, unfused.latency_s)
    assert len(fused.ops) <= len(unfused.ops)


@PROPS
@given(chip_name=chips, dtype=dtypes, m=dims, k=dims, n=dims,
       dm=st.integers(0, 300), dk=st.integers(0, 300), dn=st.integers(0, 300))
def test_bigger_gemm_is_never_faster(chip_name, dtype, m, k, n, dm, dk, dn):
    """Growing any GEMM dimension adds work (tile padding and waves included): never faster."""
    chip = load_chip(chip_name)
    small_g = single_op_graph("linear", {"x": inp(m, k), "w": param(n, k)})
    big_g = single_op_graph("linear", {"x": inp(m + dm, k + dk), "w": param(n + dn, k + dk)})
    _, a = simulate(small_g, chip, dtype)
    _, b = simulate(big_g, chip, dtype)
    assert b.latency_s >= a.latency_s * (1 - REL), (a.latency_s, b.latency_s)
    (o,) = b.ops
    assert 0 < o.gemm_efficiency <= 1 + 1e-12


@PROPS
@given(chip_name=chips, dtype=dtypes, v=st.integers(1, 4_000_000), d=st.integers(1, 512),
       lookups=st.integers(1, 65536), more=st.integers(0, 10_000), bags=st.integers(1, 4096))
def test_more_embedding_lookups_are_never_faster(chip_name, dtype, v, d, lookups, more, bags):
    chip = load_chip(chip_name)

    def bag(n):
        return single_op_graph("embedding_bag", {"weight": param(v, d, dtype="fp32"),
                                                 "indices": inp(n, dtype="int64"),
                                                 "offsets": inp(bags, dtype="int64")})
    _, a = simulate(bag(lookups), chip, dtype)
    _, b = simulate(bag(lookups + more), chip, dtype)
    assert b.latency_s >= a.latency_s * (1 - REL), (a.latency_s, b.latency_s)


attention_shapes = {"chip_name": chips, "dtype": dtypes, "b": st.integers(1, 8), "h": st.integers(1, 32),
                    "s": dims, "extra": st.integers(0, 4096), "hd": st.integers(1, 256)}


def _attention_pair(chip_name, dtype, b, h, s, extra, hd):
    chip = load_chip(chip_name)
    ins = {"q": inp(b, h, s, hd), "k": inp(b, h, s + extra, hd), "v": inp(b, h, s + extra, hd)}
    causal = simulate(single_op_graph("attention", ins, {"causal": True}), chip, dtype)
    full = simulate(single_op_graph("attention", ins, {"causal": False}), chip, dtype)
    return causal, full


@PROPS
@given(**attention_shapes)
def test_causal_attention_counts_the_causal_pairs(chip_name, dtype, b, h, s, extra, hd):
    """Causal: the S queries sit at the end of the L keys, S*(L-S) + S*(S+1)/2 pairs (QK^T and PV)."""
    (pc, _), (pf, _) = _attention_pair(chip_name, dtype, b, h, s, extra, hd)
    length = s + extra
    pairs = s * (length - s) + s * (s + 1) // 2
    assert pc.kernels[0].work.matrix_flops == pytest.approx(4.0 * b * h * hd * pairs, rel=1e-12)
    assert pf.kernels[0].work.matrix_flops == pytest.approx(4.0 * b * h * hd * s * length, rel=1e-12)

@PROPS
@example(chip_name="h100-sxm-80gb", dtype=None, b=8, h=32, s=4, extra=0, hd=128)
@given(**attention_shapes)
def test_causal_attention_is_never_slower_than_full(chip_name, dtype, b, h, s, extra, hd):
    (_, rc), (_, rf) = _attention_pair(chip_name, dtype, b, h, s, extra, hd)
    assert rc.ops[0].compute_s <= rf.ops[0].compute_s * (1 + REL), (rc.ops[0], rf.ops[0])
    assert rc.latency_s <= rf.latency_s * (1 + REL)


# ------------------------------------------------------------------------------ 4. memory-bound ops

@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(chip_name=chips, dtype=st.sampled_from([None, "fp32", "fp16", "int8"]),
       rows=st.integers(8192, 16384), cols=st.integers(8192, 16384))
def test_big_elementwise_add_speeds_up_with_dram_bandwidth(chip_name, dtype, rows, cols):
    """Two >= 64M-element activations added: 1 flop per 6+ bytes, DRAM-bound on every chip."""
    g = single_op_graph("add", {"a": inp(rows, cols), "b": inp(rows, cols)})
    chip = load_chip(chip_name)
    bw = chip.dram.bandwidth_bytes_per_s.value
    (base,) = execute(build(g, chip, dtype)).ops
    (fast,) = execute(build(g, load_chip(chip_name, {"dram.bandwidth_bytes_per_s": 2 * bw}), dtype)).ops
    assert base.bound == "memory", base
    assert base.dram_bytes >= 2 * rows * cols * 2  # both inputs come from DRAM, >= 2 bytes each
    assert fast.time_s < base.time_s, (base, fast)
    # doubling one bandwidth can at most halve the time
    assert fast.time_s >= base.time_s / 2 * (1 - REL)


# ------------------------------------------------------------------------------ 5. energy and power

@PROPS
@given(graph=graphs, chip_name=chips, dtype=dtypes)
def test_energy_covers_static_power_and_power_stays_within_tdp(graph, chip_name, dtype):
    chip = load_chip(chip_name)
    _, r = simulate(graph, chip, dtype)
    em = energy_model(chip)
    tdp = chip.power.tdp_w.value
    if not tdp:
        assert em is None and r.energy_j is None
        return
    assert 0 <= em.static_w <= tdp
    assert r.tdp_w == tdp
    assert r.energy_j >= em.static_w * r.latency_s * (1 - REL)
    assert r.power_w <= tdp * (1 + 1e-6), (r.power_w, tdp, r.clock_scale)
    assert 0 < r.clock_scale <= 1
    if r.clock_scale < 1:
        # throttling slows clocks only as far as needed to reach TDP, and says so
        assert r.power_w >= tdp * (1 - 1e-6), (r.power_w, tdp, r.clock_scale)
        assert any("throttled" in n for n in r.notes)


#: the throttle searches clock scales down to this floor (mtiasim.power.throttle)

#: the throttle searches clock scales down to this floor (mtiasim.power.throttle)
CLOCK_FLOOR = 1e-9


def capped(chip_name: str, cap_w: float) -> ChipSpec:
    """The preset with ``--set power.tdp_w=cap_w``: energy per action stays the preset's, the
    user's TDP acts as a power cap that throttling must hold."""
    return load_chip(chip_name, {"power.tdp_w": cap_w})


@PROPS
@given(graph=graphs, chip_name=chips, dtype=dtypes, frac=st.floats(0.01, 1.0))
def test_throttling_holds_a_power_cap(graph, chip_name, dtype, frac):
    """A TDP lowered to anywhere between static power and the preset TDP: a lower cap never makes a
    run faster, power stays within the cap and lands on it whenever clocks are lowered."""
    chip = load_chip(chip_name)
    tdp = chip.power.tdp_w.value
    assume(tdp)
    static = energy_model(chip).static_w
    cap = static + frac * (tdp - static)
    _, base = simulate(graph, chip, dtype)
    _, r = simulate(graph, capped(chip_name, cap), dtype)
    assert r.tdp_w == pytest.approx(cap)
    assert r.latency_s >= base.latency_s * (1 - REL)
    assert r.energy_j >= static * r.latency_s * (1 - REL)
    assert r.energy_j <= base.energy_j * (1 + 1e-6) + static * (r.latency_s - base.latency_s) * (1 + 1e-6)
    if r.clock_scale > CLOCK_FLOOR * (1 + 1e-6):
        assert r.power_w <= cap * (1 + 1e-6), (r.power_w, cap, r.clock_scale)
        if r.clock_scale < 1:
            assert r.power_w >= cap * (1 - 1e-6), (r.power_w, cap, r.clock_scale)
            assert any("throttled" in n for n in r.notes)


def test_power_cap_engages_throttling():
    """Coverage guard for the property above: a big GEMM on a chip capped halfway between its static
    power and what the GEMM draws throttles, and lands exactly on the cap."""
    g = single_op_graph("linear", {"x": inp(4096, 4096), "w": param(4096, 4096)})
    for name in CHIPS:
        chip = load_chip(name)
        if not chip.power.tdp_w.value:
            continue
        free = execute(build(g, chip, None))
        static = energy_model(chip).static_w
        cap = static + 0.5 * (free.power_w - static)
        r = execute(build(g, capped(name, cap), None))
        assert CLOCK_FLOOR < r.clock_scale < 1, name
        assert r.power_w == pytest.approx(cap, rel=1e-6), name
        assert r.latency_s > free.latency_s, name
        assert any("throttled" in n for n in r.notes), name


def test_power_within_cap_when_memory_energy_exceeds_budget():
    """mtia-400 (static 300 W of its 1200 W TDP) with ``--set power.tdp_w=310`` and one 4096x4096
    bf16 add: its DRAM energy needs a 10 W budget to stretch the run ~25x, i.e. clocks far below
    1e-3 (vector work is timed at the 3 PFLOP/s matrix peak). Power must still stay within the cap."""
    g = single_op_graph("add", {"a": inp(4096, 4096), "b": inp(4096, 4096)})
    r = execute(build(g, capped("mtia-400", 310), None))
    assert r.clock_scale < 1
    assert r.power_w <= 310 * (1 + 1e-6), (r.power_w, r.clock_scale, r.notes)


def test_power_cap_below_static_power_is_not_silently_exceeded():
    """a100-sxm-80gb capped at 50 W: static power (anchored to the preset's 400 W) is 100 W, so
    the cap cannot be met; the result must say so rather than report 100 W silently."""
    g = single_op_graph("rmsnorm", {"x": inp(1, 1), "w": param(1)})
    r = execute(build(g, capped("a100-sxm-80gb", 50), None))
    assert r.power_w <= r.tdp_w * (1 + 1e-6) or any("TDP" in n or "tdp" in n for n in r.notes), (
        r.power_w, r.tdp_w, r.clock_scale, r.notes)
