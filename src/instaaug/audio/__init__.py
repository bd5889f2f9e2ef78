"""Sound: log-mel spectrograms computed in torch, and augmentations that act on sound (batched, per sample).

``features`` turns waveforms into STFT power spectrograms and those into log-mel spectrograms; ``augment`` holds
the augmentations of power spectrograms behind the amortised experiment's ``timing``, ``pitch`` and ``level``
groups (see ``instaaug.amortised.space``).
"""

from .augment import (
    NOISE_COLOURS,
    add_noise,
    background,
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
from .features import LogMel, MelConfig, hz_to_mel, mel_filterbank, mel_to_hz, power_spectrogram

__all__ = [
    "NOISE_COLOURS",
    "LogMel",
    "MelConfig",
    "add_noise",
    "background",
    "fade_in_out",
    "frequency_mask",
    "gain",
    "hz_to_mel",
    "level_augment",
    "mel_filterbank",
    "mel_to_hz",
    "pitch_augment",
    "pitch_shift",
    "power_spectrogram",
    "time_mask",
    "time_shift",
    "time_stretch",
    "timing_augment",
]
