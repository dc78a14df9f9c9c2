"""Checks on the chip presets in src/mtiasim/chips/presets/.

The presets are data with sources (shared/research/mtia.md, shared/research/mlperf.md,
shared/calibration/chip_specs.csv); these tests pin the hand-checked figures and the internal
arithmetic so that an edit which breaks them fails loudly.
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from mtiasim.chips import DTYPES, ChipSpec, Sourced, list_chips, load_chip, preset_path

REQUIRED = [
    "mtia-100", "mtia-200", "mtia-300", "mtia-400", "mtia-450", "mtia-500",
    "a100-sxm-80gb", "h100-sxm-80gb", "h100-pcie-80gb", "h100-nvl-94gb", "h200-sxm-141gb",
    "gh200-144gb", "b200-sxm-180gb", "mi300x", "mi325x", "mi355x", "gaudi2", "tpu-v5e",
]


def _walk(obj, path=""):
    """Yield (path, Sourced) for every sourced number in a chip, alternatives excluded."""
    if isinstance(obj, Sourced):
        yield path, obj
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from _walk(getattr(obj, name), f"{path}.{name}" if path else name)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")


def test_all_required_presets_exist():
    names = set(list_chips())
    missing = [n for n in REQUIRED if n not in names]
    assert not missing, f"missing presets: {missing}"
    assert len(REQUIRED) == 18


@pytest.mark.parametrize("name", list_chips())
def test_preset_loads_and_is_named_after_its_file(name):
    chip = load_chip(name)
    assert isinstance(chip, ChipSpec)
    assert chip.name == name == preset_path(name).stem
    assert chip.compute.peak_ops_per_s, f"{name}: no matrix peaks"
    assert all(k in DTYPES for k in chip.compute.peak_ops_per_s)
    assert chip.compute.units.value is not None and chip.compute.units.value > 0, (
        f"{name}: compute.units must be a number (estimate if unpublished)"
    )


@pytest.mark.parametrize("name", list_chips())
def test_sourced_values_are_honest(name):
    chip = load_chip(name)
    for path, s in _walk(chip):
        assert s.source.strip(), f"{name}.{path}: empty source"
        if s.status == "published":
            assert not s.source.lower().startswith("estimate"), (
                f"{name}.{path}: source says estimate but status is published"
            )
        if s.status == "derived":
            assert s.value is not None, f"{name}.{path}: derived value is null"
        for label, alt in s.alternatives.items():
            assert label and alt.source.strip(), f"{name}.{path}: alternative {label!r} lacks a source"


@pytest.mark.parametrize("name", list_chips())
def test_dram_capacity_and_bandwidth_are_known_and_positive(name):
    dram = load_chip(name).dram
    for field in ("capacity_bytes", "bandwidth_bytes_per_s"):
        s = getattr(dram, field)
        assert s.value is not None and s.value > 0, f"{name}: dram.{field} = {s.value}"
    # plausibility: between 1 GB and 1 TB, 10 GB/s and 100 TB/s
    assert 1e9 <= dram.capacity_bytes.value <= 1e12
    assert 1e10 <= dram.bandwidth_bytes_per_s.value <= 1e14


def _grid_pes(chip: ChipSpec) -> float:
    g = chip.pe_grid
    if g.rows.value is not None and g.cols.value is not None:
        return g.rows.value * g.cols.value
    return chip.compute.units.value


def test_pe_grid_per_pe_rates_multiply_to_the_published_peaks():
    checked = []
    for name in list_chips():
        chip = load_chip(name)
        if chip.kind != "pe_grid" or chip.clock_hz.value is None:
            continue
        pes = _grid_pes(chip)
        assert pes == chip.compute.units.value, f"{name}: rows x cols != compute.units"
        for dtype, per_cycle in chip.pe_grid.engines.dpe_ops_per_cycle.items():
            peak = chip.peak(dtype)
            if per_cycle.value is None or peak is None:
                continue
            total = pes * per_cycle.value * chip.clock_hz.value
            assert total == pytest.approx(peak, rel=0.02), (
                f"{name} {dtype}: {pes} PEs x {per_cycle.value} ops/cycle x {chip.clock_hz.value:.3g} Hz "
                f"= {total:.4g}, published peak {peak:.4g}"
            )
            checked.append((name, dtype))
    # worked example: MTIA 2i 64 x 2048 x 1.35e9 = 176.9e12 vs 177e12
    assert ("mtia-200", "bf16") in checked
    assert ("mtia-100", "int8") in checked
    assert ("mtia-300", "fp8") in checked
    assert len(checked) >= 7


def test_pe_grid_without_clock_has_unknown_per_cycle_rates():
    for name in ("mtia-400", "mtia-450", "mtia-500"):
        chip = load_chip(name)
        assert chip.clock_hz.value is None and chip.clock_hz.status == "unknown"
        rates = chip.pe_grid.engines.dpe_ops_per_cycle
        assert rates and all(r.value is None and r.status == "unknown" for r in rates.values())
        assert chip.compute.units.status == "estimate"


def test_hand_checked_peaks_are_exact():
    assert load_chip("h100-sxm-80gb").peak("bf16") == 989e12
    assert load_chip("mi300x").peak("bf16") == 1300e12
    assert load_chip("mtia-300").peak("fp8") == 1120e12
    assert load_chip("mtia-300").peak("bf16") == 560e12
    assert load_chip("mtia-100").peak("int8") == 102.4e12
    assert load_chip("b200-sxm-180gb").peak("fp4") == 9000e12
    assert load_chip("mtia-400").peak("mx4") == 12e15


def test_unsupported_dtypes_are_absent():
    assert load_chip("mtia-300").peak("int8") is None  # INT8 GEMM removed (ISCA'26)
    assert load_chip("h100-sxm-80gb").peak("fp4") is None
    assert load_chip("a100-sxm-80gb").peak("fp8") is None
    assert load_chip("mtia-300").peak("mx4") is None  # MX4 falls back to the RISC-V cores


def _alt_values(s: Sourced) -> set[float]:
    return {a.value for a in s.alternatives.values() if a.value is not None}


def test_published_conflicts_are_visible_as_alternatives():
    p = load_chip("mtia-200").power.tdp_w
    assert p.value == 85 and 90 in _alt_values(p)
    p = load_chip("mtia-300").power.tdp_w
    assert p.value == 912 and 800 in _alt_values(p)
    assert load_chip("mtia-300").power.typical_w.value == 667
    p = load_chip("mtia-100").power.tdp_w
    assert p.value == 35 and 25 in _alt_values(p)
    p = load_chip("mtia-400").power.tdp_w
    assert p.value == 1200 and 667 in _alt_values(p)
    bw = load_chip("mtia-400").dram.bandwidth_bytes_per_s
    assert bw.value == 9.2e12 and 9.4e12 in _alt_values(bw)
    cap = load_chip("mtia-100").dram.capacity_bytes
    assert cap.value == 64e9 and {32e9, 128e9} <= _alt_values(cap)


def test_alternative_can_be_selected():
    chip = load_chip("mtia-300", {"power.tdp_w": "alt:roadmap-2026"})
    assert chip.power.tdp_w.value == 800
    assert 912 in _alt_values(chip.power.tdp_w)


def test_interconnect_bandwidths_are_per_direction():
    # chip_specs.csv interconnect_gbs is bidirectional; presets store half of it
    expected = {
        "a100-sxm-80gb": 300e9, "h100-sxm-80gb": 450e9, "h200-sxm-141gb": 450e9,
        "gh200-144gb": 450e9, "b200-sxm-180gb": 900e9, "mi300x": 448e9, "mi325x": 448e9,
        "mi355x": 535.5e9, "gaudi2": 300e9, "tpu-v5e": 200e9,
    }
    for name, bw in expected.items():
        su = load_chip(name).scale_up
        assert su is not None and su.bandwidth_bytes_per_s.value == pytest.approx(bw), name
        assert su.bandwidth_bytes_per_s.status == "derived", name
    assert load_chip("mtia-300").scale_up.bandwidth_bytes_per_s.value == 800e9
    assert load_chip("mtia-300").scale_up.domain_size.value == 16
    assert load_chip("mtia-400").scale_up.domain_size.value == 72


@pytest.mark.parametrize("name", [n for n in list_chips() if load_chip(n).kind == "gpu"])
def test_gpu_section_matches_compute(name):
    chip = load_chip(name)
    assert chip.gpu is not None
    assert chip.gpu.sm_count.value == chip.compute.units.value
    assert chip.gpu.boost_clock_hz.value == chip.clock_hz.value
    assert chip.vector_peak("fp32") is None or chip.vector_peak("fp32") > 0


def test_mtia_300_specifics():
    chip = load_chip("mtia-300")
    assert (chip.pe_grid.rows.value, chip.pe_grid.cols.value, chip.pe_grid.spare_rows.value) == (12, 6, 1)
    assert chip.message_engines.count.value == 16
    assert chip.message_engines.reduction_bandwidth_bytes_per_s.value == 2.8e12
    assert chip.dram.bandwidth_bytes_per_s.value == 6.1e12
    assert chip.dram.capacity_bytes.value == 216e9
    assert chip.sram.size_bytes.value == 192 * 2**20
    assert chip.scale_out.bandwidth_bytes_per_s.value == 200e9


def test_prices_are_labelled_estimates_with_a_range_or_unknown_and_processes_null_when_unknown():
    """No accelerator has a published list price: each is an estimate with its reasoning and a
    low/high range around it (what fleet/sensitivity.py sweeps), or unknown and null."""
    for name in list_chips():
        chip = load_chip(name)
        price = chip.cost.capex_usd
        if price.value is None:
            assert price.status == "unknown", name
        else:
            assert price.status == "estimate" and price.note, name
            assert price.alternatives["low"].value <= price.value <= price.alternatives["high"].value, name
        if chip.process_nm.status == "unknown":
            assert chip.process_nm.value is None
