"""The log-mel front end: the mel scale, the filterbank and the power spectrogram against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from instaaug.audio import LogMel, MelConfig, hz_to_mel, mel_filterbank, mel_to_hz, power_spectrogram


def test_mel_scale_and_filterbank_match_known_values():
    # Slaney's scale (librosa's default): 1 kHz is 15 mels, 3 mels per 200 Hz below, log step ln(6.4)/27 above.
    assert float(hz_to_mel(1000.0)) == pytest.approx(15.0)
    assert float(hz_to_mel(440.0)) == pytest.approx(6.6)
    assert float(hz_to_mel(2000.0)) == pytest.approx(15 + 27 * math.log(2) / math.log(6.4))
    assert float(hz_to_mel(1000.0, htk=True)) == pytest.approx(999.9855, abs=1e-3)
    freqs = np.array([0.0, 123.0, 999.0, 1001.0, 3000.0, 7999.0])
    for htk in (False, True):
        assert np.allclose(mel_to_hz(hz_to_mel(freqs, htk), htk), freqs)
    fb = mel_filterbank(16000, 1024, 128)
    assert fb.shape == (128, 513) and fb.dtype == torch.float32 and bool((fb >= 0).all())
    # Slaney normalisation: every triangle has unit area in Hz (up to the bins' sampling of narrow ones).
    area = fb.sum(1) * 16000 / 1024
    assert torch.allclose(area[70:], torch.ones(58), atol=0.02)
    # A sine lands in the band whose centre is nearest its frequency.
    mel = LogMel(MelConfig(sample_rate=8000, n_fft=512, hop=256, n_mels=40))
    t = torch.arange(8000) / 8000
    spec = mel.waveform(torch.sin(2 * math.pi * 1000 * t)[None])
    centres = mel_to_hz(np.linspace(hz_to_mel(30.0), hz_to_mel(4000.0), 42))[1:-1]
    assert int(spec[0, 0].mean(-1).argmax()) == int(np.abs(centres - 1000).argmin())
    assert spec.shape == (1, 1, 40, 32)
    with pytest.raises(ValueError, match="fmin < fmax"):
        mel_filterbank(8000, 512, 40, fmin=5000.0)


def test_power_spectrogram_of_a_sine_has_the_known_peak():
    # A sine of amplitude a on bin k of a periodic Hann window of n_fft samples (window sum n_fft / 2) has
    # |STFT|² = (a · n_fft / 4)² at bin k in every full frame, and (a · n_fft / 8)² at the neighbouring bins.
    t = torch.arange(4096, dtype=torch.float64)
    x = 0.5 * torch.sin(2 * math.pi * 16 / 256 * t)[None]
    p = power_spectrogram(x, 256, 64)
    assert p.shape == (1, 1, 129, 65) and p.dtype == torch.float32
    middle = p[0, 0, :, 8:-8]
    assert torch.allclose(middle[16], torch.full_like(middle[16], 32.0**2), rtol=1e-4)
    assert torch.allclose(middle[17], torch.full_like(middle[17], 16.0**2), rtol=1e-4)
    assert float(middle[20:].max()) < 1e-6
