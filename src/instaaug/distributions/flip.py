"""``FlipBernoulli``: a horizontal flip with a per-input probability."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .base import TransformDistribution


class FlipBernoulli(TransformDistribution):
    """flip ~ Bernoulli(σ(logits)) per input: the parameter ``flip`` is 1.0 (mirror left-right) or 0.0.

    Discrete, so φ learns it through the score function (``log_prob``); the entropy is exact.

    Args:
        logits: (B,) log-odds of flipping.
    """

    has_rsample = False
    names = ("flip",)

    def __init__(self, logits: torch.Tensor) -> None:
        if logits.dim() != 1:
            raise ValueError(f"logits must be (B,), got shape {tuple(logits.shape)}")
        self.logits = logits

    @classmethod
    def fixed(cls, probability: float, batch: int, reference: torch.Tensor) -> FlipBernoulli:
        """The same flip probability for every input (a random baseline), on ``reference``'s device and dtype."""
        if not 0 <= probability <= 1:
            raise ValueError(f"flip probability must be in [0, 1], got {probability}")
        p = min(max(probability, 1e-12), 1 - 1e-12)
        return cls(reference.new_full((batch,), math.log(p / (1 - p))))

    @property
    def batch_shape(self) -> torch.Size:
        return self.logits.shape

    @property
    def probs(self) -> torch.Tensor:
        """(B,) the probability of a flip."""
        return torch.sigmoid(self.logits)

    def sample(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """(*sample_shape, B, 1) flips, 0.0 or 1.0."""
        shape = (*sample_shape, *self.logits.shape)
        u = torch.rand(shape, generator=generator, device=self.logits.device, dtype=self.logits.dtype)
        return (u < torch.sigmoid(self.logits.detach())).to(self.logits.dtype)[..., None]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(flip) (*S, B) of ``value`` (*S, B, 1) ∈ {0, 1}."""
        v = value[..., 0]
        return v * F.logsigmoid(self.logits) + (1 - v) * F.logsigmoid(-self.logits)

    def entropy(self) -> torch.Tensor:
        """Exact binary entropy (B,) in nats (≤ log 2)."""
        p = torch.sigmoid(self.logits)
        return -(p * F.logsigmoid(self.logits) + (1 - p) * F.logsigmoid(-self.logits))

    def __getitem__(self, index: torch.Tensor | slice | int) -> FlipBernoulli:
        logits = self.logits[index]
        return FlipBernoulli(logits[None] if logits.dim() == 0 else logits)
