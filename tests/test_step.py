"""The one training step: what it updates, what it reports, clipping, and that train() and bench use it."""

from __future__ import annotations

import inspect

import pytest
import torch

from conftest import tiny_aug
from instaaug import bench, train
from instaaug.baselines import RandomAugment
from instaaug.models import build_classifier
from instaaug.objective import TaskObjective
from instaaug.step import make_optimisers, train_step


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, 16, 16, generator=g), torch.randint(0, 4, (8,), generator=g)


def test_a_step_updates_f_and_phi_and_reports_on_the_device():
    model = build_classifier("small_cnn", 3, 4, width=4, depth=2)
    aug = tiny_aug(("rotation", "hue"))
    objective = aug.objective()
    optimisers = make_optimisers(model, aug)
    assert set(optimisers) == {"f", "phi"}
    before = {name: [p.detach().clone() for p in m.parameters()] for name, m in (("f", model), ("phi", aug))}
    x, y = batch()
    out = train_step(model, aug, objective, optimisers, x, y)
    for name, module in (("f", model), ("phi", aug)):
        assert any(not torch.equal(b, p) for b, p in zip(before[name], module.parameters(), strict=True)), name
    assert set(out.metrics) == {"task_loss", "entropy", "lam", "surrogate"}
    assert out.views == 8 and 0 <= int(out.correct) <= 8 and bool(out.finite)
    assert int(objective.controller.steps) == 1  # the controller moved once


def test_pretraining_steps_f_alone_and_frozen_parts_get_no_optimiser():
    model = build_classifier("small_cnn", 3, 4, width=4, depth=2)
    aug = tiny_aug(("rotation",))
    optimisers = make_optimisers(model, aug)
    phi_before = [p.detach().clone() for p in aug.parameters()]
    out = train_step(model, aug, aug.objective(), optimisers, *batch(), pretraining=True)
    assert set(out.metrics) == {"task_loss"}
    assert all(torch.equal(b, p) for b, p in zip(phi_before, aug.parameters(), strict=True))
    model.requires_grad_(False)
    assert set(make_optimisers(model, aug)) == {"phi"}
    assert make_optimisers(model, RandomAugment(("rotation",))) == {}


def test_gradient_clipping_bounds_the_update():
    x, y = batch()
    steps = {}
    for clip in (0.0, 1e-4):
        torch.manual_seed(0)
        model = build_classifier("small_cnn", 3, 4, width=4, depth=2)
        optimisers = {"f": torch.optim.SGD(model.parameters(), lr=1.0)}
        before = [p.detach().clone() for p in model.parameters()]
        train_step(model, RandomAugment(("rotation",)), TaskObjective(), optimisers, x, y, max_grad_norm=clip)
        steps[clip] = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)])
    assert steps[1e-4].norm() <= 1e-4 * 1.001 < steps[0.0].norm()
    with pytest.raises(ValueError, match="max_grad_norm"):
        train.TrainConfig(max_grad_norm=-1.0)


def test_train_and_the_benchmark_run_this_step():
    assert "train_step(" in inspect.getsource(train.train)
    assert "train_step(" in inspect.getsource(bench.make_train_step)
