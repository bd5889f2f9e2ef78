"""The invariance space: groups, corners and their meaning, corner views, the per-step corner sequence, and the
image, audio and sound spaces."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import harmonic_spectra, structured_images
from instaaug.amortised import CornerSampler, InvarianceSpace, audio_space, image_space
from instaaug.amortised.space import get_group, sound_space
from instaaug.audio import MelConfig


def test_space_defaults_meaning_and_corners():
    space = image_space()
    assert space.names == ("spatial", "appearance") and space.dim == 2
    assert space.corner_keys() == ["0,1", "1,0", "1,1"]  # the all-off corner is a degenerate contrastive task
    meaning = space.describe()
    assert meaning["spatial"]["ops"] == ["crop", "flip", "translation"]
    assert meaning["appearance"]["ops"] == ["colour_jitter", "greyscale", "blur"]
    five = InvarianceSpace(("spatial", "appearance", "time", "frequency", "gain"), min_active=2)
    assert len(five.corners) == 26  # the paper's SimCLR setting: M = 5, corners with ≥ 2 groups on
    assert InvarianceSpace(("spatial", "appearance"), corners=[(1, 1)]).corner_keys() == ["1,1"]


def test_space_rejects_bad_groups_and_corners():
    with pytest.raises(ValueError, match="unknown augmentation group 'rotate'"):
        InvarianceSpace(("spatial", "rotate"))
    with pytest.raises(ValueError, match="must not repeat"):
        InvarianceSpace(("spatial", "spatial"))
    with pytest.raises(ValueError, match="every corner must be 2 values"):
        InvarianceSpace(("spatial", "appearance"), corners=[(1, 0, 1)])
    with pytest.raises(ValueError, match="every corner must be 2 values"):
        InvarianceSpace(("spatial", "appearance"), corners=[(1, 2)])


def test_views_apply_only_the_corners_groups():
    space = image_space()
    calls = []
    for group in space.groups:
        original = group.augment
        object.__setattr__(group, "augment", lambda v, g=None, o=original, n=group.name: calls.append(n) or o(v, g))
    sampler = CornerSampler(space)
    colour = torch.tensor([0.9, 0.3, 0.1])
    x = colour[None, :, None, None].expand(6, 3, 16, 16).contiguous()  # one uniform colour
    v1, v2 = sampler.views(x, space.corner_keys().index("1,0"), torch.Generator().manual_seed(0))
    assert calls == ["spatial"]  # the appearance views were not built
    assert v1.shape == v2.shape == x.shape
    # Spatial only: every pixel is the colour or a blend of it with the black padding; its hue never changes.
    for v in (v1, v2):
        pixels = v.permute(0, 2, 3, 1).reshape(-1, 3)
        lit = pixels[pixels.norm(dim=1) > 0.05]
        assert torch.allclose(F.normalize(lit, dim=1), F.normalize(colour, dim=0).expand_as(lit), atol=1e-4)
    calls.clear()
    v1, _ = sampler.views(x, space.corner_keys().index("0,1"), torch.Generator().manual_seed(0))
    assert calls == ["appearance"]
    assert (v1 - x).abs().amax() > 0.2


def test_appearance_views_keep_geometry_and_change_colour():
    space = image_space()
    x = structured_images(32, 3, 16)
    v1, v2 = CornerSampler(space).views(x, space.corner_keys().index("0,1"), torch.Generator().manual_seed(1))
    assert v1.min() >= 0 and v1.max() <= 1
    # Hue shifts up to half a turn: the mean colour of the two views differs a lot for most images.
    assert (v1.mean((2, 3)) - v2.mean((2, 3))).abs().sum(1).median() > 0.05


def test_corner_sequence_is_the_same_on_every_process():
    space = image_space()
    torch.manual_seed(1)
    a = [CornerSampler(space, seed=7).corner(t) for t in range(50)]
    torch.manual_seed(2)  # another process: another global random state
    b = [CornerSampler(space, seed=7).corner(t) for t in range(50)]
    assert a == b and set(a) == {0, 1, 2}
    assert a != [CornerSampler(space, seed=8).corner(t) for t in range(50)]


def test_audio_groups_are_batched_and_do_what_they_say():
    space = audio_space()
    assert space.names == ("time", "frequency", "gain")
    x = torch.rand(8, 1, 12, 20) + 0.5
    g = torch.Generator().manual_seed(0)
    gain = space.groups[2].augment(x, g)
    ratio = gain / x
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-5)  # one factor per sample
    assert ratio.amin() >= math.exp(-0.7) - 1e-5 and ratio.amax() <= math.exp(0.7) + 1e-5
    freq = space.groups[1].augment(x, g)
    changed_rows = (freq != x).any(-1)[:, 0]  # (N, F): masked bins are whole rows
    assert ((freq != x).sum(-1)[:, 0] % 20 == 0).all() and changed_rows.sum(1).max() <= 3
    shifted = space.groups[0].augment(x, g)
    assert shifted.shape == x.shape


def test_groups_and_sound_space_make_log_mel_views():
    space = sound_space(MelConfig(sample_rate=8000, n_fft=128, hop=64, n_mels=16))
    assert space.names == ("timing", "pitch", "level") and len(space.corners) == 7
    x = harmonic_spectra(4)
    assert space.prepare(x).shape == (4, 1, 16, 24)
    for corner in range(len(space.corners)):
        assert space.augment(x, corner, torch.Generator().manual_seed(0)).shape == (4, 1, 16, 24)
    assert set(space.describe()["level"]["ops"]) == {"gain", "white_pink_brown_noise"}
    assert get_group("pitch").name == "pitch"
    with pytest.raises(TypeError, match="frontend must be callable"):
        type(space)(("timing",), frontend=3)
