"""Test-time augmentation: merge a model's predictions over n views sampled from an augmenter."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .augment import InstaAug
from .validation import check_positive_int

MERGE_MODES = ("logits", "probs", "log_probs")
#: ``sample``: views drawn from the augmenter; ``top``: its k most probable crops (an ``InstaAug`` with crops).
VIEW_MODES = ("sample", "top")


def merge_predictions(logits: torch.Tensor, merge: str = "logits") -> torch.Tensor:
    """Merge per-view logits (B, n, K) into (B, K).

    ``logits``: the mean of the logits (InstaAug's default); ``probs``: the mean of the softmax probabilities;
    ``log_probs``: the mean of the log-softmax (a normalised geometric mean of the probabilities, up to a constant).
    """
    if merge == "logits":
        return logits.mean(dim=1)
    if merge == "probs":
        return F.softmax(logits, dim=-1).mean(dim=1)
    if merge == "log_probs":
        return F.log_softmax(logits, dim=-1).mean(dim=1)
    raise ValueError(f"merge must be one of {MERGE_MODES}, got {merge!r}")


class TTAWrapper(nn.Module):
    """Wraps a model so that its forward merges the predictions of ``n_samples`` augmented views per input.

    All B·n views go through the model in one batched forward, or in chunks of ``chunk_size`` views to bound
    memory. Views are sampled without gradient. The wrapper holds the model and the augmenter as submodules,
    so ``.eval()`` and ``.to()`` reach both.

    Args:
        model: maps images (N, C, H, W) to logits (N, K).
        aug: an augmenter (``InstaAug``, ``RandomAugment``, ...) called as ``aug(x, n_copies=n)``.
        n_samples: views per input.
        merge: ``logits`` (mean of logits, default), ``probs`` or ``log_probs``; see ``merge_predictions``.
        chunk_size: the most views per model call; None for all at once.
        views: ``sample`` (default) draws ``n_samples`` views from the augmenter; ``top`` takes its
            ``n_samples`` most probable crops (deterministic; needs an ``InstaAug`` with ``crop``).
    """

    def __init__(
        self,
        model: nn.Module,
        aug: nn.Module,
        n_samples: int = 10,
        merge: str = "logits",
        chunk_size: int | None = None,
        views: str = "sample",
    ) -> None:
        super().__init__()
        if merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {MERGE_MODES}, got {merge!r}")
        if views not in VIEW_MODES:
            raise ValueError(f"views must be one of {VIEW_MODES}, got {views!r}")
        if views == "top" and not (isinstance(aug, InstaAug) and aug.config.has_crop):
            raise ValueError(f"views='top' needs an InstaAug with learned crops, got {type(aug).__name__}")
        self.views = views
        self.model = model
        self.aug = aug
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.merge = merge
        self.chunk_size = None if chunk_size is None else check_positive_int(chunk_size, "chunk_size")

    def view_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The model's logits (N, K) for views (N, C, H, W), in chunks of ``chunk_size``."""
        if self.chunk_size is None or images.shape[0] <= self.chunk_size:
            return self.model(images)
        return torch.cat([self.model(chunk) for chunk in images.split(self.chunk_size)])

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1] → merged predictions (B, K); ``y`` only for class-conditional augmenters."""
        with torch.no_grad():
            if self.views == "top":
                images = self.aug.top_views(x, self.n_samples, y)
            else:
                images = self.aug(x, y, n_copies=self.n_samples, generator=generator).images
        logits = self.view_logits(images)
        return merge_predictions(logits.view(x.shape[0], self.n_samples, -1), self.merge)
