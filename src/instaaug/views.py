"""``AugmentOutput``: what an augmenter's call returns (shared by augmenters, objectives and test-time augmentation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class AugmentOutput:
    """The result of ``aug(x)`` for a batch of B inputs and n copies each.

    Attributes:
        images: (B·n, C, H, W) augmented views; rows b·n … b·n + n - 1 come from input b.
        params: (B·n, D) the sampled transformation parameters (differentiable where reparameterised).
        log_prob: (B·n,) log-probability of each view's parameters under p(τ; φ(x)), with the parameters
            treated as fixed.
        entropy: (B,) entropy of p(τ; φ(x)) per input.
        n_copies: n.
        reparameterized: whether every part of the distribution is reparameterised (then gradients reach φ
            through ``params`` alone and no score-function term is needed).
        distribution: the distribution the views were drawn from (batch B).
        score_log_prob: (B·n,) the part of ``log_prob`` whose gradient comes from the score function (REINFORCE):
            the parts sampled without reparameterisation (crops, flips). None means all of ``log_prob``.
    """

    images: torch.Tensor
    params: torch.Tensor
    log_prob: torch.Tensor
    entropy: torch.Tensor
    n_copies: int
    reparameterized: bool
    distribution: Any = None
    score_log_prob: torch.Tensor | None = None

    def repeat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Repeat a per-input tensor (B, ...) to match the views (B·n, ...), e.g. the labels."""
        return tensor if self.n_copies == 1 else tensor.repeat_interleave(self.n_copies, dim=0)
