"""Hardware-aware training: a small MLP on digits deployed on the pcm chip with 4-bit ADCs,
read one year after programming (mean of 6 programmings, seeded)."""

from __future__ import annotations

import torch

from npusim.chip import load_chip
from npusim.data import load_dataset
from npusim.deploy import deploy, hwa_train
from npusim.deploy.hwa import drift_errors, error_rate, fit
from npusim.deploy.models import mlp

YEAR = 3.15576e7
MARGIN = 0.05  # HWA must beat plain training by at least 5 points of test error (measured ~10)


def test_hwa_training_beats_plain_training_after_a_year_of_drift():
    d = load_dataset("digits")
    torch.manual_seed(0)
    model = mlp(64, (32,), 10)
    fit(model, d.x_train, d.y_train, 30, seed=0)
    assert error_rate(model, d.x_test, d.y_test) < 0.06
    chip = load_chip("pcm").replace(**{"converters.adc_bits": 4})
    analog = deploy(model, chip, calibration=d.x_train[:300])
    times = {"1y": YEAR}
    plain = drift_errors(analog, d.x_test, d.y_test, times, repeats=6, seed=100)["1y"]["mean"]
    hwa_train(analog, d.x_train, d.y_train, 10, seed=0)
    hwa = drift_errors(analog, d.x_test, d.y_test, times, repeats=6, seed=100)["1y"]["mean"]
    assert hwa <= plain - MARGIN, (plain, hwa)


def test_deploy_with_train_runs_hwa_and_programs_the_result():
    d = load_dataset("digits")
    torch.manual_seed(1)
    model = mlp(64, (16,), 10)
    x, y = d.x_train[:256], d.y_train[:256]
    analog = deploy(
        model, load_chip("rram"), calibration=x, train=True, train_data=(x, y), epochs=1
    )
    assert not analog.training
    moved = [not torch.equal(a.weight, b.weight) for a, b in zip(analog[::2], model[::2])]
    assert all(moved)  # HWA updated the digital weights behind every analog layer
    assert analog[0]._w_eff is not None and analog[0].time_s == 0.0
