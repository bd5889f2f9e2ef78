"""φ's and f's learning-rate schedules (``instaaug.schedules``), step by step."""

from __future__ import annotations

import math

import pytest
import torch

from instaaug.schedules import make_schedulers, warmup_factor
from instaaug.train import TrainConfig


def test_warmup_factor_freezes_then_warms_up_linearly_then_decays_by_a_cosine():
    frozen, warmup, total = 2, 4, 12
    factors = [warmup_factor(s, warmup, total, cosine=True, frozen=frozen) for s in range(total + 1)]
    assert factors[:2] == [0.0, 0.0]  # frozen
    assert factors[2:6] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # (step + 1) / warmup after the freeze
    decay = [0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(7)]  # 6 steps from the end of warm-up to total
    assert factors[6:] == pytest.approx(decay)
    assert factors[-1] == pytest.approx(0.0, abs=1e-12)
    assert [warmup_factor(s, 2, 10, cosine=False) for s in (0, 1, 2, 9, 50)] == [0.5, 1.0, 1.0, 1.0, 1.0]


def _optimisers() -> dict[str, torch.optim.Optimizer]:
    return {
        "f": torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
        "phi": torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
    }


def _rates(optimiser: torch.optim.Optimizer, scheduler, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        scheduler.step()
    return rates


def test_make_schedulers_follow_the_train_config():
    steps = 5
    config = TrainConfig(
        epochs=4, pretrain_epochs=2, aug_lr_schedule="cosine", aug_frozen_epochs=1, aug_lr_warmup_epochs=1
    )
    opt = _optimisers()
    f_sched, phi_sched = make_schedulers(opt, config, steps)
    # f: one cosine over all 6 epochs (pre-training included)
    f_rates = _rates(opt["f"], f_sched, 30)
    assert f_rates == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 30)) for k in range(30)])
    # φ: over the 4 joint epochs only, 5 steps frozen, 5 warming up, then a cosine to 0
    phi_rates = _rates(opt["phi"], phi_sched, 20)
    assert phi_rates == pytest.approx([warmup_factor(k, 5, 20, True, 5) for k in range(20)])
    assert phi_rates[:5] == [0.0] * 5 and phi_rates[9] == pytest.approx(1.0)
    # a constant schedule without warm-up or freeze needs no φ scheduler; unknown batch counts schedule nothing
    assert make_schedulers(_optimisers(), TrainConfig(aug_lr_schedule="constant"), steps)[1] is None
    assert make_schedulers(_optimisers(), config, None) == (None, None)
    # a frozen classifier (no "f" optimiser) gets no f scheduler, φ still gets its own
    only_phi = {"phi": _optimisers()["phi"]}
    f_none, phi_cos = make_schedulers(only_phi, TrainConfig(epochs=2, aug_lr_schedule="cosine"), steps)
    assert f_none is None and isinstance(phi_cos, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert phi_cos.T_max == 10
