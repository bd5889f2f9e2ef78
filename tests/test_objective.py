"""Objectives: exact loss values, controller updates, one pass of f, frozen f, REINFORCE unbiasedness."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import perturb_output, structured_images, tiny_aug
from instaaug import (
    Augerino,
    AugerinoObjective,
    AugmentOutput,
    EntropyController,
    InstaAugObjective,
    TaskObjective,
)
from instaaug.models import build_classifier
from instaaug.objective import leave_one_out_baseline


def views(n_copies: int = 2, batch: int = 3, transforms=("rotation", "hue")):
    aug = perturb_output(tiny_aug(transforms, n_copies=n_copies))
    x = structured_images(batch, 3, 8)
    return aug, aug(x, generator=torch.Generator().manual_seed(0))


def test_loss_is_task_minus_lambda_entropy():
    _, out = views()
    controller = EntropyController(-10.0, 10.0, lam_init=0.3)
    objective = InstaAugObjective(controller)
    losses = torch.tensor([0.5, 1.0, 2.0, 0.25, 3.0, 1.5])
    terms = objective(losses, out)
    expected = losses.mean() - 0.3 * out.entropy.mean()
    assert terms.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms.task_loss.item() == pytest.approx(losses.mean().item())
    assert terms.entropy.item() == pytest.approx(out.entropy.mean().item())
    assert terms.lam.item() == pytest.approx(0.3)
    assert terms.surrogate.item() == 0.0
    assert terms.loss.requires_grad and not terms.task_loss.requires_grad and not terms.entropy.requires_grad
    assert set(terms.metrics()) == {"task_loss", "entropy", "lam", "surrogate"}


def test_fixed_lambda_without_controller():
    _, out = views()
    losses = torch.rand(6)
    terms = InstaAugObjective(lam=0.7)(losses, out)
    assert terms.loss.item() == pytest.approx((losses.mean() - 0.7 * out.entropy.mean()).item(), rel=1e-6)


def test_entropy_term_gradient_has_the_right_sign():
    aug, out = views()
    InstaAugObjective(lam=1.0)(torch.zeros(6), out).loss.backward()
    assert (aug.net.output.bias.grad < 0).all()  # descending the loss widens every interval


def test_controller_updated_only_in_training_mode():
    _, out = views()
    controller = EntropyController(100.0, 200.0, lam_init=0.1, rate=2.0)  # entropy far below the band
    objective = InstaAugObjective(controller)
    losses = torch.rand(6)
    first = objective(losses, out)
    assert controller.steps.item() == 1 and controller.lam.item() == pytest.approx(0.2)
    assert first.lam.item() == pytest.approx(0.1)  # the loss used the λ from before the update
    objective.eval()
    for _ in range(3):
        terms = objective(losses, out)
    assert controller.steps.item() == 1 and controller.lam.item() == pytest.approx(0.2)
    assert terms.lam.item() == pytest.approx(0.2)
    objective.train()
    objective(losses, out)
    assert controller.steps.item() == 2 and controller.lam.item() == pytest.approx(0.4)


def test_one_forward_and_one_backward_of_f_train_f_and_phi():
    aug = perturb_output(tiny_aug(("rotation", "hue"), n_copies=2), std=0.1)
    f = build_classifier("small_cnn", 3, 2, width=4, depth=2)
    calls = {"forward": 0, "backward": 0}
    f.register_forward_hook(lambda *_: calls.__setitem__("forward", calls["forward"] + 1))
    f.register_full_backward_hook(lambda *_: calls.__setitem__("backward", calls["backward"] + 1))
    x, y = structured_images(4, 3, 8), torch.tensor([0, 1, 1, 0])
    objective = InstaAugObjective(EntropyController(-5.0, 5.0))
    out = aug(x, y)
    terms = objective(F.cross_entropy(f(out.images), out.repeat(y), reduction="none"), out)
    terms.loss.backward()
    assert calls == {"forward": 1, "backward": 1}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in f.parameters())
    assert aug.net.output.weight.grad.abs().sum() > 0
    assert aug.net.backbone.stages[0][0].weight.grad.abs().sum() > 0


def test_frozen_classifier_step_changes_phi_only():
    aug = perturb_output(tiny_aug(("rotation", "value")), std=0.1)
    f = build_classifier("small_cnn", 3, 2, width=4, depth=2).requires_grad_(False)
    f_before = [p.clone() for p in f.parameters()]
    phi_before = [p.clone() for p in aug.parameters()]
    optimiser = torch.optim.Adam([*f.parameters(), *aug.parameters()], lr=1e-2)
    x, y = structured_images(4, 3, 8), torch.tensor([0, 1, 1, 0])
    out = aug(x, y)
    terms = InstaAugObjective(lam=0.1)(F.cross_entropy(f(out.images), out.repeat(y), reduction="none"), out)
    terms.loss.backward()
    optimiser.step()
    assert all(torch.equal(a, b) for a, b in zip(f.parameters(), f_before, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(aug.parameters(), phi_before, strict=True))
    assert not torch.equal(aug.net.output.bias, phi_before[-1])


def test_wrong_loss_shape_rejected():
    _, out = views()
    for objective in (InstaAugObjective(), AugerinoObjective(), TaskObjective()):
        with pytest.raises(ValueError, match="per_view_loss"):
            objective(torch.rand(3), out)
        with pytest.raises(ValueError, match="per_view_loss"):
            objective(torch.rand(6, 1), out)


# ------------------------------------------------------------------------------------------------------------------
# REINFORCE


def test_leave_one_out_baseline_values():
    losses = torch.tensor([[1.0, 2.0, 3.0], [4.0, 4.0, 10.0]])
    torch.testing.assert_close(leave_one_out_baseline(losses), torch.tensor([[2.5, 2.0, 1.5], [7.0, 7.0, 4.0]]))
    torch.testing.assert_close(leave_one_out_baseline(torch.tensor([[1.0, 5.0]])), torch.tensor([[5.0, 1.0]]))


THETA = torch.tensor([0.3, -0.5, 1.0, 0.0])
COSTS = torch.tensor([1.0, 3.0, -2.0, 0.5])


def categorical_views(theta: torch.Tensor, batch: int, n: int, generator: torch.Generator):
    """Hand-made non-reparameterised views from Categorical(softmax θ): loss L[k] for sampled index k."""
    idx = torch.multinomial(F.softmax(theta.detach(), -1), batch * n, replacement=True, generator=generator)
    out = AugmentOutput(
        images=torch.zeros(batch * n, 1, 2, 2),
        params=idx[:, None].float(),
        log_prob=F.log_softmax(theta, -1)[idx],
        entropy=torch.zeros(batch),
        n_copies=n,
        reparameterized=False,
    )
    return COSTS[idx], out


@pytest.mark.parametrize("n", [1, 2, 4])
def test_reinforce_gradient_is_unbiased(n):
    theta = THETA.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad((F.softmax(theta, -1) * COSTS).sum(), theta)
    objective = InstaAugObjective(lam=0.0)
    g = torch.Generator().manual_seed(n)
    estimates = []
    for _ in range(6):
        losses, out = categorical_views(theta, 8000 // n, n, g)
        (grad,) = torch.autograd.grad(objective(losses, out).loss, theta)
        estimates.append(grad)
    estimate = torch.stack(estimates).mean(0)
    # 48k samples: the standard error is ≈ 0.005 per component (measured), so 0.03 is ≈ 6σ; a biased baseline
    # (e.g. one including the view itself) is off by ≳ 0.3.
    torch.testing.assert_close(estimate, exact, atol=0.03, rtol=0)
    assert exact.abs().max() > 0.5


def test_surrogate_value_with_leave_one_out_baseline():
    theta = THETA.clone().requires_grad_(True)
    idx = torch.tensor([0, 1, 2, 2])  # two inputs, two views each
    out = AugmentOutput(torch.zeros(4, 1, 2, 2), idx[:, None].float(), F.log_softmax(theta, -1)[idx],
                        torch.zeros(2), 2, False)  # fmt: skip
    losses = COSTS[idx]
    terms = InstaAugObjective()(losses, out)
    advantage = torch.tensor([1.0 - 3.0, 3.0 - 1.0, 0.0, 0.0])
    expected = (advantage * out.log_prob.detach()).mean()
    assert terms.surrogate.item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms.loss.item() == pytest.approx((losses.mean() + expected).item(), rel=1e-6)


def test_running_baseline_for_single_view():
    theta = THETA.clone().requires_grad_(True)
    objective = InstaAugObjective(baseline_momentum=0.5)
    idx = torch.tensor([0, 1])

    def call(costs):
        out = AugmentOutput(torch.zeros(2, 1, 2, 2), idx[:, None].float(), F.log_softmax(theta, -1)[idx],
                            torch.zeros(2), 1, False)  # fmt: skip
        return objective(costs, out).surrogate.item(), (out.log_prob.detach() * 1.0)

    s, lp = call(torch.tensor([2.0, 4.0]))  # first call: baseline 0, then running mean := 3
    assert s == pytest.approx((torch.tensor([2.0, 4.0]) * lp).mean().item(), rel=1e-6)
    assert objective.running_loss.item() == pytest.approx(3.0)
    s, lp = call(torch.tensor([5.0, 1.0]))  # baseline 3, then 0.5·3 + 0.5·3 = 3
    assert s == pytest.approx((torch.tensor([2.0, -2.0]) * lp).mean().item(), rel=1e-6)
    objective.eval()
    call(torch.tensor([100.0, 100.0]))
    assert objective.running_loss.item() == pytest.approx(3.0)  # no update in eval mode


# ------------------------------------------------------------------------------------------------------------------
# Augerino and plain task objectives


def test_augerino_objective_value_and_gradient():
    aug = Augerino(("rotation", "translation"), width=4, depth=2)
    out = aug(structured_images(3, 3, 8))
    losses = torch.tensor([1.0, 2.0, 4.0])
    terms = AugerinoObjective(weight=0.5)(losses, out)
    width = out.distribution.width.detach()
    expected = losses.mean() - 0.5 * width.norm(dim=-1).mean()
    assert terms.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms.lam.item() == pytest.approx(0.5)
    terms.loss.backward()
    assert (aug.net.output.grad < 0).all()  # the width bonus pushes every range wider
    with pytest.raises(ValueError, match="weight"):
        AugerinoObjective(weight=-1.0)


def test_task_objective_is_the_mean():
    _, out = views()
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 9.0])
    terms = TaskObjective()(losses, out)
    assert terms.loss.item() == pytest.approx(4.0)
    assert terms.lam.item() == 0.0 and terms.surrogate.item() == 0.0
