"""What a fitted value was fitted on, written where the value lives (``status: fitted`` and
``fitted_on`` in ``data/``), and which of ``mtiasim validate``'s rows that makes in-sample.

A ``fitted_on`` entry is one of
- ``csv: FIELD=A|B, FIELD~TEXT, FIELD!~TEXT, ...``: rows of the packaged MLPerf calibration CSV
  whose FIELD equals one of the alternatives (``=``), contains TEXT (``~``) or does not (``!~``),
  all case-insensitive; every condition must hold;
- ``file: PATH``: a measurement file under ``src/mtiasim/data/`` (kernels measured on a GPU, an
  MLPerf LoadGen log, a vendor's published latencies), which must exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

CSV_FIELDS = ("round", "submitter", "system", "accelerator", "n_accel", "benchmark", "scenario", "metric",
              "precision", "software")
_COND = re.compile(r"^\s*([a-z_]+)\s*(=|!~|~)\s*(.+?)\s*$")


@dataclass(frozen=True)
class Selector:
    """One ``fitted_on`` entry, parsed."""

    text: str
    conditions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (field, op, values); empty: a file
    path: str | None = None

    def matches(self, row: dict[str, str]) -> bool:
        """Whether calibration-CSV ``row`` is one this value was fitted on (never for a file)."""
        if self.path is not None:
            return False
        for field, op, values in self.conditions:
            cell = (row.get(field) or "").strip().lower()
            if op == "=" and cell not in values:
                return False
            if op == "~" and not any(v in cell for v in values):
                return False
            if op == "!~" and any(v in cell for v in values):
                return False
        return True


def parse_selector(text: str) -> Selector:
    """``csv: ...`` or ``file: ...`` (see the module docstring); a clear ValueError otherwise."""
    kind, sep, rest = text.partition(":")
    kind = kind.strip()
    if not sep or kind not in ("csv", "file"):
        raise ValueError(f"fitted_on entry {text!r}: expected 'csv: FIELD=VALUE, ...' or 'file: PATH'")
    if kind == "file":
        path = rest.strip()
        if not resources.files("mtiasim").joinpath("data", path).is_file():
            raise ValueError(f"fitted_on entry {text!r}: no file data/{path} in the package")
        return Selector(text=text, path=path)
    conditions = []
    for part in rest.split(","):
        m = _COND.match(part)
        if not m:
            raise ValueError(f"fitted_on entry {text!r}: cannot read condition {part.strip()!r} "
                             "(FIELD=A|B, FIELD~TEXT or FIELD!~TEXT)")
        field, op, value = m.groups()
        if field not in CSV_FIELDS:
            raise ValueError(f"fitted_on entry {text!r}: unknown field {field!r}; fields: {', '.join(CSV_FIELDS)}")
        conditions.append((field, op, tuple(v.strip().lower() for v in value.split("|"))))
    if not conditions:
        raise ValueError(f"fitted_on entry {text!r}: no condition")
    return Selector(text=text, conditions=tuple(conditions))


def check_fitted(status: str, fitted_on: list[str]) -> None:
    """A fitted value names what it was fitted on, and only a fitted value does."""
    if status == "fitted" and not fitted_on:
        raise ValueError("a fitted value needs fitted_on: the rows ('csv: ...') or files ('file: ...') it was "
                         "fitted to")
    if fitted_on and status != "fitted":
        raise ValueError(f"fitted_on is given, so status must be 'fitted', not {status!r}")
    for entry in fitted_on:
        parse_selector(entry)


#: data files that hold fitted values, and how each names a fitted field
FILES = ("calibration/analytical.yaml", "calibration/gpu.yaml", "calibration/power.yaml",
         "calibration/collectives.yaml", "calibration/serving.yaml", "mlperf/deployments.yaml")


@dataclass(frozen=True)
class FittedValue:
    where: str  # file and key path, e.g. calibration/power.yaml: sustained_gemm_clock_fraction.h100-sxm-80gb
    selectors: tuple[Selector, ...]


def _walk(node: Any, path: str, out: list[tuple[str, list[str]]]) -> None:
    if isinstance(node, dict):
        if node.get("status") == "fitted":
            out.append((path, list(node.get("fitted_on") or [])))
        for field, entries in (node.get("fitted_on_fields") or {}).items():  # plain dicts: {field: [...]}
            out.append((f"{path}.{field}" if path else field, list(entries)))
        for k, v in node.items():
            if k not in ("fitted_on", "fitted_on_fields"):
                _walk(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _walk(v, f"{path}[{i}]", out)


def collect(name: str, raw: Any) -> list[FittedValue]:
    """The fitted values of one parsed data file ``name``; a fitted value without ``fitted_on``,
    or an entry that cannot be read, is an error naming the file and the key."""
    entries: list[tuple[str, list[str]]] = []
    _walk(raw, "", entries)
    found = []
    for path, texts in entries:
        try:
            check_fitted("fitted", texts)
            selectors = tuple(parse_selector(t) for t in texts)
        except ValueError as e:
            raise ValueError(f"data/{name}: {path}: {e}") from None
        found.append(FittedValue(where=f"{name}: {path}", selectors=selectors))
    return found


@lru_cache(maxsize=1)
def fitted_values() -> tuple[FittedValue, ...]:
    """Every fitted value in the package's data files with what it was fitted on."""
    return tuple(v for name in FILES
                 for v in collect(name, yaml.safe_load(resources.files("mtiasim").joinpath("data", name).read_text())))


def fitted_on_row(row: dict[str, str]) -> list[str]:
    """The fitted values that were fitted on calibration-CSV ``row`` (empty: the row is out of sample)."""
    return [v.where for v in fitted_values() if any(s.matches(row) for s in v.selectors)]
