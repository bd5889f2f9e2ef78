"""A procedurally generated colour dataset: some classes are defined by shape, others only by hue.

Every image is 32×32 RGB (by default) with one filled, anti-aliased object on a black background. Position,
size and orientation are jittered per image; saturation and value are drawn from the same moderate range for
every class, so they never carry the label.

=====  ===========  ==========  ========================================================================
label  name         defined by  what an example looks like
=====  ===========  ==========  ========================================================================
0      circle       shape       a disc; hue uniform on the whole colour wheel
1      square       shape       a square (tilted up to ±20°); hue uniform on the whole wheel
2      triangle     shape       an equilateral triangle, apex up or down (tilted up to ±20°); any hue
3      cross        shape       a plus sign (tilted up to ±20°); any hue
4      lemon        hue         the shared "fruit" (an ellipse, aspect 1.7, tilted up to ±30°), hue 0.16
5      lime         hue         the same fruit, hue 0.36 (green)
6      blueberry    hue         the same fruit, hue 0.56 (azure)
7      plum         hue         the same fruit, hue 0.76 (violet)
8      cherry       hue         the same fruit, hue 0.96 (red)
=====  ===========  ==========  ========================================================================

Hues are in turns of the colour wheel (0 = red, 1/3 = green, 2/3 = blue), the unit of the ``hue`` transform.
The five fruit classes share one shape distribution and differ only in hue: their centres are spaced evenly,
``FRUIT_SPACING`` = 0.2 turns apart around the whole wheel, and each example's hue is jittered by at most
``HUE_JITTER`` around its centre. So a hue shift of more than about half the spacing (≈ 0.1 turns) in *either*
direction moves a fruit towards a neighbouring fruit's hue and changes its label, while the label of a
shape-defined class survives any hue shift. (With the fruits bunched on one side of the wheel, a shift away from
the others would reach hues no fruit has, and a wide one-sided hue range would cost nothing.) A learned,
input-dependent augmenter should therefore give the shape-defined classes wide hue ranges and the fruits narrow
ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from kornia.color import hsv_to_rgb

#: Class names, indexed by label.
CLASS_NAMES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "lemon",
    "lime",
    "blueberry",
    "plum",
    "cherry",
)
#: Labels of the classes defined by shape (any hue).
SHAPE_DEFINED: tuple[int, ...] = (0, 1, 2, 3)
#: Labels of the classes defined by hue only (one shared shape, the fruit).
HUE_DEFINED: tuple[int, ...] = (4, 5, 6, 7, 8)
#: Hue distance (turns) between the centres of neighbouring fruits.
FRUIT_SPACING: float = 0.2
#: Centre hue (turns) of each hue-defined class.
FRUIT_HUES: dict[int, float] = {k: round(0.16 + FRUIT_SPACING * i, 6) for i, k in enumerate(HUE_DEFINED)}
#: Half-width (turns) of the uniform hue jitter of the hue-defined classes.
HUE_JITTER: float = 0.015
#: Saturation and value ranges, the same for every class.
SATURATION_RANGE: tuple[float, float] = (0.55, 0.95)
VALUE_RANGE: tuple[float, float] = (0.6, 1.0)
NUM_CLASSES = len(CLASS_NAMES)

# Shape ids used by the renderer; the fruits all share FRUIT.
CIRCLE, SQUARE, TRIANGLE, CROSS, FRUIT = range(5)
_FRUIT_ASPECT = 1.7


@dataclass(frozen=True)
class ColourData:
    """A generated dataset.

    Attributes:
        images: (N, 3, H, W) float32 in [0, 1].
        labels: (N,) int64 class labels (see ``CLASS_NAMES``).
        hue: (N,) the object's hue in turns, in [0, 1).
        saturation: (N,) the object's HSV saturation.
        value: (N,) the object's HSV value.
        shape: (N,) int64 shape ids (circle 0, square 1, triangle 2, cross 3, fruit 4).
    """

    images: torch.Tensor
    labels: torch.Tensor
    hue: torch.Tensor
    saturation: torch.Tensor
    value: torch.Tensor
    shape: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _signed_distance(shape: int, u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance (pixels, < 0 inside) to a shape of size r (n, 1, 1) at object coordinates
    u, v (n, H, W) (already centred and rotated)."""
    if shape == CIRCLE:
        return torch.sqrt(u**2 + v**2) - r
    if shape == SQUARE:
        half = 0.85 * r  # the same area as a disc of radius ~0.96 r: similar ink for every shape
        return torch.maximum(u.abs(), v.abs()) - half
    if shape == TRIANGLE:
        # An equilateral triangle as the intersection of three half-planes at distance 0.6 r from the centre.
        side = torch.stack([u * math.cos(a) + v * math.sin(a) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)])
        return side.amax(0) - 0.6 * r
    if shape == CROSS:
        long, thick = 1.05 * r, 0.38 * r
        bar_h = torch.maximum(u.abs() - long, v.abs() - thick)
        bar_v = torch.maximum(u.abs() - thick, v.abs() - long)
        return torch.minimum(bar_h, bar_v)
    # FRUIT: an ellipse; the normalised radial distance times the minor semi-axis approximates the distance.
    a = 1.15 * r
    b = a / _FRUIT_ASPECT
    return (torch.sqrt((u / a) ** 2 + (v / b) ** 2) - 1) * b


def render(
    shape: torch.Tensor,
    rgb: torch.Tensor,
    centre: torch.Tensor,
    radius: torch.Tensor,
    angle: torch.Tensor,
    size: int = 32,
) -> torch.Tensor:
    """Draw one anti-aliased object per image on black.

    Args:
        shape: (N,) int64 shape ids.
        rgb: (N, 3) object colours in [0, 1].
        centre: (N, 2) object centres (x, y) in pixels.
        radius: (N,) object sizes in pixels.
        angle: (N,) orientations in radians.
        size: image side H = W.
    Returns:
        (N, 3, size, size) float32 images in [0, 1].
    """
    n = shape.shape[0]
    coords = torch.arange(size, dtype=torch.float32)
    px, py = coords[None, None, :], coords[None, :, None]
    dx, dy = px - centre[:, 0, None, None], py - centre[:, 1, None, None]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    r = radius[:, None, None]
    sdf = torch.empty(n, size, size)
    for s in shape.unique().tolist():
        idx = shape == s
        sdf[idx] = _signed_distance(s, u[idx], v[idx], r[idx])
    # Coverage of a pixel by the shape, linear across a one-pixel-wide edge.
    coverage = (0.5 - sdf).clamp(0, 1)
    return (coverage[:, None] * rgb[:, :, None, None]).clamp(0, 1)


def make_colour_dataset(n: int, seed: int = 0, size: int = 32) -> ColourData:
    """Generate ``n`` images with balanced classes, deterministically from ``seed``.

    Args:
        n: the number of images (N ≥ 1); labels cycle through the classes before shuffling, so every class has
            ⌊N/9⌋ or ⌈N/9⌉ examples.
        seed: the seed of the generator; the same (n, seed, size) always gives the same data.
        size: the image side in pixels (≥ 16).
    Returns:
        a ``ColourData`` with images (N, 3, size, size) float32 in [0, 1] and labels (N,) int64.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int ≥ 1, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int ≥ 16, got {size!r}")
    g = torch.Generator().manual_seed(int(seed))
    labels = (torch.arange(n) % NUM_CLASSES)[torch.randperm(n, generator=g)]
    is_fruit = labels >= HUE_DEFINED[0]
    shape = torch.where(is_fruit, torch.full_like(labels, FRUIT), labels)

    fruit_centres = torch.tensor([FRUIT_HUES.get(k, 0.0) for k in range(NUM_CLASSES)])[labels]
    jitter = _uniform(n, -HUE_JITTER, HUE_JITTER, g)
    hue = torch.where(is_fruit, fruit_centres + jitter, torch.rand(n, generator=g)).remainder(1.0)
    saturation = _uniform(n, *SATURATION_RANGE, g)
    value = _uniform(n, *VALUE_RANGE, g)
    hsv = torch.stack((2 * math.pi * hue, saturation, value), dim=1)[:, :, None, None]
    rgb = hsv_to_rgb(hsv)[:, :, 0, 0].clamp(0, 1)

    scale = size / 32
    radius = _uniform(n, 7.0, 10.0, g) * scale
    centre = (size - 1) / 2 + _uniform(2 * n, -4.0, 4.0, g).view(n, 2) * scale
    tilt = torch.where(is_fruit, _uniform(n, -0.5, 0.5, g), _uniform(n, -0.35, 0.35, g))
    # Triangles point up or down (a half turn): the class is the shape, not one orientation of it.
    flip = torch.randint(0, 2, (n,), generator=g) * math.pi
    angle = tilt + torch.where(shape == TRIANGLE, flip, torch.zeros(n))
    images = render(shape, rgb, centre, radius, angle, size)
    return ColourData(images, labels, hue, saturation, value, shape)


def class_groups() -> dict[str, tuple[int, ...]]:
    """The two class groups by label: ``{"shape_defined": (0, 1, 2, 3), "hue_defined": (4, 5, 6, 7, 8)}``."""
    return {"shape_defined": SHAPE_DEFINED, "hue_defined": HUE_DEFINED}
