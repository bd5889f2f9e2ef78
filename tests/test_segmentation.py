"""instaaug.segmentation: the per-image segmentation loss (hard or soft targets), confusion matrix and IoU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from instaaug import NoAugment
from instaaug.segmentation import confusion_matrix, mean_iou, segmentation_loss
from instaaug.targets import IGNORE_INDEX, Targets


def test_segmentation_loss_and_metrics() -> None:
    logits = torch.randn(2, 3, 4, 4)
    masks = torch.randint(0, 3, (2, 1, 4, 4))
    masks[1] = IGNORE_INDEX
    loss = segmentation_loss(logits, masks)
    want = F.cross_entropy(logits[:1], masks[:1, 0])
    assert torch.allclose(loss[0], want) and loss[1] == 0
    # Soft targets of an identity view equal the hard loss.
    out = NoAugment()(torch.rand(2, 3, 4, 4), targets=Targets(masks=masks))
    assert torch.allclose(segmentation_loss(logits, out.targets), loss, atol=1e-6)
    assert torch.allclose(segmentation_loss(logits, out.targets, soft=False), loss, atol=1e-6)
    conf = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, IGNORE_INDEX]), 3)
    assert conf.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    miou, iou = mean_iou(conf)
    assert iou.tolist() == [1.0, 0.5, 0.0] and miou == pytest.approx(0.5)
    with pytest.raises(ValueError, match="match"):
        segmentation_loss(logits[:, :, :2], masks)
