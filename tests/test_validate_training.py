"""validate --training: rows predicted, skipped with their reason, and summarised."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from mtiasim.cli import app
from mtiasim.validate.training import default_data, samples_to_converge, validate_training


def test_samples_to_converge_interpolates_log_log():
    """Halfway (in log) between GBS 768 (2.43e6) and 4608 (2.97e6): sqrt(768 x 4608) = 1881 gives
    sqrt(2.43e6 x 2.97e6) = 2.687e6; outside the table the ends hold."""
    table = {768: 2.43e6, 4608: 2.97e6, 13888: 5.46e6}
    assert samples_to_converge(table, 768) == pytest.approx(2.43e6)
    assert samples_to_converge(table, round((768 * 4608) ** 0.5)) == pytest.approx(2.687e6, rel=1e-3)
    assert samples_to_converge(table, 100) == 2.43e6 and samples_to_converge(table, 10**6) == 5.46e6


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    """Five rows of the packaged CSV: BERT on 8 H100s, DLRM-DCNv2 on 4 H100s, 70B LoRA on 64 H100s
    (context parallel), an unknown accelerator and a row with no measured time."""
    rows = list(csv.DictReader(default_data().open(encoding="utf-8")))
    pick = [next(r for r in rows if r["benchmark"] == "bert" and r["n_accel"] == "8" and r["accelerator"] == "H100-SXM-80GB"),
            next(r for r in rows if r["benchmark"] == "dlrm_dcnv2"),
            next(r for r in rows if r["benchmark"] == "llama2_70b_lora" and r["n_accel"] == "64"
                 and r["accelerator"] == "H100-SXM-80GB")]
    pick.append({**pick[0], "accelerator": "TPU-v9"})
    pick.append({**pick[0], "time_to_train_min": "nan"})
    path = tmp_path_factory.mktemp("v") / "rows.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as f:  # with a byte-order mark, as Excel writes
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(pick)
    return path


def test_validate_training_rows(small_csv):
    rep = validate_training(small_csv)
    assert rep.total.rows == 5 and rep.total.predicted == 2 and rep.fitted_on == []
    bert, dlrm, lora, tpu, nan = rep.by_row
    # BERT on one 8-GPU node, nothing fitted to it: within 15% of the measured time to train
    assert bert.ape_pct is not None and bert.ape_pct < 15, bert
    assert dlrm.ape_pct is not None and dlrm.deployment.startswith("TP=1 x PP=1 x DP=4")
    assert "context or pipeline parallelism" in lora.reason
    assert "no chip preset" in tpu.reason
    assert "not a positive number" in nan.reason


def test_validate_training_cli_json(small_csv):
    res = CliRunner().invoke(app, ["validate", "--training", "--data", str(small_csv), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["total"]["rows"] == 5 and d["by_benchmark"]["bert"]["predicted"] == 1


def test_validate_training_names_a_missing_column(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("accelerator,n_accel\nH100-SXM-80GB,8\n")
    with pytest.raises(ValueError, match="missing column"):
        validate_training(p)
