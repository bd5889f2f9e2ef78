"""Learned and random crops: crop_resize, orientation of the candidates (planted logits and planted images),
level balance, top views, REINFORCE gradients through InstaAugObjective, the augmenters' modes, shapes, errors and
persistence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import legacy_crop
from instaaug import AugmentOutput, EntropyController, InstaAug, InstaAugObjective
from instaaug.baselines import RandomCrop
from instaaug.distributions import CropCategorical
from instaaug.models import build_classifier
from instaaug.networks import CropCandidates
from instaaug.transforms import crop_resize


def tiny_crop(**options) -> InstaAug:
    """A small LRP augmenter: 48×64 grey images, φ of width 4 and depth 4, one level (stage 2, a 6×8 grid)."""
    options.setdefault("image_size", (48, 64))
    options.setdefault("in_channels", 1)
    options.setdefault("width", 4)
    options.setdefault("depth", 4)
    options.setdefault("levels", (2,))
    return legacy_crop(**options)


def cell_index(candidates: CropCandidates, level: int, i: int, j: int) -> int:
    """The candidate index of cell (i, j) of a level (cells are kept in row-major order)."""
    keep = candidates.keep[level]
    flat = i * candidates.grid_shapes[level][1] + j
    assert keep[flat], f"cell ({i}, {j}) of level {level} is not a candidate"
    return sum(candidates.level_counts[:level]) + int(keep[:flat].sum())


def index_of(boxes: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """The candidate index of every (unjittered) box (..., 4); fails if a box is not a candidate."""
    dist = torch.cdist(boxes.reshape(-1, 4).double(), candidates.double())
    nearest, index = dist.min(-1)
    assert float(nearest.max()) < 1e-6
    return index.reshape(boxes.shape[:-1])


def perturb_heads(aug: InstaAug, std: float = 0.5, seed: int = 1) -> InstaAug:
    """φ's scoring layers start at zero; give them (and the level biases) random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net = aug.net
        layers = [*net.heads, net.global_head] if aug.mode == "instance" else [net.crop_output]
        for p in [p for layer in layers for p in ([layer] if isinstance(layer, nn.Parameter) else layer.parameters())]:
            p.copy_(torch.randn(p.shape, generator=g) * std)
        net.level_bias.copy_(torch.randn(net.level_bias.shape, generator=g) * std)
    return aug


# ------------------------------------------------------------------------------------------------------------------
# crop_resize


def test_crop_resize_of_an_aligned_box_is_the_slice():
    x = torch.rand(2, 3, 8, 8)
    # Rows 2..5 and columns 4..7: centre x = (4 + 2) / 8, centre y = (2 + 2) / 8, sides 4 / 8.
    boxes = torch.tensor([[0.75, 0.5, 0.5, 0.5], [0.75, 0.5, 0.5, 0.5]])
    torch.testing.assert_close(crop_resize(x, boxes, (4, 4)), x[:, :, 2:6, 4:8])
    # Non-square image, box and output: rows 1..3 (3), columns 2..6 (5) of a 6×10 image.
    y = torch.rand(1, 2, 6, 10)
    box = torch.tensor([[(2 + 2.5) / 10, (1 + 1.5) / 6, 5 / 10, 3 / 6]])
    torch.testing.assert_close(crop_resize(y, box, (3, 5)), y[:, :, 1:4, 2:7])


def test_crop_resize_per_image_boxes():
    x = torch.rand(3, 1, 8, 8)
    boxes = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5], [0.5, 0.75, 1.0, 0.5]])
    out = crop_resize(x, boxes, (4, 4))
    torch.testing.assert_close(out[0], x[0, :, 0:4, 0:4])  # top-left
    torch.testing.assert_close(out[1], x[1, :, 0:4, 4:8])  # top-right: x is the column
    torch.testing.assert_close(crop_resize(x[2:], boxes[2:], (4, 8)), x[2:, :, 4:8, :])  # bottom half


def test_full_box_is_the_identity_and_resizing_is_bilinear():
    x = torch.rand(2, 3, 6, 10)
    full = torch.tensor([[0.5, 0.5, 1.0, 1.0]]).expand(2, 4)
    torch.testing.assert_close(crop_resize(x, full), x)
    assert crop_resize(x, full, (5, 7)).shape == (2, 3, 5, 7)
    resized = F.interpolate(x, size=(12, 20), mode="bilinear", align_corners=False)
    torch.testing.assert_close(crop_resize(x, full, (12, 20), "border"), resized)


def test_crop_resize_padding_outside_the_image():
    x = torch.rand(1, 1, 8, 8) * 0.5 + 0.5
    left = torch.tensor([[0.0, 0.5, 0.5, 1.0]])  # the left half of the box hangs over the image's left edge
    zeros = crop_resize(x, left, (8, 4))
    assert (zeros[..., :2] == 0).all()
    torch.testing.assert_close(zeros[..., 2:], x[..., :2])
    border = crop_resize(x, left, (8, 4), "border")
    torch.testing.assert_close(border[..., :2], x[..., :1].expand(-1, -1, -1, 2))


def test_crop_resize_gradients():
    images = torch.rand(2, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[0.43, 0.57, 0.61, 0.37], [0.53, 0.42, 0.71, 0.87]], dtype=torch.float64)
    boxes.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: crop_resize(a, b, (3, 4)), (images, boxes))


def test_crop_resize_bad_boxes():
    x = torch.rand(2, 1, 8, 8)
    for boxes in (torch.rand(2, 3), torch.rand(3, 4), torch.rand(4)):
        with pytest.raises(ValueError, match="boxes must be"):
            crop_resize(x, boxes)


# ------------------------------------------------------------------------------------------------------------------
# Orientation: row i of a feature map is y, column j is x


CELLS = [(0, 3), (4, 1), (5, 6), (2, 0), (1, 7)]  # asymmetric cells of the 6×8 grid of stage 2 at 48×64


def expected_centre(i: int, j: int, jump: int, start: float, size=(48, 64)) -> tuple[float, float]:
    """(cx, cy) of the receptive field of cell (i, j), worked out by hand in pixel-edge coordinates."""
    return (start + j * jump + 0.5) / size[1], (start + i * jump + 0.5) / size[0]


@pytest.mark.parametrize("cell", CELLS)
def test_planted_global_logit_samples_its_cells_box(cell):
    aug = tiny_crop(mode="global")
    candidates = aug.net.candidates()
    assert candidates.grid_shapes == ((6, 8), (1, 1))
    with torch.no_grad():
        aug.net.crop_output[cell_index(candidates, 0, *cell)] = 60.0
    out = aug(torch.rand(2, 1, 48, 64), n_copies=5, generator=torch.Generator().manual_seed(0))
    cx, cy = expected_centre(*cell, jump=8, start=3.5)
    expected = torch.tensor([cx, cy, 22 / 64, 22 / 48])
    torch.testing.assert_close(out.params, expected.expand(10, 4))


class PlantedHead(nn.Module):
    """A stand-in for a level's 1×1 scoring convolution: a huge score at one cell, zero elsewhere."""

    def __init__(self, cell: tuple[int, int] | None) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        scores = torch.zeros_like(features[:, :1])
        if self.cell is not None:
            scores[:, :, self.cell[0], self.cell[1]] = 60.0
        return scores


@pytest.mark.parametrize(("level", "cell"), [(0, (0, 5)), (0, (9, 2)), (1, (4, 1)), (1, (0, 3))])
def test_planted_instance_head_samples_its_cells_box(level, cell):
    # Stages 1 (a 12×16 grid: jump 4, start 1.5, rf 10) and 2 (6×8: jump 8, start 3.5, rf 22).
    aug = tiny_crop(levels=(1, 2))
    aug.net.heads = nn.ModuleList(PlantedHead(cell if lv == level else None) for lv in range(2))
    assert aug.net.candidates().grid_shapes == ((12, 16), (6, 8), (1, 1))
    out = aug(torch.rand(2, 1, 48, 64), n_copies=4, generator=torch.Generator().manual_seed(0))
    jump, start, rf = [(4, 1.5, 10), (8, 3.5, 22)][level]
    cx, cy = expected_centre(*cell, jump=jump, start=start)
    torch.testing.assert_close(out.params, torch.tensor([cx, cy, rf / 64, rf / 48]).expand(8, 4))


def brightness_detector(aug: InstaAug, gain: float = 10.0) -> InstaAug:
    """Set φ (norm 'none') so that a stage-2 unit's score is gain × 2 when its 8×8 block has a white pixel.

    Every convolution keeps only its centre tap and averages the channels, so a stage-s feature is the max over
    the unit's 2^(s+1) block of relu((x - 0.5) / 0.25): 2 on white pixels, 0 on black ones.
    """
    with torch.no_grad():
        for stage in aug.net.backbone.stages:
            conv = stage[0]
            conv.weight.zero_()
            conv.weight[:, :, 1, 1] = 1 / conv.in_channels
        head = aug.net.heads[0]
        head.weight.fill_(gain / head.in_channels)
    return aug


def test_planted_image_end_to_end():
    # Black images with a white 4×4 square in one 8×8 block: (0, 0) top-left, (4, 1) and (0, 7) top-right.
    blocks = [(0, 0), (4, 1), (0, 7)]
    x = torch.zeros(3, 1, 48, 64)
    for b, (i, j) in enumerate(blocks):
        x[b, :, 8 * i + 2 : 8 * i + 6, 8 * j + 3 : 8 * j + 7] = 1.0
    aug = brightness_detector(tiny_crop(norm="none", min_inside=0.4, output_size=22, n_copies=2))
    dist = aug.distribution(x)
    candidates = aug.net.candidates()
    for b, cell in enumerate(blocks):
        assert dist.probs[b, cell_index(candidates, 0, *cell)] > 0.999
    out = aug(x, generator=torch.Generator().manual_seed(0))
    # The box of block (i, j) is 22×22 pixels centred on the block: rows 8i - 7 … 8i + 14, columns 8j - 7 …
    # 8j + 14, so the 22×22 view is that slice of the zero-padded image, pixel for pixel.
    padded = F.pad(x, (7, 7, 7, 7))
    for b, (i, j) in enumerate(blocks):
        expected = padded[b, :, 8 * i : 8 * i + 22, 8 * j : 8 * j + 22]
        for view in (2 * b, 2 * b + 1):  # the n_copies views of input b are rows b·n … b·n + n - 1
            torch.testing.assert_close(out.images[view], expected, atol=1e-5, rtol=0)
            # The square sits in the middle of its view: rows 9..12 and columns 10..13 of 0..21.
            rows, cols = out.images[view, 0].nonzero().unbind(-1)
            assert (rows.min(), rows.max(), cols.min(), cols.max()) == (9, 12, 10, 13)
    # The top-left candidate's view shows the image's top-left corner in its bottom-right, after 7 padded rows and
    # columns; the top-right one shows the top-right corner in its bottom-left.
    torch.testing.assert_close(out.images[0, :, 7:, 7:], x[0, :, :15, :15])
    assert (out.images[0, :, :7] == 0).all() and (out.images[0, :, :, :7] == 0).all()
    torch.testing.assert_close(out.images[4, :, 7:, :15], x[2, :, :15, 49:])
    assert (out.images[4, :, :7] == 0).all() and (out.images[4, :, :, 15:] == 0).all()


# ------------------------------------------------------------------------------------------------------------------
# Level balance, top views, default entropy range


def level_mass(dist: CropCategorical, candidates: CropCandidates) -> torch.Tensor:
    """(B, L) total probability of every level."""
    levels = len(candidates.level_counts)
    return torch.zeros(dist.probs.shape[0], levels).index_add_(1, candidates.level, dist.probs)


@pytest.mark.parametrize("mode", ["instance", "global", "class"])
def test_levels_are_balanced_at_init(mode):
    aug = tiny_crop(mode=mode, levels=(0, 1, 2), num_classes=3 if mode == "class" else None)
    candidates = aug.net.candidates()
    assert len(set(candidates.level_counts)) == 4  # very different numbers of candidates per level
    x, y = torch.rand(2, 1, 48, 64), torch.tensor([0, 2])
    mass = level_mass(aug.distribution(x, y), candidates)
    torch.testing.assert_close(mass, torch.full((2, 4), 0.25))
    bias = (0.5, -1.0, 2.0, 0.0)
    biased = tiny_crop(mode=mode, levels=(0, 1, 2), level_bias=bias, num_classes=3 if mode == "class" else None)
    expected = torch.softmax(torch.tensor(bias), 0).expand(2, 4)
    torch.testing.assert_close(level_mass(biased.distribution(x, y), candidates), expected)


def test_levels_are_balanced_and_boxes_are_fractions_at_another_input_size():
    # φ sees every input at phi_size, so the candidates (fractions of the image) are the same for any input size.
    aug = tiny_crop(levels=(1, 2), level_bias=(1.0, 0.0, -1.0))
    x = torch.rand(2, 1, 40, 44)
    dist = aug.distribution(x)
    assert dist.num_candidates == aug.num_candidates
    torch.testing.assert_close(dist.boxes, aug.net.candidates().boxes)
    expected = torch.softmax(torch.tensor([1.0, 0.0, -1.0]), 0).expand(2, 3)
    torch.testing.assert_close(level_mass(dist, aug.net.candidates()), expected)


def test_top_views_are_the_crops_of_the_most_probable_boxes():
    aug = brightness_detector(tiny_crop(norm="none", output_size=(10, 12)))
    # Each 8×8 block has its own grey level, so each image has its own order of stage-2 cells.
    x = F.interpolate(torch.rand(3, 1, 6, 8), size=(48, 64), mode="nearest")
    views = aug.top_views(x, 4)
    assert views.shape == (12, 1, 10, 12)
    dist = aug.distribution(x)
    order = dist.probs.argsort(-1, descending=True)
    assert len({int(order[b, 0]) for b in range(3)}) > 1  # the images have different favourite crops
    for b in range(3):
        for r in range(4):
            box = dist.boxes[order[b, r]][None]
            torch.testing.assert_close(views[4 * b + r], crop_resize(x[b : b + 1], box, (10, 12))[0])
    with pytest.raises(ValueError, match="k must be"):
        aug.top_views(x, aug.num_candidates + 1)


def test_default_entropy_range_is_the_recipe_band_shifted_by_the_jitter():
    aug = tiny_crop(levels=(1, 2))
    assert aug.num_candidates == sum(aug.net.candidates().level_counts)
    assert aug.entropy_range == pytest.approx((0.6, 1.0))  # no jitter
    jittered = tiny_crop(levels=(2,), global_crop=False, centre_jitter=1.0, size_jitter=0.1)
    shift = jittered.jitter_entropy
    assert shift < 0 and jittered.entropy_range == pytest.approx((0.6 + shift, 1.0 + shift))
    assert tiny_crop(entropy_range=(1.0, 2.0)).entropy_range == (1.0, 2.0)
    with pytest.raises(ValueError, match="entropy_range"):
        tiny_crop(entropy_range=(2.0, 1.0))


def test_default_entropy_range_is_reachable_with_jitter():
    aug = legacy_crop(image_size=32, in_channels=1, width=4, centre_jitter=0.5, size_jitter=0.1)
    dist = aug.distribution(torch.rand(1, 1, 32, 32))
    # The largest entropy any logits can give (p ∝ vol) is log Σ_k vol_k (about -2 here); the band starts at 2.1.
    jitter = dist.jitter.double()
    max_entropy = float(torch.where(jitter > 0, torch.log(2 * jitter), 0.0).sum(-1).logsumexp(0))
    assert dist.entropy().item() <= max_entropy + 1e-4
    assert aug.entropy_range[0] < max_entropy


def test_jitter_entropy_is_the_initial_entropy_the_jitter_adds():
    x = torch.rand(2, 1, 48, 48)
    plain = legacy_crop(image_size=48, in_channels=1, levels=(2,), depth=4, width=4, global_crop=False)
    assert plain.jitter_entropy == 0.0
    torch.manual_seed(0)
    jittered = legacy_crop(
        image_size=48,
        in_channels=1,
        levels=(2,),
        depth=4,
        width=4,
        global_crop=False,
        centre_jitter=1.0,
        size_jitter=0.1,
    )
    # one level of 6 × 6 cells: centres uniform over a cell (1/6 of each side), sides over ±10%
    assert jittered.jitter_entropy == pytest.approx(2 * math.log(1 / 6) + math.log(0.2), abs=1e-5)
    categorical = jittered.distribution(x).entropy().detach() - jittered.jitter_entropy
    assert torch.allclose(categorical, torch.full((2,), math.log(jittered.num_candidates)), atol=0.05)


# ------------------------------------------------------------------------------------------------------------------
# REINFORCE through InstaAugObjective

THETA = torch.tensor([0.4, -0.3, 1.2, 0.0, -1.5])
COSTS = torch.tensor([1.0, 3.0, -2.0, 0.5, 4.0]) + 5.0  # an offset makes the baseline matter
BOXES = torch.tensor([[0.1 * (k + 1), 0.5, 0.3, 0.3] for k in range(5)])


def exact_gradient(theta: torch.Tensor, costs: torch.Tensor) -> torch.Tensor:
    """∇θ Σ_k softmax(θ)_k L_k = p ⊙ (L - Σ p L)."""
    p = torch.softmax(theta, -1)
    return p * (costs - (p * costs).sum())


def per_row_gradients(objective: InstaAugObjective | None, rows: int, n: int, generator) -> torch.Tensor:
    """(rows, N) independent REINFORCE estimates of ∇θ E[L], one per input row (each from its n views).

    With ``objective=None`` the estimate has no baseline: the gradient of mean(L · log p).
    """
    logits = THETA.expand(rows, -1).clone().requires_grad_(True)
    dist = CropCategorical(logits, BOXES)
    value, log_prob, _ = dist.draw((n,), generator)  # (n, rows, 4), (n, rows): view order is row-major
    boxes, log_prob = value.transpose(0, 1).reshape(rows * n, 4), log_prob.transpose(0, 1).reshape(rows * n)
    out = AugmentOutput(torch.zeros(rows * n, 1, 2, 2), boxes, log_prob, dist.entropy(), n, False, dist)
    losses = COSTS[index_of(boxes, BOXES)]
    loss = (losses * out.log_prob).mean() if objective is None else objective(losses, out).loss
    (grad,) = torch.autograd.grad(loss, logits)
    return grad * rows  # the objective averages over the rows


def assert_unbiased(estimates: torch.Tensor, exact: torch.Tensor) -> None:
    mean = estimates.mean(0)
    se = estimates.std(0) / math.sqrt(estimates.shape[0])
    assert ((mean - exact).abs() < 5 * se).all(), (mean, exact, se)
    assert (exact.abs() > 10 * se).sum() >= 3  # the check has power: most components are far from 0


def test_reinforce_leave_one_out_is_unbiased_and_reduces_variance():
    exact = exact_gradient(THETA, COSTS)
    objective = InstaAugObjective(lam=0.0)
    loo = per_row_gradients(objective, 20_000, 4, torch.Generator().manual_seed(0))
    assert_unbiased(loo, exact)
    plain = per_row_gradients(None, 20_000, 4, torch.Generator().manual_seed(1))
    assert_unbiased(plain, exact)
    assert loo.var(0).sum() < 0.3 * plain.var(0).sum()


def test_reinforce_running_baseline_is_unbiased_after_warm_up():
    exact = exact_gradient(THETA, COSTS)
    objective = InstaAugObjective(lam=0.0, baseline_momentum=0.9)
    g = torch.Generator().manual_seed(2)
    for _ in range(60):
        per_row_gradients(objective, 500, 1, g)
    expected_loss = float((torch.softmax(THETA, -1) * COSTS).sum())
    assert objective.running_loss.item() == pytest.approx(expected_loss, abs=0.1)
    estimates = per_row_gradients(objective, 40_000, 1, g)
    assert_unbiased(estimates, exact)
    plain = per_row_gradients(None, 40_000, 1, g)
    assert estimates.var(0).sum() < 0.1 * plain.var(0).sum()


def test_reinforce_through_a_global_crop_augmenter():
    # 13 candidates: a 4×4 grid without its corners, and the whole image.
    aug = perturb_heads(legacy_crop(image_size=16, levels=(1,), mode="global", in_channels=1, width=4, n_copies=4))
    candidates = aug.net.candidates()
    assert candidates.num_candidates == 13
    costs = torch.linspace(-2.0, 3.0, 13)[torch.randperm(13, generator=torch.Generator().manual_seed(3))]
    rows = 5000
    out = aug(torch.full((rows, 1, 16, 16), 0.5), generator=torch.Generator().manual_seed(4))
    out.distribution.logits.retain_grad()
    objective = InstaAugObjective(lam=0.0)
    objective(costs[index_of(out.params, candidates.boxes)], out).loss.backward()
    # Per-row gradients w.r.t. the raw outputs (the normalisation's Jacobian applied to the logits' gradients).
    p = out.distribution.probs.detach()
    g = out.distribution.logits.grad
    per_row = (g - p * g.sum(-1, keepdim=True)) * rows
    torch.testing.assert_close(per_row.mean(0), aug.net.crop_output.grad)
    offsets = aug.net.level_offsets().detach()
    assert_unbiased(per_row, exact_gradient(aug.net.crop_output.detach() + offsets, costs))


# ------------------------------------------------------------------------------------------------------------------
# InstaAug


@pytest.mark.parametrize("mode", ["instance", "global", "class"])
def test_modes_shapes_and_params(mode):
    aug = perturb_heads(
        tiny_crop(mode=mode, levels=(1, 2), num_classes=3 if mode == "class" else None, n_copies=2, output_size=(8, 12))
    )
    x, y = torch.rand(3, 1, 48, 64), torch.tensor([0, 2, 1])
    out = aug(x, y, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, AugmentOutput)
    assert out.images.shape == (6, 1, 8, 12) and out.params.shape == (6, 4) and out.log_prob.shape == (6,)
    assert out.entropy.shape == (3,) and out.n_copies == 2 and not out.reparameterized
    assert aug.names == ("crop_x", "crop_y", "crop_w", "crop_h")
    dist = out.distribution
    assert isinstance(dist, CropCategorical) and dist.probs.shape == (3, aug.num_candidates)
    index_of(out.params, dist.boxes)  # the params are candidate boxes
    log_prob = dist.log_prob(out.params.view(3, 2, 4).transpose(0, 1)).transpose(0, 1).reshape(6)
    torch.testing.assert_close(out.log_prob.detach(), log_prob)
    torch.testing.assert_close(out.images, crop_resize(x.repeat_interleave(2, 0), out.params, (8, 12)))
    torch.testing.assert_close(out.entropy, dist.entropy())
    assert aug(x, y, n_copies=3).images.shape == (9, 1, 8, 12)
    same = aug(x, y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(same.params, out.params, atol=0, rtol=0)
    if mode == "global":
        torch.testing.assert_close(dist.probs, dist.probs[:1].expand(3, -1))
    if mode == "instance":
        assert not torch.allclose(dist.probs[0], dist.probs[1])


def test_class_mode_uses_labels_and_needs_them_in_training():
    aug = perturb_heads(tiny_crop(mode="class", num_classes=3))
    x = torch.rand(2, 1, 48, 64)
    offsets = aug.net.level_offsets().detach()
    weight = aug.net.crop_output.weight.detach()
    dist = aug.distribution(x, torch.tensor([2, 0]))
    torch.testing.assert_close(dist.probs, torch.softmax(weight[[2, 0]] + offsets, -1))
    with pytest.raises(ValueError, match="needs labels"):
        aug(x)
    aug.eval()
    torch.testing.assert_close(aug.distribution(x).probs[0], torch.softmax(weight.mean(0) + offsets, -1))
    assert aug(x).images.shape == (2, 1, 48, 64)
    with pytest.raises(ValueError, match="num_classes"):
        tiny_crop(mode="class")


def test_instance_mode_accepts_another_input_size():
    aug = tiny_crop(levels=(1, 2))
    x = torch.rand(2, 1, 40, 44)
    out = aug(x)
    assert out.images.shape == (2, 1, 40, 44)
    assert out.distribution.num_candidates == aug.num_candidates
    index_of(out.params, aug.net.candidates().boxes)
    # φ sees the input resized to phi_size: the same distribution as for the resized input itself.
    resized = F.interpolate(x, size=aug.net.phi_size, mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(aug.distribution(x).logits, aug.distribution(resized).logits)
    global_aug = tiny_crop(mode="global")
    assert global_aug(x).images.shape == (2, 1, 40, 44)


def test_gradients_reach_phi_in_a_training_step():
    aug = tiny_crop(levels=(1, 2), n_copies=2, output_size=16)
    f = build_classifier("small_cnn", 1, 3, width=4, depth=2)
    x, y = torch.rand(4, 1, 48, 64), torch.tensor([0, 1, 2, 1])
    objective = InstaAugObjective(EntropyController(-10.0, 10.0, lam_init=0.1))

    def step():
        aug.zero_grad()
        out = aug(x, y)
        losses = F.cross_entropy(f(out.images), out.repeat(y), reduction="none")
        objective(losses, out).loss.backward()

    step()
    net = aug.net
    for p in [*net.heads.parameters(), *net.global_head.parameters(), net.level_bias]:
        assert p.grad is not None and p.grad.abs().sum() > 0
    # The heads start at zero, so the backbone has no gradient yet; once they are not zero it does.
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.backbone.parameters())
    perturb_heads(aug, std=0.1)
    step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.backbone.parameters())
    before = aug.distribution(x).probs.detach()
    with torch.no_grad():  # one SGD step (torch.optim would import torch._dynamo: seconds)
        for p in aug.parameters():
            p -= 0.5 * p.grad
    assert not torch.allclose(aug.distribution(x).probs, before)


def test_backbone_follows_the_training_mode_after_construction():
    aug = tiny_crop(levels=(1, 2), norm="batch")
    assert aug.training
    assert all(m.training for m in aug.modules())
    batch_norm = aug.net.backbone.stages[0][1]
    aug(torch.rand(4, 1, 48, 64))
    assert batch_norm.num_batches_tracked.item() == 1  # training-mode BatchNorm updates its running statistics


def test_save_and_load_round_trip(tmp_path):
    aug = perturb_heads(tiny_crop(levels=(1, 2), n_copies=2, size_jitter=0.1, centre_jitter=0.5, output_size=12))
    aug.save(tmp_path / "crop")
    loaded = InstaAug.load(tmp_path / "crop")
    assert isinstance(loaded, InstaAug) and loaded.config == aug.config
    assert loaded.config.has_crop and loaded.config.levels == (1, 2)
    x = torch.rand(3, 1, 48, 64)
    a, b = aug.distribution(x), loaded.distribution(x)
    torch.testing.assert_close(a.probs, b.probs)
    torch.testing.assert_close(a.boxes, b.boxes)
    torch.testing.assert_close(a.jitter, b.jitter)
    torch.testing.assert_close(a.entropy(), b.entropy())
    out_a = aug(x, generator=torch.Generator().manual_seed(0))
    out_b = loaded(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out_a.images, out_b.images)
    torch.testing.assert_close(out_a.params, out_b.params)


def test_crop_augmenter_is_an_instaaug_and_composes():
    aug = InstaAug(("crop",), phi_size=32, in_channels=1, width=4)
    assert type(aug) is InstaAug and aug.config.phi_size == (32, 32)
    assert type(InstaAug("crop", width=4)) is InstaAug and InstaAug("crop", width=4).net.phi_size == (48, 48)
    # the recipe: stage 2 of the depth-3 φ, 4×4 cells at 32 px, less the 4 corner boxes mostly outside the image
    assert aug.net.candidates().level_counts == (12,)
    both = InstaAug(("rotation", "crop"), width=4)
    assert type(both) is InstaAug and both.names == ("crop_x", "crop_y", "crop_w", "crop_h", "rotation")
    with pytest.raises(ValueError, match="unknown InstaAug option"):
        InstaAug(("crop",), phi_size=32, rotation=1.0)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"levels": (4,)}, "levels must be stage indices"),
        ({"levels": (-5,)}, "levels must be stage indices"),
        ({"levels": ()}, "levels must be stage indices"),
        ({"level_bias": (0.0, 0.0, 0.0)}, "level_bias needs 2 entries"),
        ({"mode": "batch"}, "mode must be one of"),
        ({"norm": "group"}, "norm must be one of"),
        ({"output_size": 0}, "output_size"),
        ({"image_size": (32, 32, 3)}, "phi_size"),
        ({"padding_mode": "wrap"}, "padding_mode"),
        ({"network": "vgg"}, "unknown network"),
        ({"size_jitter": 0.5, "levels": (1, 2)}, "crop levels"),
        ({"min_inside": 0.0}, "min_inside"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        tiny_crop(**options)


def test_levels_are_sorted_and_deduplicated():
    aug = tiny_crop(levels=(-2, 1, 2))  # -2 is stage 2 of 4
    assert aug.net.levels == (1, 2)
    assert aug.net.candidates().grid_shapes == ((12, 16), (6, 8), (1, 1))
    sides = aug.net.candidates().boxes[:, 2]
    assert torch.all(sides[1:] >= sides[:-1])  # smaller boxes first, the whole image last


# ------------------------------------------------------------------------------------------------------------------
# RandomCrop


def test_random_crop_boxes_inside_with_sides_in_range():
    aug = RandomCrop(0.3, 0.8, output_size=8, in_channels=1, n_copies=2)
    x = torch.rand(2000, 1, 16, 16)
    out = aug(x, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (4000, 1, 8, 8) and out.params.shape == (4000, 4) and out.entropy.shape == (2000,)
    side = out.params[:, 2]
    torch.testing.assert_close(out.params[:, 3], side)
    assert side.min() >= 0.3 and side.max() <= 0.8
    assert side.mean().item() == pytest.approx(0.55, abs=0.008)  # σ of the mean ≈ 0.0023
    lo, hi = out.params[:, :2] - side[:, None] / 2, out.params[:, :2] + side[:, None] / 2
    assert lo.min() >= 0 and hi.max() <= 1
    assert lo.min() < 0.01 and hi.max() > 0.99  # positions reach both edges
    torch.testing.assert_close(out.images, crop_resize(x.repeat_interleave(2, 0), out.params, (8, 8)))
    torch.testing.assert_close(out.entropy, torch.full((2000,), math.log(0.5)))


@pytest.mark.parametrize(("low", "high"), [(0.0, 0.5), (0.6, 0.5), (0.5, 1.2), (-0.1, 0.5)])
def test_random_crop_bad_scales(low, high):
    with pytest.raises(ValueError, match="min_scale"):
        RandomCrop(low, high)


def test_unused_deep_stages_are_skipped_without_changing_the_logits():
    """Without the global crop, φ runs only up to its deepest level; the logits equal those of the full network."""
    aug = legacy_crop(image_size=32, in_channels=1, levels=(1,), depth=4, width=4, global_crop=False)
    with torch.no_grad():
        aug.net.heads[0].weight.normal_()
    x = torch.rand(3, 1, 32, 32)
    calls = []
    hook = aug.net.backbone.stages[3].register_forward_hook(lambda *args: calls.append(1))
    logits = aug.distribution(x).logits
    hook.remove()
    assert not calls  # the fourth stage never ran
    full = aug.net.backbone(x)[1]
    raw = aug.net.heads[0](full).flatten(1)[:, aug.net.candidates().keep[0]]
    expected = torch.log_softmax(raw + aug.net.level_bias[0], dim=-1)
    assert torch.allclose(logits, expected, atol=1e-6)
