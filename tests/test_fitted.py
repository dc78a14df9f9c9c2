"""Calibration as data: every fitted value says what it was fitted on (mtiasim/fitted.py), and
validate splits its error into rows a value was fitted on and the rest."""

from __future__ import annotations

import csv

import pytest

from mtiasim.calibration import CalValue, GemmPoint, PowerFile
from mtiasim.fitted import collect, fitted_on_row, fitted_values, parse_selector
from mtiasim.validate import RowResult, _summary, default_data


def _rows():
    with default_data().open(newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def test_every_fitted_value_names_data_that_exist():
    """Each csv selector matches at least one calibration row (a selector matching none is a typo)
    and each file exists (parse_selector checks); the values fitted to MLPerf rows are there."""
    values = fitted_values()
    rows = _rows()
    where = {v.where for v in values}
    for key in ("calibration/power.yaml: sustained_gemm_clock_fraction.h100-sxm-80gb",
                "calibration/gpu.yaml: stacks.tensorrt-llm.runtime_memory_bytes",
                "calibration/gpu.yaml: stacks.vllm-rocm-0.4.compute_memory_overlap",
                "calibration/analytical.yaml: kinds.gpu.sparse_sram_hit_fraction",
                "mlperf/deployments.yaml: dlrm-v2.default.batch_overhead_s"):
        assert key in where
    for v in values:
        for s in v.selectors:
            if s.path is None:
                assert any(s.matches(r) for r in rows), (v.where, s.text)


def test_rows_fitted_on_are_found_and_others_are_not():
    rows = _rows()
    bert = next(r for r in rows if r["benchmark"] == "bert-99" and r["accelerator"] == "H100-SXM-80GB"
                and r["scenario"] == "Offline" and r["submitter"] == "NVIDIA" and "maxq" not in r["system"].lower())
    assert "calibration/power.yaml: sustained_gemm_clock_fraction.h100-sxm-80gb" in fitted_on_row(bert)
    a100 = next(r for r in rows if r["accelerator"] == "A100-SXM-80GB")
    assert fitted_on_row(a100) == []
    # most of the calibration set is not what a value was fitted on
    assert sum(1 for r in rows if not fitted_on_row(r)) > 0.7 * len(rows)


@pytest.mark.parametrize("model, data, message", [
    (CalValue, {"value": 0.5, "source": "x", "status": "fitted"}, "needs fitted_on"),
    (CalValue, {"value": 0.5, "source": "x", "fitted_on": ["csv: benchmark=bert-99"]}, "status must be 'fitted'"),
    (CalValue, {"value": 0.5, "source": "x", "status": "fitted", "fitted_on": ["rows 3-5"]}, "expected 'csv"),
    (CalValue, {"value": 0.5, "source": "x", "status": "fitted", "fitted_on": ["csv: chip=h100"]}, "unknown field 'chip'"),
    (CalValue, {"value": 0.5, "source": "x", "status": "fitted", "fitted_on": ["file: calibration/nope.json"]},
     "no file data/calibration/nope.json"),
    (GemmPoint, {"measured_fraction": 0.5, "source": "x", "status": "fitted"}, "needs fitted_on"),
])
def test_a_fitted_value_without_its_data_is_refused(model, data, message):
    with pytest.raises(ValueError, match=message):
        model.model_validate(data)


def test_a_data_file_names_the_file_and_key_of_a_bad_fitted_value():
    raw = {"stacks": {"x": {"launch_overhead_s": {"value": 1e-6, "source": "fit", "status": "fitted"}}}}
    with pytest.raises(ValueError, match=r"data/calibration/gpu.yaml: stacks.x.launch_overhead_s: a fitted value "
                                         r"needs fitted_on"):
        collect("calibration/gpu.yaml", raw)
    with pytest.raises(ValueError, match="power_cap_w"):
        PowerFile.model_validate({"power_cap_w": 1})  # an unknown key is named


def test_selector_conditions():
    s = parse_selector("csv: benchmark=bert-99|bert-99.9, system!~maxq, submitter~nvid")
    row = {"benchmark": "BERT-99", "system": "DGX-H100", "submitter": "NVIDIA"}
    assert s.matches(row)
    assert not s.matches({**row, "system": "DGX-H100_MaxQ"})
    assert not s.matches({**row, "benchmark": "resnet50"})


def test_the_totals_split_rows_fitted_on_from_the_rest():
    """Two rows fitted on (APE 2 and 4) and two not (10 and 30): 3% and 20%, 11.5% overall."""
    rs = [RowResult(prediction=1.0, ape_pct=a, fitted_on=f) for a, f in
          ((2.0, ["v"]), (4.0, ["v"]), (10.0, []), (30.0, []))]
    s = _summary(rs)
    assert s.mape_pct == pytest.approx(11.5)
    assert (s.fitted_predicted, s.fitted_mape_pct) == (2, pytest.approx(3.0))
    assert (s.unfitted_predicted, s.unfitted_mape_pct, s.unfitted_median_ape_pct) == (2, pytest.approx(20.0),
                                                                                       pytest.approx(20.0))
