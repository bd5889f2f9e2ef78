"""Labelled patches of real photographs that installed packages ship (no download): a small real-image dataset.

Photographs: scikit-learn's two sample images (``china``, ``flower``, 427×640) and scikit-image's bundled colour
photographs (``astronaut``, ``chelsea``, ``coffee``, ``rocket``, ``hubble``, ``ihc``). Each photograph is cut into a
grid of regions; every region is a class, and its examples are random squares inside it, resized.

* ``photo_patches`` returns tensors (the library examples use it);
* ``write_photo_folder`` writes the same kind of data as an image folder of real JPEG files, one sub-folder per
  class: the layout a user's own data has, for ``instaaug fit`` and ``instaaug tta`` (``instaaug example-data``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data as skimage_data
from sklearn.datasets import load_sample_images


def _sklearn_photo(index: int) -> Callable[[], np.ndarray]:
    return lambda: np.asarray(load_sample_images().images[index])


#: name → a function returning the photograph as uint8 (H, W, 3).
PHOTOGRAPHS: dict[str, Callable[[], np.ndarray]] = {
    "china": _sklearn_photo(0),
    "flower": _sklearn_photo(1),
    "astronaut": skimage_data.astronaut,
    "chelsea": skimage_data.chelsea,
    "coffee": skimage_data.coffee,
    "rocket": skimage_data.rocket,
    "hubble": skimage_data.hubble_deep_field,
    "ihc": skimage_data.immunohistochemistry,
}
#: The photographs of ``write_photo_folder`` by default: 6 photographs × 2×2 regions = 24 classes.
FOLDER_PHOTOS = ("china", "flower", "astronaut", "chelsea", "coffee", "rocket")


def _photograph(name: str) -> torch.Tensor:
    if name not in PHOTOGRAPHS:
        raise ValueError(f"unknown photograph {name!r}; known: {sorted(PHOTOGRAPHS)}")
    return torch.from_numpy(np.array(PHOTOGRAPHS[name]()[..., :3])).permute(2, 0, 1).float() / 255


def _region_patches(
    pixels: torch.Tensor,
    region: tuple[int, int, int, int],
    count: int,
    sides: np.ndarray,
    rng: np.random.Generator,
    size: int,
) -> torch.Tensor:
    """``count`` squares of the given pixel ``sides`` at random places inside ``region`` (y0, y1, x0, x1) of
    ``pixels`` (3, H, W), each resized to ``size``: (count, 3, size, size) in [0, 1]."""
    y0, y1, x0, x1 = region
    crops = []
    for side in sides.tolist():
        if y1 - y0 < side or x1 - x0 < side:
            raise ValueError(f"a {side}-pixel patch does not fit in a {y1 - y0}×{x1 - x0} region")
        y = int(rng.integers(y0, y1 - side + 1))
        x = int(rng.integers(x0, x1 - side + 1))
        crop = pixels[None, :, y : y + side, x : x + side]
        crops.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True))
    assert len(crops) == count
    return torch.cat(crops).clamp(0, 1)


def _regions(height: int, width: int, grid: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    rows, cols = grid
    return [
        (r * height // rows, (r + 1) * height // rows, c * width // cols, (c + 1) * width // cols)
        for r in range(rows)
        for c in range(cols)
    ]


def photo_patches(
    per_class: int = 64,
    size: int = 64,
    patch: int = 96,
    grid: tuple[int, int] = (2, 2),
    seed: int = 0,
    photos: Sequence[str] = ("china", "flower"),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``patch``-pixel squares from every region of a ``grid`` over each photograph, resized.

    Returns images (N, 3, size, size) float in [0, 1] and labels (N,) int64 (region classes, photo by photo, row
    by row), N = len(photos)·rows·cols·per_class; deterministic from ``seed``.
    """
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for name in photos:
        pixels = _photograph(name)
        for region in _regions(pixels.shape[1], pixels.shape[2], grid):
            images.append(_region_patches(pixels, region, per_class, np.full(per_class, patch), rng, size))
            labels.append(torch.full((per_class,), len(labels), dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


def write_photo_folder(
    root: str | os.PathLike,
    *,
    per_class: int = 40,
    size: int = 64,
    photos: Sequence[str] = FOLDER_PHOTOS,
    grid: tuple[int, int] = (2, 2),
    scale: tuple[float, float] = (0.3, 0.7),
    seed: int = 0,
    quality: int = 90,
) -> Path:
    """Write an image folder of real JPEG photographs: ``root/<photo>-r<row>c<col>/<index>.jpg``.

    Each class is one region of a ``grid`` over one photograph; its ``per_class`` examples are squares whose side
    is a uniform fraction ``scale`` of the region's shorter side, at random places inside the region, resized to
    ``size``×``size`` and saved as JPEG (``quality``). The object of a class is thus seen at different scales and
    positions: what learned crops are for. Deterministic from ``seed``.

    The folder is written next to ``root`` first and renamed into place, so an interrupted call leaves nothing
    half-written. ``root`` must not exist yet (or be an empty folder).

    Returns:
        ``root``, as a Path.
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root} already exists and is not an empty folder")
    if not (isinstance(per_class, int) and per_class >= 1 and isinstance(size, int) and size >= 8):
        raise ValueError(f"need per_class ≥ 1 and size ≥ 8, got per_class={per_class!r}, size={size!r}")
    low, high = scale
    if not 0 < low <= high <= 1:
        raise ValueError(f"scale must satisfy 0 < low ≤ high ≤ 1, got {scale}")
    rng = np.random.default_rng(seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for name in photos:
            pixels = _photograph(name)
            for (y0, y1, x0, x1), label in zip(
                _regions(pixels.shape[1], pixels.shape[2], grid),
                (f"r{r}c{c}" for r in range(grid[0]) for c in range(grid[1])),
                strict=True,
            ):
                shorter = min(y1 - y0, x1 - x0)
                sides = np.round(rng.uniform(low, high, per_class) * shorter).astype(int).clip(1, shorter)
                patches = _region_patches(pixels, (y0, y1, x0, x1), per_class, sides, rng, size)
                folder = staging / f"{name}-{label}"
                folder.mkdir()
                pixels_u8 = (patches * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
                for i, array in enumerate(pixels_u8):
                    Image.fromarray(array).save(folder / f"{i:04d}.jpg", quality=quality)
        if root.exists():
            root.rmdir()
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root
