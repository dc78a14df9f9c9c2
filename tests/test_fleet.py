"""The fleet planner (fleet/mix.py, sizing.py, planner.py): mix files checked with file and line,
the sizing search, the choice, supply caps and the energy-price property."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mtiasim.chips import load_chip
from mtiasim.cli import app
from mtiasim.fleet import system_cost
from mtiasim.fleet.mix import Mix, MixError, RankingWorkload, load_mix
from mtiasim.fleet.planner import InfeasibleMix, _allocate, plan_fleet
from mtiasim.fleet.site import load_site
from mtiasim.fleet.sizing import Option, priced, size, smallest

runner = CliRunner()
EXAMPLE = Path(__file__).parents[1] / "examples" / "mix.yaml"


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "mix.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, expected", [
    ("chips: [mtia-200, nochip]\nworkloads:\n  - {name: a, kind: ranking, model: dlrm-v2, qps: 10, p99_s: 60ms}\n",
     "mix.yaml:1: chips[1]: unknown chip 'nochip'"),
    ("chips: [mtia-200]\nworkloads:\n  - name: a\n    kind: ranking\n    model: nomodel\n    qps: 10\n    p99_s: 1\n",
     "mix.yaml:5: workloads[0].model: unknown zoo model"),
    ("chips: [mtia-200]\nworkloads:\n  - name: a\n    kind: ranking\n    model: dlrm-v2\n    qps: -3\n    p99_s: 1\n",
     "mix.yaml:6: workloads.0.qps: Input should be greater than 0"),
    ("chips: [mtia-200]\nworkloads:\n  - name: a\n    kind: llm\n    model: llama2-70b\n    qps: 1\n    ttft_p99_s: 2s\n",
     "mix.yaml:3: workloads.0.tpot_p99_s: required field is missing"),
    ("chips: [mtia-200]\nworkloads:\n  - name: a\n    kind: ranking\n    model: dlrm-v2\n    qps: 1\n    p99_s: 1\n"
     "    colour: red\n", "mix.yaml:8: workloads.0.colour: unknown field"),
    ("chips: [mtia-200]\nworkloads:\n  - {name: a, kind: ranking, model: dlrm-v2, qps: 1, p99_s: 1 parsec}\n",
     "mix.yaml:3: workloads.0: p99_s: unit 'parsec' does not fit"),
    ("chips: [mtia-200]\nworkloads:\n  - name: a\n    kind: llm\n    model: dlrm-v2\n    qps: 1\n    ttft_p99_s: 1\n"
     "    tpot_p99_s: 1\n", "mix.yaml:4: workloads[0].kind: dlrm-v2 is not an LLM"),
    ("chips: [mtia-200]\ncaps: {h100-sxm-80gb: 8}\nworkloads:\n  - {name: a, kind: ranking, model: dlrm-v2, qps: 1, "
     "p99_s: 1}\n", "caps names h100-sxm-80gb, which is not in chips"),
    ("chips: [mtia-200]\nworkloads:\n  - {name: a, kind: ranking, model: dlrm-v2, qps: 1, p99_s: 1}\n"
     "  - {name: a, kind: ranking, model: dlrm-v2, qps: 2, p99_s: 1}\n", "repeated: a"),
    ("- just a list\n", "must be a YAML mapping"),
])
def test_a_bad_mix_names_file_line_and_field(tmp_path, text, expected):
    with pytest.raises(MixError, match=expected.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        load_mix(_write(tmp_path, text))


def test_the_example_mix_loads_with_its_units():
    mix = load_mix(EXAMPLE)
    assert mix.objective == "tco" and mix.workloads[0].p99_s == pytest.approx(0.060)
    assert mix.workloads[2].tpot_p99_s == pytest.approx(0.2)


@settings(max_examples=60, deadline=None)
@given(threshold=st.integers(1, 5000))
def test_smallest_finds_the_threshold_of_a_monotone_test_in_few_tries(threshold):
    calls = []

    def evaluate(n):
        calls.append(n)
        return n >= threshold, n, f"{n} < {threshold}"

    n, rep, why = smallest(evaluate, 8192)
    assert n == threshold == rep and why is None
    assert len(calls) <= 2 * math.ceil(math.log2(threshold) + 1) + 1


def test_smallest_says_why_when_nothing_meets_the_targets():
    n, _, why = smallest(lambda k: (False, None, "p99 too long"), 100)
    assert n is None and why == "p99 too long (up to 100 chips)"


def _option(workload, chip, count, usd):
    """An option whose cost is ``usd`` per hour: a system_cost scaled to it."""
    base = system_cost(load_chip("mtia-200"), chips=1, chip_power_w=40.0, throughput_per_s=1e6)
    scale = usd / base.usd_per_h
    cost = base.model_copy(update={"usd_per_h": usd, "wall_power_w": base.wall_power_w * scale})
    return Option(workload=workload, chip=chip, feasible=True, count=count, cost=cost, items_per_s=1e6)


def test_caps_are_kept_by_the_allocation_worked_by_hand():
    """Both workloads prefer chip A (3 and 4 chips); cap A <= 5 lets only one have it. Moving a to B
    costs 2 - 1 = 1 more, moving b costs 3.5 - 1.5 = 2 more: the optimum moves a ($5.50/h in all)."""
    w = [RankingWorkload(name=n, kind="ranking", model="dlrm-v2", qps=1, p99_s=1) for n in ("a", "b")]
    mix = Mix(chips=["mtia-200", "mi300x"], caps={"mtia-200": 5}, workloads=w)
    opts = [[_option("a", "mtia-200", 3, 1.0), _option("a", "mi300x", 1, 2.0)],
            [_option("b", "mtia-200", 4, 1.5), _option("b", "mi300x", 2, 3.5)]]
    chosen = _allocate(mix, opts)
    assert [o.chip for o in chosen] == ["mi300x", "mtia-200"]
    assert sum(o.usd_per_h for o in chosen) == pytest.approx(3.5)
    tight = Mix(chips=["mtia-200"], caps={"mtia-200": 5}, workloads=w)
    with pytest.raises(InfeasibleMix, match="mtia-200: workloads that can only use it need 7 > cap 5"):
        _allocate(tight, [[opts[0][0]], [opts[1][0]]])


def test_the_planner_meets_every_target_and_prefers_the_cheapest():
    mix = Mix(chips=["mtia-200", "h100-sxm-80gb"], workloads=[
        RankingWorkload(name="lc", kind="ranking", model="ranking-lc", qps=3000, p99_s=0.06)])
    plan = plan_fleet(mix)
    w = plan.workloads[0]
    assert w.chosen.feasible and w.chosen.metrics["p99_latency_s"] <= 0.06
    feasible = [o for o in w.options if o.feasible]
    assert w.chosen.usd_per_h == min(o.usd_per_h for o in feasible)
    assert plan.chips == {w.chosen.chip: w.chosen.count}
    # one chip fewer misses the target (the sizing returns the smallest system)
    if w.chosen.count > 1:
        from mtiasim.serving import serve_ranking_model

        fewer = serve_ranking_model("ranking-lc", f"{w.chosen.chip}:{w.chosen.count - 1}", qps=3000, slo_p99_s=0.06)
        assert not fewer.meets_slo


def test_an_impossible_target_names_the_workload(tmp_path):
    mix = Mix(chips=["mtia-200"], max_chips=4, workloads=[
        RankingWorkload(name="too-fast", kind="ranking", model="ranking-lc", qps=1000, p99_s=1e-6)])
    with pytest.raises(InfeasibleMix, match="workload too-fast: no chip meets its targets.*mtia-200: p99"):
        plan_fleet(mix)


def test_dearer_energy_never_moves_the_choice_to_a_hungrier_plan():
    """Sized once, re-priced at rising energy prices: the chosen plan's power never rises."""
    w = RankingWorkload(name="hc", kind="ranking", model="ranking-hc", qps=500, p99_s=0.06)
    mix = Mix(chips=["mtia-200", "mi300x", "h100-sxm-80gb"], workloads=[w])
    options = [o for o in (size(w, c, mix) for c in mix.chips) if o.feasible]
    assert len(options) >= 2
    chosen_power = []
    for price in (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0):
        site = load_site({"energy_usd_per_kwh": price})
        best = min((priced(o, site) for o in options), key=lambda o: o.usd_per_h)
        chosen_power.append(best.wall_w)
    assert all(b <= a + 1e-9 for a, b in zip(chosen_power, chosen_power[1:]))


def test_fleet_command_prints_the_plan_and_json(tmp_path):
    p = _write(tmp_path, "chips: [mtia-200, h100-sxm-80gb]\nworkloads:\n"
                         "  - {name: lc, kind: ranking, model: ranking-lc, qps: 2000, p99_s: 60ms}\n")
    res = runner.invoke(app, ["fleet", str(p), "--json", "--cost", "energy_usd_per_kwh=0.2"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["workloads"][0]["chosen"]["feasible"] and d["objective"] == "tco"
    assert d["workloads"][0]["chosen"]["cost"]["per_chip"]["energy_usd_per_h"] > 0
    bad = runner.invoke(app, ["fleet", str(tmp_path / "missing.yaml")])
    assert bad.exit_code == 2 and "cannot read mix file" in bad.output


def test_a_training_job_is_sized_to_its_deadline():
    """BERT-large, 2 M samples in 20 minutes: the smallest H100 system that finishes in time; half
    of it would not."""
    from mtiasim.fleet.mix import TrainingWorkload

    w = TrainingWorkload(name="bert", kind="training", model="bert-large", samples=2e6, deadline_s=1200,
                         global_batch=64, micro_batch=4)
    opt = size(w, "h100-sxm-80gb", Mix(chips=["h100-sxm-80gb"], max_chips=16, workloads=[w]))
    assert opt.feasible and opt.metrics["time_to_train_s"] <= 1200
    assert opt.plan.startswith(f"TP=1 x PP=1 x DP={opt.count}")
    from mtiasim.training import train

    if opt.count > 1:
        half = train("bert-large", f"h100-sxm-80gb:{opt.count // 2}", global_batch=64, micro_batch=4,
                     zero_stage=1, samples_to_converge=2e6)
        assert half.time_to_train_s > 1200


def _small_mix(**kw):
    return Mix(chips=["mtia-200", "h100-sxm-80gb"], workloads=[
        RankingWorkload(name="lc", kind="ranking", model="ranking-lc", qps=3000, p99_s=0.06),
        RankingWorkload(name="hc", kind="ranking", model="ranking-hc", qps=500, p99_s=0.06)], **kw)


def _summary(plan):
    return [(w.workload, w.chosen.chip, w.chosen.count, round(w.chosen.usd_per_h, 9)) for w in plan.workloads]


def test_a_killed_sweep_resumes_without_losing_or_repeating_a_point(tmp_path, monkeypatch):
    from mtiasim.fleet import sizing
    from mtiasim.fleet.store import Store

    calls = []
    real = sizing.evaluate_point

    def counted(w, chip, n):
        calls.append((w.name, chip, n))
        return real(w, chip, n)

    monkeypatch.setattr(sizing, "evaluate_point", counted)
    full = plan_fleet(_small_mix())
    total = len(calls)
    assert total == len(set(calls)) > 4

    calls.clear()
    store = Store(tmp_path / "fleet.duckdb")
    original_put = store.put

    def put_then_die(w, chip, point):
        original_put(w, chip, point)
        if store.count() == total // 2:
            raise KeyboardInterrupt  # killed halfway, after a point was kept

    monkeypatch.setattr(store, "put", put_then_die)
    with pytest.raises(KeyboardInterrupt):
        plan_fleet(_small_mix(), store=store)
    store.close()
    assert len(calls) == total // 2

    calls.clear()
    resumed = Store(tmp_path / "fleet.duckdb")
    plan = plan_fleet(_small_mix(), store=resumed)
    assert len(calls) == total - total // 2  # only the points not kept before the kill
    assert resumed.count() == total
    assert _summary(plan) == _summary(full)

    calls.clear()
    assert _summary(plan_fleet(_small_mix(), store=resumed)) == _summary(full) and calls == []
    out = resumed.export(tmp_path / "points.parquet")
    import duckdb

    assert duckdb.sql(f"SELECT count(*) FROM '{out}'").fetchall()[0][0] == total


def test_worker_processes_give_the_same_plan(tmp_path):
    from mtiasim.fleet.store import Store

    serial = plan_fleet(_small_mix())
    store = Store(tmp_path / "p.duckdb")
    parallel = plan_fleet(_small_mix(), jobs=2, store=store)
    assert _summary(parallel) == _summary(serial)
    assert store.count() > 4


def test_a_local_ray_cluster_gives_the_same_plan():
    pytest.importorskip("ray")
    assert _summary(plan_fleet(_small_mix(), jobs=2, ray="local")) == _summary(plan_fleet(_small_mix()))


def test_every_recorded_flip_is_real_and_the_chosen_chip_wins_elsewhere():
    """Re-price the feasible systems at each flip's range end by hand: the named chip is cheapest
    there. At the defaults the chosen chip is cheapest. A lone feasible chip never flips."""
    from mtiasim.chips.loader import override_sourced
    from mtiasim.fleet.robustness import flips

    mix = Mix(chips=["mtia-200", "mi300x", "h100-sxm-80gb"], workloads=[
        RankingWorkload(name="hc", kind="ranking", model="ranking-hc", qps=2000, p99_s=0.06)])
    site = load_site()
    w = plan_fleet(mix, site=site).workloads[0]
    feasible = [o for o in w.options if o.feasible]
    for f in w.flips:
        if f.parameter.endswith(" price"):
            chip = f.parameter.removesuffix(" price")
            repriced = [priced(o, site, {"cost.capex_usd": f"alt:{f.end}"} if o.chip == chip else None)
                        for o in feasible]
        else:
            moved = site.model_copy(update={f.parameter: override_sourced(getattr(site, f.parameter),
                                                                          f"alt:{f.end}", f.end)})
            repriced = [priced(o, moved) for o in feasible]
        assert min(repriced, key=lambda o: o.usd_per_h).chip == f.winner != w.chosen.chip
    assert min(feasible, key=lambda o: o.usd_per_h).chip == w.chosen.chip
    assert flips([w.chosen], w.chosen, site, "tco") == []
