"""Training validation: predict the time-to-train of published MLPerf Training results.

``validate_training("rows.csv")`` reads a CSV with the columns of the packaged
``data/mlperf/mlperf_training_calibration.csv`` (``accelerator``, ``n_accel``, ``benchmark``,
``time_to_train_min``, ``global_batch_size`` at least; ``precision`` optional), predicts every
row it can and says why it cannot predict the others; skipped rows count against coverage.

A row's prediction is samples to converge at its global batch (``training_benchmarks.yaml``, from
the benchmark's logs) over the predicted samples per second of the benchmark's deployment on the
row's system: the largest micro-batch (a divisor of the per-rank batch) that fits in memory without
recompute, else the largest that fits with full recompute. Nothing in the training model is fitted to these
rows: every row is out of sample. Evaluation inside the timed region is added where the benchmark's
logs give its size and period (DLRM-DCNv2); elsewhere it is not modelled yet.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from mtiasim.chips import ChipError, list_chips
from mtiasim.frontend.capture import CaptureError
from mtiasim.training import TrainingReport, train
from mtiasim.validate import Summary

REQUIRED = ("accelerator", "n_accel", "benchmark", "time_to_train_min", "global_batch_size")


class TrainingRowResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    line: int
    round: str | None
    submitter: str | None
    accelerator: str
    n_accel: str
    benchmark: str
    global_batch_size: str
    measured_min: float | None
    predicted_min: float | None
    ape_pct: float | None
    deployment: str | None = None
    reason: str | None = None


class TrainingValidation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    fitted_on: list[str]
    total: Summary
    by_benchmark: dict[str, Summary]
    by_row: list[TrainingRowResult]


def default_data() -> Path:
    return Path(str(resources.files("mtiasim").joinpath("data", "mlperf", "mlperf_training_calibration.csv")))


@lru_cache(maxsize=1)
def benchmarks() -> dict[str, Any]:
    return yaml.safe_load(resources.files("mtiasim").joinpath("data", "mlperf", "training_benchmarks.yaml").read_text())


def samples_to_converge(table: dict[int, float], global_batch: int) -> float:
    """Log-log interpolation between the logged global batch sizes, held constant outside them."""
    pts = sorted((float(b), float(s)) for b, s in table.items())
    if global_batch <= pts[0][0]:
        return pts[0][1]
    for (b0, s0), (b1, s1) in zip(pts, pts[1:]):
        if global_batch <= b1:
            t = (math.log(global_batch) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return math.exp(math.log(s0) + t * (math.log(s1) - math.log(s0)))
    return pts[-1][1]


def _summary(rs: list[TrainingRowResult]) -> Summary:
    apes = [r.ape_pct for r in rs if r.ape_pct is not None]
    return Summary(rows=len(rs), predicted=len(apes), coverage_pct=100.0 * len(apes) / len(rs) if rs else 0.0,
                           mape_pct=statistics.fmean(apes) if apes else None,
                           median_ape_pct=statistics.median(apes) if apes else None)


def _deploy(bench: dict[str, Any], system: str, dp: int, rows_per_rank: int, precision: str
            ) -> tuple[TrainingReport | None, str]:
    """The benchmark's deployment: its layout (TP, PP, ZeRO stage) from ``training_benchmarks.yaml``,
    and the submitters' micro-batch where their configs give one, else the largest micro-batch
    (a divisor of the per-rank batch, the rest as gradient accumulation) that fits without
    recompute, else the largest that fits with full recompute (recompute costs a forward; a
    smaller micro-batch costs little); or the last attempt's reason."""
    kw = dict(system=system, global_batch=rows_per_rank * dp, seq_len=bench.get("seq_len"),
              optimizer=bench["optimizer"], precision=precision, tp=bench.get("tp", 1), pp=bench.get("pp", 1),
              zero_stage=bench.get("zero_stage", 0), lora_rank=bench.get("lora_rank"))
    last = "no micro-batch size tried"
    sizes = [m for m in range(rows_per_rank, 0, -1) if rows_per_rank % m == 0]
    if bench.get("micro_batch"):  # the submitters' own micro-batch, where their launch configs give it
        sizes = [bench["micro_batch"]] if rows_per_rank % bench["micro_batch"] == 0 else []
        last = f"micro-batch {bench['micro_batch']} does not divide the {rows_per_rank} samples per rank"
    for recompute in ("none", "full"):
        for micro in sizes:
            try:
                r = train(bench["model"], micro_batch=micro, recompute=recompute, **kw)
            except ValueError as e:
                last = str(e)
                continue
            if r.fits:
                return r, (f"TP={r.tensor_parallel} x PP={r.pipeline_parallel} x DP={r.data_parallel}, "
                           f"micro-batch {micro} x {r.micro_batches}, recompute {recompute}, {precision}")
            last = r.notes[0]
    return None, last


def eval_s(bench: dict[str, Any], converge: float, r: TrainingReport) -> float:
    """Evaluation inside the timed region, where the benchmark's logs give its size and period:
    every ``eval_every_samples`` trained, a forward pass over ``eval_samples`` at the step's
    forward throughput (the whole system, the training micro-batch)."""
    if not bench.get("eval_samples") or not bench.get("eval_every_samples"):
        return 0.0
    evals = math.floor(converge / bench["eval_every_samples"])
    forward_samples_per_s = r.global_batch / r.breakdown_s.forward
    return evals * bench["eval_samples"] / forward_samples_per_s


class _Predictor:
    def __init__(self) -> None:
        self.cache: dict[tuple, tuple[float | None, str | None, str | None]] = {}

    def __call__(self, row: dict[str, str]) -> tuple[float | None, str | None, str | None]:
        """(predicted minutes, deployment, reason when not predicted)."""
        name = row["benchmark"].strip()
        table = benchmarks()
        if name in table.get("unsupported", {}):
            return None, None, table["unsupported"][name]
        bench = table.get(name)
        if bench is None:
            return None, None, f"benchmark '{name}' is not known (known: {', '.join(k for k in table if k != 'unsupported')})"
        chip = row["accelerator"].strip().lower()
        if chip not in set(list_chips()):
            return None, None, f"accelerator '{row['accelerator']}' has no chip preset"
        try:
            n, gbs = int(row["n_accel"]), int(row["global_batch_size"])
        except ValueError:
            return None, None, f"n_accel '{row['n_accel']}' / global_batch_size '{row['global_batch_size']}' are not integers"
        if n < 1 or gbs < 1:
            return None, None, "n_accel and global_batch_size must be positive"
        precision = "fp8" if "fp8" in (row.get("precision") or "").lower() else bench["precision"]
        key = (name, chip, n, gbs, precision)
        if key not in self.cache:
            self.cache[key] = self._predict(bench, chip, n, gbs, precision)
        return self.cache[key]

    @staticmethod
    def _predict(bench: dict[str, Any], chip: str, n: int, gbs: int, precision: str
                 ) -> tuple[float | None, str | None, str | None]:
        group = bench.get("tp", 1) * bench.get("pp", 1)
        if n % group:
            return None, None, f"{n} chips do not form model-parallel groups of {group} (TP x PP)"
        dp, per_sample = n // group, float(bench.get("sequences_per_sample", 1.0))
        rows_per_rank = gbs / dp / per_sample
        if rows_per_rank < 1 or (per_sample == 1.0 and gbs % dp):
            return None, None, (f"global batch {gbs} does not split over {dp} data-parallel ranks (the submission "
                                "uses context or pipeline parallelism, not modelled yet)")
        try:
            r, how = _deploy(bench, f"{chip}:{n}", dp, max(1, round(rows_per_rank)), precision)
        except (ChipError, CaptureError, ValueError) as e:
            return None, None, str(e)
        if r is None:
            return None, None, how
        converge = samples_to_converge(bench["samples_to_converge"], gbs)
        train_s = converge / (r.samples_per_s * per_sample)
        return (train_s + eval_s(bench, converge, r)) / 60.0, how, None


def validate_training(path: str | Path | None = None,
                      progress: Callable[[str], None] | None = None) -> TrainingValidation:
    """Predict every row of ``path`` (default: the packaged MLPerf Training rows);
    ``progress(description)`` as each row starts."""
    path = Path(path) if path is not None else default_data()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the CSV: {e}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; needs {list(REQUIRED)}")
    predict = _Predictor()
    results = []
    for line, row in enumerate(reader, start=2):
        if None in row or any(row.get(c) is None for c in REQUIRED):
            raise ValueError(f"{path}:{line}: the row has {len(row) - (None in row)} fields, the header {len(reader.fieldnames)}")
        try:
            measured = float(row["time_to_train_min"])
        except ValueError:
            measured = math.nan
        base = dict(line=line, round=row.get("round"), submitter=row.get("submitter"), accelerator=row["accelerator"],
                    n_accel=row["n_accel"], benchmark=row["benchmark"], global_batch_size=row["global_batch_size"])
        if not (math.isfinite(measured) and measured > 0):
            results.append(TrainingRowResult(**base, measured_min=None, predicted_min=None, ape_pct=None,
                                             reason=f"time_to_train_min '{row['time_to_train_min']}' is not a positive number"))
            continue
        if progress is not None:
            progress(f"line {line}: {row['benchmark']} on {row['n_accel']} x {row['accelerator']}")
        pred, how, why = predict(row)
        ape = None if pred is None else abs(pred - measured) / measured * 100
        results.append(TrainingRowResult(**base, measured_min=measured, predicted_min=pred, ape_pct=ape,
                                         deployment=how, reason=why))
    by_bench: dict[str, list[TrainingRowResult]] = {}
    for r in results:
        by_bench.setdefault(r.benchmark, []).append(r)
    return TrainingValidation(source=str(path), fitted_on=[], total=_summary(results),
                              by_benchmark={k: _summary(v) for k, v in sorted(by_bench.items())}, by_row=results)
