"""Spectrograms of sound: the STFT power spectrogram and the log-mel spectrogram, in torch (no torchaudio).

The mel filterbank follows librosa's default (Slaney's auditory toolbox): the Slaney mel scale (linear below
1 kHz, logarithmic above) and triangular filters normalised to unit area ("slaney" norm), so a white noise gives
about the same energy in every band. ``htk=True`` selects the HTK scale, mel = 2595·log10(1 + f / 700).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# The Slaney scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """Frequencies in Hz → mels (Slaney's scale, or HTK's with ``htk``); any shape."""
    hz = np.asarray(hz, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """Mels → frequencies in Hz, the inverse of ``hz_to_mel``; any shape."""
    mel = np.asarray(mel, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    linear = _F_SP * mel
    log = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    norm: bool = True,
) -> torch.Tensor:
    """Triangular mel filters (n_mels, n_fft // 2 + 1), float32, as librosa's ``filters.mel`` computes them.

    Filter m rises linearly from mel point m to m + 1 and falls to m + 2, the n_mels + 2 points equally spaced in
    mels between fmin and fmax (default: the Nyquist frequency). With ``norm`` each filter is divided by half its
    bandwidth in Hz (Slaney's area normalisation).
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 ≤ fmin < fmax ≤ sample_rate / 2, got fmin={fmin}, fmax={fmax}, sr={sample_rate}")
    if n_mels < 1 or n_fft < 2:
        raise ValueError(f"n_mels must be ≥ 1 and n_fft ≥ 2, got {n_mels} and {n_fft}")
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    points = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    widths = np.diff(points)
    ramps = points[:, None] - bins[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm:
        weights *= (2.0 / (points[2:] - points[:-2]))[:, None]
    return torch.from_numpy(weights.astype(np.float32))


def power_spectrogram(waveforms: torch.Tensor, n_fft: int = 512, hop: int = 256) -> torch.Tensor:
    """|STFT|² of waveforms (N, L) with a periodic Hann window, centred frames (reflect padding).

    Returns (N, 1, n_fft // 2 + 1, 1 + L // hop) float32, the channel axis added for image-shaped backbones.
    """
    if waveforms.dim() != 2 or not waveforms.is_floating_point():
        raise ValueError(f"waveforms must be a float tensor (N, L), got {waveforms.dtype} {tuple(waveforms.shape)}")
    window = torch.hann_window(n_fft, device=waveforms.device, dtype=waveforms.dtype)
    spec = torch.stft(waveforms, n_fft, hop, window=window, center=True, pad_mode="reflect", return_complex=True)
    return spec.abs().square()[:, None].float()


@dataclass(frozen=True)
class MelConfig:
    """How a log-mel spectrogram is made from a power spectrogram.

    Attributes:
        sample_rate: of the waveforms, in Hz.
        n_fft: STFT size (the power spectrogram has n_fft // 2 + 1 bins).
        hop: STFT hop, in samples.
        n_mels: mel bands.
        fmin, fmax: the filterbank's frequency range (fmax None: the Nyquist frequency).
        floor_db: powers are clamped at this level (dB re 1) before the log, so silence is finite.
    """

    sample_rate: int = 8000
    n_fft: int = 512
    hop: int = 256
    n_mels: int = 40
    fmin: float = 30.0
    fmax: float | None = None
    floor_db: float = -80.0

    def __post_init__(self) -> None:
        for key in ("sample_rate", "n_fft", "hop", "n_mels"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be an int ≥ 1, got {value!r}")


class LogMel(nn.Module):
    """Power spectrogram (N, 1, n_fft // 2 + 1, T) → log-mel spectrogram (N, 1, n_mels, T) in dB / 10 (bels),
    10·log10(max(mel power, 10^(floor_db/10))) / 10, so a typical input spans a few units."""

    filterbank: torch.Tensor

    def __init__(self, config: MelConfig | None = None) -> None:
        super().__init__()
        self.config = config or MelConfig()
        c = self.config
        self.register_buffer("filterbank", mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax))
        self.floor = 10.0 ** (c.floor_db / 10.0)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        """power (N, 1, F, T) with F = n_fft // 2 + 1 → (N, 1, n_mels, T)."""
        if power.dim() != 4 or power.shape[2] != self.filterbank.shape[1]:
            raise ValueError(
                f"power must have shape (N, 1, {self.filterbank.shape[1]}, T) for n_fft={self.config.n_fft}, "
                f"got {tuple(power.shape)}"
            )
        fb = self.filterbank.to(device=power.device, dtype=power.dtype)
        mel = torch.einsum("mf,ncft->ncmt", fb, power)
        return torch.log10(mel.clamp_min(self.floor))

    def waveform(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Waveforms (N, L) → log-mel spectrograms (N, 1, n_mels, 1 + L // hop)."""
        return self(power_spectrogram(waveforms, self.config.n_fft, self.config.hop))
