"""Sound: the augmentations of power spectrograms, the log-mel front end, the synthesised dataset and the
amortised-audio experiment end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from instaaug.amortised.space import get_group, sound_space
from instaaug.audio import (
    LogMel,
    MelConfig,
    add_noise,
    fade_in_out,
    frequency_mask,
    gain,
    hz_to_mel,
    level_augment,
    mel_filterbank,
    mel_to_hz,
    pitch_augment,
    pitch_shift,
    power_spectrogram,
    time_mask,
    time_shift,
    time_stretch,
    timing_augment,
)
from instaaug.cli import main
from instaaug.data.audio import F0_MIN, SOURCES, synth_sounds
from instaaug.experiments import amortised_audio

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


def _spectra(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Power spectrograms (n, 1, 65, 24) of identical structure: a harmonic tone in frames 6–15 over a floor."""
    g = torch.Generator().manual_seed(seed)
    x = 1e-3 * (1 + torch.rand(1, 1, 65, 24, generator=g))
    x[0, 0, 8::8, 6:16] += 1.0
    return x.expand(n, -1, -1, -1).clone()


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_every_augmentation_is_the_identity_at_zero_strength(name):
    fn, zero = AUGMENTATIONS[name]
    x = _spectra(6) * torch.rand(6, 1, 1, 1)
    assert torch.allclose(fn(x, torch.Generator().manual_seed(0), **zero), x, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_augmentation_keeps_shape_dtype_device_and_is_random_per_sample(name, device, dtype):
    fn, _ = AUGMENTATIONS[name]
    x = _spectra(16).to(device=device, dtype=dtype)
    out = fn(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == dtype and out.device.type == device
    assert bool(torch.isfinite(out).all()) and bool((out >= 0).all())  # powers stay powers
    distinct = {tuple(row.flatten().tolist()) for row in out.cpu().float().round(decimals=5)}
    assert len(distinct) >= 8, f"{name}: identical inputs gave only {len(distinct)} distinct outputs of 16"
    again = fn(x, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # a generator fixes the draw


def test_augmentations_do_what_they_say():
    x = _spectra(32)
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


def test_groups_and_sound_space_make_log_mel_views():
    space = sound_space(MelConfig(sample_rate=8000, n_fft=128, hop=64, n_mels=16))
    assert space.names == ("timing", "pitch", "level") and len(space.corners) == 7
    x = _spectra(4)
    assert space.prepare(x).shape == (4, 1, 16, 24)
    for corner in range(len(space.corners)):
        assert space.augment(x, corner, torch.Generator().manual_seed(0)).shape == (4, 1, 16, 24)
    assert set(space.describe()["level"]["ops"]) == {"gain", "white_pink_brown_noise"}
    assert get_group("pitch").name == "pitch"
    with pytest.raises(TypeError, match="frontend must be callable"):
        type(space)(("timing",), frontend=3)


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


def test_quick_run_writes_the_promised_metrics(tmp_path):
    out = tmp_path / "run"
    argv = ["--set", "threads=1", "--set", "probe.readout_steps=30"]  # a nested key (at its --quick value)
    assert main(["run", "amortised-audio", "--quick", "--out", str(out), *argv]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["experiment"] == "amortised-audio" and metrics["config"]["threads"] == 1
    assert metrics["config"]["probe"]["readout_steps"] == 30 and metrics["config"]["pretrain"]["method"] == "simclr"
    (record,) = metrics["per_seed"]  # one seed: the means are its own numbers
    assert record["seed"] == 0 and record["tasks"]["pitch"] == {
        k: v for k, v in metrics["tasks"]["pitch"].items() if not k.endswith("_std") and k != "seeds"
    }
    assert (out / "amortised" / "config.json").is_file()  # one seed: the models directly under --out
    assert list(metrics["tasks"]) == ["source", "pitch", "onset", "loudness"]
    assert set(metrics["methods"]) == {"amortised", "ordinary", "ordinary_0,1,1", "ordinary_1,0,1", "ordinary_1,1,0"}
    for name, task in metrics["tasks"].items():
        assert task["metric"] == ("accuracy" if name == "source" else "r2")
        assert set(task["learned_i"]) == {"timing", "pitch", "level"}
        assert all(0 <= v <= 1 for v in task["learned_i"].values())
        assert list(task["score_corners"]) == ["0,0,1", "0,1,0", "0,1,1", "1,0,0", "1,0,1", "1,1,0", "1,1,1"]
        assert task["task_corner"] == amortised_audio.TASK_CORNERS[name]
        values = [task["score_learned"], task["score_grid"], task["score_ordinary"], task["score_task_specific"]]
        for value in [*values, *task["score_corners"].values()]:
            assert isinstance(value, float) and value <= 1
    assert (out / "amortised_audio_i.png").stat().st_size > 5_000
    assert (out / "audio_examples.png").stat().st_size > 5_000


def test_config_rejects_bad_settings(tmp_path, capsys):
    with pytest.raises(ValueError, match="tasks must be a non-empty subset"):
        amortised_audio.Config(tasks=("source", "timbre"))
    with pytest.raises(ValueError, match="n_mels must be an int"):
        amortised_audio.Config(n_mels=0)
    with pytest.raises(ValueError, match="n must be an int"):
        synth_sounds(0, seed=0)
    assert main(["run", "amortised-audio", "--quick", "--out", str(tmp_path), "--data", "x.npz"]) == 2
    assert "built-in synthesised sounds only" in capsys.readouterr().err
