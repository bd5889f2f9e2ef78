"""``Product``: independent parts side by side, e.g. LRP crops × uniform rotation/colour ranges × a flip."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Draw, TransformDistribution


class Product(TransformDistribution):
    """The joint distribution of independent parts; the event is the parts' events concatenated in order.

    ``log_prob`` and ``entropy`` are the sums of the parts'; ``draw`` keeps pathwise gradients for the parts that
    have ``rsample`` and puts the others' log-probabilities in ``score_log_prob``, so one training step mixes
    reparameterised and REINFORCE gradients.

    Args:
        parts: distributions with the same batch B.
    """

    def __init__(self, parts: Sequence[TransformDistribution]) -> None:
        parts = tuple(parts)
        if not parts:
            raise ValueError("a Product needs at least one part")
        if len({tuple(p.batch_shape) for p in parts}) != 1:
            raise ValueError(f"parts must share one batch shape, got {[tuple(p.batch_shape) for p in parts]}")
        self.parts = parts
        self.names = tuple(n for p in parts for n in p.names)
        self.has_rsample = all(p.has_rsample for p in parts)
        sizes = [len(p.names) for p in parts]
        self._splits = sizes

    @property
    def batch_shape(self) -> torch.Size:
        return self.parts[0].batch_shape

    def part(self, kind: type) -> TransformDistribution | None:
        """The first part that is an instance of ``kind`` (e.g. ``UniformRanges``), or None."""
        return next((p for p in self.parts if isinstance(p, kind)), None)

    def _split(self, value: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return value.split(self._splits, dim=-1)

    def rsample(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.has_rsample:
            return super().rsample(sample_shape, generator)
        return torch.cat([p.rsample(sample_shape, generator) for p in self.parts], dim=-1)

    def sample(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.cat([p.sample(sample_shape, generator) for p in self.parts], dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        parts = self._split(value)
        return torch.stack([p.log_prob(v) for p, v in zip(self.parts, parts, strict=True)]).sum(0)

    def entropy(self) -> torch.Tensor:
        return torch.stack([p.entropy() for p in self.parts]).sum(0)

    def draw(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> Draw:
        draws = [p.draw(sample_shape, generator) for p in self.parts]
        value = torch.cat([d.value for d in draws], dim=-1)
        log_prob = torch.stack([d.log_prob for d in draws]).sum(0)
        score = torch.stack([d.score_log_prob for d in draws]).sum(0)
        return Draw(value, log_prob, score)

    def __getitem__(self, index: torch.Tensor | slice | int) -> Product:
        return Product([p[index] for p in self.parts])  # type: ignore[index]

    def __repr__(self) -> str:
        return f"Product({', '.join(repr(p) for p in self.parts)})"
