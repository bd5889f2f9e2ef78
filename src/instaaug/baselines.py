"""Baselines composed like ``InstaAug`` (a distribution per batch → a ``TransformStack``): no augmentation, fixed
random augmentation of any families (crop and flip included), random crops, and Augerino."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .augment import MAX_COPIES, MAX_IN_CHANNELS, Augmenter, InstaAug, check_transforms
from .distributions import FlipBernoulli, Product, TransformDistribution, UniformCrops, UniformRanges
from .transforms import FAMILIES, PADDING_MODES, get_family
from .validation import brief, check_choice, check_number, check_positive_int, size_pair


@dataclass(frozen=True)
class NoAugmentConfig:
    """A ``NoAugment``'s options: ``in_channels`` (1 … 64) and ``n_copies`` (1 … 4096)."""

    in_channels: int = 3
    n_copies: int = 1

    def __post_init__(self) -> None:
        check_positive_int(self.in_channels, "in_channels", MAX_IN_CHANNELS)
        check_positive_int(self.n_copies, "n_copies", MAX_COPIES)


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
    """A ``RandomAugment``'s options: ``ranges`` as (family, low, high) triples, one per family at most (each
    range's bounds are checked against its family by ``RandomAugment``); the others as for ``InstaAugConfig``."""

    transforms: tuple[str, ...] = ("rotation",)
    ranges: tuple[tuple[str, float, float], ...] = ()
    in_channels: int = 3
    n_copies: int = 1
    padding_mode: str = "zeros"
    output_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        # Checked here as well as by RandomAugment, so that a config file is refused key by key before use.
        object.__setattr__(self, "transforms", check_transforms(self.transforms))
        object.__setattr__(self, "ranges", range_triples(self.ranges, self.transforms))
        check_positive_int(self.in_channels, "in_channels", MAX_IN_CHANNELS)
        check_positive_int(self.n_copies, "n_copies", MAX_COPIES)
        check_choice(self.padding_mode, "padding_mode", PADDING_MODES)
        object.__setattr__(self, "output_size", size_pair(self.output_size, "output_size"))


def range_triples(value: Any, transforms: tuple[str, ...]) -> tuple[tuple[str, float, float], ...]:
    """``ranges`` in their saved form: (family, low, high) triples of finite numbers, for families of
    ``transforms``, none twice; an error naming ``ranges`` otherwise."""
    if not isinstance(value, list | tuple):
        raise TypeError(f"ranges must be a list of (family, low, high) triples, got {brief(value)}")
    triples: list[tuple[str, float, float]] = []
    for item in value:
        if not isinstance(item, list | tuple) or len(item) != 3 or not isinstance(item[0], str):
            raise ValueError(f"ranges must hold (family, low, high) triples, got {brief(item)}")
        name = item[0]
        if name not in transforms:
            raise ValueError(f"ranges given for transform {brief(name)}, which is not in transforms {transforms}")
        if any(name == t[0] for t in triples):
            raise ValueError(f"ranges gives {name!r} twice")
        low, high = (check_number(v, f"ranges[{name!r}]") for v in item[1:])
        triples.append((name, low, high))
    return tuple(triples)


def _range_spec(spec: Any, name: str) -> float | tuple[float, float]:
    """One family's range as given to ``RandomAugment``: a number or a (low, high) pair of finite numbers."""
    key = f"ranges[{name!r}]"
    if isinstance(spec, list | tuple):
        if len(spec) != 2:
            raise ValueError(f"{key} must be a number or a (low, high) pair, got {brief(spec)}")
        return check_number(spec[0], key), check_number(spec[1], key)
    return check_number(spec, key)


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
            ranges = {name: (low, high) for name, low, high in range_triples(ranges, self.families)}
        ranges = dict(ranges or {})
        unknown = [name for name in ranges if name not in self.families]
        if unknown:
            raise ValueError(f"ranges given for transforms {brief(unknown)} that are not in {self.families}")
        resolved: dict[str, tuple[float, float]] = {}
        low, high = [], []
        for name in self.families:
            family = get_family(name)
            if name == "flip":
                spec = _range_spec(ranges.get("flip", DEFAULT_FLIP_PROBABILITY), name)
                if isinstance(spec, tuple) and spec[0] != spec[1]:
                    raise ValueError(f"ranges['flip'] must be one probability p (saved as (p, p)), got {spec}")
                p = spec[0] if isinstance(spec, tuple) else spec  # saved as (p, p)
                if not 0 <= p <= 1:
                    raise ValueError(f"ranges['flip']: the flip probability must be in [0, 1], got {p}")
                resolved[name] = (p, p)
                continue
            if name == "crop":
                spec = _range_spec(ranges.get("crop", DEFAULT_CROP_SCALES), name)
                lo, hi = spec if isinstance(spec, tuple) else (spec, 1.0)
                if not 0 < lo <= hi <= 1:
                    raise ValueError(f"ranges['crop']: crop scales must satisfy 0 < min ≤ max ≤ 1, got ({lo}, {hi})")
                resolved[name] = (lo, hi)
                continue
            spec = _range_spec(ranges.get(name, family.entropy_widths[1] / 2), name)
            lo, hi = spec if isinstance(spec, tuple) else (-spec, spec)
            if not family.bounds[0] <= lo <= hi <= family.bounds[1]:
                raise ValueError(
                    f"ranges[{name!r}] must satisfy {family.bounds[0]:.4g} ≤ low ≤ high ≤ "
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
        min_scale, max_scale = check_number(min_scale, "min_scale"), check_number(max_scale, "max_scale")
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
        if config.transforms != ("crop",):
            raise ValueError(f"a RandomCrop's transforms must be ('crop',), got {brief(config.transforms)}")
        scales = [(low, high) for name, low, high in config.ranges if name == "crop"]
        if not scales:
            raise ValueError("a RandomCrop's ranges must give the crop scales ('crop', min, max)")
        low, high = scales[0]
        if not 0 < low <= high <= 1:
            raise ValueError(f"ranges['crop']: crop scales must satisfy 0 < min ≤ max ≤ 1, got ({low}, {high})")
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
                raise ValueError(f"Augerino requires {key}={required!r}, got {brief(options[key])}")
        names = check_transforms(transforms)
        other = [n for n in names if n not in FAMILIES]
        if other:
            raise ValueError(f"Augerino learns interval families only ({sorted(FAMILIES)}): transforms has {other}")
        super().__init__(transforms, **options)
