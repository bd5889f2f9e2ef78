"""The rotated Mario/Iggy benchmark (Benton et al., NeurIPS 2020): two sprites, each upright or upside down.

Classes: 0 = sprite A upright, 1 = sprite A upside down, 2 = sprite B upright, 3 = sprite B upside down. Every
image is its class's sprite rotated by the class orientation (0 or π) plus an angle a ~ U[-π/4, π/4]. A rotation
τ keeps the label as long as |a + τ| < π/2; beyond |a + τ| > 3π/4 the image lands among the other orientation's
training images.

The built-in sprites are drawn procedurally (a plumber and a turtle-like creature, 32×32 pixel art on black,
asymmetric left-right and top-bottom) so that the benchmark runs with no files; ``load_mario_iggy`` reads the
public ``mario_iggy.npz`` (keys ``mario`` and ``iggy``, each 1×3×32×32 in [0, 1]).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from ..transforms import TransformStack

SIZE = 32
MAX_ANGLE = math.pi / 4


def _paint(canvas: np.ndarray, rows: slice, cols: slice, colour: tuple[float, float, float]) -> None:
    canvas[:, rows, cols] = np.asarray(colour, dtype=np.float32)[:, None, None]


def _paint_ellipse(
    canvas: np.ndarray, centre: tuple[float, float], radii: tuple[float, float], colour: tuple[float, float, float]
) -> None:
    rr, cc = np.mgrid[:SIZE, :SIZE]
    inside = ((rr - centre[0]) / radii[0]) ** 2 + ((cc - centre[1]) / radii[1]) ** 2 <= 1
    canvas[:, inside] = np.asarray(colour, dtype=np.float32)[:, None]


def draw_plumber() -> np.ndarray:
    """A Mario-like plumber (3, 32, 32): red cap and shirt, blue overalls, one raised gloved arm."""
    red, skin, blue, brown = (0.9, 0.1, 0.1), (1.0, 0.75, 0.55), (0.15, 0.25, 0.85), (0.45, 0.25, 0.1)
    c = np.zeros((3, SIZE, SIZE), dtype=np.float32)
    _paint(c, slice(4, 8), slice(10, 21), red)  # cap
    _paint(c, slice(7, 9), slice(17, 25), red)  # brim, to the right only
    _paint(c, slice(9, 16), slice(11, 21), skin)  # face
    _paint(c, slice(9, 12), slice(11, 14), brown)  # hair at the back
    _paint(c, slice(10, 12), slice(18, 19), (0, 0, 0))  # eye
    _paint(c, slice(13, 15), slice(16, 23), brown)  # moustache
    _paint(c, slice(16, 21), slice(9, 22), red)  # shirt
    _paint(c, slice(9, 17), slice(5, 9), red)  # raised left arm
    _paint(c, slice(6, 10), slice(4, 9), (1, 1, 1))  # glove
    _paint(c, slice(19, 27), slice(11, 21), blue)  # overalls
    _paint(c, slice(20, 22), slice(13, 14), (1.0, 0.9, 0.1))  # buttons
    _paint(c, slice(20, 22), slice(18, 19), (1.0, 0.9, 0.1))
    _paint(c, slice(27, 30), slice(8, 15), brown)  # shoes
    _paint(c, slice(27, 30), slice(18, 26), brown)
    return c


def draw_turtle() -> np.ndarray:
    """An Iggy-like creature (3, 32, 32): a blue shell on the left, an orange head up right, green hair."""
    orange, yellow, blue = (0.95, 0.5, 0.1), (1.0, 0.85, 0.3), (0.25, 0.3, 0.95)
    c = np.zeros((3, SIZE, SIZE), dtype=np.float32)
    _paint_ellipse(c, (19, 12), (8, 8), (0.95, 0.95, 0.95))  # shell rim
    _paint_ellipse(c, (19, 12), (6.5, 6.5), blue)  # shell
    _paint_ellipse(c, (18, 11), (2.5, 3), (0.6, 0.65, 1.0))  # shell highlight
    _paint(c, slice(9, 16), slice(17, 27), orange)  # head, facing right
    _paint(c, slice(14, 16), slice(22, 29), yellow)  # beak
    _paint(c, slice(10, 12), slice(23, 25), (0, 0, 0))  # eye
    _paint(c, slice(3, 9), slice(15, 19), (0.3, 0.85, 0.3))  # hair spikes
    _paint(c, slice(2, 6), slice(19, 22), (0.3, 0.85, 0.3))
    _paint(c, slice(16, 26), slice(18, 23), orange)  # body
    _paint(c, slice(26, 30), slice(16, 25), yellow)  # feet
    return c


def builtin_sprites() -> torch.Tensor:
    """The two procedural sprites as a tensor (2, 3, 32, 32) in [0, 1]: plumber, turtle."""
    return torch.from_numpy(np.stack([draw_plumber(), draw_turtle()]))


def load_mario_iggy(path: str | os.PathLike) -> torch.Tensor:
    """Read the public ``mario_iggy.npz`` (keys ``mario``, ``iggy``: 1×3×H×W in [0, 1]) → (2, 3, H, W) float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ValueError(f"{path} is not a readable .npz archive: {e}") from None
    with archive:
        missing = {"mario", "iggy"} - set(archive.files)
        if missing:
            raise ValueError(f"{path} lacks key(s) {sorted(missing)}; expected 'mario' and 'iggy'")
        sprites = [np.asarray(archive[k]) for k in ("mario", "iggy")]
    for name, s in zip(("mario", "iggy"), sprites, strict=True):
        if s.shape[-3:] != sprites[0].shape[-3:] or s.ndim not in (3, 4) or s.shape[-3] != 3:
            raise ValueError(f"{path}: {name!r} must have shape 1×3×H×W like the other sprite, got {s.shape}")
        if not np.issubdtype(s.dtype, np.floating) or not np.all(np.isfinite(s)) or s.min() < 0 or s.max() > 1:
            raise ValueError(f"{path}: {name!r} must hold finite floats in [0, 1]")
    return torch.from_numpy(np.stack([s.reshape(s.shape[-3:]) for s in sprites]).astype(np.float32))


def rotated_sprites(
    sprites: torch.Tensor, n: int, generator: torch.Generator | None = None, max_angle: float = MAX_ANGLE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw n images of the four-class benchmark from sprites (2, 3, H, W).

    Returns:
        x: (n, 3, H, W) images in [0, 1].
        y: (n,) labels; 2·sprite + (1 if upside down); the classes are balanced (n // 4 each, then the rest).
        angle: (n,) the angle a ~ U[-max_angle, max_angle] of each image from its class orientation.
    """
    y = torch.arange(n) % 4
    y = y[torch.randperm(n, generator=generator)]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * max_angle
    total = angle + math.pi * (y % 2).float()
    images = TransformStack(("rotation",))(sprites[y // 2], total[:, None])
    return images.clamp(0, 1), y, angle
