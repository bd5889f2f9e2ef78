"""Baselines: RandomAugment's fixed ranges, NoAugment's identity, Augerino's symmetric global ranges."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import perturb_output, structured_images
from instaaug import Augerino, InstaAug, NoAugment, RandomAugment


def sample_params(aug, n: int = 500) -> torch.Tensor:
    return aug(structured_images(2, 3, 8), n_copies=n, generator=torch.Generator().manual_seed(0)).params


def test_random_augment_default_ranges_are_half_the_wide_entropy_width():
    aug = RandomAugment(("rotation", "translation", "hue"))
    dist = aug.distribution(structured_images(2, 3, 8))
    expected = torch.tensor([math.pi / 2, 0.1, 0.1, 0.15])
    torch.testing.assert_close(dist.high, expected.expand(2, -1))
    torch.testing.assert_close(dist.low, -expected.expand(2, -1))
    p = sample_params(aug)
    assert (p.abs() <= expected).all()
    assert (p.abs().amax(0) > 0.9 * expected).all()  # the whole range is used
    assert dist.names == ("rotation", "translate_x", "translate_y", "hue")


def test_random_augment_custom_half_width_and_interval():
    aug = RandomAugment(("rotation", "translation", "value"), ranges={"rotation": 0.5, "translation": (-0.1, 0.25)})
    p = sample_params(aug)
    rot, tx, ty, val = p.T
    assert rot.min() >= -0.5 and rot.max() <= 0.5 and rot.max() > 0.45 and rot.min() < -0.45
    for t in (tx, ty):
        assert t.min() >= -0.1 and t.max() <= 0.25 and t.min() < -0.09 and t.max() > 0.24
    assert val.abs().max() <= 0.4  # default: half of value's wide width 0.8
    assert p.mean(0)[1].item() == pytest.approx(0.075, abs=0.02)


def test_random_augment_is_the_same_for_every_input_and_has_no_parameters():
    aug = RandomAugment(("rotation",))
    dist = aug.distribution(structured_images(4, 3, 8))
    assert torch.equal(dist.low[0], dist.low[3])
    assert list(aug.parameters()) == []
    out = aug(structured_images(4, 3, 8))
    torch.testing.assert_close(out.entropy, torch.full((4,), math.log(math.pi)))


@pytest.mark.parametrize(
    ("ranges", "match"),
    [
        ({"rotation": 4.0}, "rotation"),
        ({"rotation": (-0.5, 3.5)}, "rotation"),
        ({"rotation": (0.5, -0.5)}, "rotation"),
        ({"hue": 0.1}, "hue"),
    ],
)
def test_random_augment_bad_ranges(ranges, match):
    with pytest.raises(ValueError, match=match):
        RandomAugment(("rotation", "translation"), ranges=ranges)


def test_no_augment_repeats_input_unchanged():
    x = structured_images(3, 3, 8)
    aug = NoAugment(n_copies=2)
    out = aug(x)
    assert torch.equal(out.images, x.repeat_interleave(2, dim=0))
    assert out.params.shape == (6, 0)
    assert (out.log_prob == 0).all() and (out.entropy == 0).all() and out.entropy.shape == (3,)
    assert aug(x, n_copies=4).images.shape == (12, 3, 8, 8)
    assert aug.distribution(x).names == ()
    grey = NoAugment(in_channels=1)(structured_images(2, 1, 8)).images
    assert grey.shape == (2, 1, 8, 8)


def test_augerino_is_symmetric_and_global():
    aug = perturb_output(Augerino(("rotation", "hue"), width=4, depth=2))
    assert aug.config.mode == "global" and aug.config.symmetric
    a = aug.distribution(structured_images(3, 3, 8, seed=0))
    b = aug.distribution(structured_images(3, 3, 8, seed=1))
    torch.testing.assert_close(a.low, -a.high, atol=0, rtol=0)
    torch.testing.assert_close(a.high, b.high, atol=0, rtol=0)
    torch.testing.assert_close(a.high[0], a.high[2], atol=0, rtol=0)
    assert aug.net.output.shape == (2,)  # one learned half-width per dimension


def test_augerino_refuses_other_modes_and_asymmetry():
    with pytest.raises(ValueError, match="mode"):
        Augerino(("rotation",), mode="instance")
    with pytest.raises(ValueError, match="symmetric"):
        Augerino(("rotation",), symmetric=False)


def test_augerino_save_load(tmp_path):
    aug = perturb_output(Augerino(("rotation",), width=4, depth=2))
    aug.save(tmp_path)
    loaded = InstaAug.load(tmp_path)
    x = structured_images(2, 3, 8)
    torch.testing.assert_close(loaded.distribution(x).high, aug.distribution(x).high, atol=0, rtol=0)
