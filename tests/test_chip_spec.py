"""Chip specs: presets load and cite sources; invalid TOML is one clear error naming the key."""

from __future__ import annotations

import math
import tomllib
from importlib import resources

import pytest

from npusim.chip import ChipSpec, ChipSpecError, list_presets, load_chip, spec_from_dict


def test_presets_load_and_every_parameter_cites_a_source():
    assert {"ideal", "rram", "pcm", "ecram"} <= set(list_presets())
    for name in list_presets():
        spec = load_chip(name)
        assert spec.name == name
        raw = tomllib.loads(
            (resources.files("npusim.chip") / "presets" / f"{name}.toml").read_text()
        )
        for section, table in raw.items():
            if not isinstance(table, dict):
                continue
            keys = [k for k in table if k != "sources"]
            missing = [k for k in keys if k not in table.get("sources", {})]
            assert not missing, f"{name}: [{section}] keys without a source: {missing}"
    assert load_chip("ideal").is_ideal
    assert not load_chip("rram").is_ideal


def test_units_are_converted_to_si():
    spec = load_chip("rram")
    assert spec.device.g_max == pytest.approx(20e-6, rel=1e-12)
    assert spec.timing.pulse_width == pytest.approx(50e-9, rel=1e-12)
    assert spec.energy.array_area == pytest.approx(25e-12, rel=1e-12)
    assert spec.energy.sram_per_byte == pytest.approx(1.25e-12, rel=1e-12)
    assert spec.amplifier.gain == pytest.approx(1e4)
    assert spec.energy.adc_energy(8) == pytest.approx(spec.energy.adc_fom * 256)
    assert spec.energy.adc_energy(0) == 0.0
    assert math.isinf(ChipSpec().device.endurance)


def test_pcm_and_ecram_have_their_physics():
    pcm, ecram = load_chip("pcm").device, load_chip("ecram").device
    assert pcm.scheme == "one_sided" and pcm.drift_nu == pytest.approx(0.05)
    assert ecram.n_states >= 1000 and ecram.nonlinearity_up < 0.2


def _write(tmp_path, text: str):
    path = tmp_path / "chip.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "toml, must_contain",
    [
        ("[device]\nn_state = 10\n", ["device.n_state", "unknown key", "n_states"]),
        ("colour = 'red'\n", ["colour", "unknown key"]),
        ("[device]\nn_states = 'many'\n", ["device.n_states", "2 <= n_states <= 1e+07"]),
        ("[device]\nn_states = 1\n", ["device.n_states", "out of range", "2 <= n_states"]),
        ("[device]\nn_states = 10.5\n", ["device.n_states", "integer"]),
        ("[device]\nwrite_noise = true\n", ["device.write_noise", "expected a number"]),
        (
            "[device]\nstuck_min_fraction = 1.5\n",
            ["stuck_min_fraction", "0 <= stuck_min_fraction <= 1"],
        ),
        ("[device]\ng_max = '20 ns'\n", ["device.g_max", "wrong unit 'ns'", "siemens"]),
        ("[timing]\npulse_width = '50 V'\n", ["timing.pulse_width", "wrong unit 'V'", "seconds"]),
        ("[timing]\npulse_width = '50'\n", ["timing.pulse_width", "wrong unit"]),
        ("[device]\nrounding = 'nearest'\n", ["device.rounding", "stochastic, deterministic"]),
        ("[device]\nrefresh = 1\n", ["device.refresh", "true or false"]),
        ("[device]\ng_min = '30 uS'\ng_max = '20 uS'\n", ["device.g_min", "device.g_max"]),
        ("device = 3\n", ["device", "expected a table"]),
        ("[device.sources]\nn_stats = 'x'\n", ["device.sources.n_stats", "unknown key"]),
        ("[device\n", ["not valid TOML"]),
        ("", ["defines no [device] table"]),
        ("[array]\nrows = 64\n", ["defines no [device] table"]),
    ],
)
def test_invalid_files_are_rejected_with_one_clear_error(tmp_path, toml, must_contain):
    with pytest.raises(ChipSpecError) as info:
        load_chip(_write(tmp_path, toml))
    msg = str(info.value)
    assert "\n" not in msg
    for part in must_contain:
        assert part in msg, msg
    assert isinstance(info.value, ValueError)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ChipSpecError, match="no such preset.*rram"):
        load_chip("rrm")
    with pytest.raises(ChipSpecError, match="not found"):
        load_chip(tmp_path / "nope.toml")


def test_user_file_and_replace_and_roundtrip(tmp_path):
    path = _write(tmp_path, "name = 'mine'\n[device]\nn_states = 64\nwrite_noise = 0.1\n")
    spec = load_chip(path)
    assert spec.name == "mine" and spec.device.n_states == 64
    other = spec.replace(**{"device.n_states": 128, "timing.pulse_width": "10 ns"})
    assert other.device.n_states == 128 and other.timing.pulse_width == pytest.approx(1e-8)
    assert spec.device.n_states == 64  # frozen original
    with pytest.raises(ChipSpecError, match="device.n_states"):
        spec.replace(**{"device.n_states": 0})
    assert spec_from_dict(load_chip("pcm").to_dict()) == load_chip("pcm")


def test_spec_to_toml_round_trips(tmp_path):
    from npusim.chip import spec_to_toml

    for name in list_presets():
        path = tmp_path / f"{name}.toml"
        path.write_text(spec_to_toml(load_chip(name)))
        assert load_chip(path) == load_chip(name)


def test_chip_modules_import_one_way():
    """units <- spec <- load / capacity: no module imports one that imports it back."""
    import ast

    folder = resources.files("npusim.chip")
    order = ["units", "spec", "capacity", "load"]
    for i, name in enumerate(order):
        tree = ast.parse((folder / f"{name}.py").read_text())
        imported = {
            n.module.rsplit(".", 1)[-1]
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("npusim.chip.")
        }
        assert imported <= set(order[:i]), (name, imported)
