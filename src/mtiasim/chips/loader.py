"""Load chip presets or user files, and apply ``--set path=value`` overrides."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mtiasim.chips.derived import rescale_peaks
from mtiasim.chips.schema import ChipSpec, Sourced
from mtiasim.units import UnitError, parse_quantity

PRESET_DIR = Path(__file__).parent / "presets"
#: the ``source`` of a value set with ``--set``; a TDP set this way is a power cap (see power/)
USER_OVERRIDE_SOURCE = "user override (--set)"


class ChipError(ValueError):
    """A chip file or override is wrong; the message names the file and the field."""


def _format_validation(where: str, err: ValidationError) -> str:
    lines = [f"{where}: invalid chip description"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p not in ("function-after[_check_status(), Sourced]",))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (not in the chip schema; see `mtiasim chips show mtia-200` for the layout)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"  {loc or '<top>'}: {msg}")
    return "\n".join(lines)


def list_chips() -> list[str]:
    """Names of the preset chips, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    return PRESET_DIR / f"{name}.yaml"


def _parse_file(path: Path, shown: str | None = None) -> ChipSpec:
    where = shown or str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ChipError(f"{where}: not valid YAML: {e}") from None
    except OSError as e:
        raise ChipError(f"{where}: cannot read chip file: {e.strerror}") from None
    if not isinstance(raw, dict):
        raise ChipError(f"{where}: a chip file must be a YAML mapping, got {type(raw).__name__}")
    try:
        return ChipSpec.model_validate(raw)
    except ValidationError as e:
        raise ChipError(_format_validation(where, e)) from None


@lru_cache(maxsize=64)
def _load_preset(name: str) -> ChipSpec:
    return _parse_file(preset_path(name))


def load_chip(name_or_path: str | Path | ChipSpec, overrides: Mapping[str, Any] | None = None) -> ChipSpec:
    """A preset by name (``"mtia-200"``) or a YAML file path, with optional overrides.

    Returns a fresh copy; presets are cached, so loading is cheap.
    """
    if isinstance(name_or_path, ChipSpec):
        chip = name_or_path.model_copy(deep=True)
    else:
        s = str(name_or_path)
        if s.endswith((".yaml", ".yml")) or "/" in s:
            chip = _parse_file(Path(s), s)
        elif preset_path(s.lower()).exists():
            chip = _load_preset(s.lower()).model_copy(deep=True)
        else:
            raise ChipError(f"unknown chip '{s}'; presets: {', '.join(list_chips())} (or pass a .yaml path)")
    return apply_overrides(chip, overrides or {})


def _field_names(obj: Any) -> list[str]:
    if isinstance(obj, BaseModel):
        return list(type(obj).model_fields)
    if isinstance(obj, dict):
        return list(obj)
    return []


def apply_overrides(chip: ChipSpec, overrides: Mapping[str, Any]) -> ChipSpec:
    """Set ``path=value`` pairs on a copy of ``chip``.

    ``path`` is dotted (``dram.bandwidth_bytes_per_s``, ``compute.peak_ops_per_s.bf16``); the value
    is a number or a string with a unit, or ``alt:LABEL`` to pick a documented alternative.
    """
    if not overrides:
        return chip
    chip = chip.model_copy(deep=True)
    for path, raw in overrides.items():
        parts = path.split(".")
        parent: Any = chip
        for i, key in enumerate(parts):
            names = _field_names(parent)
            if key not in names:
                where = ".".join(parts[:i]) or "<chip>"
                raise ChipError(
                    f"--set {path}: '{key}' is not a field of {where}; fields: {', '.join(names) or '(none)'}"
                )
            child = parent[key] if isinstance(parent, dict) else getattr(parent, key)
            if child is None:
                raise ChipError(f"--set {path}: {'.'.join(parts[: i + 1])} is not described for {chip.name}")
            if i == len(parts) - 1:
                before = child.value if isinstance(child, Sourced) else None
                _set_leaf(chip, path, parent, key, child, raw)
                after = parent[key] if isinstance(parent, dict) else getattr(parent, key)
                if isinstance(after, Sourced):
                    rescale_peaks(chip, path, before, after.value)  # peak = clock x units x ops/cycle
            parent = child
    return chip


def override_sourced(child: Sourced, raw: Any, where: str) -> Sourced:
    """``child`` with the value ``raw`` (a number, a string with a unit, or ``alt:LABEL`` for a
    documented alternative), its old value kept as the ``preset-default`` alternative. ``where``
    names the override in errors (``--set dram.bandwidth_bytes_per_s``)."""
    if isinstance(raw, str) and raw.startswith("alt:"):
        label = raw[4:]
        if label not in child.alternatives:
            known = ", ".join(child.alternatives) or "none"
            raise ChipError(f"{where}: no alternative '{label}' (documented: {known})")
        alt = child.alternatives[label]
        alts = {k: v for k, v in child.alternatives.items() if k != label}
        alts.setdefault("preset-default", {"value": child.value, "source": child.source})
        return type(child)(value=alt.value, source=alt.source, status="published" if alt.value is not None
                           else "unknown", note=f"alternative '{label}' selected; {alt.note or ''}".strip(),
                           alternatives=alts)
    try:
        value = parse_quantity(raw, type(child).dimension)
    except UnitError as e:
        raise ChipError(f"{where}: {e}") from None
    alts = dict(child.alternatives)
    alts.setdefault("preset-default", {"value": child.value, "source": child.source})
    try:
        return type(child)(value=value, source=USER_OVERRIDE_SOURCE, status="estimate",
                           note=f"set by the user; preset value was {child.value} from {child.source}",
                           alternatives=alts)
    except ValidationError as e:
        raise ChipError(f"{where}: " + "; ".join(d["msg"].removeprefix("Value error, ") for d in e.errors())) from None


def _set_leaf(chip: ChipSpec, path: str, parent: Any, key: str, child: Any, raw: Any) -> None:
    if isinstance(child, Sourced):
        new = override_sourced(child, raw, f"--set {path}")
    elif isinstance(child, (int, float, str)) and not isinstance(child, bool):
        try:
            new = type(child)(raw)
        except ValueError:
            raise ChipError(f"--set {path}: expected {'an integer' if isinstance(child, int) else 'a number'}, "
                            f"got {raw!r}") from None
    else:
        raise ChipError(f"--set {path}: is a section, not a value; set one of its fields "
                        f"({', '.join(_field_names(child))})")
    try:
        if isinstance(parent, dict):
            parent[key] = new
        else:
            setattr(parent, key, new)
    except ValidationError as e:
        raise ChipError(_format_validation(f"--set {path}", e)) from None
