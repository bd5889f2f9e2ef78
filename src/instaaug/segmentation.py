"""Dense tasks: per-view segmentation losses for the objectives, and segmentation metrics.

``InstaAugObjective`` takes one loss per view; for segmentation that is the per-pixel cross-entropy averaged over
each view's labelled pixels (``segmentation_loss``), so φ learns which transforms keep the segmentation right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .targets import IGNORE_INDEX, ViewTargets


def segmentation_loss(
    logits: torch.Tensor, targets: ViewTargets | torch.Tensor, *, soft: bool = True, ignore_index: int = IGNORE_INDEX
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

    Returns (N,): per view, the mean over its labelled pixels (weighted by their label mass when soft); 0 for a
    view without a labelled pixel.
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be (N, K, h, w), got shape {tuple(logits.shape)}")
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
    if not isinstance(masks, torch.Tensor) or masks.is_floating_point() or masks.dim() != 4 or masks.shape[1] != 1:
        raise ValueError("masks must be integer labels of shape (N, 1, h, w)")
    if (masks.shape[0], *masks.shape[2:]) != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"logits {tuple(logits.shape)} must match the masks {tuple(masks.shape)}")
    labels = masks[:, 0].long()
    keep = labels != ignore_index
    pixel = F.cross_entropy(logits, torch.where(keep, labels, 0), reduction="none")
    return (pixel * keep).sum(dim=(1, 2)) / keep.sum(dim=(1, 2)).clamp_min(1)


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
