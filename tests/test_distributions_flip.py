"""instaaug.distributions.flip: the Bernoulli distribution of horizontal flips."""

from __future__ import annotations

import torch

from instaaug import FlipBernoulli


def test_flip_frequencies_match_their_probabilities():
    probs = torch.tensor([0.1, 0.5, 0.9])
    dist = FlipBernoulli(torch.logit(probs))
    draws = dist.sample((20000,), torch.Generator().manual_seed(0))[..., 0]
    se = torch.sqrt(probs * (1 - probs) / 20000)
    assert ((draws.mean(0) - probs).abs() < 5 * se).all()
    p = probs
    torch.testing.assert_close(dist.entropy(), -(p * p.log() + (1 - p) * (1 - p).log()))
