"""Figures of what was learned. Every function writes a PNG and returns its path; matplotlib runs headless."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


def to_image(x: torch.Tensor):
    """An image tensor (C, H, W) in [0, 1] as an array for ``imshow`` ((H, W, 3) or (H, W))."""
    x = x.detach().cpu().clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` to ``path`` (parents created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# --- rotation (the paper's Figure 5) -------------------------------------------------------------------------------


# --- colour (the paper's Figure D.1) -------------------------------------------------------------------------------
