"""Unit parsing for spec files.

A numeric field's unit is fixed by its name suffix (``_hz``, ``_bytes``, ``_bytes_per_s``,
``_ops_per_s``, ``_w``, ``_j``, ``_s``, ``_usd``...). In a YAML file a value may be a bare number
(already in the field's base unit) or a string with a unit (``"204.8 GB/s"``); a unit of the wrong
dimension is an error that names the unit and what was expected.

This is a deliberately tiny table rather than a dependency on ``pint``: the spec files use a dozen
units, and the error messages here name the field the way users write it.
"""

from __future__ import annotations

import re

_SI = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BIN = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}
_SMALL = {"": 1.0, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15}


def _build() -> dict[str, dict[str, float]]:
    t: dict[str, dict[str, float]] = {
        "hz": {}, "bytes": {}, "bytes_per_s": {}, "ops_per_s": {}, "w": {}, "j": {}, "s": {},
        "usd": {"": 1.0, "$": 1.0, "USD": 1.0}, "count": {"": 1.0}, "ratio": {"": 1.0, "%": 0.01},
        "nm": {"": 1.0, "nm": 1.0}, "j_per_byte": {}, "bits_per_s": {},
    }
    for p, f in _SI.items():
        t["hz"][f"{p}Hz"] = f
        t["bytes"][f"{p}B"] = f
        t["bytes_per_s"][f"{p}B/s"] = f
        t["bytes_per_s"][f"{p}bps"] = f / 8  # bits per second
        t["bytes_per_s"][f"{p}b/s"] = f / 8
        for name in ("FLOPS", "OPS", "FLOP/s", "OP/s", "flops", "ops"):
            t["ops_per_s"][f"{p}{name}"] = f
        t["w"][f"{p}W"] = f
    for p, f in _BIN.items():
        t["bytes"][f"{p}B"] = f
        t["bytes_per_s"][f"{p}B/s"] = f
    for p, f in _SMALL.items():
        t["j"][f"{p}J"] = f
        t["s"][f"{p}s"] = f
        t["w"][f"{p}W"] = f
        t["j_per_byte"][f"{p}J/B"] = f
        t["j_per_byte"][f"{p}J/bit"] = f * 8
    t["s"].update({"min": 60.0, "h": 3600.0, "day": 86400.0, "year": 365.0 * 86400.0, "years": 365.0 * 86400.0})
    return t


UNITS = _build()
_NUM = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([^\s\d].*)?$")


class UnitError(ValueError):
    """A value's unit does not match its field's dimension, or cannot be parsed."""


def dimension_of(field_name: str) -> str:
    """The dimension implied by a field name's suffix (``"count"`` when it has none)."""
    for suffix in ("bytes_per_s", "ops_per_s", "j_per_byte", "bits_per_s", "bytes", "hz", "usd", "nm", "w", "j", "s"):
        if field_name == suffix or field_name.endswith("_" + suffix):
            return suffix
    return "count"


def parse_quantity(value: object, dimension: str) -> float:
    """Convert ``value`` (a number, or a string with a unit) to the base unit of ``dimension``.

    >>> parse_quantity("1.35 GHz", "hz")
    1350000000.0
    >>> parse_quantity(2.0e12, "bytes_per_s")
    2000000000000.0
    """
    if isinstance(value, bool):
        raise UnitError(f"expected a number, got a boolean {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        raise UnitError(f"expected a number or a string with a unit, got {type(value).__name__}")
    m = _NUM.match(value)
    if not m:
        raise UnitError(f"cannot read {value!r} as a number with a unit")
    number, unit = float(m.group(1)), (m.group(2) or "").strip()
    table = UNITS[dimension]
    if not unit:  # a bare number is already in the field's base unit
        return number
    if unit in table:
        return number * table[unit]
    expected = ", ".join(sorted(u for u in table if u)[:8]) or "a bare number"
    other = [d for d, tab in UNITS.items() if unit in tab and unit]
    hint = f" ('{unit}' is a unit of {other[0]})" if other else ""
    raise UnitError(f"unit '{unit}' does not fit a {dimension} field{hint}; expected e.g. {expected}")
