"""A results store for fleet sweeps (DuckDB): every evaluated system (workload, chip, n) is kept
the moment it completes, keyed by what determines it, so a killed sweep resumes without losing or
repeating a point and a rerun reuses what was already simulated. ``export`` writes Parquet.

The key hashes the workload's definition (not its name), the chip's full description and the
package version: editing a chip or a workload invalidates its points, but a change to mtiasim's
code between two runs of the same version does not (delete the file then)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mtiasim import __version__
from mtiasim.chips import load_chip
from mtiasim.fleet.sizing import Point

SCHEMA = """CREATE TABLE IF NOT EXISTS points (
  key VARCHAR PRIMARY KEY, base VARCHAR, workload VARCHAR, kind VARCHAR, model VARCHAR, chip VARCHAR, n INTEGER,
  ok BOOLEAN, reason VARCHAR, point JSON)"""


def workload_key(workload: Any, chip: str) -> str:
    """What a point of ``workload`` on ``chip`` depends on, hashed (the workload's name excluded)."""
    spec = workload.model_dump(mode="json", exclude={"name"})
    chip_spec = load_chip(chip).model_dump(mode="json")
    text = json.dumps([__version__, spec, chip, chip_spec], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Store:
    """Points in a DuckDB file (``path``), or in memory when ``path`` is None."""

    def __init__(self, path: str | Path | None = None):
        import duckdb

        self.path = None if path is None else Path(path)
        if self.path is not None and not self.path.parent.is_dir():
            raise ValueError(f"--store {path}: folder {self.path.parent} does not exist")
        try:
            self.db = duckdb.connect(":memory:" if self.path is None else str(self.path))
        except duckdb.Error as e:
            raise ValueError(f"--store {path}: cannot open the results store: {e}") from None
        self.db.execute(SCHEMA)

    def known(self, workload: Any, chip: str) -> dict[int, Point]:
        """Every stored point of ``workload`` on ``chip``, by chip count."""
        base = workload_key(workload, chip)
        rows = self.db.execute("SELECT point FROM points WHERE base = ?", [base]).fetchall()
        return {p.n: p for p in (Point.model_validate_json(r[0]) for r in rows)}

    def put(self, workload: Any, chip: str, point: Point) -> None:
        """Keep ``point`` (committed at once; a point already stored is left as it is)."""
        base = workload_key(workload, chip)
        self.db.execute("INSERT OR IGNORE INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [f"{base}:{point.n}", base, workload.name, workload.kind, workload.model, chip, point.n,
                         point.ok, point.reason, point.model_dump_json()])

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM points").fetchall()[0][0]

    def export(self, path: str | Path) -> Path:
        """Every point as Parquet (one row per evaluated system)."""
        p = Path(path)
        self.db.execute(f"COPY (SELECT * EXCLUDE (key, base) FROM points ORDER BY workload, chip, n) "
                        f"TO '{p.as_posix()}' (FORMAT PARQUET)")
        return p

    def close(self) -> None:
        self.db.close()
