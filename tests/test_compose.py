"""instaaug.compose: a learned augmenter followed by a fixed one."""

from __future__ import annotations

import pytest
import torch

from instaaug import InstaAug, RandomAugment
from instaaug.compose import Then


def test_then_passes_learned_views_through_a_fixed_augmenter():
    torch.manual_seed(0)
    learned = InstaAug(("crop",), in_channels=1, n_copies=2, output_size=(16, 16), phi_size=(48, 48), depth=4, width=4)
    fixed = RandomAugment(("value", "flip"), {"value": 0.5, "flip": 0.5}, in_channels=1)
    aug = Then(learned, fixed)
    x = torch.rand(3, 1, 48, 48)
    g = torch.Generator().manual_seed(0)
    out = aug(x, generator=g)
    g = torch.Generator().manual_seed(0)
    crop_only = learned(x, generator=g)
    assert out.images.shape == (6, 1, 16, 16) and aug.n_copies == 2
    assert torch.equal(out.log_prob, crop_only.log_prob) and out.theta is None  # flips moved the pixels again
    assert not torch.allclose(out.images, crop_only.images)
    with pytest.raises(TypeError, match="two augmenters"):
        Then(learned, torch.nn.Identity())
    with pytest.raises(ValueError, match="fixed"):
        Then(learned, InstaAug(("value",), in_channels=1))
