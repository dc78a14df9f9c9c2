"""Predictions against measurements: validate, kernels."""

from __future__ import annotations

from pathlib import Path

import typer

from mtiasim.cli.common import (
    _dump,
    _fail,
    _progress,
    app,
    out,
)


@app.command("validate")
def validate_cmd(data: str | None = typer.Option(None, "--data", help="CSV with the columns of "
                                                 "mlperf_calibration.csv (default: the packaged calibration set)."),
                 as_json: bool = typer.Option(False, "--json"),
                 training: bool = typer.Option(False, "--training", help="Predict MLPerf Training time-to-train "
                                               "rows instead (columns of mlperf_training_calibration.csv)."),
                 jobs: int = typer.Option(1, "--jobs", "-j", help="Worker processes; rows sharing a benchmark, "
                                          "system and round stay together. The result does not depend on it.")):
    """Predict every row of a measurement CSV and report the errors (MAPE, coverage). A p99
    latency row is read at the predicted Server operating point (the largest load meeting the
    benchmark's bounds), from the same prediction as its submission's throughput row. Each total
    also gives its spread floor: the MAPE of the best single value per configuration, the part of
    the error that is the submitters' own spread. With --training, each row's time to train is
    predicted from its benchmark's samples to converge and the predicted training throughput."""
    if training:
        if jobs != 1:
            _fail(ValueError("--jobs applies to inference validation; --training runs in one process"))
        _validate_training(data, as_json)
        return
    from mtiasim.validate import validate

    try:
        with _progress(1) as step:
            rep = validate(data, jobs=jobs, progress=lambda k, n: step(f"rows predicted: {k}/{n}", k, n))
    except ValueError as e:
        _fail(e)
    if as_json:
        _dump(rep.model_dump(mode="json"))
        return
    from mtiasim.report.tables import validation_tables

    for t in validation_tables(rep):
        out.print(t)


def _data_rows(data: str | None) -> int:
    """Rows of the training CSV (for the progress bar; 0 when it cannot be read: validate says why)."""
    from mtiasim.validate.training import default_data

    try:
        return max(0, len((Path(data) if data else default_data()).read_text(encoding="utf-8-sig").splitlines()) - 1)
    except (OSError, UnicodeDecodeError):
        return 0


def _validate_training(data: str | None, as_json: bool) -> None:
    from mtiasim.validate.training import validate_training

    try:
        with _progress(_data_rows(data)) as step:
            rep = validate_training(data, progress=step)
    except ValueError as e:
        _fail(e)
    if as_json:
        _dump(rep.model_dump(mode="json"))
        return
    from mtiasim.report.tables import training_validation_tables

    for t in training_validation_tables(rep):
        out.print(t)


@app.command("kernels")
def kernels_cmd(chip: str = typer.Option("h100-sxm-80gb", "--chip", help="A chip with kernel measurements "
                                         "(data/calibration/measured/)."),
                rows: bool = typer.Option(False, "--rows", help="Every kernel, not only the totals per kind."),
                as_json: bool = typer.Option(False, "--json")):
    """How far the GPU engine's kernel predictions are from kernels measured on a real GPU
    (GEMMs by dtype, attention prefill and decode, streaming kernels, convolutions, embedding
    bags), and, where measured, from whole zoo models run end to end by PyTorch; and the share of
    its burst rate a GEMM held for a minute keeps, beside the sustained clock the power model uses."""
    from rich.table import Table

    from mtiasim.engines.measured import check, check_models, check_sustained, load, summary

    try:
        checks, env = check(chip), load(chip)["env"]
    except ValueError as e:
        _fail(e)
    try:
        checks += check_models(chip)
    except ValueError:
        pass  # no whole-model measurements for this chip
    try:
        held = check_sustained(chip)
    except ValueError as e:  # a sustained_gemm record too short to settle
        _fail(e)
    per_kind = summary(checks)
    if as_json:
        _dump({"chip": chip, "env": env, "by_kind": per_kind,
               "by_kernel": [{"kind": c.kind, "kernel": c.label, "measured_s": c.measured_s,
                              "predicted_s": c.predicted_s, "error_pct": c.error_pct} for c in checks],
               "sustained_gemm": [{"dtype": d, "held_rate_fraction": m, "model_clock_fraction": f}
                                  for d, m, f in held]})
        return
    if rows:
        t = Table(title=f"kernels on {chip}")
        for col in ("kind", "kernel", "measured", "predicted", "error"):
            t.add_column(col)
        for c in checks:
            t.add_row(c.kind, c.label, f"{c.measured_s * 1e6:.1f} us", f"{c.predicted_s * 1e6:.1f} us",
                      f"{c.error_pct:+.1f}%")
        out.print(t)
    t = Table(title=f"GPU engine vs {env['gpu']} (driver {env['nvidia_smi'].get('driver_version', '?')}, "
                    f"torch {env['torch']})")
    for col in ("kind", "kernels", "MAPE", "median APE", "mean signed error"):
        t.add_column(col)
    for kind, s in per_kind.items():
        t.add_row(kind, str(s["n"]), f"{s['mape_pct']:.1f}%", f"{s['median_ape_pct']:.1f}%", f"{s['bias_pct']:+.1f}%")
    out.print(t)
    for dtype, measured, model in held:
        out.print(f"{dtype} GEMM held for a minute keeps {measured:.2f} of its first-second rate "
                  f"(power.yaml sustained_gemm_clock_fraction: {model:.2f})")
    if not held:
        out.print("no sustained-clock measurement for this chip (benchmarks/gpu_kernels.py --only sustained); "
                  "power.yaml's sustained_gemm_clock_fraction is fitted")
