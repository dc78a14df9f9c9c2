"""Peaks are products of their parts: peak = clock x compute units x ops per cycle per unit.

A preset keeps the published peak (``compute.peak_ops_per_s``); a what-if that changes one of its
parts (``--set clock_hz=...``, ``pe_grid.rows``, ``gpu.sm_count``, an engine's ops per cycle) scales
the peaks that part multiplies by new/old, so the prediction moves as the chip would. Each such
factor is a registry entry: which peaks it scales (matrix, vector, or one dtype's)."""

from __future__ import annotations

from dataclasses import dataclass

from mtiasim.chips.schema import ChipSpec, OpsPerS


@dataclass(frozen=True)
class PeakFactor:
    """``path`` multiplies the ``kind`` peaks ("matrix", "vector" or "both"); a path ending in a
    dtype scales that dtype's peak only."""

    path: str
    kind: str


#: parts of a peak, by --set path prefix (a path with a dtype after it scales that dtype only)
FACTORS = [
    PeakFactor("clock_hz", "both"),
    PeakFactor("compute.units", "both"),
    PeakFactor("gpu.sm_count", "both"),
    PeakFactor("gpu.boost_clock_hz", "both"),
    PeakFactor("pe_grid.rows", "both"),
    PeakFactor("pe_grid.cols", "both"),
    PeakFactor("pe_grid.engines.dpe_ops_per_cycle", "matrix"),
    PeakFactor("pe_grid.engines.simd_ops_per_cycle", "vector"),
    PeakFactor("pe_grid.engines.vector_core_ops_per_cycle", "vector"),
]


def factor_for(path: str) -> tuple[PeakFactor, str | None] | None:
    """The factor a --set path is, and the dtype it is limited to (None: all dtypes)."""
    for f in FACTORS:
        if path == f.path:
            return f, None
        if path.startswith(f.path + "."):
            return f, path[len(f.path) + 1:]
    return None


def rescale_peaks(chip: ChipSpec, path: str, old: float | None, new: float | None) -> None:
    """Scale ``chip``'s peaks in place by new/old for the factor ``path`` names (no-op for other
    paths or unknown values). The scaled peaks are marked derived, with the reason."""
    hit = factor_for(path)
    if hit is None or not old or new is None:
        return
    factor, dtype = hit
    ratio = new / old
    tables = []
    if factor.kind in ("matrix", "both"):
        tables.append(chip.compute.peak_ops_per_s)
        tables.append(chip.compute.sparse_peak_ops_per_s)
    if factor.kind in ("vector", "both"):
        tables.append(chip.compute.vector_ops_per_s)
    for table in tables:
        for key, peak in list(table.items()):
            if peak.value is None or (dtype is not None and key != dtype):
                continue
            table[key] = OpsPerS(value=peak.value * ratio, source=peak.source, status="derived",
                                 note=f"scaled x{ratio:.4g} by --set {path} ({old:g} -> {new:g}); "
                                      f"was {peak.value:g}" + (f"; {peak.note}" if peak.note else ""),
                                 alternatives=peak.alternatives)
