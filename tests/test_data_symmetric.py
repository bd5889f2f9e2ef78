"""instaaug.data.symmetric: shapes with exactly their rotational symmetry and their label-preserving arcs."""

from __future__ import annotations

import math

import pytest
import torch

from instaaug.data.symmetric import HELD_OUT_SHAPES, SHAPES, TRAIN_SHAPES, draw, invariance_mask, symmetric_shapes
from instaaug.transforms import TransformStack


@pytest.mark.parametrize("index", range(len(SHAPES)))
def test_shapes_have_exactly_their_symmetry(index):
    shape = SHAPES[index]
    period = 2 * math.pi / shape.order
    base = draw(torch.tensor([index]), torch.tensor([0.0]), torch.tensor([0.9]))
    same = draw(torch.tensor([index]), torch.tensor([period]), torch.tensor([0.9]))
    half = draw(torch.tensor([index]), torch.tensor([period / 2]), torch.tensor([0.9]))
    assert float((same - base).abs().mean()) < 0.005  # invariant to its period
    assert float((half - base).abs().mean()) > 0.05  # not to half of it: "up" and "down" differ


def test_rotating_by_a_label_preserving_angle_undoes_the_tilt():
    """Planted geometry: the augmenter's rotation by −a brings an image at tilt a back to the upright drawing, and
    −a (and −a + kP) is inside the true set while −a + P/2 is not."""
    stack = TransformStack(("rotation",))
    for index in TRAIN_SHAPES:
        tilt = torch.tensor([0.3])
        tilted = draw(torch.tensor([index]), tilt, torch.tensor([0.9]))
        upright = draw(torch.tensor([index]), torch.tensor([0.0]), torch.tensor([0.9]))
        assert float((stack(tilted, -tilt[:, None]) - upright).abs().mean()) < 0.02
        order = torch.tensor([SHAPES[index].order])
        period = 2 * math.pi / SHAPES[index].order
        angles = torch.tensor([-0.3, -0.3 + period - 2 * math.pi * (period == 2 * math.pi), -0.3 + period / 2])
        assert invariance_mask(angles, order, tilt)[0].tolist() == [True, True, False]


def test_the_true_sets_are_n_arcs_of_half_the_circle():
    data = symmetric_shapes(300, TRAIN_SHAPES + HELD_OUT_SHAPES, seed=1)
    angles = (torch.arange(3600) + 0.5) / 3600 * 2 * math.pi - math.pi
    mask = invariance_mask(angles, data.order, data.tilt)
    torch.testing.assert_close(mask.float().mean(1), torch.full((300,), 0.5), atol=2e-3, rtol=0)
    arcs = (mask & ~mask.roll(1, dims=1)).sum(1)  # rising edges on the circle
    assert torch.equal(arcs, data.order)
    assert set(data.labels.tolist()) <= set(range(12)) and data.images.shape == (300, 1, 32, 32)
