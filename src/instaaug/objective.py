"""Training objectives: one classifier forward and backward per step updates both f and φ.

``InstaAugObjective`` turns the per-view task losses L(f(τ(x)), y) and an ``AugmentOutput`` into

    loss = mean(L) + mean((sg(L) - b) · log p(τ; φ(x)))  [only for non-reparameterised parameters]
           - λ · mean(H[p(τ; φ(x))])

f receives gradients from mean(L) only; φ from mean(L) through the reparameterised views, from the REINFORCE
surrogate (with a variance-reducing baseline b) for parameters sampled without reparameterisation, and from the
entropy bonus. For a fixed pre-trained classifier, freeze f (``requires_grad_(False)``) and use the same
objective: only φ learns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .controller import AnnealedEntropyPull, EntropyController, PartControllers
from .distributed import all_reduce_mean
from .views import AugmentOutput


@dataclass(frozen=True)
class ObjectiveTerms:
    """The scalar to minimise and its parts (0-d tensors, detached except ``loss``)."""

    loss: torch.Tensor
    task_loss: torch.Tensor
    entropy: torch.Tensor
    lam: torch.Tensor
    surrogate: torch.Tensor

    def metrics(self) -> dict[str, torch.Tensor]:
        """The detached parts, for logging (no host synchronisation until they are read)."""
        return {
            "task_loss": self.task_loss,
            "entropy": self.entropy,
            "lam": self.lam,
            "surrogate": self.surrogate,
        }


def _check_losses(per_view_loss: torch.Tensor, out: AugmentOutput) -> None:
    if per_view_loss.shape != out.log_prob.shape:
        raise ValueError(
            f"per_view_loss must have one entry per view, shape {tuple(out.log_prob.shape)}, got "
            f"{tuple(per_view_loss.shape)} (use reduction='none' and out.repeat(y) for the labels)"
        )


def leave_one_out_baseline(losses: torch.Tensor) -> torch.Tensor:
    """For losses (B, n) with n ≥ 2, the mean of the other n - 1 views of the same input, per view (B, n).

    It does not depend on the view it is subtracted from, so the REINFORCE estimate stays unbiased.
    """
    n = losses.shape[1]
    return (losses.sum(dim=1, keepdim=True) - losses) / (n - 1)


def _score_surrogate(advantage: torch.Tensor, out: AugmentOutput) -> torch.Tensor:
    """mean(advantage · log p) over the views, advantage (B, n) detached, with the score-function part of log p."""
    log_prob = out.log_prob if out.score_log_prob is None else out.score_log_prob
    return (advantage * log_prob.view(-1, out.n_copies)).mean()


class InstaAugObjective(nn.Module):
    """E[L(f(τ(x)), y) - λ·H[p(τ; φ(x))]] with λ from an ``EntropyController``.

    Args:
        controller: keeps the mean training entropy in its band; updated on every call in training mode.
            A ``PartControllers`` keeps each part of a composite distribution in its own band instead (the
            reported ``lam`` is then the mean of the parts' λ). None uses the fixed ``lam``.
        lam: the fixed λ when there is no controller.
        baseline_momentum: running-mean momentum of the REINFORCE baseline used when n_copies == 1 (with
            n_copies ≥ 2 the leave-one-out mean of the other views is used instead).
    """

    def __init__(
        self,
        controller: EntropyController | AnnealedEntropyPull | PartControllers | None = None,
        lam: float = 0.0,
        baseline_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.controller = controller
        self.baseline_momentum = baseline_momentum
        self.register_buffer("fixed_lam", torch.tensor(float(lam)))
        self.register_buffer("running_loss", torch.tensor(0.0))
        self.register_buffer("baseline_steps", torch.tensor(0, dtype=torch.long))

    @property
    def lam(self) -> torch.Tensor:
        """The current λ (0-d tensor)."""
        return self.controller.lam if self.controller is not None else self.fixed_lam

    def reinforce_surrogate(self, per_view_loss: torch.Tensor, out: AugmentOutput) -> torch.Tensor:
        """mean((sg(L) - b) · log p) over the parts sampled without reparameterisation (``out.score_log_prob``):
        its gradient is an unbiased estimate of their share of ∇φ E[L]; the reparameterised parts get theirs
        through the views themselves."""
        losses = per_view_loss.detach().view(-1, out.n_copies)
        baseline = leave_one_out_baseline(losses) if out.n_copies >= 2 else self.running_baseline(losses)
        return _score_surrogate(losses - baseline, out)

    def running_baseline(self, rewards: torch.Tensor) -> torch.Tensor:
        """The running mean of the rewards of the previous steps (0-d; 0 before the first), then updated with the
        mean of ``rewards`` (in training mode). Taken before the update, it does not depend on this step's draws,
        so the REINFORCE estimate stays unbiased."""
        baseline = self.running_loss
        if self.training:
            with torch.no_grad():
                m = torch.where(self.baseline_steps == 0, 0.0, self.baseline_momentum)
                # Averaged over processes when distributed, so the baseline is the same on every rank.
                self.running_loss = m * self.running_loss + (1 - m) * all_reduce_mean(rewards.mean())
                self.baseline_steps = self.baseline_steps + 1
        return baseline

    def forward(self, per_view_loss: torch.Tensor, out: AugmentOutput) -> ObjectiveTerms:
        """per_view_loss (B·n,) unreduced task losses of the views in ``out`` → ``ObjectiveTerms``."""
        _check_losses(per_view_loss, out)
        task = per_view_loss.mean()
        if out.reparameterized:
            surrogate = torch.zeros((), device=task.device, dtype=task.dtype)
        else:
            surrogate = self.reinforce_surrogate(per_view_loss, out)
        entropy = out.entropy.mean()
        if isinstance(self.controller, PartControllers):
            return self._per_part(task, surrogate, entropy, out)
        lam = self.lam.detach()
        loss = task + surrogate - lam * entropy
        if self.training and self.controller is not None:
            self.controller.update(entropy.detach())
        return ObjectiveTerms(loss, task.detach(), entropy.detach(), lam, surrogate.detach())

    def _per_part(
        self, task: torch.Tensor, surrogate: torch.Tensor, entropy: torch.Tensor, out: AugmentOutput
    ) -> ObjectiveTerms:
        """task + surrogate − Σ_i λ_i·mean(H_i) over the parts of the views' distribution, each λ_i in its band."""
        assert isinstance(self.controller, PartControllers)
        parts = getattr(out.distribution, "parts", (out.distribution,))
        if len(parts) != len(self.controller.parts):
            raise ValueError(
                f"the distribution has {len(parts)} part(s) but PartControllers holds {len(self.controller.parts)}"
            )
        part_entropies = torch.stack([p.entropy().mean() for p in parts])
        lam = self.controller.lam.detach()
        loss = task + surrogate - (lam * part_entropies).sum()
        if self.training:
            self.controller.update(part_entropies.detach())
        return ObjectiveTerms(loss, task.detach(), entropy.detach(), lam.mean(), surrogate.detach())


class ContrastiveInstaAugObjective(InstaAugObjective):
    """InstaAug's objective when the per-view losses are contrastive (NT-Xent per anchor view, the views of an input
    being each other's positives): E[L] − λ·H, λ from the controller.

    In a contrastive loss a view's parameters τ_v change two losses strongly: its own as an anchor, and its
    partner's, where it is the positive. The REINFORCE reward of every view of input b is therefore the sum of the
    losses of b's views (``reward="group"``), and its baseline is the running mean of that sum over past steps
    (drawn before this step, so unbiased). The estimate is unbiased for ∇φ Σ_b E_τ_b[Σ_{v ∈ b} ℓ_v] with the
    other inputs' views held fixed: a view's effect on other inputs' losses, as one of their 2N − 2 negatives, is
    left out (it adds variance from every other anchor). ``reward="anchor"`` uses each view's own loss only, as the
    InstaAug reference code does. Reparameterised parts (colour, geometry intervals) get exact pathwise gradients
    of the whole loss through the views. Needs n_copies ≥ 2.

    Args:
        controller, lam, baseline_momentum: as for ``InstaAugObjective``.
        reward: ``group`` or ``anchor`` (above).
    """

    REWARDS = ("group", "anchor")

    def __init__(
        self,
        controller: EntropyController | AnnealedEntropyPull | PartControllers | None = None,
        lam: float = 0.0,
        baseline_momentum: float = 0.9,
        reward: str = "group",
    ) -> None:
        super().__init__(controller, lam, baseline_momentum)
        if reward not in self.REWARDS:
            raise ValueError(f"reward must be one of {self.REWARDS}, got {reward!r}")
        self.reward = reward

    def reinforce_surrogate(self, per_view_loss: torch.Tensor, out: AugmentOutput) -> torch.Tensor:
        if out.n_copies < 2:
            raise ValueError(f"a contrastive objective needs n_copies ≥ 2 views per input, got {out.n_copies}")
        losses = per_view_loss.detach().view(-1, out.n_copies)
        rewards = losses.sum(1, keepdim=True) if self.reward == "group" else losses
        return _score_surrogate(rewards - self.running_baseline(rewards), out)


class AugerinoObjective(nn.Module):
    """Augerino (Benton et al., 2020): mean(L) - weight · ‖high - low‖₂ with a fixed weight."""

    def __init__(self, weight: float = 0.01) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"weight must be ≥ 0, got {weight}")
        self.weight = float(weight)

    def forward(self, per_view_loss: torch.Tensor, out: AugmentOutput) -> ObjectiveTerms:
        _check_losses(per_view_loss, out)
        task = per_view_loss.mean()
        width_norm = out.distribution.width.norm(dim=-1).mean()
        zero = torch.zeros((), device=task.device, dtype=task.dtype)
        loss = task - self.weight * width_norm
        lam = torch.full((), self.weight, device=task.device, dtype=task.dtype)
        return ObjectiveTerms(loss, task.detach(), out.entropy.mean().detach(), lam, zero)


class TaskObjective(nn.Module):
    """The plain task loss mean(L), for fixed augmentation or none."""

    def forward(self, per_view_loss: torch.Tensor, out: AugmentOutput) -> ObjectiveTerms:
        _check_losses(per_view_loss, out)
        task = per_view_loss.mean()
        zero = torch.zeros((), device=task.device, dtype=task.dtype)
        return ObjectiveTerms(task, task.detach(), out.entropy.mean().detach(), zero, zero)
