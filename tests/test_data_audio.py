"""The synthesised sounds: deterministic, and their targets (pitch, onset, loudness, source) are what they claim."""

from __future__ import annotations

import math

import numpy as np
import torch

from instaaug.data.audio import F0_MIN, SOURCES, synth_sounds


def test_synthesised_sounds_are_deterministic_and_their_targets_are_what_they_claim():
    sr = 8000
    data = synth_sounds(60, seed=3, sample_rate=sr)
    again = synth_sounds(60, seed=3, sample_rate=sr)
    assert torch.equal(data.waveforms, again.waveforms) and torch.equal(data.pitch, again.pitch)
    assert not torch.equal(synth_sounds(60, seed=4).waveforms, data.waveforms)
    assert data.waveforms.shape == (60, sr) and data.waveforms.dtype == torch.float32
    assert torch.bincount(data.source, minlength=len(SOURCES)).tolist() == [12] * len(SOURCES)
    for j in range(60):
        w = data.waveforms[j].double().numpy()
        onset, level = float(data.onset[j]), float(data.loudness[j])
        # pitch: the strongest partial is the fundamental.
        spectrum = np.abs(np.fft.rfft(w, 4 * sr))
        f0 = np.argmax(spectrum) / 4
        assert abs(math.log2(f0 / F0_MIN) - float(data.pitch[j])) < 0.02, (j, f0)
        # onset: the first 5 ms window louder than 10× the background.
        rms = np.sqrt((w[: sr // 200 * 200].reshape(200, -1) ** 2).mean(1))
        start = np.argmax(rms > 10 * 10 ** (-60 / 20)) * 0.005
        assert abs(start - onset) < 0.02, (j, start, onset)
        # loudness: the event's RMS over its first 0.25 s (sustained sources) is the level, to within the
        # attack and release ramps.
        if SOURCES[int(data.source[j])] in ("flute", "string", "clarinet"):
            seg = w[int(onset * sr) : int((onset + 0.25) * sr)]
            assert abs(20 * math.log10(np.sqrt((seg**2).mean())) - level) < 2.5
        # source: a clarinet has no even harmonics, a string has them at about half the fundamental.
        k = round(f0 * 4)
        second = spectrum[2 * k - 8 : 2 * k + 8].max() / spectrum[k]
        if SOURCES[int(data.source[j])] == "clarinet":
            assert second < 0.05
        if SOURCES[int(data.source[j])] == "string":
            assert 0.3 < second < 0.8
