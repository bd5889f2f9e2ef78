"""Cluttered digits: small handwritten digits among digit-like clutter, a benchmark for learned crops.

Built from scikit-learn's bundled 8×8 handwritten digits (``sklearn.datasets.load_digits``: 1797 images with
values 0..16, ten classes; no download). Every image is a 48×48 (by default) one-channel canvas in [0, 1]:

* the digit (values ÷ 16) is upscaled bilinearly (``F.interpolate``, ``align_corners=False``) to a random side
  s ~ U{10, …, 16} px and placed uniformly at random, fully inside the canvas;
* 8–12 clutter fragments (count uniform) are f×f patches, f uniform in {6, 7, 8}, cut at a uniformly random
  position from a *different* source digit (any other of the 1797, upscaled the same way to its own random side
  in 10..16). A patch is kept only if its maximum is ≥ 0.5 and ≥ 20% of its pixels are > 0.1, and a placement
  only if at most 25% of the fragment's area lies inside the digit's box; otherwise the fragment (source, side,
  patch position and placement) is drawn again;
* fragments and digit are combined with a pixel-wise maximum (the digit last, which with a maximum is the same
  as in any order).

The digit's box is the tight box of its pasted pixels > 0.1, in canvas pixels, as (x0, y0, x1, y1) with x1 and
y1 exclusive. The fragments look like pieces of digits, so a classifier that sees the whole canvas must find the
digit among them, and a crop that contains the digit's box and little else makes the task much easier: the
``box_coverage`` of a learned crop tells how often it keeps the object.

Splits: one fixed permutation of the 1797 source digits (``np.random.default_rng(SPLIT_SEED)``, independent of
the generation seed) gives 1300 training and 497 test digits. All 1797 images are always generated together
from ``seed``, in source order, and a split selects its images, so ``split="train"`` and ``split="test"`` are
exactly the matching images of ``split="all"`` and the splits never share a source digit (fragments may be cut
from any other source digit, including ones of the other split: they are 6–8 px pieces whose label is unused).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

#: Number of training and test images (source digits) of the two splits.
TRAIN_SIZE = 1300
TEST_SIZE = 497
#: Seed of the fixed permutation of the 1797 source digits that defines the splits.
SPLIT_SEED = 20220508
#: A pixel of a digit counts as ink above this value (box, fragment density).
INK_THRESHOLD = 0.1
#: A fragment patch is kept only if its maximum reaches this value ...
FRAGMENT_MIN_PEAK = 0.5
#: ... and at least this fraction of its pixels are ink.
FRAGMENT_MIN_INK = 0.2
NUM_CLASSES = 10
# Candidate fragments are drawn in rounds; give up (clear error) if this many rounds leave some image short.
_MAX_ROUNDS = 200

Split = Literal["train", "test", "all"]


@dataclass(frozen=True)
class ClutteredDigits:
    """A cluttered-digits split.

    Attributes:
        images: (N, 1, C, C) float32 in [0, 1], C = the canvas side (48 by default).
        labels: (N,) int64 digit classes 0..9.
        boxes: (N, 4) float32 tight boxes of the digits in canvas pixels, (x0, y0, x1, y1) with x1, y1 exclusive.
        source: (N,) int64 index of each image's digit in ``sklearn.datasets.load_digits()``.
        masks: (N, 1, C, C) uint8 segmentation labels: 1 + the digit's class on the digit's ink (its own pasted
            pixels > 0.1, also where a fragment overlaps them), 0 elsewhere (background and clutter); 11 classes.
    """

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    source: torch.Tensor
    masks: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def canvas(self) -> int:
        """The image side C in pixels."""
        return self.images.shape[-1]

    def subset(self, start: int, stop: int) -> ClutteredDigits:
        """Images ``start`` … ``stop - 1`` of this split, every field alike."""
        return ClutteredDigits(*(getattr(self, f.name)[start:stop] for f in dataclasses.fields(self)))

    def normalised_boxes(self) -> torch.Tensor:
        """The boxes (N, 4) as fractions of the image side, in [0, 1]: (x0, y0, x1, y1) / C."""
        return self.boxes / self.canvas


class _Rendered(NamedTuple):
    """Everything the generator drew (internal; for tests and diagnostics). M = the number of fragments."""

    images: np.ndarray  # (N, C, C) float32, the full images
    digit_layer: np.ndarray  # (N, C, C) float32, the digit alone
    boxes: np.ndarray  # (N, 4) int64 digit boxes (x0, y0, x1, y1), exclusive ends
    digit_side: np.ndarray  # (N,) int64 side s of the upscaled digit
    digit_xy: np.ndarray  # (N, 2) int64 top-left corner (x, y) of the pasted s×s digit
    fragment_image: np.ndarray  # (M,) int64 index of the image a fragment belongs to
    fragment_source: np.ndarray  # (M,) int64 source digit it was cut from
    fragment_boxes: np.ndarray  # (M, 4) int64 (x0, y0, x1, y1) of the pasted f×f fragment
    fragment_patches: np.ndarray  # (M, F, F) float32 patches, zero beyond f (F = the largest fragment size)


@functools.lru_cache(maxsize=1)
def bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 sklearn digits as (images (1797, 8, 8) float32 in [0, 1], labels (1797,) int64), read-only."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0).copy()
    labels = np.asarray(bunch.target, dtype=np.int64).copy()
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def split_indices(split: Split) -> np.ndarray:
    """Indices into the 1797 sklearn digits of a split: the fixed permutation's first 1300 ("train"), its last
    497 ("test"), or ``arange(1797)`` ("all"). The same for every generation seed."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    n = TRAIN_SIZE + TEST_SIZE
    if split == "all":
        return np.arange(n)
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(perm[:TRAIN_SIZE]) if split == "train" else np.sort(perm[TRAIN_SIZE:])


def _upscaled_bank(digits: np.ndarray, sides: range, pad: int) -> np.ndarray:
    """Every digit upscaled bilinearly to every side s: (len(sides), K, S, S) float32 with S = max(sides) + pad,
    bank[i, k, :s, :s] = digit k at side s = sides[i], zero elsewhere."""
    x = torch.from_numpy(np.array(digits, dtype=np.float32))[:, None]
    size = sides[-1] + pad
    bank = np.zeros((len(sides), len(digits), size, size), dtype=np.float32)
    for i, s in enumerate(sides):
        up = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        bank[i, :, :s, :s] = up[:, 0].clamp(0, 1).numpy()
    return bank


def _tight_boxes(ink: np.ndarray) -> np.ndarray:
    """Tight boxes (N, 4) (x0, y0, x1, y1), exclusive ends, of boolean masks ink (N, H, W), each non-empty."""
    cols, rows = ink.any(axis=1), ink.any(axis=2)
    x0, y0 = cols.argmax(axis=1), rows.argmax(axis=1)
    x1 = cols.shape[1] - cols[:, ::-1].argmax(axis=1)
    y1 = rows.shape[1] - rows[:, ::-1].argmax(axis=1)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)


def _paste_max(canvas: np.ndarray, image: np.ndarray, x: np.ndarray, y: np.ndarray, patches: np.ndarray) -> None:
    """canvas[image, y:y+P, x:x+P] = max(canvas, patches) for every patch (M, P, P), vectorised (scatter-max).
    canvas (N, H, W) must be large enough for every window (pad it)."""
    if len(patches) == 0:
        return
    _, h, w = canvas.shape
    p = patches.shape[-1]
    ar = np.arange(p)
    flat = image[:, None, None] * (h * w) + (y[:, None, None] + ar[:, None]) * w + (x[:, None, None] + ar[None, :])
    out = torch.from_numpy(canvas).view(-1)
    out.scatter_reduce_(0, torch.from_numpy(flat.reshape(-1)), torch.from_numpy(patches.reshape(-1)), "amax")


def _render(
    digits: np.ndarray,
    seed: int,
    canvas: int,
    digit_sizes: tuple[int, int],
    n_fragments: tuple[int, int],
    fragment_sizes: tuple[int, ...],
    max_overlap: float,
) -> _Rendered:
    """Draw one cluttered image per source digit (K, 8, 8) in [0, 1]; deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    k = len(digits)
    sides = range(digit_sizes[0], digit_sizes[1] + 1)
    big_f = max(fragment_sizes)
    bank = _upscaled_bank(digits, sides, pad=big_f)
    s_max = sides[-1]
    pad = max(s_max, big_f)
    layer = np.zeros((k, canvas + pad, canvas + pad), dtype=np.float32)

    # The digit: side, top-left corner (fully inside the canvas), box of its ink.
    side_idx = rng.integers(0, len(sides), size=k)
    side = np.asarray(sides)[side_idx]
    dx = rng.integers(0, canvas - side + 1)
    dy = rng.integers(0, canvas - side + 1)
    window = bank[side_idx, np.arange(k), :s_max, :s_max]  # zero beyond each digit's side
    ink = window > INK_THRESHOLD
    if not ink.any(axis=(1, 2)).all():
        raise ValueError(f"some digit has no pixel > {INK_THRESHOLD} after upscaling")
    boxes = _tight_boxes(ink) + np.stack([dx, dy, dx, dy], axis=1)
    _paste_max(layer, np.arange(k), dx, dy, window)
    digit_layer = layer[:, :canvas, :canvas].copy()

    # Fragments: every image needs count[i] of them; draw candidates in rounds, keep the first valid ones in order.
    count = rng.integers(n_fragments[0], n_fragments[1] + 1, size=k)
    need = count.copy()
    kept: list[tuple[np.ndarray, ...]] = []
    ar = np.arange(big_f)
    f_choices = np.asarray(fragment_sizes)
    per_round = max(1, 3 * n_fragments[1])
    for _ in range(_MAX_ROUNDS):
        todo = np.flatnonzero(need > 0)
        if len(todo) == 0:
            break
        img = np.repeat(todo, per_round)
        m = len(img)
        src = rng.integers(0, k - 1, size=m)
        src = src + (src >= img)  # a different source digit
        s_idx = rng.integers(0, len(sides), size=m)
        s = np.asarray(sides)[s_idx]
        f = f_choices[rng.integers(0, len(f_choices), size=m)]
        u = rng.integers(0, s - f + 1)
        v = rng.integers(0, s - f + 1)
        px = rng.integers(0, canvas - f + 1)
        py = rng.integers(0, canvas - f + 1)
        rows = v[:, None, None] + ar[:, None]
        cols = u[:, None, None] + ar[None, :]
        inside = (ar[None, :, None] < f[:, None, None]) & (ar[None, None, :] < f[:, None, None])
        patch = np.where(inside, bank[s_idx[:, None, None], src[:, None, None], rows, cols], 0.0).astype(np.float32)
        peak_ok = patch.max(axis=(1, 2)) >= FRAGMENT_MIN_PEAK
        ink_ok = (patch > INK_THRESHOLD).sum(axis=(1, 2)) >= FRAGMENT_MIN_INK * f * f
        b = boxes[img]
        ox = np.clip(np.minimum(px + f, b[:, 2]) - np.maximum(px, b[:, 0]), 0, None)
        oy = np.clip(np.minimum(py + f, b[:, 3]) - np.maximum(py, b[:, 1]), 0, None)
        place_ok = ox * oy <= max_overlap * f * f
        valid = peak_ok & ink_ok & place_ok
        # Rank of each valid candidate among its image's valid candidates (candidates are grouped by image).
        rank = np.cumsum(valid.reshape(-1, per_round), axis=1).reshape(-1) - 1
        take = valid & (rank < need[img])
        kept.append((img[take], src[take], px[take], py[take], f[take], patch[take]))
        np.subtract.at(need, img[take], 1)
    if need.any():
        raise RuntimeError(
            f"could not place every fragment after {_MAX_ROUNDS} rounds; relax max_overlap={max_overlap}, "
            f"the fragment sizes {fragment_sizes} or enlarge the canvas ({canvas})"
        )
    if not kept:  # no fragment at all (n_fragments = (0, 0))
        empty = np.zeros(0, dtype=np.int64)
        kept.append((empty, empty, empty, empty, empty, np.zeros((0, big_f, big_f), dtype=np.float32)))
    f_img, f_src, f_x, f_y, f_f, f_patch = (np.concatenate(parts) for parts in zip(*kept, strict=True))
    order = np.argsort(f_img, kind="stable")
    f_img, f_src, f_x, f_y, f_f, f_patch = (a[order] for a in (f_img, f_src, f_x, f_y, f_f, f_patch))
    _paste_max(layer, f_img, f_x, f_y, f_patch)
    images = layer[:, :canvas, :canvas].copy()
    return _Rendered(
        images=images,
        digit_layer=digit_layer,
        boxes=boxes,
        digit_side=side.astype(np.int64),
        digit_xy=np.stack([dx, dy], axis=1).astype(np.int64),
        fragment_image=f_img.astype(np.int64),
        fragment_source=f_src.astype(np.int64),
        fragment_boxes=np.stack([f_x, f_y, f_x + f_f, f_y + f_f], axis=1).astype(np.int64),
        fragment_patches=f_patch,
    )


def _int_range(name: str, value: tuple[int, int], low: int) -> tuple[int, int]:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{name} must be a pair of ints (low, high), got {value!r}")
    lo, hi = int(value[0]), int(value[1])
    if lo < low or hi < lo:
        raise ValueError(f"{name} must satisfy {low} ≤ low ≤ high, got {value!r}")
    return lo, hi


def _validate(
    canvas: int,
    digit_sizes: tuple[int, int],
    n_fragments: tuple[int, int],
    fragment_sizes: tuple[int, ...],
    max_overlap: float,
) -> tuple[int, tuple[int, int], tuple[int, int], tuple[int, ...], float]:
    if isinstance(canvas, bool) or not isinstance(canvas, (int, np.integer)) or canvas < 1:
        raise ValueError(f"canvas must be a positive int, got {canvas!r}")
    canvas = int(canvas)
    digit_sizes = _int_range("digit_sizes", digit_sizes, low=2)
    if digit_sizes[1] > canvas:
        raise ValueError(f"the largest digit side {digit_sizes[1]} exceeds the canvas side {canvas}")
    n_fragments = _int_range("n_fragments", n_fragments, low=0)
    if (
        not isinstance(fragment_sizes, (tuple, list))
        or len(fragment_sizes) == 0
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in fragment_sizes)
    ):
        raise ValueError(f"fragment_sizes must be a non-empty sequence of positive ints, got {fragment_sizes!r}")
    fragment_sizes = tuple(int(v) for v in fragment_sizes)
    if max(fragment_sizes) > digit_sizes[0]:
        raise ValueError(
            f"fragments are cut from upscaled digits: the largest fragment side {max(fragment_sizes)} must not "
            f"exceed the smallest digit side {digit_sizes[0]}"
        )
    if isinstance(max_overlap, bool) or not isinstance(max_overlap, (int, float)) or not 0 <= max_overlap <= 1:
        raise ValueError(f"max_overlap must be a number in [0, 1], got {max_overlap!r}")
    return canvas, digit_sizes, n_fragments, fragment_sizes, float(max_overlap)


def cluttered_digits(
    split: Split = "train",
    *,
    seed: int = 0,
    canvas: int = 48,
    digit_sizes: tuple[int, int] = (10, 16),
    n_fragments: tuple[int, int] = (8, 12),
    fragment_sizes: tuple[int, ...] = (6, 7, 8),
    max_overlap: float = 0.25,
) -> ClutteredDigits:
    """Generate the cluttered-digits images of a split, deterministically from ``seed``.

    All 1797 images are generated (about half a second) and the split's are returned, sorted by source index, so
    the splits are disjoint and fixed (see ``split_indices``) and every split agrees with ``split="all"``.

    Args:
        split: "train" (1300 images), "test" (497) or "all" (1797).
        seed: the seed of ``np.random.default_rng`` for sizes, positions and fragments.
        canvas: the image side C in pixels.
        digit_sizes: (low, high), inclusive: the side of the upscaled digit (and of fragment sources) is uniform
            on these integers; high ≤ C.
        n_fragments: (low, high), inclusive: the number of clutter fragments per image is uniform on these.
        fragment_sizes: the possible fragment sides f (uniform); each must be ≤ the smallest digit side.
        max_overlap: a fragment may have at most this fraction of its area inside the digit's box.
    Returns:
        a ``ClutteredDigits`` with images (N, 1, C, C) float32 in [0, 1], labels (N,) int64, boxes (N, 4)
        float32 in pixels, source (N,) int64 and masks (N, 1, C, C) uint8.
    """
    index = split_indices(split)
    canvas, digit_sizes, n_fragments, fragment_sizes, max_overlap = _validate(
        canvas, digit_sizes, n_fragments, fragment_sizes, max_overlap
    )
    digits, labels = bundled_digits()
    r = _render(digits, int(seed), canvas, digit_sizes, n_fragments, fragment_sizes, max_overlap)
    return ClutteredDigits(
        images=torch.from_numpy(r.images[index])[:, None],
        labels=torch.from_numpy(labels[index].copy()),
        boxes=torch.from_numpy(r.boxes[index].astype(np.float32)),
        source=torch.from_numpy(index.astype(np.int64)),
        masks=torch.from_numpy(np.where(r.digit_layer[index] > INK_THRESHOLD, 1 + labels[index, None, None], 0)).to(
            torch.uint8
        )[:, None],
    )


def fit_and_eval_sets(n_train: int, n_test: int, validation: int = 0) -> tuple[ClutteredDigits, ClutteredDigits]:
    """The images an experiment trains on and those it reports on: the first ``n_train`` training images and the
    first ``n_test`` test images, or, with ``validation`` > 0, the first ``n_train - validation`` training images
    and the next ``validation`` of them (held out, to choose settings without looking at the test set)."""
    train = cluttered_digits("train")
    if validation:
        fit = n_train - validation
        return train.subset(0, fit), train.subset(fit, n_train)
    return train.subset(0, n_train), cluttered_digits("test").subset(0, n_test)


def box_coverage(crop_boxes: torch.Tensor, object_boxes: torch.Tensor) -> torch.Tensor:
    """The fraction of each object box's area that lies inside its crop box.

    Args:
        crop_boxes: (..., 4) boxes (x0, y0, x1, y1), e.g. (N, 4) or (K, N, 4) for K crops per image.
        object_boxes: (..., 4) boxes in the same units, broadcastable against ``crop_boxes`` (e.g. (N, 4)); every
            object box must have a positive area.
    Returns:
        (...) the broadcast leading shape, e.g. (N,): area(crop ∩ object) / area(object), in [0, 1].
    """
    crop_boxes, object_boxes = torch.as_tensor(crop_boxes), torch.as_tensor(object_boxes)
    if crop_boxes.shape[-1:] != (4,) or object_boxes.shape[-1:] != (4,):
        raise ValueError(
            f"boxes must have shape (..., 4), got {tuple(crop_boxes.shape)} and {tuple(object_boxes.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(crop_boxes.dtype, object_boxes.dtype), torch.float32)
    crop, obj = crop_boxes.to(dtype), object_boxes.to(dtype)
    obj_w, obj_h = obj[..., 2] - obj[..., 0], obj[..., 3] - obj[..., 1]
    if not bool(((obj_w > 0) & (obj_h > 0)).all()):
        raise ValueError("every object box must have x1 > x0 and y1 > y0")
    ix = (torch.minimum(crop[..., 2], obj[..., 2]) - torch.maximum(crop[..., 0], obj[..., 0])).clamp(min=0)
    iy = (torch.minimum(crop[..., 3], obj[..., 3]) - torch.maximum(crop[..., 1], obj[..., 1])).clamp(min=0)
    return ix * iy / (obj_w * obj_h)
