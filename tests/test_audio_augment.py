"""Augmentations of power spectrograms: the identity at zero strength, shape/dtype/device and per-sample randomness,
and what each one does."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import harmonic_spectra
from instaaug.audio import (
    add_noise,
    fade_in_out,
    frequency_mask,
    gain,
    level_augment,
    pitch_augment,
    pitch_shift,
    time_mask,
    time_shift,
    time_stretch,
    timing_augment,
)

#: Every augmentation with its options at zero strength.
AUGMENTATIONS = {
    "time_shift": (time_shift, {"shift": 0.0}),
    "time_stretch": (time_stretch, {"stretch": 0.0}),
    "time_mask": (time_mask, {"mask": 0.0}),
    "fade": (fade_in_out, {"fade": 0.0}),
    "pitch_shift": (pitch_shift, {"semitones": 0.0}),
    "frequency_mask": (frequency_mask, {"mask": 0.0}),
    "gain": (gain, {"gain_db": 0.0}),
    "noise": (add_noise, {"probability": 0.0}),
    "timing": (timing_augment, {"shift": 0.0, "stretch": 0.0, "mask": 0.0, "fade": 0.0}),
    "pitch": (pitch_augment, {"semitones": 0.0, "mask": 0.0}),
    "level": (level_augment, {"gain_db": 0.0, "noise": 0.0}),
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_every_augmentation_is_the_identity_at_zero_strength(name):
    fn, zero = AUGMENTATIONS[name]
    x = harmonic_spectra(6) * torch.rand(6, 1, 1, 1)
    assert torch.allclose(fn(x, torch.Generator().manual_seed(0), **zero), x, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_augmentation_keeps_shape_dtype_device_and_is_random_per_sample(name, device, dtype):
    fn, _ = AUGMENTATIONS[name]
    x = harmonic_spectra(16).to(device=device, dtype=dtype)
    out = fn(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == dtype and out.device.type == device
    assert bool(torch.isfinite(out).all()) and bool((out >= 0).all())  # powers stay powers
    distinct = {tuple(row.flatten().tolist()) for row in out.cpu().float().round(decimals=5)}
    assert len(distinct) >= 8, f"{name}: identical inputs gave only {len(distinct)} distinct outputs of 16"
    again = fn(x, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # a generator fixes the draw


def test_augmentations_do_what_they_say():
    x = harmonic_spectra(32)
    g = torch.Generator().manual_seed(0)
    ratio = gain(x, g, gain_db=6.0) / x
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), rtol=1e-5)
    assert ratio.amin() >= 10**-0.6 - 1e-6 and ratio.amax() <= 10**0.6 + 1e-6
    rolled = time_shift(x, g, shift=0.25)  # a permutation of the frames: the same values per bin
    assert torch.equal(rolled.sort(-1).values, x.sort(-1).values)
    # A pitch shift moves the partial at bin 8 to 8·2^(s/12) with |s| ≤ 7 semitones.
    peak = pitch_shift(x, g, semitones=7.0)[:, 0, :12, 10].argmax(-1).float()
    assert peak.min() >= math.floor(8 * 2 ** (-7 / 12)) and peak.max() <= math.ceil(8 * 2 ** (7 / 12))
    assert peak.unique().numel() > 2
    # A stretch keeps the tone's start (frame 6) and scales its length 10 by 1/r, r ∈ [1/1.25, 1.25].
    on = (time_stretch(x, g, stretch=0.25)[:, 0, 8] > 0.5).float()
    assert ((on.sum(-1) >= 10 / 1.25 - 1) & (on.sum(-1) <= 10 * 1.25 + 1)).all()
    assert (on[:, :5] == 0).all()
    # Noise at SNR ∈ [10, 20] dB adds, on average, 10^(−SNR/10) of the mean signal power.
    noisy = add_noise(x, g, probability=1.0, snr_db=(10.0, 20.0))
    added = (noisy - x).mean((1, 2, 3)) / x.mean((1, 2, 3))
    assert bool((noisy >= x).all()) and added.min() > 0.005 and added.max() < 0.15
    # Masks replace whole frames / bins with the background level.
    masked = time_mask(x, g, mask=0.5)
    changed = (masked != x).any(-2)[:, 0]  # (N, T)
    assert changed.any() and torch.equal(masked.amin(-1), x.amin(-1))
