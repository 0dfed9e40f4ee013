"""Every ChipSpec field has a consumer: changing any value of the ``rram`` preset changes some
reported figure (device behaviour, converter reads, capacity, energy, time or area).

Each numeric field is tried at a few values inside its allowed range (x1.5, x0.5, x0.1, x10,
its bounds), each choice at its other choices, each flag flipped; at least one must change
the figures below. A new field without a consumer fails here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from npusim.chip import ChipSpec, ChipSpecError, check_fits, load_chip
from npusim.chip.spec import SECTIONS
from npusim.circuits import DeepResistive
from npusim.cost import npu_area, per_sample
from npusim.cost.claims import floors
from npusim.devices import make_synapses
from npusim.devices.converters import Periphery
from npusim.runtime.ledger import Ledger

RRAM = load_chip("rram")


def _ledger() -> Ledger:
    """A fixed small ledger with every kind of event (RESET pulses included)."""
    led = Ledger()
    sizes = [300, 200, 10]
    led.relax("free", sizes, 8, 12)
    led.relax("nudged+", sizes, 8, 4)
    led.relax("nudged-", sizes, 8, 4)
    led.update(sizes, 8, 5000, reset_pulses=300)
    led.relax("inference", sizes, 8, 12)
    return led


LEDGER = _ledger()
IN_ARRAY = Ledger(update_mode="coincidence")  # an update formed in the array
IN_ARRAY.relax("free", [300, 200, 10], 8, 12)
IN_ARRAY.update(
    [300, 200, 10], 8, [900, 90], measured=True,
    in_array={"pulse_slots": [4000, 3000], "coincidences": [900, 90], "sample_hold": [400, 20],
              "slot_cycles": [160, 240], "bias_coincidences": [30, 3]},
)  # fmt: skip
G = torch.Generator().manual_seed(7)
STATE = [torch.rand(6, 9, generator=G) * 1.4 - 0.2, torch.rand(6, 4, generator=G)]
X = torch.rand(6, 9, generator=G) * 1.2 - 0.1
DRN = DeepResistive([5, 4, 3], input_gain=480.0, seed=0)
DRN_STATE = DRN.relax(torch.rand(4, 5, generator=G), sweeps=40).state
W0 = torch.randn(20, 12, generator=G) * 0.1
W1 = torch.rand(12, 6, generator=G) * 0.1
UPDATES = [
    (torch.rand(20, 12, generator=G) - 0.25) * 0.05 * (1 if t < 100 else -1) for t in range(120)
]


def cost_figures(spec: ChipSpec) -> Any:
    """Energy by term and time per training sample and per inference, area, floors."""
    figures = per_sample(LEDGER, spec), per_sample(IN_ARRAY, spec)
    return *figures, npu_area(LEDGER.sizes, spec), floors(spec)


def capacity_figure(spec: ChipSpec) -> Any:
    """Arrays a 2048x4096 signed matrix needs (1024 on rram), or the capacity error."""
    try:
        return check_fits(spec, [(2048, 4096)], [True])
    except ChipSpecError as err:
        return str(err)


def converter_figures(spec: ChipSpec) -> Any:
    """A fixed state and input as the DAC and ADC deliver them."""
    p = Periphery(spec.converters)
    return [t.tolist() for t in (*p.read(STATE), p.inputs(X))]


def drn_figures(spec: ChipSpec) -> Any:
    """A DRN equilibrium as the read-out chain (amplifier gain, ADC) delivers it."""
    try:
        gains = DRN.read_gains(spec)
    except ChipSpecError as err:
        return str(err)
    return [t.tolist() for t in Periphery(spec.converters, tuple(gains)).read(DRN_STATE)]


def device_figures(spec: ChipSpec) -> Any:
    """Weights held and read (after drift) and pulse counts after 120 fixed updates."""
    params = [W0.clone(), torch.zeros(12), W1.clone()]
    syn = make_synapses(spec, params, [True, True, False], seed=3)
    for d in UPDATES:
        syn.apply(params, [d, torch.full((12,), 1e-3), d[:12, :6].abs()])
    read = syn.read(1e5, generator=torch.Generator().manual_seed(1))
    return [p.tolist() for p in params], [w.tolist() for w in read], syn.pulse_stats()


def deploy_figures(spec: ChipSpec) -> Any:
    """A small linear layer deployed on the chip, read one day after programming."""
    from torch import nn

    from npusim.deploy import deploy, set_time

    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(20, 12)).eval()
    analog = deploy(layer, spec, calibration=X_DEPLOY, seed=0)
    set_time(analog, 86400.0)
    with torch.no_grad():
        return analog(X_DEPLOY).tolist()


X_DEPLOY = torch.rand(8, 20, generator=G)

FIGURES: list[Callable[[ChipSpec], Any]] = [
    cost_figures,
    capacity_figure,
    converter_figures,
    drn_figures,
    device_figures,
    deploy_figures,
]
BASE = {f: f(RRAM) for f in FIGURES}


def candidates(f: dataclasses.Field, value: Any) -> list[Any]:
    """Other values of a field to try, inside its allowed range."""
    meta = f.metadata
    if "choices" in meta:
        return [c for c in meta["choices"] if c != value]
    if isinstance(value, bool):
        return [not value]
    lo, hi = meta["range"]
    out = []
    for v in (value * 1.5, value * 0.5, value * 0.1, value * 10, lo, hi):
        if f.type in ("int", int) and math.isfinite(v):
            v = int(round(v))
        if math.isfinite(v) and lo <= v <= hi and v != value and v not in out:
            out.append(v)
    return out


FIELDS = [
    (section, f)
    for section, cls in SECTIONS.items()
    for f in dataclasses.fields(cls)
    if f.name != "sources"
]


def _changes(spec: ChipSpec) -> bool:
    return any(f(spec) != BASE[f] for f in FIGURES)


@pytest.mark.parametrize("section, field", FIELDS, ids=[f"{s}.{f.name}" for s, f in FIELDS])
def test_every_chip_field_changes_a_reported_figure(section, field):
    value = getattr(getattr(RRAM, section), field.name)
    tried = []
    for v in candidates(field, value):
        try:
            spec = RRAM.replace(**{f"{section}.{field.name}": v})
        except ChipSpecError:  # violates a cross-check (e.g. g_min >= g_max): try another
            continue
        tried.append(v)
        if _changes(spec):
            return
    pytest.fail(f"{section}.{field.name}: no reported figure changed for values {tried}")


def test_every_cited_preset_key_is_a_field():
    """Presets cite only fields that exist (a deleted field leaves no stale citation)."""
    for name in ("ideal", "rram", "pcm", "ecram"):
        spec = load_chip(name)
        for section in SECTIONS:
            sec = getattr(spec, section)
            names = {f.name for f in dataclasses.fields(sec)}
            assert set(sec.sources) <= names, (name, section)


def test_one_sided_refresh_counts_two_resets_per_pair():
    pcm = load_chip("pcm").replace(**{"device.refresh_interval": 10})
    assert pcm.device.scheme == "one_sided"
    params = [W0.clone()]
    syn = make_synapses(pcm, params, [True], seed=3)
    for d in UPDATES[:60]:
        syn.apply(params, [d])
    assert syn.refreshes > 0 and syn.reset_pulses == 2 * syn.refreshes
    assert syn.pulse_stats()["reset_pulses"] == syn.reset_pulses
    state = syn.state_dict()
    again = make_synapses(pcm, [W0.clone()], [True], seed=3)
    again.load_state_dict(state)
    assert again.reset_pulses == syn.reset_pulses
    rram = make_synapses(RRAM, [W0.clone()], [True], seed=3)  # gradual pulses only
    for d in UPDATES[:100]:
        rram.apply(rram.params, [d])
    assert rram.refreshes > 0 and rram.reset_pulses == 0


def test_capacity_counts_tiles_and_pairs_and_names_both_numbers():
    # 784-1024-10 as differential pairs on 128x128 arrays: 2 x (7 x 8) + 2 x (8 x 1)
    assert check_fits(RRAM, [(784, 1024), (1024, 10)], [True, True]) == 128
    # the DRN's conductances are single devices: (13 x 8) + (8 x 1)
    assert check_fits(RRAM, [(1568, 1024), (1024, 10)], [False, False]) == 112
    small = RRAM.replace(**{"array.tiles": 127})
    with pytest.raises(ChipSpecError, match=r"needs 128 arrays of 128x128.*has 127"):
        check_fits(small, [(784, 1024), (1024, 10)], [True, True])
    params = [torch.zeros(784, 1024), torch.zeros(1024), torch.zeros(1024, 10), torch.zeros(10)]
    with pytest.raises(ChipSpecError, match="needs 128 arrays.*has 127"):
        make_synapses(small, params, [True] * 4, seed=0)
