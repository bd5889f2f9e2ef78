"""The invariance space: named augmentation groups, the meaning of each entry of i, and the corners trained.

An invariance vector i ∈ [0, 1]^M has one entry per augmentation group. During pre-training i is a corner of
{0, 1}^M: entry m = 1 means the two views of an image differ by group m's augmentations, so the representation
conditioned on that corner is pushed to be invariant to them; m = 0 means group m is not applied, so the
representation is free to keep what it changes. Downstream, i is relaxed to [0, 1]^M and learned.

Built-in groups (``GROUPS``):

==============  ===========  ==============================================================================
group           input        augmentations (one random draw per view)
==============  ===========  ==============================================================================
``spatial``     images       random resized crop (area 0.35–1, aspect 3/4–4/3), translation up to ±20% of
                             the side, horizontal flip with probability 0.5
``appearance``  RGB images   colour jitter with probability 0.8 (hue ±0.5 turns, saturation, value and
                             contrast ±0.6), greyscale with probability 0.2, Gaussian blur (σ 0.1–1 px) with
                             probability 0.5
``time``        (B,1,F,T)    circular time shift up to ±25% of T, then a time mask of up to 20% of T
``frequency``   (B,1,F,T)    a frequency mask of up to 25% of F
``gain``        (B,1,F,T)    a gain: the input multiplied by exp(U(-0.7, 0.7))
``timing``      power spec.  time stretch (rate 1.25^U(-1, 1)), circular time shift up to ±25% of T, fade in
                             and out (each up to 30% of T), a time mask of up to 20% of T
``pitch``       power spec.  pitch shift by U(-12, 12) semitones, a frequency mask of up to 20% of log-frequency
``level``       power spec.  gain U(-15, 15) dB; with probability 0.8 white, pink or brown noise at an SNR of
                             U(0, 30) dB
==============  ===========  ==============================================================================

The ``time``, ``frequency`` and ``gain`` groups act on any (B, 1, F, T) spectrogram-like input as an image. The
sound groups ``timing``, ``pitch`` and ``level`` act on STFT power spectrograms (B, 1, n_fft // 2 + 1, T) (see
``instaaug.audio.augment``: each is what the operation does to the sound); ``sound_space()`` pairs them with a
log-mel front end, so views (and downstream inputs, via ``InvarianceSpace.prepare``) are log-mel spectrograms.

Every augmentation is batched (per-sample parameters, no Python loop over samples) and takes an optional
``torch.Generator``.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from kornia.color import rgb_to_grayscale
from kornia.filters import gaussian_blur2d

from ..audio import LogMel, MelConfig, level_augment, pitch_augment, timing_augment
from ..seeding import epoch_seed
from ..transforms import TransformStack, crop_resize
from ..validation import value_checks_on

#: Augment a batch (N, C, H, W) with an optional generator; returns (N, C, H, W).
AugmentFn = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def _uniform(n: int, low: float, high: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(n,) samples of U(low, high) on ``like``'s device and dtype (drawn on the CPU so a CPU generator works)."""
    u = torch.rand(n, generator=generator)
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)


def _bernoulli(n: int, p: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(n, 1, 1, 1) boolean mask, True with probability p, on ``like``'s device."""
    return (torch.rand(n, generator=generator) < p).to(like.device)[:, None, None, None]


# ------------------------------------------------------------------------------------------------------------------
# Image augmentations


def spatial_augment(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    crop_scale: tuple[float, float] = (0.35, 1.0),
    translate: float = 0.2,
    flip: float = 0.5,
) -> torch.Tensor:
    """Random resized crop, translation and horizontal flip of images x (N, C, H, W), one resampling.

    The crop's area is a fraction U(crop_scale) of the image with aspect ratio log-uniform in [3/4, 4/3], placed
    uniformly inside the image; the box is then shifted by U(-translate, translate) of the side on each axis
    (content from outside the image is black). Returns (N, C, H, W).
    """
    n = x.shape[0]
    area = _uniform(n, *crop_scale, x, generator)
    log_ratio = _uniform(n, math.log(3 / 4), math.log(4 / 3), x, generator)
    w = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    h = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    cx = w / 2 + (1 - w) * _uniform(n, 0, 1, x, generator) + _uniform(n, -translate, translate, x, generator)
    cy = h / 2 + (1 - h) * _uniform(n, 0, 1, x, generator) + _uniform(n, -translate, translate, x, generator)
    out = crop_resize(x, torch.stack((cx, cy, w, h), -1))
    return torch.where(_bernoulli(n, flip, x, generator), out.flip(-1), out)


_COLOUR = TransformStack(("hue", "saturation", "value", "contrast"))


def appearance_augment(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    jitter: float = 0.8,
    hue: float = 0.5,
    strength: float = 0.6,
    grey: float = 0.2,
    blur: float = 0.5,
    sigma: tuple[float, float] = (0.1, 1.0),
) -> torch.Tensor:
    """Colour jitter, greyscale and Gaussian blur of RGB images x (N, 3, H, W) in [0, 1].

    With probability ``jitter`` an image's hue is shifted by U(-hue, hue) turns and its saturation, value and
    contrast scaled by 1 + U(-strength, strength); with probability ``grey`` it becomes grey; with probability
    ``blur`` it is blurred with σ ~ U(sigma) pixels. Returns (N, 3, H, W) in [0, 1].
    """
    n = x.shape[0]
    on = _bernoulli(n, jitter, x, generator)[:, 0, 0]
    params = torch.stack(
        (
            _uniform(n, -hue, hue, x, generator),
            _uniform(n, -strength, strength, x, generator),
            _uniform(n, -strength, strength, x, generator),
            _uniform(n, -strength, strength, x, generator),
        ),
        -1,
    )
    out = _COLOUR(x, params * on)
    out = torch.where(_bernoulli(n, grey, x, generator), rgb_to_grayscale(out).expand_as(out), out)
    s = _uniform(n, *sigma, x, generator)[:, None].expand(n, 2)
    out = torch.where(_bernoulli(n, blur, x, generator), gaussian_blur2d(out, (5, 5), s), out)
    return out.clamp(0, 1)


# ------------------------------------------------------------------------------------------------------------------
# Spectrogram augmentations: inputs (N, 1, F, T), any finite values


def _band_mask(n: int, size: int, max_fraction: float, like: torch.Tensor, generator: torch.Generator | None):
    """(n, size) boolean masks, True on one random band of width U{0..max_fraction·size} per row."""
    width = (torch.rand(n, generator=generator) * (max_fraction * size + 1)).floor()
    start = (torch.rand(n, generator=generator) * (size - width + 1)).floor()
    pos = torch.arange(size, dtype=width.dtype)
    mask = (pos >= start[:, None]) & (pos < (start + width)[:, None])
    return mask.to(like.device)


def time_augment(
    x: torch.Tensor, generator: torch.Generator | None = None, *, shift: float = 0.25, mask: float = 0.2
) -> torch.Tensor:
    """Circular time shift by up to ±``shift``·T frames, then a time mask of up to ``mask``·T frames set to the
    input's minimum; x (N, 1, F, T) → (N, 1, F, T)."""
    n, t = x.shape[0], x.shape[-1]
    offset = (_uniform(n, -shift, shift, x, generator) * t).round().long()
    index = (torch.arange(t, device=x.device)[None] - offset[:, None]) % t
    out = x.gather(-1, index[:, None, None, :].expand_as(x))
    floor = x.amin(dim=(1, 2, 3), keepdim=True)
    return torch.where(_band_mask(n, t, mask, x, generator)[:, None, None, :], floor, out)


def frequency_augment(x: torch.Tensor, generator: torch.Generator | None = None, *, mask: float = 0.25) -> torch.Tensor:
    """A frequency mask of up to ``mask``·F bins set to the input's minimum; x (N, 1, F, T) → (N, 1, F, T)."""
    n, f = x.shape[0], x.shape[-2]
    floor = x.amin(dim=(1, 2, 3), keepdim=True)
    return torch.where(_band_mask(n, f, mask, x, generator)[:, None, :, None], floor, x)


def gain_augment(x: torch.Tensor, generator: torch.Generator | None = None, *, log_gain: float = 0.7) -> torch.Tensor:
    """Multiply each input by exp(U(-log_gain, log_gain)); x (N, 1, F, T) → (N, 1, F, T)."""
    return x * _uniform(x.shape[0], -log_gain, log_gain, x, generator).exp()[:, None, None, None]


# ------------------------------------------------------------------------------------------------------------------
# Groups and spaces


@dataclass(frozen=True)
class AugmentationGroup:
    """One entry of the invariance vector: a named set of augmentations.

    Attributes:
        name: the group's name, the key of its entry of i.
        ops: the names of its augmentations, for documentation and metrics.
        meaning: what i[m] = 1 asks of the representation.
        augment: the batched augmentation, (N, C, H, W) and an optional generator → (N, C, H, W).
        needs_rgb: whether it requires 3-channel inputs.
    """

    name: str
    ops: tuple[str, ...]
    meaning: str
    augment: AugmentFn
    needs_rgb: bool = False


def _group(name: str, ops: tuple[str, ...], meaning: str, fn: Callable[..., torch.Tensor], rgb: bool = False):
    def make(**options: Any) -> AugmentationGroup:
        return AugmentationGroup(name, ops, meaning, lambda x, g=None: fn(x, g, **options), rgb)

    make.__doc__ = f"The ``{name}`` group ({', '.join(ops)}); keyword options go to ``{fn.__name__}``."
    return make


#: Built-in groups by name: each entry builds an ``AugmentationGroup`` (keyword options set its strengths).
GROUPS: dict[str, Callable[..., AugmentationGroup]] = {
    "spatial": _group(
        "spatial", ("crop", "flip", "translation"), "invariant to where and how large the content is", spatial_augment
    ),
    "appearance": _group(
        "appearance",
        ("colour_jitter", "greyscale", "blur"),
        "invariant to colour, brightness, contrast and sharpness",
        appearance_augment,
        rgb=True,
    ),
    "time": _group("time", ("time_shift", "time_mask"), "invariant to when things happen", time_augment),
    "frequency": _group("frequency", ("frequency_mask",), "invariant to a missing frequency band", frequency_augment),
    "gain": _group("gain", ("gain",), "invariant to loudness", gain_augment),
    "timing": _group(
        "timing",
        ("time_stretch", "time_shift", "fade", "time_mask"),
        "invariant to when a sound happens and how long it lasts",
        timing_augment,
    ),
    "pitch": _group("pitch", ("pitch_shift", "frequency_mask"), "invariant to pitch", pitch_augment),
    "level": _group(
        "level", ("gain", "white_pink_brown_noise"), "invariant to loudness and background noise", level_augment
    ),
}


def get_group(name: str, **options: Any) -> AugmentationGroup:
    """The built-in group called ``name``; an unknown name raises a ValueError listing the known ones."""
    if name not in GROUPS:
        raise ValueError(f"unknown augmentation group {name!r}; known groups: {sorted(GROUPS)}")
    return GROUPS[name](**options)


def check_invariance(i: Any, groups: Sequence[str], batch: int | None = None, *, name: str = "i") -> torch.Tensor:
    """Validate an invariance vector and return it as a float tensor (M,) or (B, M).

    Args:
        i: a tensor or sequence (M,) or (B, M), or a mapping group name → value naming every group.
        groups: the M group names, in order.
        batch: the batch size B a per-sample (B, M) tensor must have; None accepts any.
        name: how i is called in error messages.

    Raises:
        ValueError: an unknown or missing group name, the wrong length or shape, NaN, or a value outside [0, 1]
            (the value checks are skipped inside ``instaaug.validation.trusted_inputs()``).
        TypeError: not a tensor, sequence or mapping; a non-floating tensor.
    """
    m = len(groups)
    if isinstance(i, Mapping):
        unknown = sorted(set(i) - set(groups))
        if unknown:
            raise ValueError(f"unknown group name(s) {unknown} in {name}; the groups are {list(groups)}")
        missing = [g for g in groups if g not in i]
        if missing:
            raise ValueError(f"{name} must give a value for every group; missing {missing} (groups {list(groups)})")
        i = torch.tensor([float(i[g]) for g in groups])
    elif isinstance(i, Sequence) and not isinstance(i, str):
        i = torch.tensor([float(v) for v in i])
    if not isinstance(i, torch.Tensor):
        raise TypeError(f"{name} must be a tensor (M,) or (B, M), a sequence or a mapping, got {type(i).__name__}")
    if not i.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {i.dtype}")
    if i.dim() not in (1, 2) or i.shape[-1] != m:
        raise ValueError(f"{name} must have shape ({m},) or (B, {m}) for groups {list(groups)}, got {tuple(i.shape)}")
    if i.dim() == 2 and batch is not None and i.shape[0] != batch:
        raise ValueError(f"a per-sample {name} must have shape ({batch}, {m}) to match the batch, got {tuple(i.shape)}")
    if value_checks_on():
        if not bool(torch.isfinite(i).all()):
            raise ValueError(f"{name} contains NaN or Inf values")
        lo, hi = torch.aminmax(i.detach())
        if float(lo) < 0 or float(hi) > 1:
            raise ValueError(f"every entry of {name} must lie in [0, 1], got range [{float(lo):.4g}, {float(hi):.4g}]")
    return i


def check_inputs(x: Any, channels: int, *, name: str = "inputs") -> None:
    """Validate a batch (B, C, H, W) (images, or spectrograms (B, 1, F, T)): a finite float tensor, B ≥ 1,
    ``channels`` channels. The finiteness check is skipped inside ``trusted_inputs()``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (B, C, H, W) with B ≥ 1, got {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channel(s), got {x.shape[1]} (shape {tuple(x.shape)})")
    if value_checks_on() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")


class InvarianceSpace:
    """The augmentation groups behind the entries of i, and the corners of {0, 1}^M trained.

    Args:
        groups: group names from ``GROUPS`` or ``AugmentationGroup`` objects, one per entry of i, in order.
        corners: the trained corners as 0/1 sequences of length M; by default every corner with at least
            ``min_active`` groups on (the all-off corner makes the two views identical, a degenerate task).
        min_active: see ``corners``.
        frontend: an optional map applied after the augmentations (and by ``prepare`` to un-augmented inputs),
            e.g. ``LogMel``: the groups then act on raw inputs (power spectrograms) and the backbone sees the
            front end's output.

    Attributes:
        names: the M group names.
        corners: (K, M) float tensor of the trained corners.
    """

    def __init__(
        self,
        groups: Sequence[str | AugmentationGroup],
        corners: Sequence[Sequence[int]] | None = None,
        min_active: int = 1,
        frontend: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if frontend is not None and not callable(frontend):
            raise TypeError(f"frontend must be callable (inputs → backbone inputs), got {type(frontend).__name__}")
        self.frontend = frontend
        if isinstance(groups, str | AugmentationGroup):
            groups = (groups,)
        self.groups = tuple(g if isinstance(g, AugmentationGroup) else get_group(g) for g in groups)
        if not self.groups:
            raise ValueError("an invariance space needs at least one augmentation group")
        self.names = tuple(g.name for g in self.groups)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"group names must not repeat, got {list(self.names)}")
        m = len(self.names)
        if corners is None:
            corners = [c for c in itertools.product((0, 1), repeat=m) if sum(c) >= min_active]
        rows = [tuple(c) for c in corners]
        for c in rows:
            if len(c) != m or any(v not in (0, 1) for v in c):
                raise ValueError(f"every corner must be {m} values in {{0, 1}} for groups {list(self.names)}, got {c}")
        if not rows or len(set(rows)) != len(rows):
            raise ValueError(f"corners must be a non-empty list without repeats, got {rows}")
        self.corners = torch.tensor(rows, dtype=torch.float32)

    @property
    def dim(self) -> int:
        """M, the length of i."""
        return len(self.names)

    @property
    def needs_rgb(self) -> bool:
        """Whether some group needs 3-channel inputs."""
        return any(g.needs_rgb for g in self.groups)

    def corner_key(self, corner: int) -> str:
        """The corner's name as its bits joined by commas, e.g. ``"1,0"``."""
        return ",".join(str(int(v)) for v in self.corners[corner])

    def corner_keys(self) -> list[str]:
        """Every trained corner's name (see ``corner_key``), in order."""
        return [self.corner_key(k) for k in range(len(self.corners))]

    def vector(self, i: Any) -> torch.Tensor:
        """i as a validated float tensor (M,): from a mapping group name → value, a sequence or a tensor."""
        out = check_invariance(i, self.names)
        if out.dim() != 1:
            raise ValueError(f"i must be one vector of length {self.dim}, got shape {tuple(out.shape)}")
        return out

    def as_dict(self, i: torch.Tensor) -> dict[str, float]:
        """A vector i (M,) as a dict group name → value."""
        return {name: float(v) for name, v in zip(self.names, i.detach().cpu(), strict=True)}

    def describe(self) -> dict[str, dict[str, Any]]:
        """What each entry of i means: group name → {"ops": [...], "meaning": ...}."""
        return {g.name: {"ops": list(g.ops), "meaning": g.meaning} for g in self.groups}

    def augment(self, x: torch.Tensor, corner: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Apply the groups that are on in ``corner`` to x (N, C, H, W), and only those, then the front end (if
        any); returns (N, C, H, W) (the front end's shape with one)."""
        for group, bit in zip(self.groups, self.corners[corner], strict=True):
            if bit:
                x = group.augment(x, generator)
        return self.prepare(x)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Un-augmented inputs as the backbone sees them: the front end's output, or x itself without one."""
        return x if self.frontend is None else self.frontend(x)

    def __repr__(self) -> str:
        return f"InvarianceSpace({list(self.names)!r}, corners={self.corner_keys()!r})"


def image_space(**corner_options: Any) -> InvarianceSpace:
    """The default space for RGB images: M = 2 groups ``("spatial", "appearance")``, corners 0,1 / 1,0 / 1,1."""
    return InvarianceSpace(("spatial", "appearance"), **corner_options)


def audio_space(**corner_options: Any) -> InvarianceSpace:
    """The default space for spectrograms (B, 1, F, T): M = 3 groups ``("time", "frequency", "gain")``."""
    return InvarianceSpace(("time", "frequency", "gain"), **corner_options)


def sound_space(mel: MelConfig | None = None, **corner_options: Any) -> InvarianceSpace:
    """The space for sound: M = 3 groups ``("timing", "pitch", "level")`` acting on STFT power spectrograms
    (B, 1, n_fft // 2 + 1, T), with a ``LogMel`` front end (``mel``) giving (B, 1, n_mels, T) views."""
    return InvarianceSpace(("timing", "pitch", "level"), frontend=LogMel(mel), **corner_options)


class CornerSampler:
    """Draws the corner of each pre-training step and builds that corner's two views, and only those.

    The corner of step t depends only on (seed, t), not on any global random state, so every process of a
    distributed run draws the same corner at the same step without communicating (each process must use the
    same seed; their views differ because their data does).
    """

    def __init__(self, space: InvarianceSpace, seed: int = 0) -> None:
        self.space = space
        self.seed = seed

    def corner(self, step: int) -> int:
        """The index (into ``space.corners``) of step ``step``'s corner."""
        return random.Random(epoch_seed(self.seed, step)).randrange(len(self.space.corners))

    def views(
        self, x: torch.Tensor, corner: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views (N, C, H, W) each of x (N, C, H, W), independently augmented by ``corner``'s groups.

        Both views are made in one batched pass over (2N, C, H, W).
        """
        both = self.space.augment(torch.cat((x, x)), corner, generator)
        return both[: x.shape[0]], both[x.shape[0] :]
