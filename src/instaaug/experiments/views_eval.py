"""The one test-time-augmentation evaluator of the experiments on cluttered digits (crop, tta): views of each test
image from a source, the mean of the classifiers' logits over the first k views, and where the views look.

A source draws ``n`` views per image once; every entry of it uses the first k of them (for i.i.d. samples the
first k of n are k i.i.d. samples; for top-k, the first k of the top n are the top k), so entries of one kind
share their views and cost one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data.digits import box_coverage
from ..tta import merge_predictions

#: A view counts as covering the digit when it holds at least this fraction of the digit's box.
COVERAGE_THRESHOLD = 0.9

#: Views of a batch: images x (B, C, H, W) and a generator → views (B·n, C, h, w) in view order (all views of
#: image 0 first) and their boxes (B·n, 4) (cx, cy, w, h) in fractions of the image.
ViewFn = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ViewSource:
    """Views of one kind: ``make(x, generator)`` gives ``n`` views per image; entry ``name`` uses the first
    ``entries[name]`` of them."""

    n: int
    make: ViewFn
    entries: dict[str, int]


def to_pixel_corners(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Boxes (N, 4) (cx, cy, w, h) in fractions → (x0, y0, x1, y1) in pixels of a size × size image."""
    return torch.cat((boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2), dim=1) * size


def full_views(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The images themselves, one view each, whose box is the whole image."""
    return x, x.new_tensor([0.5, 0.5, 1.0, 1.0]).expand(x.shape[0], 4)


def sampled_views(source: nn.Module, n: int, boxes: Callable[[torch.Tensor], torch.Tensor] | None = None) -> ViewFn:
    """``n`` views per image drawn by an augmenter ``source``; their boxes are its sampled parameters (crops), or
    ``boxes(params)`` for augmenters whose parameters are not boxes."""

    def views(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        out = source(x, n_copies=n, generator=generator)
        return out.images, out.params if boxes is None else boxes(out.params)

    return views


@torch.no_grad()
def evaluate_views(
    models: Sequence[nn.Module],
    source: ViewSource,
    data: Any,
    seed: int,
    batch_size: int = 64,
    device: str = "cpu",
) -> dict[str, dict[str, Any]]:
    """TTA accuracy of every model (mean of logits over the views) and where the views look, per entry of a source.

    Args:
        models: classifiers mapping (N, 1, H, W) to logits (N, K), evaluated in eval mode; all see the same views.
        source: the views and the entries using them (see ``ViewSource``). Its ``make`` is called with a
            generator seeded by ``seed``, so the views are the same on every call (for the same ``batch_size``).
        data: ``images`` (N, 1, H, W), ``labels`` (N,) and digit ``boxes`` (N, 4) in pixels.
    Returns:
        entry name → ``accuracy`` (list, one fraction per model), ``object_coverage`` (the fraction of its views
        that hold ≥ ``COVERAGE_THRESHOLD`` of the digit's box) and ``mean_crop_scale`` (the views' mean side over
        the image's).
    """
    for model in models:
        model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    correct = {name: torch.zeros(len(models), dtype=torch.long) for name in source.entries}
    covered = dict.fromkeys(source.entries, 0)
    scale = dict.fromkeys(source.entries, 0.0)
    for start in range(0, len(data.images), batch_size):
        x = data.images[start : start + batch_size].to(device)
        y = data.labels[start : start + batch_size].to(device)
        images, boxes = source.make(x, generator)
        logits = [model(images).view(x.shape[0], source.n, -1) for model in models]  # (B, n, K) per model
        digit = data.boxes[start : start + batch_size].to(device).repeat_interleave(source.n, 0)
        coverage = box_coverage(to_pixel_corners(boxes, x.shape[-1]), digit).view(x.shape[0], source.n)
        sides = boxes[:, 2:].mean(-1).view(x.shape[0], source.n)
        for name, n in source.entries.items():
            for i, per_view in enumerate(logits):
                correct[name][i] += int((merge_predictions(per_view[:, :n]).argmax(-1) == y).sum())
            covered[name] += int((coverage[:, :n] >= COVERAGE_THRESHOLD).sum())
            scale[name] += float(sides[:, :n].sum())
    size = max(len(data.images), 1)
    return {
        name: {
            "accuracy": [int(c) / size for c in correct[name]],
            "object_coverage": covered[name] / (size * source.entries[name]),
            "mean_crop_scale": scale[name] / (size * source.entries[name]),
        }
        for name in source.entries
    }
