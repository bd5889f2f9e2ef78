"""Baselines composed like ``InstaAug`` (a distribution per batch → a ``TransformStack``): no augmentation, fixed
random augmentation of any families (crop and flip included), random crops, and Augerino."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .augment import Augmenter, InstaAug
from .distributions import FlipBernoulli, Product, TransformDistribution, UniformCrops, UniformRanges
from .transforms import FAMILIES, get_family
from .validation import size_pair


@dataclass(frozen=True)
class NoAugmentConfig:
    in_channels: int = 3
    n_copies: int = 1


class NoAugment(Augmenter):
    """The identity: every view is the input itself (params (B·n, 0), log_prob and entropy zero)."""

    config_class = NoAugmentConfig

    def __init__(self, *, in_channels: int = 3, n_copies: int = 1) -> None:
        super().__init__((), in_channels=in_channels, n_copies=n_copies)
        self.config = NoAugmentConfig(in_channels, n_copies)

    def _distribution(self, x: torch.Tensor, y: torch.Tensor | None) -> UniformRanges:
        empty = x.new_zeros(x.shape[0], 0)
        return UniformRanges(empty, empty, ())


@dataclass(frozen=True)
class RandomAugmentConfig:
    """A ``RandomAugment``'s options: ``ranges`` as (family, low, high) triples."""

    transforms: tuple[str, ...] = ("rotation",)
    ranges: tuple[tuple[str, float, float], ...] = ()
    in_channels: int = 3
    n_copies: int = 1
    padding_mode: str = "zeros"
    output_size: tuple[int, int] | None = None


#: The default random crop side range and flip probability of ``RandomAugment``.
DEFAULT_CROP_SCALES = (0.5, 1.0)
DEFAULT_FLIP_PROBABILITY = 0.5


class RandomAugment(Augmenter):
    """Fixed-range random augmentation: the same distribution for every input.

    Args:
        transforms: family names.
        ranges: per family, a half-width w (for [-w, w]) or an explicit (low, high), applied to every parameter
            dimension of that family; for ``crop`` the (min, max) side as a fraction of the image (default
            (0.5, 1)); for ``flip`` the flip probability (default 0.5). Interval families left out use half the wide
            end of their default entropy band (e.g. rotation ±π/2).
        in_channels, n_copies, padding_mode, output_size: as for ``InstaAug``.
    """

    config_class = RandomAugmentConfig

    def __init__(
        self,
        transforms: Sequence[str] = ("rotation",),
        ranges: Mapping[str, float | tuple[float, float]] | Sequence[tuple[str, float, float]] | None = None,
        *,
        in_channels: int = 3,
        n_copies: int = 1,
        padding_mode: str = "zeros",
        output_size: int | tuple[int, int] | None = None,
    ) -> None:
        output_size = size_pair(output_size, "output_size")
        super().__init__(
            transforms, in_channels=in_channels, n_copies=n_copies, padding_mode=padding_mode, output_size=output_size
        )
        if ranges is not None and not isinstance(ranges, Mapping):  # the saved form: (family, low, high) triples
            ranges = {name: (low, high) for name, low, high in ranges}
        ranges = dict(ranges or {})
        unknown = sorted(set(ranges) - set(self.families))
        if unknown:
            raise ValueError(f"ranges given for transforms {unknown} that are not in {self.families}")
        resolved: dict[str, tuple[float, float]] = {}
        low, high = [], []
        for name in self.families:
            family = get_family(name)
            if name == "flip":
                spec = ranges.get("flip", DEFAULT_FLIP_PROBABILITY)
                p = float(spec[0] if isinstance(spec, tuple | list) else spec)  # saved as (p, p)
                if not 0 <= p <= 1:
                    raise ValueError(f"the flip probability must be in [0, 1], got {p}")
                resolved[name] = (p, p)
                continue
            if name == "crop":
                spec = ranges.get("crop", DEFAULT_CROP_SCALES)
                lo, hi = (float(spec), 1.0) if isinstance(spec, int | float) else map(float, spec)
                if not 0 < lo <= hi <= 1:
                    raise ValueError(f"crop scales must satisfy 0 < min ≤ max ≤ 1, got ({lo}, {hi})")
                resolved[name] = (lo, hi)
                continue
            spec = ranges.get(name, family.entropy_widths[1] / 2)
            lo, hi = (-float(spec), float(spec)) if isinstance(spec, int | float) else map(float, spec)
            if not family.bounds[0] <= lo <= hi <= family.bounds[1]:
                raise ValueError(
                    f"range for {name!r} must satisfy {family.bounds[0]:.4g} ≤ low ≤ high ≤ "
                    f"{family.bounds[1]:.4g}, got ({lo}, {hi})"
                )
            resolved[name] = (lo, hi)
            low += [lo] * len(family.params)
            high += [hi] * len(family.params)
        self.ranges = resolved
        self.interval_names = tuple(p for f in self.stack.interval_families for p in f.params)
        self.register_buffer("low", torch.tensor(low))
        self.register_buffer("high", torch.tensor(high))
        self.config = RandomAugmentConfig(
            tuple(transforms) if not isinstance(transforms, str) else (transforms,),
            tuple((name, lo, hi) for name, (lo, hi) in resolved.items()),
            in_channels,
            n_copies,
            padding_mode,
            output_size,
        )

    @classmethod
    def from_config(cls, config: Any) -> RandomAugment:
        return cls(
            config.transforms,
            config.ranges,
            in_channels=config.in_channels,
            n_copies=config.n_copies,
            padding_mode=config.padding_mode,
            output_size=config.output_size,
        )

    def _distribution(self, x: torch.Tensor, y: torch.Tensor | None) -> TransformDistribution:
        batch = x.shape[0]
        parts: list[TransformDistribution] = []
        if "crop" in self.ranges:
            parts.append(UniformCrops(*self.ranges["crop"], batch, x))
        if self.interval_names or not self.ranges:
            low = self.low.to(x.dtype).expand(batch, -1)
            high = self.high.to(x.dtype).expand(batch, -1)
            parts.append(UniformRanges(low, high, self.interval_names, self.min_width))
        if "flip" in self.ranges:
            parts.append(FlipBernoulli.fixed(self.ranges["flip"][0], batch, x))
        return parts[0] if len(parts) == 1 else Product(parts)

    def extra_repr(self) -> str:
        return f"ranges={self.ranges}"


class RandomCrop(RandomAugment):
    """Random crops: side s ~ U[min_scale, max_scale] of the image's width and height, position uniform inside.

    A ``RandomAugment(("crop",), {"crop": (min_scale, max_scale)})``.

    Args:
        min_scale, max_scale: the range of the crop side as a fraction of the image side.
        output_size: the views' (H, W) (an int for square); None keeps the input size.
        in_channels, n_copies: as for ``InstaAug``.
    """

    def __init__(
        self,
        min_scale: float = 0.5,
        max_scale: float = 1.0,
        *,
        output_size: int | Sequence[int] | None = None,
        in_channels: int = 3,
        n_copies: int = 1,
    ) -> None:
        if not 0 < min_scale <= max_scale <= 1:
            raise ValueError(f"need 0 < min_scale ≤ max_scale ≤ 1, got min_scale={min_scale}, max_scale={max_scale}")
        super().__init__(
            ("crop",),
            {"crop": (min_scale, max_scale)},
            in_channels=in_channels,
            n_copies=n_copies,
            output_size=output_size,  # type: ignore[arg-type]
        )
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)

    @classmethod
    def from_config(cls, config: Any) -> RandomCrop:
        low, high = next((low, high) for name, low, high in config.ranges if name == "crop")
        return cls(low, high, output_size=config.output_size, in_channels=config.in_channels, n_copies=config.n_copies)


class Augerino(InstaAug):
    """Augerino (Benton et al., NeurIPS 2020): one learned, global, symmetric range [-w, w] per dimension.

    Train it with ``AugerinoObjective`` (loss = CE - c·‖width‖ with a fixed c). It is an ``InstaAug`` in
    ``global`` mode with ``symmetric=True`` over interval families (Augerino has no crop or flip
    parameterisation), saved and loaded like every augmenter.
    """

    def __init__(self, transforms: Sequence[str] = ("rotation",), **options: Any) -> None:
        for key, required in (("mode", "global"), ("symmetric", True)):
            if options.setdefault(key, required) != required:
                raise ValueError(f"Augerino requires {key}={required!r}, got {options[key]!r}")
        names = (transforms,) if isinstance(transforms, str) else tuple(transforms)
        other = [n for n in names if n not in FAMILIES]
        if other:
            raise ValueError(f"Augerino learns interval families only ({sorted(FAMILIES)}), got {other}")
        super().__init__(transforms, **options)
