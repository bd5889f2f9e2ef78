"""Targets that follow the sampled transform: segmentation masks, heat maps, boxes and keypoints.

Pass them with the images, ``out = aug(x, targets=Targets(masks=m, boxes=b))``; ``out.targets`` is a
``ViewTargets`` holding each target as the views show it (n_copies views per input, in view order, like
``out.images``). Only crop, the geometric families and flip move targets; colour families leave them untouched.

Coordinates are in pixels, continuous: the image spans [0, W] × [0, H], x to the right and y down, and pixel
(row i, column j) covers [j, j + 1] × [i, i + 1], its centre at (j + 0.5, i + 0.5). Boxes are (x0, y0, x1, y1) in
those units (x1, y1 exclusive as pixel indices: a box around pixels 2..5 is (2, ·, 6, ·)); keypoints are (x, y).

Every view is one affine map of the input (``AugmentOutput.theta``: the view's normalised coordinates → the
input's, as ``F.affine_grid`` with ``align_corners=False`` takes it), so targets are mapped exactly:

* masks (integer labels) are resampled with nearest-neighbour sampling: no new label values; where the view
  shows padding (``padding_mode="zeros"``) they read ``ignore_index`` (with ``border`` or ``reflection``
  padding they follow the image's padded content). ``ViewTargets.mask_probs(K)`` gives them as soft one-hot maps
  resampled bilinearly, differentiable with respect to the sampled parameters (see ``segmentation_loss``);
* heat maps (float, any channels) are resampled bilinearly, like the image;
* boxes: the enclosing box of the four transformed corners, clipped to the view, with a validity flag;
* keypoints: the transformed points, with a visibility flag (inside the view).

``to_input_frame`` maps dense predictions made on the views back to the input's frame, with the coverage of each
view (which input pixels it saw).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from .transforms import resample
from .validation import value_checks_on

#: The label a mask takes where its view shows padding (also a common "ignore" label of segmentation datasets).
IGNORE_INDEX = 255
#: A box is valid in a view when at least this fraction of its transformed area lies inside the view.
MIN_VISIBLE = 0.25
_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_tensor(value: Any, name: str, shape: str, dims: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(value).__name__}")
    if value.dim() != dims:
        raise ValueError(f"{name} must have shape {shape}, got {value.dim()} dimensions {tuple(value.shape)}")
    return value


@dataclass(frozen=True)
class Targets:
    """Targets of a batch of B images (B, C, H, W), to be transformed with them (``aug(x, targets=...)``).

    Attributes:
        masks: (B, 1, H, W) integer labels (segmentation), or None.
        heatmaps: (B, K, H, W) float maps (soft masks, heat maps, depth, ...), resampled bilinearly, or None.
        boxes: (B, K, 4) float boxes (x0, y0, x1, y1) in pixels with x1 ≥ x0 and y1 ≥ y0, or None.
        keypoints: (B, K, 2) float points (x, y) in pixels, or None; NaN marks a missing point.
        ignore_index: the mask label where a view shows padding; must fit the masks' dtype.
        min_visible: a transformed box is valid when at least this fraction of its area lies inside the view.
        keypoint_flip_index: for views that are mirrored, keypoint k takes the place of keypoint
            ``keypoint_flip_index[k]`` (e.g. left eye ↔ right eye); None keeps the order.
    """

    masks: torch.Tensor | None = None
    heatmaps: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    keypoints: torch.Tensor | None = None
    ignore_index: int = IGNORE_INDEX
    min_visible: float = MIN_VISIBLE
    keypoint_flip_index: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.masks is not None:
            m = _check_tensor(self.masks, "masks", "(B, 1, H, W)", 4)
            if m.dtype not in _INTEGER_DTYPES:
                raise TypeError(
                    f"masks must hold integer labels (uint8 … int64), got {m.dtype}; pass float maps as heatmaps"
                )
            if m.shape[1] != 1:
                raise ValueError(f"masks must have shape (B, 1, H, W), got {tuple(m.shape)}")
            info = torch.iinfo(m.dtype)
            if isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, int):
                raise TypeError(f"ignore_index must be an int, got {self.ignore_index!r}")
            if not info.min <= self.ignore_index <= info.max:
                raise ValueError(f"ignore_index {self.ignore_index} does not fit the masks' dtype {m.dtype}")
        if self.heatmaps is not None:
            h = _check_tensor(self.heatmaps, "heatmaps", "(B, K, H, W)", 4)
            if not h.is_floating_point():
                raise TypeError(f"heatmaps must be floating point, got {h.dtype}; pass integer labels as masks")
        for name, width in (("boxes", 4), ("keypoints", 2)):
            t = getattr(self, name)
            if t is None:
                continue
            shape = f"(B, K, {width})"
            _check_tensor(t, name, shape, 3)
            if t.shape[-1] != width:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
            if not t.is_floating_point():
                raise TypeError(f"{name} must be floating point (pixels), got {t.dtype}")
        if isinstance(self.min_visible, bool) or not isinstance(self.min_visible, int | float):
            raise TypeError(f"min_visible must be a number in [0, 1], got {self.min_visible!r}")
        if not 0 <= self.min_visible <= 1:
            raise ValueError(f"min_visible must be in [0, 1], got {self.min_visible}")
        if self.keypoint_flip_index is not None:
            if self.keypoints is None:
                raise ValueError("keypoint_flip_index needs keypoints")
            index = tuple(self.keypoint_flip_index)
            if sorted(index) != list(range(self.keypoints.shape[1])):
                raise ValueError(
                    f"keypoint_flip_index must be a permutation of 0 … {self.keypoints.shape[1] - 1}, got {index}"
                )
            object.__setattr__(self, "keypoint_flip_index", index)
        if all(getattr(self, k) is None for k in ("masks", "heatmaps", "boxes", "keypoints")):
            raise ValueError("targets hold nothing: give masks, heatmaps, boxes or keypoints")

    @classmethod
    def of(cls, value: Targets | Mapping[str, Any]) -> Targets:
        """``value`` itself, or a ``Targets`` built from a mapping of its fields (unknown keys refused)."""
        if isinstance(value, Targets):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"targets must be a Targets or a mapping of its fields, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown target keys {unknown}; known: {sorted(known)}")
        return cls(**value)

    def check(self, batch: int, size: tuple[int, int]) -> None:
        """Check that every target belongs to a batch of ``batch`` images of ``size`` (H, W); with value checks on
        (see ``validation.trusted_inputs``) also that boxes are finite and ordered."""
        for name in ("masks", "heatmaps"):
            t = getattr(self, name)
            if t is not None and (t.shape[0] != batch or tuple(t.shape[-2:]) != tuple(size)):
                raise ValueError(
                    f"{name} must be ({batch}, ·, {size[0]}, {size[1]}) to match the images, got {tuple(t.shape)}"
                )
        for name in ("boxes", "keypoints"):
            t = getattr(self, name)
            if t is not None and t.shape[0] != batch:
                raise ValueError(f"{name} must have {batch} rows to match the images, got {tuple(t.shape)}")
        if self.boxes is not None and value_checks_on():
            if not bool(torch.isfinite(self.boxes).all()):
                raise ValueError("boxes contain NaN or Inf")
            if bool((self.boxes[..., 2:] < self.boxes[..., :2]).any()):
                raise ValueError("boxes must be (x0, y0, x1, y1) with x1 ≥ x0 and y1 ≥ y0")

    def repeat(self, n: int) -> Targets:
        """Every target repeated n times along the batch (n consecutive rows per input, like the views)."""
        if n == 1:
            return self
        values = {
            k: getattr(self, k).repeat_interleave(n, dim=0)
            for k in ("masks", "heatmaps", "boxes", "keypoints")
            if getattr(self, k) is not None
        }
        return Targets(
            **values,
            ignore_index=self.ignore_index,
            min_visible=self.min_visible,
            keypoint_flip_index=self.keypoint_flip_index,
        )

    def warp(
        self,
        theta: torch.Tensor | None,
        in_size: tuple[int, int],
        out_size: tuple[int, int],
        padding_mode: str = "zeros",
        flipped: torch.Tensor | None = None,
    ) -> ViewTargets:
        """These targets (one row per view) as the views show them.

        Args:
            theta: (N, 2, 3) the views' maps to the input (``AugmentOutput.theta``); None when the views do not
                move pixels (colour families only), which leaves the targets as they are.
            in_size, out_size: the input's and the views' (H, W).
            padding_mode: the augmenter's padding mode.
            flipped: (N,) whether each view is mirrored (for ``keypoint_flip_index``); None for none.
        """
        masks, heatmaps, boxes, keypoints = self.masks, self.heatmaps, self.boxes, self.keypoints
        box_valid = keypoint_visible = None
        if theta is not None:
            if masks is not None:
                masks = warp_masks(masks, theta, out_size, padding_mode, self.ignore_index)
            if heatmaps is not None:
                heatmaps = resample(heatmaps, theta, out_size, padding_mode)
            if boxes is not None:
                boxes, box_valid = warp_boxes(boxes, theta, in_size, out_size, self.min_visible)
            if keypoints is not None:
                keypoints = points_to_view(keypoints, theta, in_size, out_size)
                if self.keypoint_flip_index is not None and flipped is not None:
                    swapped = keypoints[:, list(self.keypoint_flip_index)]
                    keypoints = torch.where(flipped.bool()[:, None, None], swapped, keypoints)
        elif boxes is not None:
            boxes, box_valid = warp_boxes(boxes, None, in_size, out_size, self.min_visible)
        if keypoints is not None:
            keypoint_visible = _inside(keypoints, out_size)
        return ViewTargets(
            masks=masks,
            heatmaps=heatmaps,
            boxes=boxes,
            box_valid=box_valid,
            keypoints=keypoints,
            keypoint_visible=keypoint_visible,
            ignore_index=self.ignore_index,
            size=tuple(out_size),
            source_masks=self.masks,
            theta=theta,
            padding_mode=padding_mode,
        )


@dataclass(frozen=True)
class ViewTargets:
    """Targets as the N = B·n views show them (``out.targets``); fields are None where none were given.

    Attributes:
        masks: (N, 1, h, w) labels, the masks' dtype; ``ignore_index`` where the view shows padding.
        heatmaps: (N, K, h, w) bilinearly resampled maps (zero where the view shows zero padding).
        boxes: (N, K, 4) boxes in the view's pixels, clipped to it; box_valid: (N, K) bool, False for boxes that
            left the view or keep less than ``min_visible`` of their area in it.
        keypoints: (N, K, 2) points in the view's pixels (not clipped); keypoint_visible: (N, K) bool, inside the
            view (and not missing).
        ignore_index: the label of padding in ``masks``.
        size: the views' (h, w).
    """

    masks: torch.Tensor | None = None
    heatmaps: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    box_valid: torch.Tensor | None = None
    keypoints: torch.Tensor | None = None
    keypoint_visible: torch.Tensor | None = None
    ignore_index: int = IGNORE_INDEX
    size: tuple[int, int] = (0, 0)
    # What ``mask_probs`` needs: the input masks (one row per view) and the views' maps.
    source_masks: torch.Tensor | None = field(default=None, repr=False)
    theta: torch.Tensor | None = field(default=None, repr=False)
    padding_mode: str = field(default="zeros", repr=False)

    def mask_probs(self, num_classes: int) -> torch.Tensor:
        """The masks as soft one-hot maps (N, K, h, w), K = ``num_classes``, resampled bilinearly.

        Differentiable with respect to the sampled geometric parameters (through ``theta``), so a loss against
        them gives reparameterised interval families their exact pathwise gradient; nearest-neighbour labels are
        piecewise constant in the parameters and would miss the targets' share of it. Pixels labelled outside
        [0, K) (``ignore_index``) and zero padding have all-zero probabilities (weight 0 in
        ``segmentation_loss``).
        """
        if self.source_masks is None:
            raise ValueError("mask_probs needs masks among the targets")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        dtype = self.theta.dtype if self.theta is not None else torch.float32
        classes = torch.arange(num_classes, device=self.source_masks.device)
        one_hot = (self.source_masks == classes[:, None, None]).to(dtype)  # (N, K, H, W)
        if self.theta is None:
            return one_hot
        return resample(one_hot, self.theta, self.size, self.padding_mode)


def _inside(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, K) whether points (N, K, 2) lie in [0, w] × [0, h] (False for NaN)."""
    h, w = size
    x, y = points.unbind(-1)
    return (x >= 0) & (x <= w) & (y >= 0) & (y <= h)


def invert_affine(theta: torch.Tensor) -> torch.Tensor:
    """The inverse maps (N, 2, 3) of affine maps theta (N, 2, 3): y = A·x + b → x = A⁻¹·(y - b)."""
    a, b = theta[..., :2], theta[..., 2:]
    a_inv = torch.linalg.inv(a)
    return torch.cat((a_inv, -a_inv @ b), dim=-1)


def points_to_view(
    points: torch.Tensor, theta: torch.Tensor, in_size: tuple[int, int], out_size: tuple[int, int]
) -> torch.Tensor:
    """Input pixels (N, K, 2) → the views' pixels (N, K, 2) for views with maps theta (N, 2, 3)."""
    (h, w), (oh, ow) = in_size, out_size
    dtype = torch.promote_types(points.dtype, torch.float32)
    inverse = invert_affine(theta.to(dtype))
    x, y = points.to(dtype).unbind(-1)
    normalised = torch.stack((x * (2 / w) - 1, y * (2 / h) - 1), -1)  # the input's [-1, 1] coordinates
    u, v = (normalised @ inverse[:, :, :2].transpose(1, 2) + inverse[:, None, :, 2]).unbind(-1)
    return torch.stack(((u + 1) * (ow / 2), (v + 1) * (oh / 2)), -1).to(points.dtype)


def warp_boxes(
    boxes: torch.Tensor,
    theta: torch.Tensor | None,
    in_size: tuple[int, int],
    out_size: tuple[int, int],
    min_visible: float = MIN_VISIBLE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (N, K, 4) (x0, y0, x1, y1) in input pixels → (boxes in the views' pixels clipped to them (N, K, 4),
    valid (N, K)): each the enclosing box of its four transformed corners; valid when it has a positive area and
    at least ``min_visible`` of it lies inside the view. theta None: the identity (same size)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    if theta is not None:
        corners = torch.stack((torch.stack((x0, y0), -1), torch.stack((x1, y0), -1)), -2)
        corners = torch.cat((corners, torch.stack((torch.stack((x0, y1), -1), torch.stack((x1, y1), -1)), -2)), -2)
        n, k = boxes.shape[:2]
        moved = points_to_view(corners.reshape(n, k * 4, 2), theta, in_size, out_size).reshape(n, k, 4, 2)
        (x0, y0), (x1, y1) = moved.amin(dim=2).unbind(-1), moved.amax(dim=2).unbind(-1)
    area = (x1 - x0) * (y1 - y0)
    oh, ow = out_size
    cx0, cx1 = x0.clamp(0, ow), x1.clamp(0, ow)
    cy0, cy1 = y0.clamp(0, oh), y1.clamp(0, oh)
    clipped = (cx1 - cx0) * (cy1 - cy0)
    valid = (clipped > 0) & (clipped >= min_visible * area)
    return torch.stack((cx0, cy0, cx1, cy1), -1), valid


def warp_masks(
    masks: torch.Tensor,
    theta: torch.Tensor,
    out_size: tuple[int, int],
    padding_mode: str = "zeros",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Integer label maps (N, 1, H, W) resampled on the views' grids with nearest-neighbour sampling (N, 1, h, w),
    in their own dtype; with zero padding, pixels that show padding read ``ignore_index``."""
    # Labels travel as floats through grid_sample: float32 holds every 16-bit label exactly, float64 every 32-bit.
    exact = torch.float32 if masks.dtype in (torch.uint8, torch.int8, torch.int16) else torch.float64
    values = masks.to(exact)
    if padding_mode != "zeros":
        return resample(values, theta.to(exact), out_size, padding_mode, mode="nearest").to(masks.dtype)
    # A channel of ones, sampled on the same grid, reads 0 exactly where the view shows padding.
    sampled = resample(torch.cat((values, torch.ones_like(values)), 1), theta.to(exact), out_size, mode="nearest")
    out = torch.where(sampled[:, 1:] > 0, sampled[:, :1], torch.full_like(sampled[:, :1], ignore_index))
    return out.to(masks.dtype)


def to_input_frame(
    dense: torch.Tensor,
    theta: torch.Tensor | None,
    in_size: tuple[int, int],
    mode: str = "bilinear",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map dense predictions made on views back to the input's frame.

    Args:
        dense: (N, K, h, w) per-view maps (segmentation logits, heat maps, ...), at the views' size.
        theta: (N, 2, 3) the views' maps to the input (``AugmentOutput.theta``); None for views that are the
            input itself (no pixel moved).
        in_size: the input's (H, W).
        mode: ``bilinear`` or ``nearest`` (for label maps).

    Returns:
        values (N, K, H, W): each view's prediction at every input pixel (outside the view: its nearest edge
        value, to be weighted by the coverage), and
        coverage (N, 1, H, W) in [0, 1]: how much of each input pixel the view saw (bilinear weight of the view's
        pixels; 1 inside, 0 outside, fractional along its border).
    """
    if not dense.is_floating_point():
        raise TypeError(f"dense predictions must be floating point, got {dense.dtype}")
    if theta is None:
        if tuple(dense.shape[-2:]) != tuple(in_size):
            raise ValueError(f"views of the input's own frame must be {tuple(in_size)}, got {tuple(dense.shape)}")
        return dense, dense.new_ones(dense.shape[0], 1, *dense.shape[-2:])
    inverse = invert_affine(theta.to(torch.promote_types(theta.dtype, torch.float32)))
    # Border padding: a view's values are not faded towards zero along its edge (the coverage weighs them there).
    values = resample(dense, inverse, in_size, "border", mode=mode)
    coverage = resample(dense.new_ones(dense.shape[0], 1, *dense.shape[-2:]), inverse, in_size, mode=mode)
    return values, coverage
