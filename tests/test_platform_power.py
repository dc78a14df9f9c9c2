"""Power at the wall (power/platform.py): the component list against published system maxima,
hand-worked wall power, and the laws it must keep."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mtiasim
from mtiasim.chips import list_chips, load_chip
from mtiasim.fleet import economics, load_site
from mtiasim.power import energy_model
from mtiasim.power.platform import PlatformError, load_platforms, max_node_power_w, platform_for, wall_power

SITE = load_site()


def test_every_preset_has_one_platform_and_every_platform_lists_presets():
    chips = set(list_chips())
    listed = [c for p in load_platforms().values() for c in p.chips]
    assert sorted(listed) == sorted(chips)  # each preset exactly once (load_platforms rejects duplicates)


@pytest.mark.parametrize("platform", ["dgx-h100", "dgx-b200", "dgx-a100"])
def test_components_at_full_load_stay_within_the_published_system_maximum(platform):
    """The component list (GPUs at TDP, CPUs at TDP, DRAM, NICs, other parts, fans, supply losses;
    not the external switches) must not exceed NVIDIA's datasheet maximum, and should account for
    most of it (a maximum has margin, but not 25%)."""
    p = load_platforms()[platform]
    tdp = load_chip(p.chips[0]).power.tdp_w.value
    node = max_node_power_w(p, tdp, SITE, include_network=False)
    assert 0.8 * p.max_power_w.value <= node <= p.max_power_w.value


def test_wall_power_worked_by_hand():
    """Grand Teton with MTIA 2i at 50 W each. Host per chip: (2 CPUs x 360 W x 0.5 load + 288 W DRAM
    + 80 W NICs + 300 W other + 100 W switch share) / 24 = 1128 / 24 = 47.0 W. Components 97.0 W;
    fans x 1.08 = 104.76 W; supplies / 0.94 = 111.45 W IT; x PUE 1.08 = 120.36 W at the facility."""
    w = wall_power(load_platforms()["grand-teton-mtia2i"], 50.0, SITE)
    assert w.host_w == pytest.approx(47.0)
    assert w.fans_w == pytest.approx(97.0 * 0.08)
    assert w.it_w == pytest.approx(104.76 / 0.94)
    assert w.facility_w == pytest.approx(104.76 / 0.94 * 1.08)
    assert w.it_w == pytest.approx(w.chip_w + w.host_w + w.fans_w + w.conversion_w)


@given(a=st.floats(0, 2000), b=st.floats(0, 2000), platform=st.sampled_from(sorted(load_platforms())))
def test_wall_power_is_at_least_the_chip_and_rises_with_it(a, b, platform):
    p = load_platforms()[platform]
    lo, hi = wall_power(p, min(a, b), SITE), wall_power(p, max(a, b), SITE)
    assert hi.facility_w >= lo.facility_w
    assert lo.facility_w >= lo.it_w >= lo.chip_w >= 0


def test_small_accelerators_carry_more_of_their_host():
    """ISCA'25 section 3.4: 24 MTIA 2i share one two-socket server. On the same model the host,
    fans and facility are a larger share of an MTIA 2i's wall power than of an H100's."""
    shares = {}
    for chip in ("mtia-200", "h100-sxm-80gb"):
        r = mtiasim.simulate("dlrm-v2", chip=chip)
        shares[chip] = economics(load_chip(chip), chip_power_w=r.power_w, throughput_per_s=r.throughput_per_s
                                 ).busy.non_chip_share
    assert shares["mtia-200"] > 0.5 > shares["h100-sxm-80gb"]


def test_modelled_chip_power_lies_between_static_and_tdp_on_the_ranking_stand_in():
    for chip in ("mtia-100", "mtia-200"):
        spec = load_chip(chip)
        r = mtiasim.simulate("dlrm-v2", chip=chip)
        static = energy_model(spec).static_w
        assert static < r.power_w <= spec.power.tdp_w.value


@pytest.mark.xfail(strict=True, reason=(
    "MTIA 2i's published typical power is 65 W (ISCA'25 Table 2); the model draws ~41 W on the public DLRM-v2 "
    "stand-in at its deployment batch. Meta's production ranking models are larger and the chip's static "
    "power is not published; kept visible until either is modelled"))
def test_mtia_200_draws_near_its_published_typical_power_on_ranking():
    r = mtiasim.simulate("dlrm-v2", chip="mtia-200")
    assert r.power_w == pytest.approx(load_chip("mtia-200").power.typical_w.value, rel=0.25)


def test_a_user_chip_names_its_platform_or_gets_an_error_saying_how(tmp_path):
    spec = load_chip("mtia-200").model_copy(update={"name": "my-chip"})
    with pytest.raises(PlatformError, match="set `platform:`"):
        platform_for(spec)
    assert platform_for(spec.model_copy(update={"platform": "grand-teton-mtia2i"})).name == "grand-teton-mtia2i"
    with pytest.raises(PlatformError, match="'nowhere' is not in"):
        platform_for(spec.model_copy(update={"platform": "nowhere"}))
