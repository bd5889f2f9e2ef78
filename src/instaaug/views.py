"""``AugmentOutput``: what an augmenter's call returns (shared by augmenters, objectives and test-time augmentation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .targets import ViewTargets, to_input_frame


@dataclass(frozen=True)
class AugmentOutput:
    """The result of ``aug(x)`` for a batch of B inputs and n copies each.

    Attributes:
        images: (B·n, C, H, W) augmented views; rows b·n … b·n + n - 1 come from input b.
        params: (B·n, D) the sampled transformation parameters (differentiable where reparameterised).
        log_prob: (B·n,) log-probability of each view's parameters under p(τ; φ(x)), with the parameters
            treated as fixed.
        entropy: (B,) entropy of p(τ; φ(x)) per input.
        n_copies: n.
        reparameterized: whether every part of the distribution is reparameterised (then gradients reach φ
            through ``params`` alone and no score-function term is needed).
        distribution: the distribution the views were drawn from (batch B).
        score_log_prob: (B·n,) the part of ``log_prob`` whose gradient comes from the score function (REINFORCE):
            the parts sampled without reparameterisation (crops, flips). None means all of ``log_prob``.
        theta: (B·n, 2, 3) each view's affine map from its normalised coordinates to the input's (``F.affine_grid``
            with ``align_corners=False``), differentiable in ``params``; None when no family moves pixels.
        input_size: the inputs' (H, W).
        targets: the targets passed with the images (``aug(x, targets=...)``) as the views show them.
    """

    images: torch.Tensor
    params: torch.Tensor
    log_prob: torch.Tensor
    entropy: torch.Tensor
    n_copies: int
    reparameterized: bool
    distribution: Any = None
    score_log_prob: torch.Tensor | None = None
    theta: torch.Tensor | None = None
    input_size: tuple[int, int] | None = None
    targets: ViewTargets | None = None

    def repeat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Repeat a per-input tensor (B, ...) to match the views (B·n, ...), e.g. the labels."""
        return tensor if self.n_copies == 1 else tensor.repeat_interleave(self.n_copies, dim=0)

    def to_input(self, dense: torch.Tensor, mode: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
        """Map dense predictions on the views (B·n, K, h, w) back to the inputs' frame: (values (B·n, K, H, W),
        coverage (B·n, 1, H, W)), the coverage being how much of each input pixel the view saw (see
        ``instaaug.targets.to_input_frame``)."""
        if dense.dim() != 4 or dense.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"dense predictions must be (B·n, K, h, w) = ({self.images.shape[0]}, K, h, w), got "
                f"{tuple(dense.shape)}"
            )
        if tuple(dense.shape[-2:]) != tuple(self.images.shape[-2:]):
            raise ValueError(
                f"dense predictions must have the views' size {tuple(self.images.shape[-2:])}, got "
                f"{tuple(dense.shape[-2:])} (resize them first)"
            )
        size = self.input_size if self.input_size is not None else tuple(self.images.shape[-2:])
        return to_input_frame(dense, self.theta, size, mode)
