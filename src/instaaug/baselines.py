"""Baselines with the same interface as ``InstaAug``: no augmentation, fixed random ranges, and Augerino."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .augment import Augmenter, InstaAug
from .distributions import UniformRanges


class NoAugment(Augmenter):
    """The identity: every view is the input itself (params (B·n, 0), log_prob and entropy zero)."""

    def __init__(self, *, in_channels: int = 3, n_copies: int = 1) -> None:
        super().__init__((), in_channels=in_channels, n_copies=n_copies)

    def _distribution(self, x: torch.Tensor, y: torch.Tensor | None) -> UniformRanges:
        empty = x.new_zeros(x.shape[0], 0)
        return UniformRanges(empty, empty, ())


class RandomAugment(Augmenter):
    """Fixed-range random augmentation: τ ~ U(low, high) per dimension, the same ranges for every input.

    Args:
        transforms: family names.
        ranges: per family, a half-width w (for [-w, w]) or an explicit (low, high), applied to every parameter
            dimension of that family. Families left out use half the wide end of their default entropy band
            (e.g. rotation ±π/2).
        in_channels, n_copies, padding_mode: as for ``InstaAug``.
    """

    def __init__(
        self,
        transforms: Sequence[str] = ("rotation",),
        ranges: Mapping[str, float | tuple[float, float]] | None = None,
        *,
        in_channels: int = 3,
        n_copies: int = 1,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__(transforms, in_channels=in_channels, n_copies=n_copies, padding_mode=padding_mode)
        ranges = dict(ranges or {})
        unknown = sorted(set(ranges) - set(self.stack.names))
        if unknown:
            raise ValueError(f"ranges given for transforms {unknown} that are not in {self.stack.names}")
        low, high = [], []
        for family in self.stack.families:
            spec = ranges.get(family.name, family.entropy_widths[1] / 2)
            lo, hi = (-float(spec), float(spec)) if isinstance(spec, int | float) else map(float, spec)
            if not family.bounds[0] <= lo <= hi <= family.bounds[1]:
                raise ValueError(
                    f"range for {family.name!r} must satisfy {family.bounds[0]:.4g} ≤ low ≤ high ≤ "
                    f"{family.bounds[1]:.4g}, got ({lo}, {hi})"
                )
            low += [lo] * len(family.params)
            high += [hi] * len(family.params)
        self.register_buffer("low", torch.tensor(low))
        self.register_buffer("high", torch.tensor(high))

    def _distribution(self, x: torch.Tensor, y: torch.Tensor | None) -> UniformRanges:
        batch = x.shape[0]
        low = self.low.to(x.dtype).expand(batch, -1)
        high = self.high.to(x.dtype).expand(batch, -1)
        return UniformRanges(low, high, self.names, self.min_width)


class Augerino(InstaAug):
    """Augerino (Benton et al., NeurIPS 2020): one learned, global, symmetric range [-w, w] per dimension.

    Train it with ``AugerinoObjective`` (loss = CE - c·‖width‖ with a fixed c). It is an ``InstaAug`` in
    ``global`` mode with ``symmetric=True``, so ``save`` / ``InstaAug.load`` work the same way.
    """

    def __init__(self, transforms: Sequence[str] = ("rotation",), **options: Any) -> None:
        for key, required in (("mode", "global"), ("symmetric", True)):
            if options.setdefault(key, required) != required:
                raise ValueError(f"Augerino requires {key}={required!r}, got {options[key]!r}")
        super().__init__(transforms, **options)
