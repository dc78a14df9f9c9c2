"""Bad chip files and overrides give errors that name the file and the field."""

import pytest
import yaml

from mtiasim.chips import ChipError, load_chip, preset_path


def _write(tmp_path, mutate):
    raw = yaml.safe_load(preset_path("mtia-200").read_text())
    mutate(raw)
    p = tmp_path / "my_chip.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_user_file_loads_and_units_parse(tmp_path):
    p = _write(tmp_path, lambda r: r["dram"].update(bandwidth_bytes_per_s={"value": "1.5 TB/s", "source": "my design"}))
    chip = load_chip(str(p))
    assert chip.dram.bandwidth_bytes_per_s.value == 1.5e12


def test_unknown_field_names_file_and_field(tmp_path):
    p = _write(tmp_path, lambda r: r["dram"].update(bandwith_bytes_per_s={"value": 1, "source": "x"}))
    with pytest.raises(ChipError) as e:
        load_chip(str(p))
    assert str(p) in str(e.value) and "dram.bandwith_bytes_per_s" in str(e.value) and "unknown field" in str(e.value)


def test_wrong_unit_names_field_and_unit(tmp_path):
    p = _write(tmp_path, lambda r: r.update(clock_hz={"value": "1.35 GB/s", "source": "typo"}))
    with pytest.raises(ChipError) as e:
        load_chip(str(p))
    msg = str(e.value)
    assert "clock_hz" in msg and "GB/s" in msg and "bytes_per_s" in msg


def test_number_without_source_is_rejected(tmp_path):
    p = _write(tmp_path, lambda r: r["power"].update(tdp_w=85))
    with pytest.raises(ChipError, match=r"power\.tdp_w.*source"):
        load_chip(str(p))


def test_estimate_without_reasoning_is_rejected(tmp_path):
    p = _write(tmp_path, lambda r: r["power"].update(tdp_w={"value": 80, "source": "guess", "status": "estimate"}))
    with pytest.raises(ChipError, match="estimate needs a note"):
        load_chip(str(p))


def test_missing_required_section(tmp_path):
    p = _write(tmp_path, lambda r: r.pop("dram"))
    with pytest.raises(ChipError, match=r"dram: required field is missing"):
        load_chip(str(p))


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ChipError, match="not valid YAML"):
        load_chip(str(bad))
    with pytest.raises(ChipError, match="cannot read"):
        load_chip(str(tmp_path / "nope.yaml"))


def test_unknown_preset_lists_presets():
    with pytest.raises(ChipError, match="unknown chip 'mtia-999'.*mtia-200"):
        load_chip("mtia-999")


def test_overrides_set_values_and_alternatives():
    chip = load_chip("mtia-200", {"dram.bandwidth_bytes_per_s": "3e12", "compute.peak_ops_per_s.bf16": "200 TFLOPS"})
    assert chip.dram.bandwidth_bytes_per_s.value == 3e12
    assert chip.dram.bandwidth_bytes_per_s.source == "user override (--set)"
    assert chip.peak("bf16") == 200e12
    alt = load_chip("mtia-200", {"power.tdp_w": "alt:blog-2024"})
    assert alt.power.tdp_w.value == 90 and "preset-default" in alt.power.tdp_w.alternatives
    assert load_chip("mtia-200").power.tdp_w.value == 85  # presets are not mutated


@pytest.mark.parametrize("path,value,needle", [
    ("dram.bandwidth", "1", "'bandwidth' is not a field of dram"),
    ("dram.bandwidth_bytes_per_s", "3 GHz", "unit 'GHz'"),
    ("power.tdp_w", "alt:nope", "no alternative 'nope'"),
    ("dram", "1", "is a section"),
    ("compute.peak_ops_per_s.fp4", "1", "'fp4' is not a field"),
])
def test_bad_overrides(path, value, needle):
    with pytest.raises(ChipError) as e:
        load_chip("mtia-200", {path: value})
    assert needle in str(e.value) and path in str(e.value)
