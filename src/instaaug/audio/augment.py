"""Augmentations of sound, acting on STFT power spectrograms (N, 1, F, T) with F = n_fft // 2 + 1 linear bins.

Working on the linear-frequency power spectrogram, before the mel filterbank, keeps each operation faithful to
what it does to the sound (up to the STFT's phase, which a log-mel model never sees):

- time shift: a circular shift of the frames (a rolled waveform);
- time stretch: the frames resampled by a rate r (the sound played r times faster, at the same pitch);
- time mask: a run of frames replaced by the clip's background (its quietest level in each bin);
- fade: a linear fade-in and fade-out of the amplitude towards the background;
- pitch shift: the frequency axis scaled by 2^(s/12) for s semitones (every partial moves by the same ratio,
  the sound's duration unchanged);
- frequency mask: a band of bins (equally wide in log-frequency) replaced by the background;
- gain: the power multiplied by 10^(g/10) for a gain of g dB;
- noise: white (flat), pink (1/f) or brown (1/f²) noise added in power at a random signal-to-noise ratio, with
  each bin's noise power drawn from the exponential law of a real noise's periodogram.

Every function is batched (one random draw per sample, no Python loop over samples), takes an optional
``torch.Generator`` (random numbers are drawn on the CPU, so a CPU generator works with inputs on any device),
keeps the input's shape, dtype and device, and is the identity when its strengths are zero.
"""

from __future__ import annotations

import math

import torch


def _check(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"expected a float power spectrogram (N, C, F, T), got {getattr(x, 'shape', type(x))}")


def _uniform(n: int, low: float, high: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(n,) samples of U(low, high) on ``like``'s device and dtype (drawn on the CPU so a CPU generator works)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)


def _band(
    n: int, size: int, max_fraction: float, like: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,) starts and widths of one random band per sample, width U(0, max_fraction)·size, inside [0, size]."""
    width = _uniform(n, 0.0, max_fraction, like, generator) * size
    start = _uniform(n, 0.0, 1.0, like, generator) * (size - width)
    return start, width


def background(x: torch.Tensor) -> torch.Tensor:
    """A clip's background: its quietest power in each bin over time; x (N, C, F, T) → (N, C, F, 1)."""
    return x.amin(dim=-1, keepdim=True)


def _resample_axis(x: torch.Tensor, source: torch.Tensor, axis: int, fill: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of x (N, C, F, T) along ``axis`` (-1 or -2) at fractional positions ``source``
    (N, size); positions outside [0, size − 1] take ``fill`` (broadcastable to x)."""
    size = x.shape[axis]
    lo = source.floor().clamp(0, size - 1)
    frac = (source - lo).clamp(0, 1)
    lo_i = lo.long()
    hi_i = (lo_i + 1).clamp(max=size - 1)
    shape = (x.shape[0], 1, 1, size) if axis == -1 else (x.shape[0], 1, size, 1)
    expand = x.shape
    a = x.gather(axis, lo_i.view(shape).expand(expand))
    b = x.gather(axis, hi_i.view(shape).expand(expand))
    out = a + (b - a) * frac.view(shape)
    inside = ((source >= 0) & (source <= size - 1)).view(shape)
    return torch.where(inside, out, fill.expand_as(out))


# ------------------------------------------------------------------------------------------------------------------
# Time


def time_shift(x: torch.Tensor, generator: torch.Generator | None = None, *, shift: float = 0.25) -> torch.Tensor:
    """Circular shift of the frames by U(−shift, shift)·T (rounded); x (N, C, F, T) → (N, C, F, T)."""
    _check(x)
    n, t = x.shape[0], x.shape[-1]
    offset = (_uniform(n, -shift, shift, x, generator) * t).round().long()
    index = (torch.arange(t, device=x.device)[None] - offset[:, None]) % t
    return x.gather(-1, index[:, None, None, :].expand_as(x))


def time_stretch(x: torch.Tensor, generator: torch.Generator | None = None, *, stretch: float = 0.25) -> torch.Tensor:
    """Play the sound at a rate r = (1 + stretch)^U(−1, 1) from its start: frame t of the output is frame r·t of
    the input (linear interpolation; beyond the end, the background); x (N, C, F, T) → (N, C, F, T)."""
    _check(x)
    n, t = x.shape[0], x.shape[-1]
    if stretch == 0:
        return x
    rate = torch.exp(_uniform(n, -1.0, 1.0, x, generator) * math.log1p(stretch))
    source = rate[:, None] * torch.arange(t, device=x.device, dtype=x.dtype)[None]
    return _resample_axis(x, source, -1, background(x))


def time_mask(x: torch.Tensor, generator: torch.Generator | None = None, *, mask: float = 0.2) -> torch.Tensor:
    """Replace a run of up to ``mask``·T frames by the background; x (N, C, F, T) → (N, C, F, T)."""
    _check(x)
    n, t = x.shape[0], x.shape[-1]
    start, width = _band(n, t, mask, x, generator)
    pos = torch.arange(t, device=x.device, dtype=x.dtype)[None]
    masked = (pos >= start[:, None].round()) & (pos < (start + width)[:, None].round())
    return torch.where(masked[:, None, None, :], background(x).expand_as(x), x)


def fade_in_out(x: torch.Tensor, generator: torch.Generator | None = None, *, fade: float = 0.3) -> torch.Tensor:
    """A linear fade-in over U(0, fade)·T frames and a fade-out over U(0, fade)·T frames of the amplitude (the
    power follows its square), towards the background; x (N, C, F, T) → (N, C, F, T)."""
    _check(x)
    n, t = x.shape[0], x.shape[-1]
    fade_in = _uniform(n, 0.0, fade, x, generator)[:, None] * t
    fade_out = _uniform(n, 0.0, fade, x, generator)[:, None] * t
    pos = torch.arange(t, device=x.device, dtype=x.dtype)[None] + 0.5
    rise = (pos / fade_in.clamp_min(1e-6)).clamp(max=1)
    fall = ((t - pos) / fade_out.clamp_min(1e-6)).clamp(max=1)
    gain = torch.minimum(rise, fall).square()[:, None, None, :]
    floor = background(x)
    return floor + (x - floor) * gain


# ------------------------------------------------------------------------------------------------------------------
# Frequency


def pitch_shift(x: torch.Tensor, generator: torch.Generator | None = None, *, semitones: float = 12.0) -> torch.Tensor:
    """Shift the pitch by U(−semitones, semitones): bin f of the output is bin f / 2^(s/12) of the input
    (linear interpolation; above the top, the clip's quietest level); x (N, C, F, T) → (N, C, F, T)."""
    _check(x)
    n, f = x.shape[0], x.shape[-2]
    if semitones == 0:
        return x
    ratio = torch.exp2(_uniform(n, -semitones, semitones, x, generator) / 12)
    source = torch.arange(f, device=x.device, dtype=x.dtype)[None] / ratio[:, None]
    return _resample_axis(x, source, -2, x.amin(dim=(1, 2, 3), keepdim=True))


def frequency_mask(x: torch.Tensor, generator: torch.Generator | None = None, *, mask: float = 0.2) -> torch.Tensor:
    """Replace a band of bins by the background, the band up to ``mask`` of the log-frequency axis wide (from
    bin 1 to the top: on an auditory scale bands are about equally wide in log-frequency);
    x (N, C, F, T) → (N, C, F, T)."""
    _check(x)
    n, f = x.shape[0], x.shape[-2]
    top = math.log2(max(f - 1, 2))
    start, width = _band(n, top, mask, x, generator)
    pos = torch.arange(f, device=x.device, dtype=x.dtype).clamp_min(1).log2()[None]
    masked = (pos >= start[:, None]) & (pos < (start + width)[:, None]) & (width[:, None] > 0)
    return torch.where(masked[:, None, :, None], background(x).expand_as(x), x)


# ------------------------------------------------------------------------------------------------------------------
# Level and noise


def gain(x: torch.Tensor, generator: torch.Generator | None = None, *, gain_db: float = 15.0) -> torch.Tensor:
    """Multiply the power by 10^(g/10) with g ~ U(−gain_db, gain_db) dB; x (N, C, F, T) → (N, C, F, T)."""
    _check(x)
    g = _uniform(x.shape[0], -gain_db, gain_db, x, generator)
    return x * torch.pow(10.0, g / 10)[:, None, None, None]


#: The noise colours: the exponent α of a noise power spectrum ∝ 1 / f^α.
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}


def add_noise(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    probability: float = 0.8,
    snr_db: tuple[float, float] = (0.0, 30.0),
) -> torch.Tensor:
    """With probability ``probability`` per sample, add white, pink or brown noise (chosen uniformly) at a
    signal-to-noise ratio U(snr_db) dB, the powers compared as means over every bin and frame.

    Signal and noise add in power, as they do in expectation for independent sources; each bin's noise power is
    exponentially distributed around its spectrum, like the periodogram of real noise. x (N, C, F, T) →
    (N, C, F, T).
    """
    _check(x)
    n, f = x.shape[0], x.shape[-2]
    if probability == 0:
        return x
    on = (torch.rand(n, generator=generator) < probability).to(device=x.device, dtype=x.dtype)
    alpha = torch.tensor(list(NOISE_COLOURS.values()), dtype=x.dtype)[
        torch.randint(len(NOISE_COLOURS), (n,), generator=generator)
    ].to(x.device)
    snr = _uniform(n, *snr_db, x, generator)
    freqs = torch.arange(f, device=x.device, dtype=x.dtype).clamp_min(1)
    shape = freqs[None].pow(-alpha[:, None])  # (N, F)
    shape = shape / shape.mean(1, keepdim=True)
    level = x.mean(dim=(1, 2, 3)) * torch.pow(10.0, -snr / 10) * on
    periodogram = -torch.rand(x.shape, generator=generator, dtype=torch.float32).clamp_min(1e-12).log()
    noise = level[:, None, None, None] * shape[:, None, :, None] * periodogram.to(device=x.device, dtype=x.dtype)
    return x + noise


# ------------------------------------------------------------------------------------------------------------------
# The three groups


def timing_augment(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    shift: float = 0.25,
    stretch: float = 0.25,
    mask: float = 0.2,
    fade: float = 0.3,
) -> torch.Tensor:
    """The ``timing`` group: time stretch, circular time shift, fade, time mask (in that order, each with its own
    random strength); x (N, C, F, T) → (N, C, F, T)."""
    x = time_stretch(x, generator, stretch=stretch)
    x = time_shift(x, generator, shift=shift)
    x = fade_in_out(x, generator, fade=fade)
    return time_mask(x, generator, mask=mask)


def pitch_augment(
    x: torch.Tensor, generator: torch.Generator | None = None, *, semitones: float = 12.0, mask: float = 0.2
) -> torch.Tensor:
    """The ``pitch`` group: pitch shift, then a frequency mask; x (N, C, F, T) → (N, C, F, T)."""
    return frequency_mask(pitch_shift(x, generator, semitones=semitones), generator, mask=mask)


def level_augment(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    gain_db: float = 15.0,
    noise: float = 0.8,
    snr_db: tuple[float, float] = (0.0, 30.0),
) -> torch.Tensor:
    """The ``level`` group: a gain, then coloured noise at a random SNR with probability ``noise``;
    x (N, C, F, T) → (N, C, F, T)."""
    return add_noise(gain(x, generator, gain_db=gain_db), generator, probability=noise, snr_db=tuple(snr_db))
