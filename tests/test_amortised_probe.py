"""The invariance probe: scores, a frozen backbone, learning i, best-epoch selection, regression and the fixed-i
baselines, the shared optimiser step, bad tasks and targets, and pre-training then probing audio-style inputs."""

from __future__ import annotations

import dataclasses
import importlib
import math

import pytest
import torch

from conftest import structured_images, tiny_resnet, tiny_vit
from instaaug.amortised import (
    InvarianceProbe,
    PretrainConfig,
    ProbeConfig,
    audio_space,
    evaluate_fixed,
    grid_search,
    image_space,
    pretrain,
    score,
)
from instaaug.step import optimiser_step


def test_score_accuracy_and_r2_over_the_whole_set():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert score(logits, torch.tensor([0, 1, 1]), "classification") == pytest.approx(2 / 3)
    y = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 5.0]])
    assert score(y, y, "regression") == pytest.approx(1.0)
    assert score(y.mean(0).expand(3, 2), y, "regression") == pytest.approx(0.0, abs=1e-6)
    pred = y.clone()
    pred[0, 0] = 2.0  # SSE 1 against SST 2 on the first output; perfect on the second
    assert score(pred, y, "regression") == pytest.approx((0.5 + 1.0) / 2)


def _colour_task(n: int, seed: int):
    """Images whose label is their dominant colour channel: a probe needs appearance information."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.2 * torch.rand(n, 3, 8, 8, generator=g)
    x[torch.arange(n), y] += 0.6
    return x.clamp(0, 1), y


def test_probe_keeps_the_backbone_frozen_and_in_eval_mode():
    net = tiny_resnet(norm="batch")
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    train, val = _colour_task(48, 0), _colour_task(24, 1)
    probe = InvarianceProbe(net, "classification", 3, ProbeConfig(epochs=2, batch_size=16, readout_steps=20))
    probe.train()
    assert not net.training and probe.readout.training
    history = probe.fit(train, val)
    assert len(history) == 2 and not net.training
    assert all(not p.requires_grad for p in net.parameters())
    for key, value in net.state_dict().items():  # weights and BatchNorm running statistics unchanged
        assert torch.equal(value, state[key]), key
    assert probe.theta.requires_grad
    i = probe.invariance
    assert i.shape == (2,) and (i >= 0).all() and (i <= 1).all()
    assert set(probe.learned_i()) == {"spatial", "appearance"}
    assert probe.predict(val[0]).shape == (24, 3)


def test_probe_learns_i_with_separate_learning_rates_and_parametrisations():
    net = tiny_resnet()
    train, val = _colour_task(48, 0), _colour_task(24, 1)
    frozen = InvarianceProbe(net, "classification", 3, ProbeConfig(epochs=1, i_lr=0.0, readout_steps=10))
    frozen.fit(train, val)
    assert torch.allclose(frozen.invariance, torch.full((2,), 0.5))
    for parametrisation in ("clamp", "sigmoid"):
        config = ProbeConfig(epochs=2, batch_size=8, i_lr=0.5, parametrisation=parametrisation, readout_steps=10)
        probe = InvarianceProbe(net, "classification", 3, config)
        probe.fit(train, val)
        i = probe.invariance
        assert not torch.allclose(i, torch.full((2,), 0.5)) and (i >= 0).all() and (i <= 1).all()


def test_probe_selects_the_best_validation_epoch():
    net = tiny_resnet()
    train, val = _colour_task(48, 0), _colour_task(24, 1)
    probe = InvarianceProbe(net, "classification", 3, ProbeConfig(epochs=3, batch_size=8, i_lr=0.3, refit=False))
    history = probe.fit(train, val)
    best = max(history, key=lambda h: h["val"])
    assert probe.learned_i() == pytest.approx(best["i"])
    assert probe.score(*val) == pytest.approx(best["val"])


def test_probe_regression_and_baselines():
    net = tiny_resnet()
    x = structured_images(60, 3, 8, seed=3)
    y = torch.stack((x[:, 0].mean((1, 2)), x[:, 1].mean((1, 2))), 1)  # mean red and green: a regression target
    train, val, test = (x[:30], y[:30]), (x[30:45], y[30:45]), (x[45:], y[45:])
    config = ProbeConfig(epochs=1, batch_size=10, loss="l1", readout_steps=50)
    probe = InvarianceProbe(net, "regression", 2, config)
    probe.fit(train, val)
    assert probe.predict(test[0]).shape == (15, 2) and math.isfinite(probe.score(*test))
    fixed = evaluate_fixed(net, [1.0, 0.0], train, val, test, "regression", 2, config)
    assert set(fixed) == {"val", "test"}
    grid = grid_search(net, train, val, test, "regression", 2, points=2, config=config)
    assert len(grid["grid"]) == 4 and grid["i"] in [g[0] for g in grid["grid"]]
    assert grid["val"] == max(v for _, v in grid["grid"])


def test_pretraining_and_probing_step_through_the_shared_optimiser_step(monkeypatch):
    calls = []

    def counting(loss, optimisers, **options):
        calls.append(loss.detach())
        optimiser_step(loss, optimisers, **options)

    # the module, not the function ``pretrain`` that the package exports under the same name
    monkeypatch.setattr(importlib.import_module("instaaug.amortised.pretrain"), "optimiser_step", counting)
    monkeypatch.setattr(importlib.import_module("instaaug.amortised.probe"), "optimiser_step", counting)
    net = tiny_resnet()
    pretrain(net, image_space(), structured_images(24, 3, 8), PretrainConfig(epochs=2, batch_size=8, proj_dim=8))
    assert len(calls) == 6  # 2 epochs × 3 batches
    config = ProbeConfig(epochs=2, batch_size=16, readout_steps=20)
    InvarianceProbe(net, "classification", 3, config).fit(_colour_task(48, 0), _colour_task(24, 1))
    assert len(calls) == 6 + 2 * 3 + 20  # the joint epochs' steps, then the refitted readout's
    with pytest.raises(dataclasses.FrozenInstanceError):  # settings are values: nothing changes them in place
        config.epochs = 3  # type: ignore[misc]


def test_probe_rejects_bad_tasks_and_targets():
    net = tiny_resnet()
    with pytest.raises(ValueError, match="task must be one of"):
        InvarianceProbe(net, "segmentation", 2)
    with pytest.raises(ValueError, match="loss must be one of"):
        InvarianceProbe(net, "classification", 2, ProbeConfig(loss="l1"))
    with pytest.raises(ValueError, match="parametrisation must be one of"):
        ProbeConfig(parametrisation="tanh")
    with pytest.raises(ValueError, match="init must lie in"):
        ProbeConfig(init=1.5)
    probe = InvarianceProbe(net, "classification", 3)
    x = torch.rand(8, 3, 8, 8)
    with pytest.raises(ValueError, match=r"training targets must lie in \[0, 3\)"):
        probe.fit((x, torch.full((8,), 5)), (x, torch.zeros(8, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"validation targets must be integer labels of shape \(8,\)"):
        probe.fit((x, torch.zeros(8, dtype=torch.long)), (x, torch.zeros(8, 2)))
    with pytest.raises(ValueError, match="3 channel"):
        probe.fit((x[:, :1], torch.zeros(8, dtype=torch.long)), (x, torch.zeros(8, dtype=torch.long)))


def _tones(n: int, seed: int):
    """Spectrogram-like (N, 1, 12, 16): a horizontal line (a tone) in one of three frequency bands, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.1 * torch.rand(n, 1, 12, 16, generator=g)
    rows = 4 * y + torch.randint(0, 4, (n,), generator=g)
    x[torch.arange(n), 0, rows] += 1.0
    return x, y


@pytest.mark.parametrize("make", ["resnet", "vit"])
def test_audio_pretrain_and_probe_a_tiny_model(make):
    space = audio_space()
    if make == "resnet":
        net = tiny_resnet(groups=space.names, in_channels=1, input_mean=0.0, input_std=1.0)
    else:
        net = tiny_vit(groups=space.names, in_channels=1, image_size=(12, 16), input_mean=0.0, input_std=1.0)
    x, _ = _tones(64, 0)
    result = pretrain(net, space, x, PretrainConfig(epochs=2, batch_size=16, proj_dim=8, proj_hidden=8))
    assert set(result.history[0]["corner_steps"]) == {"0,0,1", "0,1,0", "0,1,1", "1,0,0", "1,0,1", "1,1,0", "1,1,1"}
    train, val = _tones(48, 1), _tones(24, 2)
    probe = InvarianceProbe(net, "classification", 3, ProbeConfig(epochs=2, batch_size=16, readout_steps=100))
    probe.fit(train, val)
    assert set(probe.learned_i()) == {"time", "frequency", "gain"}
    assert probe.score(*_tones(48, 3)) > 0.5  # chance is 1/3; the band is easy to read off
