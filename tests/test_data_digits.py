"""Cluttered digits: determinism, shapes, splits, tight boxes, the fragment rules, box coverage, bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instaaug.data.digits import (
    FRAGMENT_MIN_INK,
    FRAGMENT_MIN_PEAK,
    INK_THRESHOLD,
    TEST_SIZE,
    TRAIN_SIZE,
    ClutteredDigits,
    _render,
    box_coverage,
    bundled_digits,
    cluttered_digits,
    split_indices,
)

DEFAULTS = {"canvas": 48, "digit_sizes": (10, 16), "n_fragments": (8, 12), "fragment_sizes": (6, 7, 8)}


@pytest.fixture(scope="module")
def everything() -> ClutteredDigits:
    return cluttered_digits("all", seed=0)


@pytest.fixture(scope="module")
def rendered():
    """The generator's internals on 300 source digits (fragments included)."""
    digits, _ = bundled_digits()
    return _render(digits[:300], 3, max_overlap=0.25, **DEFAULTS)


def test_shapes_dtypes_and_range(everything: ClutteredDigits) -> None:
    d = everything
    assert len(d) == 1797 and d.canvas == 48
    assert d.images.shape == (1797, 1, 48, 48) and d.images.dtype == torch.float32
    assert d.labels.shape == (1797,) and d.labels.dtype == torch.int64
    assert d.boxes.shape == (1797, 4) and d.boxes.dtype == torch.float32
    assert d.images.min() >= 0 and d.images.max() <= 1 and torch.isfinite(d.images).all()
    assert set(d.labels.tolist()) == set(range(10))
    assert torch.equal(d.labels, torch.from_numpy(bundled_digits()[1].copy()))
    x0, y0, x1, y1 = d.boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 48).all() and (y1 <= 48).all()
    assert (x1 > x0).all() and (y1 > y0).all() and (x1 - x0 <= 16).all() and (y1 - y0 <= 16).all()
    norm = d.normalised_boxes()
    assert torch.allclose(norm * 48, d.boxes) and norm.min() >= 0 and norm.max() <= 1


def test_deterministic_per_seed_and_seeds_differ(everything: ClutteredDigits) -> None:
    again = cluttered_digits("all", seed=0)
    assert torch.equal(again.images, everything.images) and torch.equal(again.boxes, everything.boxes)
    other = cluttered_digits("all", seed=1)
    assert torch.equal(other.labels, everything.labels)  # same source digits
    assert not torch.equal(other.images, everything.images) and not torch.equal(other.boxes, everything.boxes)


def test_splits_are_fixed_disjoint_and_match_all(everything: ClutteredDigits) -> None:
    train, test = cluttered_digits("train", seed=0), cluttered_digits("test", seed=0)
    assert len(train) == TRAIN_SIZE == 1300 and len(test) == TEST_SIZE == 497
    a, b = set(train.source.tolist()), set(test.source.tolist())
    assert not a & b and a | b == set(range(1797))
    for part in (train, test):
        assert torch.equal(part.images, everything.images[part.source])
        assert torch.equal(part.labels, everything.labels[part.source])
        assert torch.equal(part.boxes, everything.boxes[part.source])
    # The split does not depend on the generation seed; the training split covers every class.
    assert np.array_equal(split_indices("train"), cluttered_digits("train", seed=5).source.numpy())
    assert set(train.labels.tolist()) == set(range(10)) == set(test.labels.tolist())


def test_digit_box_is_tight_and_the_digit_is_pasted(rendered) -> None:
    r = rendered
    for i in range(len(r.images)):
        x0, y0, x1, y1 = r.boxes[i]
        ink = r.digit_layer[i] > INK_THRESHOLD
        rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
        assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (y0, y1, x0, x1)  # tight
        # The digit lies inside its s×s square, fully inside the canvas, and survives the max-paste.
        (dx, dy), s = r.digit_xy[i], r.digit_side[i]
        assert 10 <= s <= 16 and 0 <= dx <= 48 - s and 0 <= dy <= 48 - s
        assert dx <= x0 and x1 <= dx + s and dy <= y0 and y1 <= dy + s
        assert (r.images[i] >= r.digit_layer[i]).all()
        assert r.digit_layer[i].max() >= 0.5  # every digit has real ink


def test_digit_sides_cover_the_range(rendered) -> None:
    assert set(rendered.digit_side.tolist()) == set(range(10, 17))


def test_fragment_rules(rendered) -> None:
    r = rendered
    counts = np.bincount(r.fragment_image, minlength=len(r.images))
    assert counts.min() >= 8 and counts.max() <= 12 and set(counts.tolist()) == set(range(8, 13))
    assert (r.fragment_source != r.fragment_image).all()  # cut from a different digit
    fx0, fy0, fx1, fy1 = r.fragment_boxes.T
    f = fx1 - fx0
    assert np.array_equal(f, fy1 - fy0) and set(f.tolist()) == {6, 7, 8}
    assert (fx0 >= 0).all() and (fy0 >= 0).all() and (fx1 <= 48).all() and (fy1 <= 48).all()
    b = r.boxes[r.fragment_image]
    ox = np.clip(np.minimum(fx1, b[:, 2]) - np.maximum(fx0, b[:, 0]), 0, None)
    oy = np.clip(np.minimum(fy1, b[:, 3]) - np.maximum(fy0, b[:, 1]), 0, None)
    assert (ox * oy <= 0.25 * f * f).all()
    patches = r.fragment_patches
    assert (patches.max(axis=(1, 2)) >= FRAGMENT_MIN_PEAK).all()
    assert ((patches > INK_THRESHOLD).sum(axis=(1, 2)) >= FRAGMENT_MIN_INK * f * f).all()
    # The image is the pixel-wise max of the digit and its pasted fragments.
    i = 7
    expected = r.digit_layer[i].copy()
    for j in np.flatnonzero(r.fragment_image == i):
        x, y, s = fx0[j], fy0[j], f[j]
        expected[y : y + s, x : x + s] = np.maximum(expected[y : y + s, x : x + s], patches[j, :s, :s])
    assert np.array_equal(expected, r.images[i])


def test_options_change_the_generation() -> None:
    d = cluttered_digits("test", seed=2, canvas=32, digit_sizes=(8, 8), n_fragments=(0, 0), fragment_sizes=(4,))
    assert d.images.shape == (497, 1, 32, 32)
    assert ((d.boxes[:, 2:] - d.boxes[:, :2]) <= 8).all()
    digits, _ = bundled_digits()
    r = _render(digits[:50], 0, 32, (12, 12), (3, 3), (5,), max_overlap=0.0)
    assert np.array_equal(np.bincount(r.fragment_image), np.full(50, 3))
    b, fb = r.boxes[r.fragment_image], r.fragment_boxes
    ox = np.clip(np.minimum(fb[:, 2], b[:, 2]) - np.maximum(fb[:, 0], b[:, 0]), 0, None)
    oy = np.clip(np.minimum(fb[:, 3], b[:, 3]) - np.maximum(fb[:, 1], b[:, 1]), 0, None)
    assert (ox * oy == 0).all()


def test_box_coverage_hand_made_cases() -> None:
    obj = torch.tensor([[10.0, 10, 20, 20]] * 5)
    crops = torch.tensor(
        [
            [0.0, 0, 48, 48],  # contains the object: 1
            [10.0, 10, 20, 20],  # equal: 1
            [30.0, 30, 40, 40],  # disjoint: 0
            [15.0, 0, 48, 48],  # the right half: 0.5
            [0.0, 15, 15, 48],  # a bottom-left quarter: 0.25
        ]
    )
    assert torch.allclose(box_coverage(crops, obj), torch.tensor([1.0, 1, 0, 0.5, 0.25]))
    # Touching edges cover nothing; several crops per image broadcast against (N, 4) objects.
    assert box_coverage(torch.tensor([[20.0, 10, 30, 20]]), obj[:1]).item() == 0
    many = box_coverage(crops[:, None].expand(5, 5, 4), obj)
    assert many.shape == (5, 5) and torch.allclose(many[:, 0], box_coverage(crops, obj))
    # Normalised boxes give the same fractions; integer boxes work too.
    assert torch.allclose(box_coverage(crops / 48, obj / 48), box_coverage(crops, obj))
    assert torch.allclose(box_coverage(crops.long(), obj.long()), box_coverage(crops, obj))


def test_box_coverage_of_random_crops_is_a_fraction(everything: ClutteredDigits) -> None:
    g = torch.Generator().manual_seed(0)
    n = len(everything)
    side = 48 * (0.5 + 0.5 * torch.rand(n, generator=g))
    x0, y0 = torch.rand(n, generator=g) * (48 - side), torch.rand(n, generator=g) * (48 - side)
    crops = torch.stack([x0, y0, x0 + side, y0 + side], 1)
    cov = box_coverage(crops, everything.boxes)
    assert cov.shape == (n,) and (cov >= 0).all() and (cov <= 1 + 1e-6).all()
    assert torch.allclose(box_coverage(torch.tensor([[0.0, 0, 48, 48]]).expand(n, 4), everything.boxes), torch.ones(n))


def test_box_coverage_errors() -> None:
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        box_coverage(torch.zeros(3, 3), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="x1 > x0"):
        box_coverage(torch.zeros(1, 4), torch.tensor([[1.0, 1, 1, 2]]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "valid"}, "split"),
        ({"canvas": 0}, "canvas"),
        ({"canvas": 12}, "exceeds the canvas"),
        ({"digit_sizes": (16, 10)}, "digit_sizes"),
        ({"digit_sizes": (10,)}, "digit_sizes"),
        ({"digit_sizes": (10.0, 16)}, "digit_sizes"),
        ({"n_fragments": (-1, 3)}, "n_fragments"),
        ({"fragment_sizes": ()}, "fragment_sizes"),
        ({"fragment_sizes": (0, 6)}, "fragment_sizes"),
        ({"fragment_sizes": (6, 11)}, "smallest digit side"),
        ({"max_overlap": 1.5}, "max_overlap"),
        ({"max_overlap": -0.1}, "max_overlap"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cluttered_digits(**kwargs)


def test_impossible_placement_is_a_clear_error() -> None:
    # A 16×16 canvas filled by a 16-px digit leaves no place for an 8-px fragment with no overlap.
    digits, _ = bundled_digits()
    with pytest.raises(RuntimeError, match="could not place"):
        _render(digits[:20], 0, 16, (16, 16), (8, 12), (8,), max_overlap=0.0)


def test_fit_and_eval_sets_hold_out_training_images_or_use_the_test_split():
    from instaaug.data.digits import cluttered_digits, fit_and_eval_sets

    fit, held = fit_and_eval_sets(100, 40, validation=30)
    train = cluttered_digits("train")
    assert len(fit) == 70 and len(held) == 30
    assert torch.equal(held.source, train.source[70:100]) and torch.equal(held.masks, train.masks[70:100])
    fit, test = fit_and_eval_sets(100, 40)
    assert len(fit) == 100 and torch.equal(test.images, cluttered_digits("test").images[:40])
    part = train.subset(5, 9)
    assert all(getattr(part, k).shape[0] == 4 for k in ("images", "labels", "boxes", "source", "masks"))
