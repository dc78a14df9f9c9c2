"""Cost of ownership (fleet/tco.py), its sensitivity and the --cost overrides."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mtiasim.chips import ChipError, load_chip
from mtiasim.cli import app
from mtiasim.fleet import load_site, tco
from mtiasim.fleet.sensitivity import sensitivity
from mtiasim.power.platform import load_platforms

runner = CliRunner()


def _bare_platform():
    """One accelerator and nothing else that draws power or costs money but a $1,000 host."""
    zero = {"value": 0, "source": "test"}
    p = load_platforms()["hgx-gh200"]
    return p.model_copy(update={
        "accelerators": type(p.accelerators)(value=1, source="test"), "cooling": "air",
        **{k: type(p.nic_w)(**zero) for k in ("cpu_count", "cpu_tdp_w", "host_dram_w", "nic_w", "other_w",
                                               "network_w")},
        "host_capex_usd": type(p.host_capex_usd)(value=1000, source="test"),
        "network_capex_usd": type(p.network_capex_usd)(**zero)})


def _bare_site(**extra):
    return load_site({"pue": 1, "psu_efficiency": 1, "fan_fraction_air": 0, "facility_capex_usd_per_w": 0,
                      "energy_usd_per_kwh": 0.1, "grid_kg_co2e_per_kwh": 0.5, "lifetime_s": "1 year",
                      "utilisation": 0.5, **extra})


def _chip(price=9000.0, tdp=600.0):
    return load_chip("h100-sxm-80gb", {"cost.capex_usd": price, "power.tdp_w": tdp})


def test_tco_worked_by_hand():
    """$9,000 chip + $1,000 host over one year (8,760 h): $1.14155/h. Busy 500 W, idle 100 W at 50%
    utilisation: 300 W average, 0.3 kWh/h x $0.10 = $0.03/h. Total $1.17155/h. 1,000 items/s x 0.5 x
    3,600 s = 1.8 M items/h, so 1.53643 M items per dollar; carbon 0.3 kWh x 0.5 kg = 0.15 kg/h, or
    0.0833 kg per million items."""
    t = tco(_chip(), _bare_platform(), _bare_site(), busy_chip_w=500, idle_chip_w=100, throughput_per_s=1000)
    assert t.capex_usd_per_h == pytest.approx(10000 / 8760)
    assert t.energy_usd_per_h == pytest.approx(0.03)
    assert t.usd_per_h == pytest.approx(10000 / 8760 + 0.03)
    assert t.items_per_usd == pytest.approx(1.8e6 / (10000 / 8760 + 0.03))
    assert t.kg_co2e_per_million_items == pytest.approx(0.15 / 1.8)
    assert t.capex_usd == pytest.approx(10000)


def test_facility_capex_is_charged_on_provisioned_power():
    """$10/W over 10 years on a node provisioned for its 600 W TDP: $6,000, $0.0685/h."""
    site = _bare_site(facility_capex_usd_per_w=10, facility_lifetime_s="10 years")
    t = tco(_chip(), _bare_platform(), site, busy_chip_w=500, idle_chip_w=100, throughput_per_s=1000)
    assert t.facility_usd == pytest.approx(6000)
    assert t.capex_usd_per_h == pytest.approx(10000 / 8760 + 6000 / 87600)


@pytest.mark.parametrize("price", [0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
def test_dearer_energy_never_favours_the_hungrier_chip(price):
    """Two chips of equal price and speed, one drawing twice the power: the frugal one's lead in
    items per dollar grows with the energy price and never reverses."""
    def ratio(p):
        site, plat = _bare_site(energy_usd_per_kwh=p), _bare_platform()
        hungry = tco(_chip(), plat, site, busy_chip_w=600, idle_chip_w=150, throughput_per_s=1000)
        frugal = tco(_chip(), plat, site, busy_chip_w=300, idle_chip_w=75, throughput_per_s=1000)
        return frugal.items_per_usd / hungry.items_per_usd

    assert 1.0 < ratio(price) <= ratio(price * 2)


def test_an_unknown_price_gives_power_but_no_money():
    chip = load_chip("tpu-v5e", {"power.tdp_w": 200})
    t = tco(chip, load_platforms()["pcie-server-8"], load_site(), busy_chip_w=150, idle_chip_w=50,
            throughput_per_s=10)
    assert t.items_per_usd is None and t.usd_per_h is None and t.energy_usd_per_h > 0
    assert "--set cost.capex_usd" in t.notes[0]
    assert sensitivity(chip, load_platforms()["pcie-server-8"], load_site(), busy_chip_w=150, idle_chip_w=50,
                       throughput_per_s=10) == []


def test_sensitivity_moves_the_right_way_and_is_sorted():
    chip, plat, site = load_chip("mtia-200"), load_platforms()["grand-teton-mtia2i"], load_site()
    swings = sensitivity(chip, plat, site, busy_chip_w=45, idle_chip_w=21, throughput_per_s=1e6)
    by = {s.parameter: s for s in swings}
    assert by["utilisation"].items_per_usd_at_high > by["utilisation"].items_per_usd_at_low
    assert by["energy_usd_per_kwh"].items_per_usd_at_high < by["energy_usd_per_kwh"].items_per_usd_at_low
    assert by["accelerator price (cost.capex_usd)"].items_per_usd_at_high < \
        by["accelerator price (cost.capex_usd)"].items_per_usd_at_low
    assert [s.relative_swing for s in swings] == sorted((s.relative_swing for s in swings), reverse=True)


def test_cost_overrides_name_the_parameter():
    assert load_site({"energy_usd_per_kwh": "alt:high"}).energy_usd_per_kwh.value == 0.15
    with pytest.raises(ChipError, match="--cost power_price: not a cost parameter; parameters: pue"):
        load_site({"power_price": 1})
    with pytest.raises(ChipError, match="--cost pue: must be within"):
        load_site({"pue": 0.5})
    with pytest.raises(ChipError, match="--cost energy_usd_per_kwh: .*negative"):
        load_site({"energy_usd_per_kwh": -1})
    with pytest.raises(ChipError, match="--cost utilisation: no alternative 'max'"):
        load_site({"utilisation": "alt:max"})


def test_run_reports_chip_and_wall_power_and_cost():
    res = runner.invoke(app, ["run", "dlrm-v2", "--chip", "mtia-200", "--json", "--cost", "utilisation=0.9"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    e = d["economics"]
    assert e["busy"]["chip_w"] == pytest.approx(d["power_w"])
    assert e["busy"]["facility_w"] > e["busy"]["it_w"] > d["power_w"]
    assert e["utilisation"] == 0.9 and e["items_per_usd"] > 0
    assert d["sensitivity"][0]["relative_swing"] >= d["sensitivity"][-1]["relative_swing"]


def test_compare_prints_wall_power_and_rejects_bad_cost():
    res = runner.invoke(app, ["compare", "dlrm-v2", "--chips", "mtia-200,tpu-v5e"])
    assert res.exit_code == 0, res.output
    assert "wall W" in res.output and "tpu-v5e: power unknown" in res.output
    bad = runner.invoke(app, ["compare", "dlrm-v2", "--chips", "mtia-200", "--cost", "pue=abc"])
    assert bad.exit_code == 2 and "--cost pue" in bad.output


def test_serving_cost_spans_static_to_busy_power():
    """A serving system idle between batches draws static power; fully busy, its batches' power."""
    from mtiasim.power import energy_model
    from mtiasim.serving import serving_cost
    from mtiasim.system.spec import SystemSpec

    system = SystemSpec.parse("mtia-200:24")
    static = energy_model(system.load_chip()).static_w
    idle, half, full = (serving_cost(system, 60.0, f, 1e6) for f in (0.0, 0.5, 1.0))
    assert idle.chip_power_w == pytest.approx(static)
    assert full.chip_power_w == pytest.approx(60.0)
    assert half.chip_power_w == pytest.approx((static + 60.0) / 2)
    assert full.wall_power_w == pytest.approx(24 * full.per_chip.busy.facility_w)
    assert serving_cost(system, None, 1.0, 1e6) is None


def test_more_ranking_load_draws_more_power_and_costs_less_per_item():
    from mtiasim.serving import serve_ranking_model

    low, high = (serve_ranking_model("dlrm-v2", "mtia-200:24", qps=q, queries=2000) for q in (5000, 40000))
    assert low.cost.chip_power_w < high.cost.chip_power_w
    assert low.cost.items_per_usd < high.cost.items_per_usd


def test_training_reports_power_and_cost_to_train():
    from mtiasim import train
    from mtiasim.power import energy_model

    t = train("bert-large", "h100-sxm-80gb:8", global_batch=256, samples_to_converge=3e6)
    spec = load_chip("h100-sxm-80gb")
    assert energy_model(spec).static_w < t.cost.chip_power_w <= spec.power.tdp_w.value
    assert t.cost.wall_power_w > 8 * t.cost.chip_power_w
    # the samples cost what the system costs per useful hour over the time they take
    hours = t.time_to_train_s / 3600 / t.cost.per_chip.utilisation
    assert t.cost_to_train_usd == pytest.approx(hours * t.cost.usd_per_h)
