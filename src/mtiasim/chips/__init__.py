"""Chip presets and user chip files.

>>> chip = load_chip("mtia-200")
>>> chip.dram.bandwidth_bytes_per_s.value
204800000000.0
"""

from __future__ import annotations

from mtiasim.chips.loader import (
    ChipError,
    apply_overrides,
    list_chips,
    load_chip,
    preset_path,
)
from mtiasim.chips.schema import DTYPES, ChipSpec, Sourced

__all__ = [
    "ChipError",
    "ChipSpec",
    "DTYPES",
    "Sourced",
    "apply_overrides",
    "list_chips",
    "load_chip",
    "preset_path",
]
