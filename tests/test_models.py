"""instaaug.models: the receptive-field geometry of the backbones' stages, by hand and measured numerically."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from instaaug.models import ConvBackbone, PreActResNetBackbone, StageGeometry, trace_geometry


def test_conv_backbone_stage_geometry_values():
    geometries = ConvBackbone(3, 4, 4).stage_geometry()
    expected = [(4, 2, 0.5), (10, 4, 1.5), (22, 8, 3.5), (46, 16, 7.5)]
    assert [(g.receptive_field, g.jump, g.start) for g in geometries] == [
        ((rf, rf), (j, j), (s, s)) for rf, j, s in expected
    ]


def test_trace_geometry_keeps_the_axes_apart():
    # Kernel (3, 5), stride (1, 2), padding (1, 0), dilation (1, 2): axis 0 is y (height), axis 1 is x.
    layers = [nn.Conv2d(1, 1, (3, 5), stride=(1, 2), padding=(1, 0), dilation=(1, 2)), nn.ReLU(), nn.MaxPool2d(2)]
    g = trace_geometry(layers)
    # y: conv rf 3, start 0, jump 1; pool rf 4, start 0.5, jump 2.
    # x: conv span 8: rf 9, start 4, jump 2; pool rf 11, start 5, jump 4.
    assert g == StageGeometry((4.0, 11.0), (2.0, 4.0), (0.5, 5.0))
    chained = trace_geometry(layers[2:], trace_geometry(layers[:1]))
    assert chained == g


def window(geometry: StageGeometry, unit: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(H, W) mask of the input pixels in the receptive field of the unit at cell ``unit``."""
    mask = torch.zeros(size, dtype=torch.bool)
    bounds = []
    for axis in range(2):
        centre = geometry.start[axis] + unit[axis] * geometry.jump[axis]
        half = (geometry.receptive_field[axis] - 1) / 2
        lo, hi = centre - half, centre + half
        assert lo == int(lo) and hi == int(hi) and lo >= 0 and hi < size[axis], "choose an interior unit"
        bounds.append(slice(int(lo), int(hi) + 1))
    mask[bounds[0], bounds[1]] = True
    return mask


def gradient_support(backbone: nn.Module, stage: int, size: tuple[int, int], unit: tuple[int, int], batch: int):
    """(batch, H, W) masks of the input pixels on which one unit (summed over channels) of a stage depends."""
    x = torch.rand(batch, 1, *size, dtype=torch.float64, requires_grad=True)
    backbone(x)[stage][:, :, unit[0], unit[1]].sum().backward()
    return x.grad[:, 0] != 0


# Per stage: an input size and an interior unit (away from the padding), non-square to tell the axes apart.
PREACT_CASES = [((24, 26), (12, 10)), ((40, 44), (10, 11)), ((72, 80), (9, 10)), ((114, 120), (7, 8))]


CONV_CASES = [((24, 26), (5, 6)), ((40, 44), (5, 6)), ((72, 80), (4, 5)), ((96, 112), (3, 3))]


@pytest.mark.parametrize("stage", range(4))
def test_preact_resnet_geometry_equals_the_numerical_receptive_field(stage):
    # Random weights and inputs, no normalisation: every path through the dense convolutions carries gradient,
    # so the support of the gradient is the receptive field (width 16 makes ReLU-dead holes vanishingly rare).
    backbone = PreActResNetBackbone(1, 16, norm="none").double()
    size, unit = PREACT_CASES[stage]
    support = gradient_support(backbone, stage, size, unit, batch=2)
    expected = window(backbone.stage_geometry()[stage], unit, size)
    for s in support:
        assert torch.equal(s, expected)


@pytest.mark.parametrize("stage", range(4))
def test_conv_backbone_geometry_contains_the_numerical_receptive_field(stage):
    # Max-pools route the gradient to one input of each window, so one input's support is a subset of the
    # receptive field; over many random inputs the routes cover all of it.
    backbone = ConvBackbone(1, 4, 4, norm="none").double()
    size, unit = CONV_CASES[stage]
    support = gradient_support(backbone, stage, size, unit, batch=12)
    expected = window(backbone.stage_geometry()[stage], unit, size)
    assert not (support & ~expected).any()
    assert torch.equal(support.any(0), expected)
