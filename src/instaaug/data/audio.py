"""Synthesised sounds whose downstream tasks need opposite invariances (no downloads, deterministic from a seed).

Every clip (1 s at 8 kHz by default) holds one sound event over a faint white-noise background (−60 dBFS RMS).
The event has one of five sources, told apart by timbre (the spectrum of its partials and its envelope), and an
independent pitch, onset and level:

============  ==================================================================================================
source        partials (amplitudes relative to the fundamental) and envelope
============  ==================================================================================================
``flute``     harmonics 1, 2, 3 at 1, 0.25, 0.06; 60 ms attack, sustained, 50 ms release
``string``    every harmonic k at 1/k (a sawtooth); 20 ms attack, sustained, 50 ms release
``clarinet``  odd harmonics k at 1/k (a square wave); 20 ms attack, sustained, 50 ms release
``bell``      inharmonic partials at 1, 2.76, 5.40, 8.93 × f0 with 1, 0.6, 0.4, 0.25; instant attack, decay τ 0.15 s
``pluck``     every harmonic k at 1/k²; instant attack, decay τ 0.06 s
============  ==================================================================================================

Each partial's amplitude is jittered by ±20% and its phase is random; partials above 0.9 × the Nyquist frequency
are dropped. The targets:

- ``source``: the source class (5 classes) — invariant to pitch, time and level;
- ``pitch``: the fundamental in octaves above 110 Hz, log2(f0 / 110) ∈ [0, 3] (f0 log-uniform in 110–880 Hz);
- ``onset``: the event's start in seconds, U(0.05, 0.5);
- ``loudness``: the event's RMS level over its own duration in dBFS, U(−30, 0).

The durations (sustained sources U(0.25, 0.4) s; decaying ones until the clip ends) do not depend on the targets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..audio import LogMel, MelConfig, power_spectrogram
from ..plots import save_figure

#: The sources, in class order.
SOURCES = ("flute", "string", "clarinet", "bell", "pluck")
#: Lowest fundamental, in Hz (the pitch target is log2(f0 / F0_MIN)).
F0_MIN = 110.0
#: The pitch range, in octaves above F0_MIN.
OCTAVES = 3.0
ONSET_RANGE = (0.05, 0.5)
LEVEL_RANGE_DB = (-30.0, 0.0)
BACKGROUND_DB = -60.0

_BELL = (np.array([1.0, 2.76, 5.40, 8.93]), np.array([1.0, 0.6, 0.4, 0.25]))


@dataclass(frozen=True)
class SynthSounds:
    """Synthesised clips and their targets.

    Attributes:
        waveforms: (N, L) float32 in about [−1, 1].
        source: (N,) int64 source classes (index into ``SOURCES``).
        pitch: (N,) float32 octaves above 110 Hz.
        onset: (N,) float32 seconds.
        loudness: (N,) float32 dBFS (RMS of the event).
        sample_rate: in Hz.
    """

    waveforms: torch.Tensor
    source: torch.Tensor
    pitch: torch.Tensor
    onset: torch.Tensor
    loudness: torch.Tensor
    sample_rate: int

    def target(self, task: str) -> torch.Tensor:
        """The targets of task ``task``: ``source`` (N,) int64, else (N,) float32."""
        if task not in ("source", "pitch", "onset", "loudness"):
            raise ValueError(f"unknown task {task!r}; tasks: source, pitch, onset, loudness")
        return getattr(self, task)

    def __len__(self) -> int:
        return self.waveforms.shape[0]


def _partials(source: int, f0: float, rng: np.random.Generator, nyquist: float) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (P,) and amplitudes (P,) of one event's partials."""
    if SOURCES[source] == "bell":
        ratios, amps = _BELL
    else:
        k = np.arange(1, 41, dtype=np.float64)
        if SOURCES[source] == "flute":
            k, amps = k[:3], np.array([1.0, 0.25, 0.06])
        elif SOURCES[source] == "string":
            amps = 1 / k
        elif SOURCES[source] == "clarinet":
            k = k[::2]
            amps = 1 / k
        else:  # pluck
            amps = 1 / k**2
        ratios = k
    freqs = f0 * ratios
    keep = freqs < 0.9 * nyquist
    amps = amps * rng.uniform(0.8, 1.2, len(amps))
    return freqs[keep], amps[keep]


def _envelope(source: int, t: np.ndarray, duration: float) -> np.ndarray:
    """The amplitude envelope (L,) over time since onset t (L,) (negative before the onset)."""
    name = SOURCES[source]
    if name in ("bell", "pluck"):
        tau = 0.15 if name == "bell" else 0.06
        return np.where(t >= 0, np.exp(-np.maximum(t, 0) / tau), 0.0)
    attack = 0.06 if name == "flute" else 0.02
    rise = np.clip(t / attack, 0, 1)
    fall = np.clip((duration - t) / 0.05, 0, 1)
    return np.where(t >= 0, np.minimum(rise, fall), 0.0)


def synth_sounds(n: int, seed: int, sample_rate: int = 8000, duration: float = 1.0) -> SynthSounds:
    """n clips of ``duration`` seconds at ``sample_rate`` Hz, a function of (n, seed, sample_rate, duration) only.

    Sources are balanced up to rounding (a shuffled cycle over ``SOURCES``); pitch, onset and level are uniform and
    independent of the source and of each other.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int ≥ 1, got {n!r}")
    if sample_rate < 2 * F0_MIN * 2**OCTAVES or duration <= ONSET_RANGE[1] + 0.1:
        raise ValueError(
            f"need sample_rate ≥ {2 * F0_MIN * 2**OCTAVES:.0f} Hz and duration > {ONSET_RANGE[1] + 0.1} s, "
            f"got {sample_rate} and {duration}"
        )
    rng = np.random.default_rng(seed)
    length = round(sample_rate * duration)
    time = np.arange(length) / sample_rate
    source = rng.permutation(np.arange(n) % len(SOURCES))
    pitch = rng.uniform(0, OCTAVES, n)
    onset = rng.uniform(*ONSET_RANGE, n)
    level = rng.uniform(*LEVEL_RANGE_DB, n)
    lengths = rng.uniform(0.25, 0.4, n)
    waves = np.empty((n, length), np.float32)
    for j in range(n):  # synthesis of one clip is a handful of vector operations over its samples
        freqs, amps = _partials(int(source[j]), F0_MIN * 2 ** pitch[j], rng, sample_rate / 2)
        phases = rng.uniform(0, 2 * np.pi, len(freqs))
        t = time - onset[j]
        tone = (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None])).sum(0)
        event = tone * _envelope(int(source[j]), t, lengths[j])
        active = t >= 0
        if SOURCES[int(source[j])] not in ("bell", "pluck"):
            active &= t <= lengths[j]
        rms = np.sqrt(np.mean(event[active] ** 2))
        event *= 10 ** (level[j] / 20) / rms
        noise = rng.standard_normal(length) * 10 ** (BACKGROUND_DB / 20)
        waves[j] = event + noise
    return SynthSounds(
        torch.from_numpy(waves),
        torch.from_numpy(source.astype(np.int64)),
        torch.from_numpy(pitch.astype(np.float32)),
        torch.from_numpy(onset.astype(np.float32)),
        torch.from_numpy(level.astype(np.float32)),
        sample_rate,
    )


def plot_examples(
    sounds: SynthSounds, path: str | os.PathLike, mel: MelConfig | None = None, per_source: int = 2
) -> Path:
    """Log-mel spectrograms of the first ``per_source`` clips of every source, titled with their targets."""
    mel = mel or MelConfig(sample_rate=sounds.sample_rate)
    frontend = LogMel(mel)
    columns = len(SOURCES)
    fig, axes = plt.subplots(per_source, columns, figsize=(2.4 * columns, 2.1 * per_source), squeeze=False)
    for c, name in enumerate(SOURCES):
        picks = torch.nonzero(sounds.source == c).flatten()[:per_source]
        for r in range(per_source):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r >= len(picks):
                continue
            j = int(picks[r])
            spec = frontend(power_spectrogram(sounds.waveforms[j : j + 1], mel.n_fft, mel.hop))[0, 0]
            extent = (0, sounds.waveforms.shape[1] / sounds.sample_rate, 0, mel.n_mels)
            ax.imshow(spec.numpy(), origin="lower", aspect="auto", cmap="magma", extent=extent)
            ax.set_title(
                f"{name}: f0 {F0_MIN * 2 ** float(sounds.pitch[j]):.0f} Hz\n"
                f"onset {float(sounds.onset[j]):.2f} s, {float(sounds.loudness[j]):.0f} dBFS",
                fontsize=8,
            )
    axes[-1][0].set_xlabel("time (s)")
    axes[-1][0].set_ylabel("mel band")
    fig.suptitle("Synthesised sounds: log-mel spectrograms", fontsize=10, y=1.02)
    fig.subplots_adjust(hspace=0.55)
    return save_figure(fig, path)


__all__ = ["SOURCES", "SynthSounds", "plot_examples", "synth_sounds"]
