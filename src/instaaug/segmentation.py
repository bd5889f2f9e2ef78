"""Dense tasks: per-view segmentation losses for the objectives, and segmentation metrics.

``InstaAugObjective`` takes one loss per view (``segmentation_loss``). On the view's own pixels (``frame="view"``)
that is the usual per-pixel cross-entropy, but the mask moves with the view, so φ is rewarded for views that drop
what is hard to segment; on the input's pixels (``frame="input"``), each pixel a view does not show costs as much as
an uninformed guess, per class, so φ learns which transforms keep the segmentation of the input right.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .targets import IGNORE_INDEX, ViewTargets, to_input_frame


def segmentation_loss(
    logits: torch.Tensor,
    targets: ViewTargets | torch.Tensor,
    *,
    soft: bool = True,
    ignore_index: int = IGNORE_INDEX,
    frame: str = "view",
) -> torch.Tensor:
    """Per-view cross-entropy (N,) of dense logits (N, K, h, w) against the views' masks.

    Args:
        logits: (N, K, h, w) class scores per pixel of each view.
        targets: the views' targets (``out.targets``, with masks), or integer masks (N, 1, h, w) (e.g. the
            unaugmented labels when no augmenter runs).
        soft: with ``ViewTargets``, compare against ``targets.mask_probs(K)``: the masks resampled bilinearly as
            one-hot maps, differentiable in the sampled geometric parameters, so that reparameterised families
            (rotation, scale, translation) get their exact pathwise gradient. False: the nearest-neighbour labels
            (whose gradient misses how the labels move with the parameters).
        ignore_index: the label of pixels left out (padding, unlabelled), for integer masks.
        frame: ``view``: the mean over the view's labelled pixels. ``input`` (with ``ViewTargets``): the loss on
            the *input's* labelled pixels of the view's prediction mapped back (``to_input_frame``), each input
            pixel the view did not show counted at the loss of an uninformed prediction, log K (weighted by the
            coverage along the view's edge), averaged per class and then over the classes the input holds. A view
            that drops an object then pays log K for that object's whole class: with ``view`` the mask moves with
            the view, so a view of empty background costs least and φ learns to show it (and a class-agnostic
            input-frame mean still prefers it: two views of one size leave as many pixels unseen).

    Returns (N,): per view, the mean over its labelled pixels (weighted by their label mass when soft); 0 for a
    view without a labelled pixel.
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be (N, K, h, w), got shape {tuple(logits.shape)}")
    if frame not in ("view", "input"):
        raise ValueError(f"frame must be 'view' or 'input', got {frame!r}")
    if frame == "input":
        if isinstance(targets, ViewTargets):
            if targets.source_masks is None:
                raise ValueError("the targets hold no masks")
            if tuple(logits.shape[-2:]) != tuple(targets.size) or logits.shape[0] != targets.source_masks.shape[0]:
                raise ValueError(f"logits {tuple(logits.shape)} must match the views {targets.size}")
            return _input_frame_loss(logits, targets.source_masks, targets.theta, targets.ignore_index)
        _check_masks(targets, logits)
        return _input_frame_loss(logits, targets, None, ignore_index)  # plain masks: the view is the input
    if isinstance(targets, ViewTargets):
        if targets.masks is None:
            raise ValueError("the targets hold no masks")
        if soft:
            probs = targets.mask_probs(logits.shape[1]).to(logits.dtype)
            if probs.shape != logits.shape:
                raise ValueError(f"logits {tuple(logits.shape)} must match the views' masks {tuple(probs.shape)}")
            mass = probs.sum(dim=(1, 2, 3))
            loss = -(probs * F.log_softmax(logits, dim=1)).sum(dim=(1, 2, 3))
            return loss / mass.clamp_min(1e-6)
        ignore_index, masks = targets.ignore_index, targets.masks
    else:
        masks = targets
    _check_masks(masks, logits)
    labels = masks[:, 0].long()
    keep = labels != ignore_index
    pixel = F.cross_entropy(logits, torch.where(keep, labels, 0), reduction="none")
    return (pixel * keep).sum(dim=(1, 2)) / keep.sum(dim=(1, 2)).clamp_min(1)


def _check_masks(masks: object, logits: torch.Tensor) -> None:
    if not isinstance(masks, torch.Tensor) or masks.is_floating_point() or masks.dim() != 4 or masks.shape[1] != 1:
        raise ValueError("masks must be integer labels of shape (N, 1, h, w)")
    if (masks.shape[0], *masks.shape[2:]) != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"logits {tuple(logits.shape)} must match the masks {tuple(masks.shape)}")


def _input_frame_loss(
    logits: torch.Tensor, masks: torch.Tensor, theta: torch.Tensor | None, ignore_index: int
) -> torch.Tensor:
    """Per-view loss (N,) on the input's labelled pixels: the view's cross-entropy where it saw them, log K where
    it did not, averaged per class, then over the classes present (see ``segmentation_loss``)."""
    values, coverage = to_input_frame(logits, theta, tuple(masks.shape[-2:]))
    labels = masks[:, 0].long()
    keep = (labels != ignore_index) & (labels >= 0) & (labels < logits.shape[1])
    pixel = F.cross_entropy(values, torch.where(keep, labels, 0), reduction="none")  # (N, H, W)
    seen = coverage[:, 0].to(pixel.dtype)
    loss = seen * pixel + (1 - seen) * math.log(logits.shape[1])
    classes = torch.arange(logits.shape[1], device=labels.device)
    member = ((labels[:, None] == classes[:, None, None]) & keep[:, None]).to(loss.dtype)  # (N, K, H, W)
    counts = member.sum(dim=(2, 3))
    per_class = (member * loss[:, None]).sum(dim=(2, 3)) / counts.clamp_min(1)
    present = (counts > 0).to(loss.dtype)
    return (per_class * present).sum(1) / present.sum(1).clamp_min(1)


def confusion_matrix(
    predicted: torch.Tensor, masks: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Pixel counts (K, K), rows the true class and columns the predicted one, over labels (N, 1, H, W) or
    (N, H, W) and predictions of the same shape; pixels labelled ``ignore_index`` (or outside [0, K)) are left
    out."""
    if predicted.shape != masks.shape:
        raise ValueError(f"predictions {tuple(predicted.shape)} and masks {tuple(masks.shape)} must match")
    truth, guess = masks.reshape(-1).long(), predicted.reshape(-1).long()
    keep = (truth != ignore_index) & (truth >= 0) & (truth < num_classes)
    index = truth[keep] * num_classes + guess[keep].clamp(0, num_classes - 1)
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def mean_iou(confusion: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(mean IoU over the classes that occur in the labels or the predictions, per-class IoU (K,) with NaN for
    the others) from a confusion matrix (K, K)."""
    confusion = confusion.double()
    inter = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))
    return float(iou[union > 0].mean()), iou
