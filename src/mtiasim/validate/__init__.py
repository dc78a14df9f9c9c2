"""Validation: predict published measurements and report the error of every prediction.

``validate("rows.csv")`` reads any CSV with the columns of shared/calibration/mlperf_calibration.csv
(``accelerator``, ``n_accel``, ``benchmark``, ``scenario``, ``metric``, ``value`` at least),
predicts each row it can and says why it cannot predict the others. Unsupported rows count
against coverage; none is dropped.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from mtiasim.chips import list_chips
from mtiasim.engines.measured import measured_file
from mtiasim.fitted import fitted_on_row
from mtiasim.frontend import zoo
from mtiasim.serving.mlperf import MLPerfPrediction, benchmark_info, deployment_round, predict

REQUIRED = ("accelerator", "n_accel", "benchmark", "scenario", "metric", "value")

#: metric -> (kind, what it reads from a prediction)
METRICS = {
    "tokens_per_second": ("throughput", "tokens_per_s"),
    "completed_tokens_per_second": ("throughput", "tokens_per_s"),
    "samples_per_second": ("throughput", "samples_per_s"),
    "completed_samples_per_second": ("throughput", "samples_per_s"),
    "scheduled_samples_per_second": ("throughput", "samples_per_s"),
    "p99_ttft_ms": ("latency", "p99_ttft_s"),
    "p99_tpot_ms": ("latency", "p99_tpot_s"),
    "p99_latency_ms": ("latency", "p99_e2e_s"),
    # GPT-J's v5.0 official metric: samples/s x 69 (gptj token_latency_scaling_factor, mlperf.md 0)
    "inferred_tokens_per_second (official v5.0 GPT-J metric)": ("throughput", "inferred_tokens_per_s"),
}
GPTJ_TOKEN_SCALING = 69  # mlperf.conf gptj.*.token_latency_scaling_factor (mlperf.md section 0)


class RowResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    prediction: float | None
    ape_pct: float | None
    reason: str | None = None
    # the row's APE under the best single value for all rows of its configuration (spread_floor)
    floor_ape_pct: float | None = None
    # the fitted values (data file: key) that were fitted on this row (mtiasim/fitted.py): empty
    # for a row nothing was fitted to, whose error is out of sample
    fitted_on: list[str] = []


class Summary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: int
    predicted: int
    coverage_pct: float
    mape_pct: float | None
    median_ape_pct: float | None
    # the lowest MAPE any predictor giving one value per configuration could reach on these rows:
    # the part of the error that is the measurements' own spread (spread_floor)
    floor_mape_pct: float | None = None
    # the same rows split: those a fitted value was fitted on (in sample) and the rest
    fitted_predicted: int = 0
    fitted_mape_pct: float | None = None
    unfitted_predicted: int = 0
    unfitted_mape_pct: float | None = None
    unfitted_median_ape_pct: float | None = None


class ValidationReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    rows: int
    predicted: int
    coverage_pct: float
    mape_pct: float | None
    median_ape_pct: float | None
    floor_mape_pct: float | None
    total: Summary  # the same totals with the split into rows fitted on and not
    by_kind: dict[str, Summary]
    by_benchmark: dict[str, Summary]
    by_accelerator: dict[str, Summary]
    by_metric: dict[str, Summary]
    by_row: list[RowResult]


def default_data() -> Path:
    return Path(str(resources.files("mtiasim").joinpath("data", "mlperf", "mlperf_calibration.csv")))


def _summary(rs: list[RowResult]) -> Summary:
    apes = [r.ape_pct for r in rs if r.ape_pct is not None]
    floors = [r.floor_ape_pct for r in rs if r.floor_ape_pct is not None]
    fitted = [r.ape_pct for r in rs if r.ape_pct is not None and r.fitted_on]
    unfitted = [r.ape_pct for r in rs if r.ape_pct is not None and not r.fitted_on]
    return Summary(rows=len(rs), predicted=len(apes), coverage_pct=100.0 * len(apes) / len(rs) if rs else 0.0,
                   mape_pct=statistics.fmean(apes) if apes else None,
                   median_ape_pct=statistics.median(apes) if apes else None,
                   floor_mape_pct=statistics.fmean(floors) if floors else None,
                   fitted_predicted=len(fitted), fitted_mape_pct=statistics.fmean(fitted) if fitted else None,
                   unfitted_predicted=len(unfitted), unfitted_mape_pct=statistics.fmean(unfitted) if unfitted else None,
                   unfitted_median_ape_pct=statistics.median(unfitted) if unfitted else None)


def spread_floor(measured: list[float]) -> tuple[float, list[float]]:
    """The single value c that minimises the summed APE over ``measured`` (rows the model must
    predict alike: one benchmark, system, scenario, round and metric, measured by different
    submitters or runs), and each row's APE (%) at c. The sum of |c - m| / |m| is convex and
    piecewise linear in c with its kinks at the measured values, so its minimum is at one of them
    (a median weighted by 1 / |m|)."""
    if not measured or any(m == 0 for m in measured):
        raise ValueError("spread_floor needs non-zero measured values")
    best = min(measured, key=lambda c: (sum(abs(c - m) / abs(m) for m in measured), c))
    return best, [abs(best - m) / abs(m) * 100 for m in measured]


def _with_floors(results: list[RowResult], rows: list[dict[str, str]]) -> None:
    """Set ``floor_ape_pct`` on every predicted row: rows of one configuration (shard, scenario,
    metric and the same prediction) share the value that fits them best."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (r, row) in enumerate(zip(results, rows)):
        if r.ape_pct is not None:
            groups[(_shard_key(row), row["scenario"].strip(), row["metric"].strip(), r.prediction)].append(i)
    for idx in groups.values():
        _, apes = spread_floor([float(rows[i]["value"]) for i in idx])
        for i, ape in zip(idx, apes):
            results[i].floor_ape_pct = ape


def server_latency_logs() -> dict[str, dict]:
    """Whole latency distributions (mean and percentiles, ms) of MLPerf Server runs as their own
    LoadGen logs print them, by benchmark, with sources
    (``data/calibration/measured/mlperf_logs/server_latency.yaml``; the CSV keeps only the p99)."""
    return yaml.safe_load(measured_file("mlperf_logs", "server_latency", ".yaml", "MLPerf log set").read_text())


def _preset(accelerator: str) -> str | None:
    name = accelerator.strip().lower()
    return name if name in set(list_chips()) else None


class _Predictor:
    """Memoises predictions: many rows share a (benchmark, system, scenario)."""

    def __init__(self) -> None:
        self.cache: dict[tuple, MLPerfPrediction] = {}

    def get(self, benchmark: str, system: str, scenario: str, mlperf_round: str | None = None,
            maxq: bool = False) -> MLPerfPrediction:
        rnd = deployment_round(benchmark, mlperf_round)
        key = (benchmark.lower().removesuffix("-99"), system, scenario, rnd, maxq)
        if key not in self.cache:
            self.cache[key] = predict(benchmark, system, scenario, mlperf_round=rnd, maxq=maxq)
        return self.cache[key]


def predict_row(row: dict[str, str], predictor: _Predictor) -> tuple[float | None, str | None]:
    metric = row["metric"].strip()
    if metric not in METRICS:
        return None, f"metric '{metric}' is not predicted (supported: {', '.join(METRICS)})"
    chip = _preset(row["accelerator"])
    if chip is None:
        return None, f"accelerator '{row['accelerator']}' has no chip preset"
    try:
        info = benchmark_info(row["benchmark"])
    except ValueError as e:
        return None, str(e)
    scenario = row["scenario"].strip()
    try:
        n_raw = float(row["n_accel"])
    except ValueError:
        return None, f"n_accel '{row['n_accel']}' is not a number"
    if not (math.isfinite(n_raw) and n_raw >= 1 and n_raw.is_integer()):
        return None, f"n_accel '{row['n_accel']}' is not a whole number of accelerators"
    n = int(n_raw)
    system = f"{chip}:{n}"
    kind, field = METRICS[metric]
    # LLM accuracy variants (-99 / -99.9) run the same model and deployment: predict once. The
    # batched benchmarks' 99.9% deployments differ (DLRM: FP16 interaction; BERT: FP16/FP8), so
    # they keep their own name.
    key = info["benchmark"] if zoo.get(info["model"]).family == "llm" else row["benchmark"]
    rnd = row.get("round")  # the round's own software deployment, where deployments.yaml has one
    # a power-capped run (MLPerf's MaxQ; NVIDIA names its systems *_MaxQ) at the submitters' limit
    run = {"mlperf_round": rnd, "maxq": "maxq" in (row.get("system") or "").lower()}
    if kind == "latency" and scenario == "Offline":
        return None, "latency rows are only defined for Server/Interactive"
    try:
        # Every row of a submission is read from one prediction: its scenario's. A Server (or
        # Interactive) row's latency percentiles are those at the predicted operating point, the
        # largest load that meets the bounds, which is where a submission runs (its submitter
        # raised the load until the bounds nearly bound). At a submission's load relative to its
        # own Offline rate the model is far from its knee, since its Server/Offline ratio is above
        # the measured one: llama2-70b on H100 ran ~840 sequences in 155 ms steps per TP2 replica
        # at 88% of Offline, where the model runs ~180 in 41 ms (BENCHMARKS.md).
        pred = predictor.get(key, system, scenario, **run)
    except ValueError as e:  # e.g. the model does not fit, or unknown scenario bounds
        return None, str(e)
    value = pred.samples_per_s * GPTJ_TOKEN_SCALING if field == "inferred_tokens_per_s" else getattr(pred, field)
    if value is None:
        return None, f"the simulation produced no {field}"
    if metric.endswith("_ms"):
        value *= 1e3
    if info["unit"] == "sample" and field == "tokens_per_s":
        return None, "token throughput of a sample-metric benchmark is not predicted"
    return value, None


def _shard_key(row: dict[str, str]) -> tuple:
    """Rows whose predictions can share work (one benchmark, system, round and power setting:
    a Server latency row reuses its throughput row's prediction) go to the same worker."""
    bench = row["benchmark"].strip().lower()
    for suffix in ("-99.9", "-99"):
        bench = bench.removesuffix(suffix)
    return (bench, row["accelerator"].strip().lower(), row["n_accel"].strip(), (row.get("round") or "").strip().lower(),
            "maxq" in (row.get("system") or "").lower())


def _predict_group(rows: list[dict[str, str]], indices: list[int],
                   done: Callable[[int], None] | None = None) -> list[tuple[int, float | None, str | None]]:
    """Predict rows ``indices`` of ``rows`` with one memoising predictor (a worker's share);
    ``done(1)`` after each row."""
    predictor = _Predictor()
    out = []
    for i in indices:
        out.append((i, *predict_row(rows[i], predictor)))
        if done is not None:
            done(1)
    return out


def _predict_rows(rows: list[dict[str, str]], indices: list[int], jobs: int,
                  done: Callable[[int], None] | None = None) -> dict[int, tuple]:
    """Predictions of rows ``indices``: in this process, or over ``jobs`` worker processes, each
    taking whole shards (``_shard_key``), largest first. Every prediction is seeded, so the result
    does not depend on ``jobs``. ``done(n)`` reports rows finished (a shard at a time in workers)."""
    shards: dict[tuple, list[int]] = defaultdict(list)
    for i in indices:
        shards[_shard_key(rows[i])].append(i)
    if jobs == 1 or len(shards) < 2:
        return {i: (p, r) for i, p, r in _predict_group(rows, indices, done)}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    out: dict[int, tuple] = {}
    # spawn, not fork: a forked copy of a process that has loaded torch may deadlock
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_predict_group, rows, shard) for shard in sorted(shards.values(), key=len, reverse=True)]
        for f in as_completed(futures):
            part = f.result()
            out.update({i: (p, r) for i, p, r in part})
            if done is not None:
                done(len(part))
    return out


def validate(path: str | Path | None = None, jobs: int = 1,
             progress: Callable[[int, int], None] | None = None) -> ValidationReport:
    """Predict every row of ``path`` (default: the packaged calibration set) over ``jobs``
    processes (the same result for any number). ``progress(done, total)`` follows the rows."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    path = Path(path) if path else default_data()
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # with or without a byte-order mark
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing}; need {list(REQUIRED)}")
            rows = list(reader)
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the CSV as UTF-8") from None
    early: dict[int, RowResult] = {}  # rows that cannot be read, with the reason
    measured: dict[int, float] = {}
    for i, row in enumerate(rows):
        extra = row.pop(None, None)  # csv.DictReader keeps surplus fields under the key None
        if extra is not None:
            early[i] = RowResult(**{k: v for k, v in row.items() if v is not None}, prediction=None, ape_pct=None,
                                 reason=f"row {i + 2}: {len(extra)} more field(s) than the header (an unquoted comma?)")
            continue
        short = [k for k, v in row.items() if v is None]  # csv.DictReader fills a short row's tail with None
        if short:
            early[i] = RowResult(**{k: v for k, v in row.items() if v is not None}, prediction=None, ape_pct=None,
                                 reason=f"row {i + 2}: {len(row) - len(short)} field(s), the header has {len(row)}")
            continue
        try:
            value = float(row["value"])
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            early[i] = RowResult(**row, prediction=None, ape_pct=None,
                                 reason=f"row {i + 2}: value {row['value']!r} is not a positive, finite number")
            continue
        measured[i] = value
    finished = 0

    def done(n: int) -> None:
        nonlocal finished
        finished += n
        if progress is not None:
            progress(finished, len(measured))

    preds = _predict_rows(rows, list(measured), jobs, done)
    results: list[RowResult] = []
    for i, row in enumerate(rows):
        if i in early:
            results.append(early[i])
            continue
        pred, reason = preds[i]
        ape = abs(pred - measured[i]) / abs(measured[i]) * 100 if pred is not None and measured[i] else None
        if pred is not None and (ape is None or math.isnan(ape)):
            pred, reason = None, "measured value is zero"
        results.append(RowResult(**row, prediction=pred, ape_pct=ape, reason=reason, fitted_on=fitted_on_row(row)))
    _with_floors(results, rows)
    groups: dict[str, dict[str, list[RowResult]]] = {k: defaultdict(list) for k in ("kind", "benchmark", "accel", "metric")}
    for r, row in zip(results, rows):
        # a short row's missing fields group as ""
        metric, bench, accel = (row.get(k) or "" for k in ("metric", "benchmark", "accelerator"))
        groups["kind"][METRICS.get(metric, ("other",))[0]].append(r)
        groups["benchmark"][bench].append(r)
        groups["accel"][accel].append(r)
        groups["metric"][metric].append(r)
    total = _summary(results)
    return ValidationReport(
        source=str(path), rows=total.rows, predicted=total.predicted, coverage_pct=total.coverage_pct,
        mape_pct=total.mape_pct, median_ape_pct=total.median_ape_pct, floor_mape_pct=total.floor_mape_pct,
        total=total, by_kind={k: _summary(v) for k, v in groups["kind"].items()},
        by_benchmark={k: _summary(v) for k, v in groups["benchmark"].items()},
        by_accelerator={k: _summary(v) for k, v in groups["accel"].items()},
        by_metric={k: _summary(v) for k, v in groups["metric"].items()},
        by_row=results)
