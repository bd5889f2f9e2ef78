"""Labelled patches of real photographs that scikit-learn ships (no download): a small real-image dataset.

``photo_patches`` cuts each of scikit-learn's sample photographs (``china.jpg``, ``flower.jpg``, 427×640) into a
grid of regions; every region is a class, and its patches are random squares inside it, resized.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_images


def photo_patches(
    per_class: int = 64, size: int = 64, patch: int = 96, grid: tuple[int, int] = (2, 2), seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``patch``-pixel squares from every region of a ``grid`` over each sample photograph, resized.

    Returns images (N, 3, size, size) float in [0, 1] and labels (N,) int64 (region classes, photo by photo, row
    by row), N = 2·rows·cols·per_class; deterministic from ``seed``.
    """
    rng = np.random.default_rng(seed)
    rows, cols = grid
    images, labels = [], []
    for photo_index, photo in enumerate(load_sample_images().images):
        height, width = photo.shape[:2]
        pixels = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 255
        for r in range(rows):
            for c in range(cols):
                y0, y1 = r * height // rows, (r + 1) * height // rows - patch
                x0, x1 = c * width // cols, (c + 1) * width // cols - patch
                if y1 < y0 or x1 < x0:
                    raise ValueError(f"patch {patch} does not fit in the regions of a {grid} grid")
                ys, xs = rng.integers(y0, y1 + 1, per_class), rng.integers(x0, x1 + 1, per_class)
                crops = torch.stack([pixels[:, y : y + patch, x : x + patch] for y, x in zip(ys, xs, strict=True)])
                images.append(F.interpolate(crops, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1))
                labels.append(torch.full((per_class,), (photo_index * rows + r) * cols + c, dtype=torch.long))
    return torch.cat(images), torch.cat(labels)
