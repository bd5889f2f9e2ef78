"""Shapes with 1-, 2- and 3-fold rotational symmetry, each "up" or "down": invariances that are unions of arcs.

A shape with n-fold symmetry looks the same after a rotation by its period P = 2π/n. Each class is a shape in one of
two orientations within that period: ``up`` (tilt a ~ U[−P/8, P/8]) or ``down`` (tilt P/2 + a). A rotation r keeps
the label of an image at tilt a exactly when a + r stays within ±P/4 of an "up" pose, modulo P: the label-preserving
rotations are n arcs of width P/2 = π/n centred at −a + kP (k = 0 … n−1), together half the circle whatever n. For
n = 1 this is the rotated Mario/Iggy task (one arc [−π/2 − a, π/2 − a]); for n = 2 and 3 no single interval holds
the set without also holding the gaps between its arcs.

Shapes are unions of convex polygons and disks, drawn in [−1, 1]² at 32×32 with 4×4 supersampling, white on black,
at a random scale in [0.8, 1]: two shapes per symmetry order (an arrow and a flag; a bar and a Z; a triangle and a
three-bladed pinwheel). ``SHAPES[:3]`` (one per order) are the training shapes; ``SHAPES[3:]`` are held out to test
how φ's learned invariance carries over to shapes it never saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SIZE = 32
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Shape:
    """A shape: ``order`` n of its rotational symmetry, convex polygons (each (V, 2), counter-clockwise) and
    disks (cx, cy, r), in [−1, 1]² (y up)."""

    name: str
    order: int
    polygons: tuple[tuple[tuple[float, float], ...], ...] = ()
    disks: tuple[tuple[float, float, float], ...] = ()


def _rect(x0: float, y0: float, x1: float, y1: float) -> tuple[tuple[float, float], ...]:
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def _rotated(points: tuple[tuple[float, float], ...], angle: float) -> tuple[tuple[float, float], ...]:
    c, s = math.cos(angle), math.sin(angle)
    return tuple((c * x - s * y, s * x + c * y) for x, y in points)


_BLADE = _rect(-0.14, 0.0, 0.14, 0.8)
_HOOK = _rect(0.0, 0.6, 0.42, 0.8)

SHAPES: tuple[Shape, ...] = (
    # Training shapes, one per order.
    Shape("arrow", 1, (_rect(-0.12, -0.8, 0.12, 0.3), ((-0.45, 0.25), (0.45, 0.25), (0.0, 0.85)))),
    Shape("z", 2, (_rect(-0.5, -0.12, 0.5, 0.12), _rect(0.3, 0.0, 0.55, 0.75), _rect(-0.55, -0.75, -0.3, 0.0))),
    Shape(
        "pinwheel",
        3,
        tuple(
            p for k in range(3) for p in (_rotated(_BLADE, 2 * math.pi * k / 3), _rotated(_HOOK, 2 * math.pi * k / 3))
        ),
    ),
    # Held-out shapes.
    Shape("flag", 1, (_rect(-0.5, -0.85, -0.3, 0.85), _rect(-0.3, 0.25, 0.5, 0.85))),
    Shape("bar", 2, (_rect(-0.75, -0.22, 0.75, 0.22),), ((0.0, 0.0, 0.3),)),
    Shape("triangle", 3, (((-0.75, -0.43), (0.75, -0.43), (0.0, 0.87)),)),
)
TRAIN_SHAPES = tuple(range(3))
HELD_OUT_SHAPES = tuple(range(3, 6))


def _inside(shape: Shape, points: torch.Tensor) -> torch.Tensor:
    """Membership (N, P) of points (N, P, 2) in ``shape``."""
    inside = torch.zeros(points.shape[:2], dtype=torch.bool, device=points.device)
    for polygon in shape.polygons:
        vertices = torch.tensor(polygon, dtype=points.dtype, device=points.device)  # (V, 2)
        edges = vertices.roll(-1, 0) - vertices
        relative = points[:, :, None, :] - vertices  # (N, P, V, 2)
        cross = edges[:, 0] * relative[..., 1] - edges[:, 1] * relative[..., 0]
        inside |= (cross >= 0).all(-1)
    for cx, cy, r in shape.disks:
        inside |= ((points[..., 0] - cx) ** 2 + (points[..., 1] - cy) ** 2) <= r * r
    return inside


def draw(shape_index: torch.Tensor, tilt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Images (N, 1, SIZE, SIZE) in [0, 1] of shapes ``SHAPES[shape_index]`` (N,) rotated counter-clockwise by
    ``tilt`` (N,) radians and scaled by ``scale`` (N,)."""
    n = shape_index.shape[0]
    fine = SIZE * _SUPERSAMPLE
    coords = (torch.arange(fine, dtype=torch.float32) + 0.5) / fine * 2 - 1
    y, x = torch.meshgrid(-coords, coords, indexing="ij")  # image rows go down, y up
    grid = torch.stack([x.flatten(), y.flatten()], -1)  # (P, 2)
    # Points of the image in the shape's own frame: rotate by −tilt, divide by the scale.
    c, s = torch.cos(tilt)[:, None], torch.sin(tilt)[:, None]
    px = (c * grid[:, 0] + s * grid[:, 1]) / scale[:, None]
    py = (-s * grid[:, 0] + c * grid[:, 1]) / scale[:, None]
    points = torch.stack([px, py], -1)  # (N, P, 2)
    fill = torch.zeros(n, fine * fine)
    for index, shape in enumerate(SHAPES):
        rows = (shape_index == index).nonzero()[:, 0]
        if rows.numel():
            fill[rows] = _inside(shape, points[rows]).float()
    image = fill.view(n, 1, fine, fine)
    return torch.nn.functional.avg_pool2d(image, _SUPERSAMPLE)


@dataclass(frozen=True)
class SymmetricShapes:
    """A dataset: ``images`` (N, 1, 32, 32), ``labels`` (N,) = 2·(shape's place in ``shapes``) + (1 if down),
    ``shape`` (N,) indices into ``SHAPES``, ``order`` (N,) n, and ``tilt`` (N,) a, the deviation from the class's
    pose (the image is drawn at tilt a for up, P/2 + a for down)."""

    images: torch.Tensor
    labels: torch.Tensor
    shape: torch.Tensor
    order: torch.Tensor
    tilt: torch.Tensor


def symmetric_shapes(n: int, shapes: tuple[int, ...] = TRAIN_SHAPES, seed: int = 0) -> SymmetricShapes:
    """``n`` images of the given shapes, classes balanced in expectation; deterministic from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    place = torch.randint(len(shapes), (n,), generator=generator)
    shape_index = torch.tensor(shapes)[place]
    order = torch.tensor([SHAPES[i].order for i in range(len(SHAPES))])[shape_index]
    period = 2 * math.pi / order
    down = torch.randint(2, (n,), generator=generator)
    a = (torch.rand(n, generator=generator) * 2 - 1) * period / 8
    scale = 0.8 + 0.2 * torch.rand(n, generator=generator)
    images = draw(shape_index, a + down * period / 2, scale)
    return SymmetricShapes(images, 2 * place + down, shape_index, order, a)


def invariance_mask(angles: torch.Tensor, order: torch.Tensor, tilt: torch.Tensor) -> torch.Tensor:
    """Whether each rotation ``angles`` (R,) keeps the label of each image (order n (N,), tilt a (N,)): (N, R).

    True where a + r lies within ±P/4 of a multiple of P = 2π/n (the module docstring's n arcs)."""
    period = (2 * math.pi / order)[:, None]
    offset = torch.remainder(tilt[:, None] + angles[None] + period / 2, period) - period / 2
    return offset.abs() < period / 4
