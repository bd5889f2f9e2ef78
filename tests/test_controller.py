"""EntropyController: direction and size of λ steps, clamping, running mean, state round trip, arguments."""

from __future__ import annotations

import pytest
import torch

from instaaug import EntropyController


def h(value: float) -> torch.Tensor:
    return torch.tensor(value)


def test_lambda_rises_below_band_by_rate_per_update():
    c = EntropyController(-1.0, 1.0, lam_init=0.1, rate=1.5, momentum=0.0)
    for k in range(1, 4):
        lam = c.update(h(-2.0))
        assert lam.item() == pytest.approx(0.1 * 1.5**k, rel=1e-6)
    assert c.lam.item() == pytest.approx(0.1 * 1.5**3, rel=1e-6)


def test_lambda_falls_above_band_by_rate_per_update():
    c = EntropyController(-1.0, 1.0, lam_init=0.1, rate=1.5, momentum=0.0)
    for k in range(1, 4):
        assert c.update(h(2.0)).item() == pytest.approx(0.1 / 1.5**k, rel=1e-6)


@pytest.mark.parametrize("entropy", [-1.0, 0.0, 0.999, 1.0])
def test_lambda_stays_inside_band(entropy):
    c = EntropyController(-1.0, 1.0, lam_init=0.1, rate=1.5, momentum=0.0)
    for _ in range(3):
        assert c.update(h(entropy)).item() == pytest.approx(0.1, rel=1e-7)


def test_lambda_is_clamped():
    c = EntropyController(0.0, 1.0, lam_init=1.0, rate=2.0, lam_min=0.25, lam_max=4.0, momentum=0.0)
    for _ in range(5):
        c.update(h(-5.0))
    assert c.lam.item() == pytest.approx(4.0)
    for _ in range(10):
        c.update(h(5.0))
    assert c.lam.item() == pytest.approx(0.25)


def test_running_mean_uses_first_value_then_momentum():
    c = EntropyController(-10.0, 10.0, momentum=0.75)
    c.update(h(4.0))
    assert c.running_entropy.item() == pytest.approx(4.0)  # the first batch initialises it (no bias to 0)
    c.update(h(0.0))
    assert c.running_entropy.item() == pytest.approx(0.75 * 4.0)
    c.update(h(8.0))
    assert c.running_entropy.item() == pytest.approx(0.75 * 3.0 + 0.25 * 8.0)
    assert c.steps.item() == 3


def test_running_mean_drives_lambda_not_the_last_batch():
    # Running mean 5.0 (above the band) even though the last batch is inside it: λ must fall.
    c = EntropyController(-1.0, 1.0, lam_init=1.0, rate=2.0, momentum=0.9)
    c.update(h(10.0))
    lam = c.update(h(12.0))  # running = 10.2, still above the band and not falling
    assert c.running_entropy.item() == pytest.approx(10.2)
    assert lam.item() == pytest.approx(0.25)


def test_lambda_holds_while_the_entropy_already_moves_towards_the_band():
    # Anti-windup: below the band but rising (fast mean above the slow one), λ must not compound.
    c = EntropyController(0.0, 1.0, lam_init=1.0, rate=2.0, momentum=0.5, trend_momentum=0.9, lam_max=1e9)
    c.update(h(-10.0))
    assert c.lam.item() == pytest.approx(2.0)  # below and not rising: raised
    for value in (-8.0, -6.0, -4.0, -2.0):
        assert c.update(h(value)).item() == pytest.approx(2.0)
    for _ in range(100):  # it stalls below the band: the trend fades and λ rises again
        c.update(h(-2.0))
    assert c.lam.item() > 2.0**10
    # A slow drift towards the band, which would not get there within the horizon, does not hold λ.
    c = EntropyController(0.0, 1.0, lam_init=1.0, rate=2.0, momentum=0.5, trend_momentum=0.9, horizon=10.0, lam_max=1e9)
    c.update(h(-10.0))
    for k in range(1, 6):
        assert c.update(h(-10.0 + 0.01 * k)).item() == pytest.approx(2.0 ** (k + 1))
    # Symmetrically above the band: λ holds while the entropy falls.
    c = EntropyController(0.0, 1.0, lam_init=1.0, rate=2.0, momentum=0.5, trend_momentum=0.9)
    c.update(h(10.0))
    for value in (8.0, 6.0, 4.0):
        assert c.update(h(value)).item() == pytest.approx(0.5)


def test_update_ignores_gradients_and_returns_zero_dim():
    c = EntropyController(-1.0, 1.0)
    e = torch.tensor(3.0, requires_grad=True)
    lam = c.update(e * 2)
    assert lam.dim() == 0 and not lam.requires_grad


def test_state_dict_round_trip_continues_identically():
    a = EntropyController(-1.0, 1.0, lam_init=0.05, rate=1.1, momentum=0.8)
    seq = [-3.0, -2.0, 0.5, 4.0, 2.0, -0.5, -4.0]
    for v in seq[:3]:
        a.update(h(v))
    b = EntropyController(-1.0, 1.0, lam_init=0.05, rate=1.1, momentum=0.8)
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) == {"lam", "running_entropy", "slow_entropy", "steps"}
    assert b.lam.item() == a.lam.item() and b.running_entropy.item() == a.running_entropy.item()
    for v in seq[3:]:
        assert a.update(h(v)).item() == b.update(h(v)).item()
        assert a.running_entropy.item() == b.running_entropy.item()


def test_fresh_controller_differs_from_restored_one():
    # Guard for the test above: without the state, the continuation is different.
    a = EntropyController(-1.0, 1.0, lam_init=0.05, rate=1.1, momentum=0.8)
    for v in (-3.0, -2.0, -2.0):
        a.update(h(v))
    b = EntropyController(-1.0, 1.0, lam_init=0.05, rate=1.1, momentum=0.8)
    assert a.update(h(0.0)).item() != b.update(h(0.0)).item()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"h_min": 1.0, "h_max": 0.0}, "h_min"),
        ({"h_min": float("nan"), "h_max": 0.0}, "finite"),
        ({"h_min": 0.0, "h_max": float("inf")}, "finite"),
        ({"h_min": 0.0, "h_max": 1.0, "rate": 1.0}, "rate"),
        ({"h_min": 0.0, "h_max": 1.0, "rate": 0.5}, "rate"),
        ({"h_min": 0.0, "h_max": 1.0, "lam_init": 0.0, "lam_min": 0.0}, "lam_min"),
        ({"h_min": 0.0, "h_max": 1.0, "lam_init": 20.0}, "lam_init"),
        ({"h_min": 0.0, "h_max": 1.0, "momentum": 1.0}, "momentum"),
        ({"h_min": 0.0, "h_max": 1.0, "momentum": -0.1}, "momentum"),
        ({"h_min": 0.0, "h_max": 1.0, "momentum": 0.9, "trend_momentum": 0.5}, "trend_momentum"),
        ({"h_min": 0.0, "h_max": 1.0, "momentum": 0.9, "trend_momentum": 0.9}, "trend_momentum"),
        ({"h_min": 0.0, "h_max": 1.0, "horizon": -1.0}, "horizon"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EntropyController(**kwargs)
