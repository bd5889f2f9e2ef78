"""Amortised pre-training: SimCLR and MoCo over the corners, one corner per step, and its config checks."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import structured_images, tiny_resnet
from instaaug.amortised import CornerSampler, PretrainConfig, audio_space, image_space, pretrain


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_pretrain_runs_both_objectives_and_draws_one_corner_per_step(method):
    space = image_space()
    net = tiny_resnet()
    x = structured_images(24, 3, 8)
    before = [p.clone() for p in net.parameters()]
    config = PretrainConfig(method=method, epochs=2, batch_size=8, queue_size=16, proj_dim=8, proj_hidden=8)
    result = pretrain(net, space, x, config)
    assert len(result.history) == 2 and all(math.isfinite(h["loss"]) for h in result.history)
    steps = [CornerSampler(space, 0).corner(t) for t in range(6)]
    counts = result.history[0]["corner_steps"]
    assert counts == {key: steps[:3].count(c) for c, key in enumerate(space.corner_keys())}
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert not net.training
    if method == "moco":  # each step enqueued its 8 keys into its own corner's queue of 16
        expected = [8 * steps.count(c) % 16 for c in range(3)]
        assert result.queues is not None and result.queues.pointers.tolist() == expected


def test_pretrain_rejects_mismatched_space_and_config():
    with pytest.raises(ValueError, match="differ from the backbone"):
        pretrain(tiny_resnet(), audio_space(), torch.rand(4, 3, 8, 8))
    with pytest.raises(ValueError, match="method must be one of"):
        PretrainConfig(method="byol")
    with pytest.raises(ValueError, match="batch_size must be ≥ 2"):
        PretrainConfig(batch_size=1)
