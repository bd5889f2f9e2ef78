"""The one TTA evaluator of the cluttered-digit experiments: merging the first k views, coverage, and crop's
evaluation through it giving what its own loop gave."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from instaaug.data.digits import box_coverage
from instaaug.experiments import crop, tta
from instaaug.experiments.views_eval import COVERAGE_THRESHOLD, ViewSource, evaluate_views, to_pixel_corners
from instaaug.models import build_classifier
from instaaug.tta import merge_predictions


def test_evaluate_views_merges_the_first_n_views_of_each_entry():
    # View i of every image has brightness (i + 1) / 10 and the model reads i off it: its logits are one_hot(i),
    # plus 1 for class 3 when i ≥ 1. View 0 alone says class 0; the mean over all four views says class 3.
    config = tta.Config.quick()
    _, val_set, _ = tta.split_data(config)
    data = dataclasses.replace(
        val_set,
        images=val_set.images[:2],
        labels=torch.tensor([0, 0]),
        boxes=torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 2),
    )

    def make(x, generator):
        views = torch.cat([torch.full((1, 1, 48, 48), (i + 1) / 10) for _ in range(x.shape[0]) for i in range(4)])
        inside = torch.tensor([0.1, 0.1, 0.25, 0.25])  # (cx, cy, w, h): holds the digit box [0, 10]², or not
        outside = torch.tensor([0.8, 0.8, 0.25, 0.25])
        return views, torch.stack([inside, outside, outside, outside] * x.shape[0])

    class Brightness(torch.nn.Module):
        def forward(self, v):
            index = (v.mean(dim=(1, 2, 3)) * 10).round().long() - 1
            logits = torch.nn.functional.one_hot(index, 10).float()
            logits[:, 3] += (index >= 1).float()
            return logits

    source = ViewSource(4, make, {"first1": 1, "all4": 4})
    results = evaluate_views([Brightness()], source, data, seed=0)
    assert results["first1"]["accuracy"] == [1.0]
    assert results["all4"]["accuracy"] == [0.0]
    assert results["first1"]["object_coverage"] == 1.0 and results["all4"]["object_coverage"] == 0.25
    assert results["all4"]["mean_crop_scale"] == pytest.approx(0.25)


@torch.no_grad()
def _crop_evaluation_by_hand(model, aug, test, views, seed, batch_size):
    """The crop experiment's evaluation loop as it was written before it used ``evaluate_views``."""
    model.eval()
    aug.eval()
    generator = torch.Generator().manual_seed(seed)
    correct = correct_tta = covered = 0
    scale_sum = 0.0
    for start in range(0, test.images.shape[0], batch_size):
        x, y = test.images[start : start + batch_size], test.labels[start : start + batch_size]
        correct += int((model(x).argmax(-1) == y).sum())
        out = aug(x, n_copies=views, generator=generator)
        correct_tta += int((merge_predictions(model(out.images).view(x.shape[0], views, -1)).argmax(-1) == y).sum())
        boxes = crop.view_boxes(aug, out.params)
        digit = test.boxes[start : start + batch_size].repeat_interleave(views, 0)
        covered += int((box_coverage(to_pixel_corners(boxes, x.shape[-1]), digit) >= COVERAGE_THRESHOLD).sum())
        scale_sum += float(boxes[:, 2:].mean(-1).sum())
    n = test.images.shape[0]
    return {
        "accuracy": correct / n,
        "accuracy_tta": correct_tta / n,
        "object_coverage": covered / (n * views),
        "mean_crop_scale": scale_sum / (n * views),
    }


@pytest.mark.parametrize("method", ["instaaug", "instaaug-uniform", "random-0.7"])
def test_crop_evaluation_equals_its_former_loop(method):
    config = crop.Config.quick()
    test = crop.fit_and_eval_sets(64, 40, 0)[1]
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 1, crop.NUM_CLASSES, width=8, depth=4)
    aug, _ = crop.METHODS.build(method, config, crop.NUM_CLASSES)
    ours = crop.evaluate(model, aug, test, views=3, seed=5, batch_size=16)
    theirs = _crop_evaluation_by_hand(model, aug, test, 3, 5, 16)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key
