"""``Then``: a learned augmenter whose views go on through a fixed one (e.g. a learned crop, then random colour).

The InstaAug reference code's contrastive setting learns the crop only and keeps colour jitter and flips fixed and
random; ``Then(InstaAug(("crop",), ...), RandomAugment(("value", "flip"), ...))`` is that augmenter. Only the first
augmenter's distribution is learned and reported (``log_prob``, ``entropy``); the second acts on each view once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from .augment import Augmenter
from .views import AugmentOutput


class Then(nn.Module):
    """Apply ``first`` (learned or not), then ``then`` to each of its views (one copy per view).

    Args:
        first: the augmenter whose distribution the objective sees.
        then: a fixed augmenter (``RandomAugment``, ...) applied to ``first``'s views; its own n_copies is ignored.
    """

    def __init__(self, first: Augmenter, then: Augmenter) -> None:
        super().__init__()
        if not isinstance(first, Augmenter) or not isinstance(then, Augmenter):
            raise TypeError(f"Then composes two augmenters, got {type(first).__name__} and {type(then).__name__}")
        if any(p.requires_grad for p in then.parameters()):
            raise ValueError("Then's second augmenter must be fixed (it has trainable parameters)")
        self.first, self.then = first, then

    @property
    def n_copies(self) -> int:
        return self.first.n_copies

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, **options: Any) -> AugmentOutput:
        """Views of x (B, C, H, W): ``first(x, y, **options)`` with its images passed through ``then``."""
        out = self.first(x, y, **options)
        generator = options.get("generator")
        views = self.then(out.images, n_copies=1, generator=generator).images
        # The views' geometry and targets are first's: ``then`` may move pixels again, so drop them if it does.
        moved = self.then.stack.resamples
        return dataclasses.replace(
            out, images=views, theta=None if moved else out.theta, targets=None if moved else out.targets
        )
