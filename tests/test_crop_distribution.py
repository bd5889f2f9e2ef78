"""Crop distributions and their candidates: CropCategorical (sampling frequencies, log_prob, entropy with jitter,
top-k), UniformCrops and crop_candidates (the backbones' receptive-field geometry: test_models.py)."""

from __future__ import annotations

import math

import pytest
import torch

from instaaug.distributions import CROP_PARAMS, CropCategorical, UniformCrops
from instaaug.models import ConvBackbone, StageGeometry
from instaaug.networks import crop_candidates

# Upper 0.001 quantiles of the χ² distribution (standard tables, e.g. NIST/SEMATECH e-Handbook 1.3.6.7.4), by
# degrees of freedom.
CHI2_CRITICAL_999 = {3: 16.266, 5: 20.515}


def chi_square(counts: torch.Tensor, p: torch.Tensor) -> float:
    """Pearson's χ² statistic of observed counts (K,) against probabilities p (K,)."""
    expected = counts.sum() * p.double()
    return float(((counts.double() - expected) ** 2 / expected).sum())


def spread_boxes(n: int) -> torch.Tensor:
    """n distinct boxes far apart (centres 0.1 apart along x, sides growing), so no jitter makes them overlap."""
    k = torch.arange(n, dtype=torch.float32)
    return torch.stack((0.1 + 0.1 * k, 0.3 + 0.05 * k, 0.2 + 0.01 * k, 0.25 + 0.01 * k), -1)


def index_of(boxes: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """The candidate index of every (unjittered) box (..., 4); fails if a box is not a candidate."""
    dist = torch.cdist(boxes.reshape(-1, 4).double(), candidates.double())
    nearest, index = dist.min(-1)
    assert float(nearest.max()) < 1e-6
    return index.reshape(boxes.shape[:-1])


# ------------------------------------------------------------------------------------------------------------------
# CropCategorical: sampling


REFERENCE_P = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
RARE_P = torch.tensor([0.4, 0.25, 0.2, 0.1, 0.048, 0.002], dtype=torch.float64)


def test_sample_index_frequencies_pass_chi_square():
    # Two inputs with different distributions, the second with a rare category (expected 400 of 200k draws).
    padded = torch.cat((REFERENCE_P, torch.zeros(2, dtype=torch.float64)))  # two impossible candidates
    logits = torch.stack((padded.log(), RARE_P.log()))
    dist = CropCategorical(logits, spread_boxes(6))
    draws = 200_000
    index = dist.sample_index((draws,), generator=torch.Generator().manual_seed(0))
    assert index.shape == (draws, 2) and index.dtype == torch.long
    counts_ref = torch.bincount(index[:, 0], minlength=6)
    counts_rare = torch.bincount(index[:, 1], minlength=6)
    assert counts_ref[4:].sum() == 0  # zero-probability categories are never drawn
    assert chi_square(counts_ref[:4], REFERENCE_P) < CHI2_CRITICAL_999[3]
    assert chi_square(counts_rare, RARE_P) < CHI2_CRITICAL_999[5]
    assert 300 < counts_rare[5] < 500  # the rare category: 400 ± 5σ (σ ≈ 20)


def test_reference_probabilities_come_out_right():
    # The reference implementation drew (.586, .261, .117, .036) for p = (.5, .3, .15, .05).
    dist = CropCategorical(REFERENCE_P.log()[None].float(), spread_boxes(4))
    draws = 200_000
    index = dist.sample_index((draws,), generator=torch.Generator().manual_seed(1))[:, 0]
    freq = torch.bincount(index, minlength=4).double() / draws
    # σ of a frequency is ≤ √(.25 / 200k) ≈ 0.0011, so 0.006 is ≥ 5σ and the reference's 0.086 error fails.
    torch.testing.assert_close(freq, REFERENCE_P, atol=0.006, rtol=0)
    assert chi_square(torch.bincount(index, minlength=4), REFERENCE_P) < CHI2_CRITICAL_999[3]


def test_chi_square_check_rejects_the_reference_frequencies():
    # Guard for the tests above: counts drawn with the reference's wrong probabilities fail the χ² check.
    wrong = torch.tensor([0.586, 0.261, 0.117, 0.036], dtype=torch.float64)
    dist = CropCategorical(wrong.log()[None], spread_boxes(4))
    index = dist.sample_index((200_000,), generator=torch.Generator().manual_seed(2))[:, 0]
    assert chi_square(torch.bincount(index, minlength=4), REFERENCE_P) > 100 * CHI2_CRITICAL_999[3]


def test_sampling_is_deterministic_with_a_generator():
    dist = CropCategorical(torch.randn(3, 7), spread_boxes(7))
    a = dist.sample_index((50,), generator=torch.Generator().manual_seed(5))
    b = dist.sample_index((50,), generator=torch.Generator().manual_seed(5))
    c = dist.sample_index((50,), generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    boxes = dist.sample((50,), generator=torch.Generator().manual_seed(5))
    assert boxes.shape == (50, 3, 4)
    torch.testing.assert_close(boxes, dist.boxes[a], atol=0, rtol=0)


def test_sample_with_log_prob_without_jitter():
    logits = torch.randn(3, 5, requires_grad=True)
    dist = CropCategorical(logits, spread_boxes(5))
    index = dist.sample_index((40,), generator=torch.Generator().manual_seed(3))
    boxes, log_prob = dist.sample_with_log_prob((40,), generator=torch.Generator().manual_seed(3))
    assert boxes.shape == (40, 3, 4) and log_prob.shape == (40, 3)
    torch.testing.assert_close(boxes, dist.boxes[index], atol=0, rtol=0)
    log_p = torch.log_softmax(logits.detach(), -1)
    torch.testing.assert_close(log_prob.detach(), log_p.gather(-1, index.T).T)
    torch.testing.assert_close(dist.log_prob(boxes), log_prob.detach())
    assert log_prob.requires_grad and not boxes.requires_grad  # the score function carries the gradient
    assert not dist.has_rsample and dist.names == CROP_PARAMS


def test_sample_with_log_prob_with_jitter_subtracts_the_log_volume():
    n = 5
    jitter = torch.tensor([[0.02, 0.01, 0.1], [0.0, 0.03, 0.0], [0.01, 0.01, 0.05], [0.0, 0.0, 0.0], [0.04, 0.0, 0.2]])
    log_volume = torch.tensor(
        [
            math.log(0.04 * 0.02 * 0.2),
            math.log(0.06),
            math.log(0.02 * 0.02 * 0.1),
            0.0,  # no jitter at all: an atom
            math.log(0.08 * 0.4),
        ]
    )
    logits = torch.randn(2, n)
    dist = CropCategorical(logits, spread_boxes(n), jitter)
    index = dist.sample_index((300,), generator=torch.Generator().manual_seed(4))
    boxes, log_prob = dist.sample_with_log_prob((300,), generator=torch.Generator().manual_seed(4))
    expected = torch.log_softmax(logits, -1).gather(-1, index.T).T - log_volume[index]
    torch.testing.assert_close(log_prob, expected)
    torch.testing.assert_close(dist.log_prob(boxes), log_prob, atol=1e-5, rtol=1e-5)
    # Every jittered box stays in its candidate's jitter box: centre ± half, size factor r with |r - 1| ≤ js.
    base, half = dist.boxes[index], jitter[index]
    assert ((boxes[..., :2] - base[..., :2]).abs() <= half[..., :2] + 1e-6).all()
    factor = boxes[..., 2:] / base[..., 2:]
    assert ((factor - 1).abs() <= half[..., 2:] + 1e-6).all()
    torch.testing.assert_close(factor[..., 0], factor[..., 1])  # one factor for width and height
    moved = (boxes - base).abs().amax(-1) > 0
    assert moved[index != 3].all() and not moved[index == 3].any()  # candidate 3 has no jitter


# ------------------------------------------------------------------------------------------------------------------
# CropCategorical: log_prob and entropy


def test_categorical_entropy_by_hand():
    p = [0.5, 0.3, 0.15, 0.05]
    dist = CropCategorical(torch.tensor([p, [0.25] * 4]).log() + 3.0, spread_boxes(4))  # unnormalised logits
    expected = [-sum(q * math.log(q) for q in p), math.log(4)]
    torch.testing.assert_close(dist.entropy(), torch.tensor(expected))
    torch.testing.assert_close(dist.probs, torch.tensor([p, [0.25] * 4]))


def test_entropy_with_jitter_adds_the_expected_log_volume():
    jitter = torch.tensor([[0.02, 0.01, 0.1], [0.0, 0.03, 0.0], [0.05, 0.05, 0.3]])
    p = torch.tensor([[0.2, 0.5, 0.3]])
    dist = CropCategorical(p.log(), spread_boxes(3), jitter)
    log_volume = [math.log(0.04 * 0.02 * 0.2), math.log(0.06), math.log(0.1 * 0.1 * 0.6)]
    h_cat = -sum(q * math.log(q) for q in p[0].tolist())
    expected = h_cat + sum(q * v for q, v in zip(p[0].tolist(), log_volume, strict=True))
    assert dist.entropy().item() == pytest.approx(expected, rel=1e-5)


def test_entropy_with_jitter_matches_monte_carlo():
    candidates = crop_candidates(
        ConvBackbone(1, 4, 3).stage_geometry()[1:],
        [(8, 8), (4, 4)],
        (32, 32),
        centre_jitter=0.8,
        size_jitter=0.1,
    )
    logits = torch.randn(2, candidates.num_candidates, generator=torch.Generator().manual_seed(0))
    dist = CropCategorical(logits, candidates.boxes, candidates.jitter)
    samples = dist.sample((20_000,), generator=torch.Generator().manual_seed(1))
    neg_log_q = -dist.log_prob(samples).double()
    assert torch.isfinite(neg_log_q).all()
    mc, se = neg_log_q.mean(0), neg_log_q.std(0) / math.sqrt(samples.shape[0])
    h = dist.entropy().double()
    assert ((mc - h).abs() < 5 * se).all(), (mc, h, se)
    # The jitter matters: without it the entropy would be the categorical one, far off.
    assert ((h - CropCategorical(logits, candidates.boxes).entropy().double()).abs() > 20 * se).all()


def test_maximum_entropy_with_jitter_is_the_log_total_volume():
    # H = Σ p (log vol - log p) is maximal, log Σ vol, for p ∝ vol.
    jitter = torch.tensor([[0.02, 0.01, 0.1], [0.0, 0.03, 0.0], [0.05, 0.05, 0.3], [0.0, 0.0, 0.0]])
    log_volume = torch.tensor([math.log(0.04 * 0.02 * 0.2), math.log(0.06), math.log(0.1 * 0.1 * 0.6), 0.0])
    best = CropCategorical(log_volume[None] + 1.0, spread_boxes(4), jitter)
    assert best.entropy().item() == pytest.approx(float(log_volume.logsumexp(0)), rel=1e-5)
    others = CropCategorical(log_volume + torch.randn(100, 4), spread_boxes(4), jitter)
    assert (others.entropy() < best.entropy()).all()


def test_entropy_with_masked_candidates_is_finite():
    logits = torch.tensor([[0.0, -math.inf, math.log(3.0)]], requires_grad=True)
    dist = CropCategorical(logits, spread_boxes(3))
    entropy = dist.entropy()
    assert entropy.item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rel=1e-6)
    entropy.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_log_prob_of_candidates_far_boxes_and_wrong_shapes():
    p = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    boxes = spread_boxes(4)
    plain = CropCategorical(p.log(), boxes)
    torch.testing.assert_close(plain.log_prob(boxes[:, None]), p.log().T)
    far = torch.tensor([[[0.9, 0.9, 0.05, 0.05]]])
    assert plain.log_prob(far).item() == -math.inf
    jittered = CropCategorical(p.log(), boxes, torch.full((4, 3), 0.01))
    assert jittered.log_prob(far).item() == -math.inf
    inside = boxes[2].clone()
    inside[:2] += 0.005
    inside[2:] *= 1.005
    assert jittered.log_prob(inside[None, None]).item() == pytest.approx(math.log(0.3) - 3 * math.log(0.02), rel=1e-5)
    stretched = inside.clone()
    stretched[2] *= 1.004  # width and height scaled by different factors: not a jittered candidate
    assert jittered.log_prob(stretched[None, None]).item() == -math.inf


def test_identical_atoms_get_summed_probability():
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.3, 0.3, 0.2, 0.2], [0.5, 0.5, 0.5, 0.5]])
    p = torch.tensor([[0.25, 0.35, 0.4]])
    dist = CropCategorical(p.log(), boxes)
    assert dist.log_prob(boxes[:1, None]).item() == pytest.approx(math.log(0.65), rel=1e-6)
    assert dist.log_prob(boxes[1:2, None]).item() == pytest.approx(math.log(0.35), rel=1e-6)


def test_shapes_indexing_and_errors():
    logits = torch.randn(3, 5)
    dist = CropCategorical(logits, spread_boxes(5))
    assert dist.batch_shape == (3,) and dist.event_shape == (4,) and dist.num_candidates == 5
    torch.testing.assert_close(dist.probs.sum(-1), torch.ones(3))
    one = dist[1]
    assert one.batch_shape == (1,)
    torch.testing.assert_close(one.probs, dist.probs[1:2])
    torch.testing.assert_close(dist[torch.tensor([0, 2])].entropy(), dist.entropy()[[0, 2]])
    assert dist.log_prob(dist.sample((6, 2))).shape == (6, 2, 3)
    with pytest.raises(NotImplementedError):
        dist.rsample()
    with pytest.raises(ValueError, match="logits"):
        CropCategorical(torch.randn(5), spread_boxes(5))
    with pytest.raises(ValueError, match="boxes"):
        CropCategorical(logits, spread_boxes(4))
    with pytest.raises(ValueError, match="jitter"):
        CropCategorical(logits, spread_boxes(5), torch.zeros(5, 2))


def test_topk_returns_the_most_probable_boxes_in_order():
    p = torch.tensor([[0.1, 0.4, 0.05, 0.3, 0.15], [0.3, 0.05, 0.2, 0.1, 0.35]])
    boxes = spread_boxes(5)
    dist = CropCategorical(p.log(), boxes, torch.full((5, 3), 0.01))
    top, log_prob = dist.topk(3)
    assert top.shape == (2, 3, 4) and log_prob.shape == (2, 3)
    torch.testing.assert_close(top[0], boxes[[1, 3, 4]])  # jitter centres, not jittered draws
    torch.testing.assert_close(top[1], boxes[[4, 0, 2]])
    torch.testing.assert_close(log_prob, torch.tensor([[0.4, 0.3, 0.15], [0.35, 0.3, 0.2]]).log())
    torch.testing.assert_close(dist.topk(5)[0][:, 0], dist.topk(1)[0][:, 0])
    for k in (0, 6):
        with pytest.raises(ValueError, match="k must be"):
            dist.topk(k)


# ------------------------------------------------------------------------------------------------------------------
# UniformCrops


def test_uniform_crops_inside_the_image_with_sides_in_range():
    ref = torch.zeros(1)
    dist = UniformCrops(0.3, 0.8, 4, ref)
    boxes, log_prob = dist.sample_with_log_prob((5000,), generator=torch.Generator().manual_seed(0))
    assert boxes.shape == (5000, 4, 4) and dist.batch_shape == (4,) and dist.has_rsample
    side = boxes[..., 2]
    torch.testing.assert_close(boxes[..., 3], side)
    assert side.min() >= 0.3 and side.max() <= 0.8
    assert (boxes[..., :2] - side[..., None] / 2 >= 0).all() and (boxes[..., :2] + side[..., None] / 2 <= 1).all()
    assert side.mean().item() == pytest.approx(0.55, abs=0.01)  # σ of the mean ≈ 0.001
    # Position uniform given the side: u = (c - s/2) / (1 - s) ~ U(0, 1).
    u = (boxes[..., :2] - side[..., None] / 2) / (1 - side[..., None])
    assert u.mean().item() == pytest.approx(0.5, abs=0.01)
    torch.testing.assert_close(log_prob, torch.full_like(log_prob, -math.log(0.5)))
    torch.testing.assert_close(dist.entropy(), torch.full((4,), math.log(0.5)))
    for bad in ((0.0, 0.5), (0.6, 0.5), (0.5, 1.1)):
        with pytest.raises(ValueError, match="min_scale"):
            UniformCrops(*bad, 1, ref)


# ------------------------------------------------------------------------------------------------------------------
# crop_candidates


def grid_boxes(geometry: StageGeometry, shape: tuple[int, int], size: tuple[int, int], box_scale: float = 1.0):
    """Every unit's box (h·w, 4) in row-major order, computed independently in pixel-edge coordinates."""
    rows, cols = shape
    height, width = size
    out = []
    for i in range(rows):
        for j in range(cols):
            # A pixel centre c (pixel units, first pixel centre 0) is at (c + 0.5) / size in fractions.
            cy = (geometry.start[0] + i * geometry.jump[0] + 0.5) / height
            cx = (geometry.start[1] + j * geometry.jump[1] + 0.5) / width
            w = min(box_scale * geometry.receptive_field[1] / width, 1.0)
            h = min(box_scale * geometry.receptive_field[0] / height, 1.0)
            out.append((cx, cy, w, h))
    return torch.tensor(out, dtype=torch.float64)


def inside_fraction(boxes: torch.Tensor) -> torch.Tensor:
    """(N,) the fraction of each box's area inside the unit square."""
    x0, x1 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 0] + boxes[:, 2] / 2
    y0, y1 = boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 1] + boxes[:, 3] / 2
    fx = (x1.clamp(0, 1) - x0.clamp(0, 1)).clamp_min(0) / boxes[:, 2]
    fy = (y1.clamp(0, 1) - y0.clamp(0, 1)).clamp_min(0) / boxes[:, 3]
    return fx * fy


def conv_grid(size: tuple[int, int], stage: int) -> tuple[int, int]:
    """The feature-map shape of a ConvBackbone stage (2×2 max-pools with ceil_mode)."""
    return tuple(math.ceil(s / 2 ** (stage + 1)) for s in size)


@pytest.mark.parametrize("size", [(37, 41), (33, 33), (48, 64)])
@pytest.mark.parametrize("min_inside", [0.3, 0.5, 0.8])
def test_candidates_match_the_receptive_fields_and_stay_inside(size, min_inside):
    geometries = ConvBackbone(1, 4, 3).stage_geometry()
    shapes = [conv_grid(size, s) for s in range(3)]
    candidates = crop_candidates(geometries, shapes, size, min_inside=min_inside)
    assert candidates.grid_shapes == (*shapes, (1, 1))
    assert candidates.jitter is None
    expected_boxes, counts = [], []
    for geometry, shape, keep in zip(geometries, shapes, candidates.keep, strict=False):
        boxes = grid_boxes(geometry, shape, size)
        fraction = inside_fraction(boxes)
        assert torch.equal(keep, fraction >= min_inside - 1e-9)
        expected_boxes.append(boxes[keep])
        counts.append(int(keep.sum()))
    expected_boxes.append(torch.tensor([[0.5, 0.5, 1.0, 1.0]], dtype=torch.float64))
    counts.append(1)
    torch.testing.assert_close(candidates.boxes.double(), torch.cat(expected_boxes), atol=1e-6, rtol=0)
    assert candidates.level_counts == tuple(counts)
    assert torch.equal(candidates.level, torch.repeat_interleave(torch.arange(4), torch.tensor(counts)))
    assert candidates.num_candidates == sum(counts)
    boxes = candidates.boxes.double()
    assert (inside_fraction(boxes) >= min_inside - 1e-6).all()
    assert (boxes[:, 2:] <= 1).all() and (boxes[:, 2:] > 0).all()
    if min_inside >= 0.5:  # a box at least half inside has its centre inside
        assert (boxes[:, :2] >= 0).all() and (boxes[:, :2] <= 1).all()


def test_raising_min_inside_drops_border_candidates():
    geometries = ConvBackbone(1, 4, 3).stage_geometry()
    size = (37, 41)
    shapes = [conv_grid(size, s) for s in range(3)]
    counts = [crop_candidates(geometries, shapes, size, min_inside=m).level_counts for m in (0.2, 0.5, 0.9)]
    totals = [sum(c) for c in counts]
    assert totals[0] > totals[1] > totals[2]
    assert all(a >= b for a, b in zip(counts[0], counts[1], strict=True))
    assert counts[0][0] == shapes[0][0] * shapes[0][1]  # at 0.2 even the corner units of stage 0 stay


def test_levels_in_order_with_the_global_crop_last():
    geometries = ConvBackbone(1, 4, 3).stage_geometry()
    candidates = crop_candidates(geometries[1:], [(8, 8), (4, 4)], (32, 32))
    sides = [float(candidates.boxes[candidates.level == lv, 2].unique()) for lv in range(3)]
    assert sides == pytest.approx([10 / 32, 22 / 32, 1.0])
    torch.testing.assert_close(candidates.boxes[-1], torch.tensor([0.5, 0.5, 1.0, 1.0]))
    assert candidates.level[-1] == 2 and candidates.level_counts[-1] == 1
    assert candidates.level_counts[:2] == (60, 12)  # the 4 corners of each grid hang over the edge
    without = crop_candidates(geometries[1:], [(8, 8), (4, 4)], (32, 32), global_crop=False)
    assert without.level_counts == (60, 12) and len(without.grid_shapes) == 2
    torch.testing.assert_close(without.boxes, candidates.boxes[:-1])


def test_box_scale_scales_the_sides_and_clamps_at_the_image():
    geometries = ConvBackbone(1, 4, 3).stage_geometry()
    half = crop_candidates(geometries[1:2], [(8, 8)], (32, 32), box_scale=0.5, global_crop=False)
    assert half.boxes[:, 2:].unique().tolist() == [5 / 32]
    big = crop_candidates(geometries[2:], [(4, 4)], (32, 32), box_scale=2.0, global_crop=False, min_inside=0.1)
    assert big.boxes[:, 2:].unique().tolist() == [1.0]


def test_jitter_half_ranges():
    geometries = ConvBackbone(1, 4, 3).stage_geometry()
    candidates = crop_candidates(geometries[1:], [(6, 8), (3, 4)], (24, 32), centre_jitter=0.5, size_jitter=0.1)
    jitter = candidates.jitter
    assert jitter.shape == (candidates.num_candidates, 3)
    level = candidates.level
    # centre_jitter × half a cell (the jump) per axis, x then y; the global crop's cell is the coarsest level's.
    coarse = [0.5 * 4 / 32, 0.5 * 4 / 24, 0.1]
    expected = torch.tensor([[0.5 * 2 / 32, 0.5 * 2 / 24, 0.1], coarse, coarse])
    torch.testing.assert_close(jitter, expected[level])
    assert crop_candidates(geometries[1:], [(6, 8), (3, 4)], (24, 32), size_jitter=0.1).jitter[:, :2].eq(0).all()


def test_level_without_candidates_is_an_error():
    geometry = StageGeometry((30.0, 30.0), (16.0, 16.0), (-4.0, -4.0))  # every box hangs over the top-left
    with pytest.raises(ValueError, match="crop level 0 keeps no candidate"):
        crop_candidates([geometry], [(1, 1)], (32, 32), min_inside=0.9)
    geometries = ConvBackbone(1, 4, 4).stage_geometry()
    with pytest.raises(ValueError, match="crop level 0 keeps no candidate"):
        crop_candidates(geometries[3:], [(3, 3)], (40, 40), min_inside=0.95)


def test_duplicate_levels_are_an_error():
    geometries = ConvBackbone(1, 4, 4).stage_geometry()
    # Stage 3 at 48×48: a 3×3 grid whose centre unit, at box_scale 48/46, proposes exactly the whole image.
    with pytest.raises(ValueError, match="crop levels 0 and 1 propose boxes of the same side"):
        crop_candidates(geometries[3:], [(3, 3)], (48, 48), box_scale=48 / 46)
    crop_candidates(geometries[3:], [(3, 3)], (48, 48), box_scale=48 / 46, global_crop=False)  # no duplicate
    with pytest.raises(ValueError, match="same side"):  # with centre jitter the supports would overlap
        crop_candidates(geometries[3:], [(3, 3)], (56, 56), box_scale=56 / 46, centre_jitter=0.5)


def test_size_jitter_overlapping_levels_is_an_error_naming_them():
    geometries = ConvBackbone(1, 4, 3).stage_geometry()[1:]  # sides 10/32 and 22/32, plus the global 1
    crop_candidates(geometries, [(8, 8), (4, 4)], (32, 32), size_jitter=0.18)
    with pytest.raises(ValueError, match="crop levels 1 and 2"):
        crop_candidates(geometries, [(8, 8), (4, 4)], (32, 32), size_jitter=0.3)
    with pytest.raises(ValueError, match="crop levels 0 and 1"):
        crop_candidates(geometries, [(8, 8), (4, 4)], (32, 32), size_jitter=0.4)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"box_scale": 0.0}, "box_scale"),
        ({"min_inside": 0.0}, "min_inside"),
        ({"min_inside": 1.5}, "min_inside"),
        ({"centre_jitter": -0.1}, "centre_jitter"),
        ({"centre_jitter": 1.5}, "centre_jitter"),
        ({"size_jitter": 1.0}, "size_jitter"),
        ({"size_jitter": -0.1}, "size_jitter"),
    ],
)
def test_bad_candidate_arguments(options, match):
    geometries = ConvBackbone(1, 4, 3).stage_geometry()[1:]
    with pytest.raises(ValueError, match=match):
        crop_candidates(geometries, [(8, 8), (4, 4)], (32, 32), **options)


def test_one_grid_shape_per_geometry():
    geometries = ConvBackbone(1, 4, 3).stage_geometry()
    with pytest.raises(ValueError, match="one grid shape per geometry"):
        crop_candidates(geometries, [(8, 8)], (32, 32))
