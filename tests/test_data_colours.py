"""instaaug.data.colours: the colour dataset, whose fruit classes differ only in hue and whose shape classes span
the hue wheel."""

from __future__ import annotations

import math

import pytest
import torch
from kornia.color import rgb_to_hsv

from instaaug.data import colours


def object_hues(images: torch.Tensor) -> torch.Tensor:
    """The circular mean hue (turns, in [0, 1)) of the object pixels of each image (N, 3, H, W) → (N,)."""
    hsv = rgb_to_hsv(images)
    angle, value = hsv[:, 0], hsv[:, 2]
    mask = (value > 0.3).float()  # object pixels; the black background has no hue
    c = (torch.cos(angle) * mask).sum((1, 2))
    s = (torch.sin(angle) * mask).sum((1, 2))
    return (torch.atan2(s, c) / (2 * math.pi)).remainder(1.0)


def circular_distance(a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor:
    """Distance in turns on the colour wheel (in [0, 0.5])."""
    d = torch.as_tensor(a - b).remainder(1.0)
    return torch.minimum(d, 1 - d)


def shape_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (N, 3, H, W): the object's area in pixels and its elongation (ratio of principal axes)."""
    mask = (images.amax(1) > 0.05).float()
    h, w = mask.shape[1:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    area = mask.sum((1, 2))
    mx = (mask * xs).sum((1, 2)) / area
    my = (mask * ys).sum((1, 2)) / area
    dx, dy = xs - mx[:, None, None], ys - my[:, None, None]
    cov = (
        torch.stack(
            [
                torch.stack([(mask * dx * dx).sum((1, 2)), (mask * dx * dy).sum((1, 2))], -1),
                torch.stack([(mask * dx * dy).sum((1, 2)), (mask * dy * dy).sum((1, 2))], -1),
            ],
            -2,
        )
        / area[:, None, None]
    )
    eig = torch.linalg.eigvalsh(cov)
    return area, (eig[:, 1] / eig[:, 0]).sqrt()


@pytest.fixture(scope="module")
def data() -> colours.ColourData:
    return colours.make_colour_dataset(1800, seed=3)


def test_dataset_shapes_dtypes_and_range(data):
    assert data.images.shape == (1800, 3, 32, 32)
    assert data.images.dtype == torch.float32
    assert data.labels.shape == (1800,) and data.labels.dtype == torch.int64
    assert float(data.images.min()) >= 0.0 and float(data.images.max()) <= 1.0
    assert len(data) == 1800
    counts = torch.bincount(data.labels, minlength=colours.NUM_CLASSES)
    assert counts.tolist() == [200] * colours.NUM_CLASSES
    assert set(colours.SHAPE_DEFINED) | set(colours.HUE_DEFINED) == set(range(colours.NUM_CLASSES))
    assert not set(colours.SHAPE_DEFINED) & set(colours.HUE_DEFINED)
    assert len(colours.CLASS_NAMES) == colours.NUM_CLASSES
    # Corners are background: black.
    assert float(data.images[:, :, 0, 0].abs().max()) == 0.0


def test_dataset_is_deterministic_for_a_seed():
    a = colours.make_colour_dataset(200, seed=7)
    b = colours.make_colour_dataset(200, seed=7)
    c = colours.make_colour_dataset(200, seed=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_dataset_other_sizes_and_bad_arguments():
    small = colours.make_colour_dataset(10, seed=0, size=16)
    assert small.images.shape == (10, 3, 16, 16)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n must be"):
            colours.make_colour_dataset(bad)
    with pytest.raises(ValueError, match="size must be"):
        colours.make_colour_dataset(10, size=8)


def test_hue_defined_classes_differ_only_in_hue(data):
    hues = object_hues(data.images)
    # The hue recovered from the pixels is the generating hue.
    assert float(circular_distance(hues, data.hue).max()) < 0.01
    fruit = torch.isin(data.labels, torch.tensor(colours.HUE_DEFINED))
    assert bool((data.shape[fruit] == colours.FRUIT).all())
    centres = {}
    for k in colours.HUE_DEFINED:
        h = hues[data.labels == k]
        centre = colours.FRUIT_HUES[k]
        # Every example lies within the jitter of its class centre ...
        assert float(circular_distance(h, centre).max()) <= colours.HUE_JITTER + 0.01
        centres[k] = centre
    # ... and the class centres are well apart, all round the wheel: a hue shift of more than about half the
    # spacing moves any fruit towards another fruit's hue.
    for a in colours.HUE_DEFINED:
        gaps = [float(circular_distance(centres[a], centres[b])) for b in colours.HUE_DEFINED if b != a]
        assert min(gaps) == pytest.approx(colours.FRUIT_SPACING, abs=1e-6)
    assert colours.FRUIT_SPACING * len(colours.HUE_DEFINED) == pytest.approx(1.0)
    # The same shape distribution in every fruit class: area and elongation agree across classes.
    area, elongation = shape_statistics(data.images)
    area_means = [float(area[data.labels == k].mean()) for k in colours.HUE_DEFINED]
    elong_means = [float(elongation[data.labels == k].mean()) for k in colours.HUE_DEFINED]
    assert max(area_means) - min(area_means) < 0.08 * min(area_means)
    assert max(elong_means) - min(elong_means) < 0.08
    # Saturation and value are drawn alike for every class; they carry no label information.
    for k in range(colours.NUM_CLASSES):
        s, v = data.saturation[data.labels == k], data.value[data.labels == k]
        assert colours.SATURATION_RANGE[0] <= float(s.min()) and float(s.max()) <= colours.SATURATION_RANGE[1]
        assert colours.VALUE_RANGE[0] <= float(v.min()) and float(v.max()) <= colours.VALUE_RANGE[1]


def test_shape_defined_classes_span_the_hue_wheel(data):
    hues = object_hues(data.images)
    _, elongation = shape_statistics(data.images)
    for k in colours.SHAPE_DEFINED:
        h = hues[data.labels == k]
        bins = torch.bincount((h * 6).long().clamp(max=5), minlength=6)
        assert int(bins.min()) >= 0.08 * h.numel(), f"class {colours.CLASS_NAMES[k]} misses part of the wheel"
        # The mean resultant length of a uniform hue is near 0.
        resultant = torch.stack([torch.cos(2 * math.pi * h).mean(), torch.sin(2 * math.pi * h).mean()]).norm()
        assert float(resultant) < 0.2
    # Circles are round, fruits elongated: the shapes tell the two groups apart.
    circle = float(elongation[data.labels == 0].mean())
    fruit = float(elongation[torch.isin(data.labels, torch.tensor(colours.HUE_DEFINED))].mean())
    assert circle < 1.1 < 1.4 < fruit
