"""The distribution contract every augmenter's p(τ; φ(x)) satisfies, in the vocabulary of ``torch.distributions``.

A distribution over transformation parameters has a batch of B inputs (``batch_shape`` (B,)) and an event of D
parameters (``event_shape`` (D,)) named by ``names``. It offers:

- ``sample(sample_shape, generator)`` → (*S, B, D) without gradient, and ``rsample`` (reparameterised, only where
  ``has_rsample``);
- ``log_prob(value)`` (*S, B, D) → (*S, B), a density in the parameters' own coordinates (atoms for discrete
  parts) and ``entropy()`` (B,), exact where the family allows;
- ``draw(sample_shape, generator)``: one call that returns what a training step needs: samples (carrying pathwise
  gradients where reparameterised), ``log_prob`` of the samples held fixed, and ``score_log_prob``, the part of
  ``log_prob`` whose gradient must come from the score function (REINFORCE): the parts that cannot be
  reparameterised. ``Product`` joins parts of both kinds side by side.

A new distribution is one subclass of ``TransformDistribution``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

import torch


class Draw(NamedTuple):
    """Samples (*S, B, D), their log-probability (*S, B) and the score-function part of it (*S, B)."""

    value: torch.Tensor
    log_prob: torch.Tensor
    score_log_prob: torch.Tensor


class TransformDistribution(ABC):
    """The contract: see the module docstring. Subclasses set ``names`` and ``has_rsample`` and implement the
    abstract methods; ``sample`` and ``draw`` have generic implementations."""

    #: whether ``rsample`` exists: samples carry gradients to the distribution's parameters.
    has_rsample: bool = False
    #: one name per event dimension D, e.g. ``("rotation", "hue")``.
    names: tuple[str, ...] = ()

    @property
    @abstractmethod
    def batch_shape(self) -> torch.Size:
        """(B,)."""

    @property
    def event_shape(self) -> torch.Size:
        """(D,)."""
        return torch.Size((len(self.names),))

    def rsample(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised samples (*sample_shape, B, D)."""
        raise NotImplementedError(f"{type(self).__name__} has no reparameterised samples: use sample() and log_prob")

    def sample(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples (*sample_shape, B, D) without gradient."""
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    @abstractmethod
    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-density (*S, B) of ``value`` (*S, B, D); ``-inf`` outside the support."""

    @abstractmethod
    def entropy(self) -> torch.Tensor:
        """Entropy (B,) in nats."""

    def draw(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> Draw:
        """Samples with pathwise gradients where reparameterised, their log-probability (samples held fixed) and
        its score-function part (all of it for a distribution without ``rsample``, none otherwise)."""
        if self.has_rsample:
            value = self.rsample(sample_shape, generator)
            log_prob = self.log_prob(value.detach())
            return Draw(value, log_prob, torch.zeros_like(log_prob))
        value = self.sample(sample_shape, generator)
        log_prob = self.log_prob(value)
        return Draw(value, log_prob, log_prob)

    def sample_with_log_prob(
        self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples (*S, B, D) (pathwise gradients where reparameterised) and their log-probability (*S, B)."""
        value, log_prob, _ = self.draw(sample_shape, generator)
        return value, log_prob

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch={tuple(self.batch_shape)}, names={self.names})"
