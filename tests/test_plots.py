"""instaaug.plots: the figures written by the experiments."""

from __future__ import annotations

import pytest
import torch

from instaaug.data import colours
from instaaug.experiments import colour
from instaaug.plots import plot_colour_ranges


def test_plot_colour_ranges(tmp_path):
    x = colours.make_colour_dataset(3, seed=0).images
    low = torch.tensor([[-0.3, -0.8, -0.4], [-0.05, -0.5, -0.2], [-0.01, -0.1, -0.1]])
    high = torch.tensor([[0.4, 0.9, 0.6], [0.05, 0.4, 1.0], [0.02, 0.1, 0.1]])
    path = plot_colour_ranges(
        x,
        low,
        high,
        colour.TRANSFORMS,
        tmp_path / "ranges.png",
        labels=["a", "b", "c"],
        reference=(low[0], high[0]),
        title="test",
    )
    assert path.is_file() and path.stat().st_size > 1000
    with pytest.raises(ValueError, match="low and high"):
        plot_colour_ranges(x, low[:2], high[:2], colour.TRANSFORMS, tmp_path / "bad.png")
