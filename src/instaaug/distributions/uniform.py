"""``UniformRanges``: InstaAug's uniform parameterisation, one interval per input and parameter dimension."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import TransformDistribution

#: Narrowest interval width the learned heads produce. It keeps the entropy Σ log(width) finite, and it is a
#: floor in ``entropy()`` too, so intervals built by hand narrower than this are treated as this wide.
DEFAULT_MIN_WIDTH = 1e-3


class UniformRanges(TransformDistribution):
    """Independent uniform distributions U(low, high) per sample and parameter dimension.

    Args:
        low: (B, D) lower ends.
        high: (B, D) upper ends, ``high >= low``.
        names: one name per dimension D (e.g. ``("rotation",)``).
        min_width: the width floor used by ``entropy`` (see ``DEFAULT_MIN_WIDTH``).

    ``batch_shape`` is (B,) and ``event_shape`` is (D,): ``log_prob`` and ``entropy`` sum over D.
    """

    has_rsample = True

    def __init__(
        self,
        low: torch.Tensor,
        high: torch.Tensor,
        names: Sequence[str],
        min_width: float = DEFAULT_MIN_WIDTH,
    ) -> None:
        if low.shape != high.shape or low.dim() != 2:
            raise ValueError(f"low and high must both be (B, D), got {tuple(low.shape)} and {tuple(high.shape)}")
        if len(names) != low.shape[1]:
            raise ValueError(f"{len(names)} names given for {low.shape[1]} dimensions")
        if min_width <= 0:
            raise ValueError(f"min_width must be > 0, got {min_width}")
        self.low = low
        self.high = high
        self.names = tuple(names)
        self.min_width = min_width

    @property
    def batch_shape(self) -> torch.Size:
        return self.low.shape[:1]

    @property
    def width(self) -> torch.Tensor:
        """(B, D) interval widths ``high - low``."""
        return self.high - self.low

    @property
    def mean(self) -> torch.Tensor:
        """(B, D) interval centres."""
        return (self.low + self.high) / 2

    def mode(self) -> torch.Tensor:
        """(B, D) a most probable point: every point of the box is one; the centre is the natural choice (it is
        also the circular mean of an arc)."""
        return self.mean

    def rsample(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised samples (*sample_shape, B, D): ``low + u * (high - low)`` with u ~ U(0, 1)."""
        shape = (*sample_shape, *self.low.shape)
        u = torch.rand(shape, generator=generator, device=self.low.device, dtype=self.low.dtype)
        return self.low + u * (self.high - self.low)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-density of ``value`` (*S, B, D) → (*S, B); ``-inf`` outside the box."""
        inside = ((value >= self.low) & (value <= self.high)).all(-1)
        log_density = -torch.log(self.width.clamp_min(self.min_width)).sum(-1)
        return torch.where(inside, log_density.expand(inside.shape), torch.full_like(log_density, -torch.inf))

    def entropy(self) -> torch.Tensor:
        """Exact differential entropy (B,) = Σ_d log(high - low), with widths floored at ``min_width``."""
        return torch.log(self.width.clamp_min(self.min_width)).sum(-1)

    def __getitem__(self, index: torch.Tensor | slice | int) -> UniformRanges:
        """The distributions of a subset of the batch (an index into B)."""
        low, high = self.low[index], self.high[index]
        if low.dim() == 1:
            low, high = low[None], high[None]
        return UniformRanges(low, high, self.names, self.min_width)
