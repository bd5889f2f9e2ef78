"""``UniformMixture`` (K boxes per input): exact entropy, densities, samples and both gradient estimators; the
``distribution="mixture"`` augmenter composes with crop and colour, trains, saves and loads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from instaaug import FlowRanges, InstaAug, Product
from instaaug.distributions import UniformMixture
from instaaug.distributions.mixture import centre_offsets, symmetric_centres
from instaaug.networks import MixtureRangeHead


def mixture_1d(ends: list[tuple[float, float]], weights: list[float]) -> UniformMixture:
    low = torch.tensor([[[a] for a, _ in ends]], dtype=torch.float64)
    high = torch.tensor([[[b] for _, b in ends]], dtype=torch.float64)
    logits = torch.tensor([weights], dtype=torch.float64).log()
    return UniformMixture(low, high, logits, ("rotation",))


def quadrature_entropy_1d(dist: UniformMixture, lo: float = -4, hi: float = 4, n: int = 400_001) -> float:
    grid = torch.linspace(lo, hi, n, dtype=torch.float64)
    p = dist.log_prob(grid[:, None, None]).exp()[:, 0]
    plogp = torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p))
    return float(-torch.trapezoid(plogp, grid))


def test_entropy_of_disjoint_boxes_is_the_closed_form():
    dist = mixture_1d([(-3.0, -2.0), (-0.5, 0.5), (1.0, 3.0)], [0.2, 0.5, 0.3])
    pi = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    expected = float(-(pi * pi.log()).sum() + (pi * torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64).log()).sum())
    assert float(dist.entropy()[0]) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "ends, weights",
    [
        ([(-1.0, 1.0), (0.0, 2.0), (0.5, 0.7)], [0.3, 0.5, 0.2]),  # overlapping
        ([(-1.0, 1.0), (-1.0, 1.0)], [0.4, 0.6]),  # identical boxes: one uniform
        ([(-2.0, -1.0), (-1.0, 0.5), (0.2, 3.0)], [0.1, 0.1, 0.8]),  # touching and overlapping
    ],
)
def test_entropy_matches_quadrature_when_boxes_overlap(ends, weights):
    dist = mixture_1d(ends, weights)
    assert float(dist.entropy()[0]) == pytest.approx(quadrature_entropy_1d(dist), abs=2e-4)


def test_entropy_in_two_dimensions_matches_monte_carlo():
    torch.manual_seed(0)
    low = torch.tensor([[[-1.0, -0.5], [0.0, 0.0], [0.5, -1.0]]], dtype=torch.float64)
    high = low + torch.tensor([[[1.5, 1.0], [1.0, 1.5], [0.4, 0.3]]], dtype=torch.float64)
    dist = UniformMixture(low, high, torch.tensor([[0.0, 0.5, -0.3]], dtype=torch.float64), ("a", "b"))
    samples = dist.sample((400_000,))
    log_p = dist.log_prob(samples)[:, 0]
    estimate, stderr = float(-log_p.mean()), float(log_p.std() / math.sqrt(log_p.numel()))
    assert float(dist.entropy()[0]) == pytest.approx(estimate, abs=4 * stderr + 1e-6)


def test_density_integrates_to_one_and_samples_follow_it():
    dist = mixture_1d([(-1.0, 1.0), (0.0, 2.0), (-3.0, -2.5)], [0.3, 0.5, 0.2])
    grid = torch.linspace(-4, 4, 200_001, dtype=torch.float64)
    density = dist.log_prob(grid[:, None, None]).exp()[:, 0]
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-3)
    # Kolmogorov–Smirnov: the empirical CDF of 20,000 samples against the CDF of the density.
    cdf = torch.cumulative_trapezoid(density, grid)
    samples = dist.sample((20_000,), generator=torch.Generator().manual_seed(1))[:, 0, 0].sort().values
    model_cdf = torch.from_numpy(np.interp(samples.numpy(), grid[1:].numpy(), cdf.numpy()))
    empirical = torch.arange(1, samples.numel() + 1, dtype=torch.float64) / samples.numel()
    statistic = float((empirical - model_cdf).abs().max())
    assert statistic < 1.63 / math.sqrt(samples.numel())  # the 1% critical value


def test_the_two_gradient_estimators_are_unbiased():
    """E[f(τ)] with f(τ) = τ²: the pathwise part (box ends) and the score part (weights, REINFORCE as the
    objective uses it) against the exact gradient Σ_k π_k (a_k² + a_k b_k + b_k²) / 3."""
    low = torch.tensor([[[-1.0], [0.5], [1.5]]], dtype=torch.float64, requires_grad=True)
    high = torch.tensor([[[0.2], [1.0], [2.5]]], dtype=torch.float64, requires_grad=True)
    logits = torch.tensor([[0.2, -0.4, 0.1]], dtype=torch.float64, requires_grad=True)

    def exact() -> torch.Tensor:
        a, b = low[0, :, 0], high[0, :, 0]
        return (torch.softmax(logits[0], 0) * (a * a + a * b + b * b) / 3).sum()

    grads_exact = torch.autograd.grad(exact(), (low, high, logits))
    dist = UniformMixture(low, high, logits, ("x",))
    value, _, score = dist.draw((400_000,), generator=torch.Generator().manual_seed(0))
    f = value[..., 0] ** 2
    surrogate = (f + (f.detach() - f.detach().mean()) * score).mean()
    grads = torch.autograd.grad(surrogate, (low, high, logits))
    for estimate, truth in zip(grads, grads_exact, strict=True):
        torch.testing.assert_close(estimate, truth, atol=0.02, rtol=0.03)


def test_entropy_gradient_matches_finite_differences():
    low = torch.tensor([[[-1.0, 0.0], [0.0, -0.5]]], dtype=torch.float64, requires_grad=True)
    high = torch.tensor([[[0.5, 1.0], [1.2, 0.3]]], dtype=torch.float64, requires_grad=True)
    logits = torch.tensor([[0.3, -0.2]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: UniformMixture(a, b, c, ("x", "y")).entropy(), (low, high, logits))


def test_shapes_generator_and_support():
    head = MixtureRangeHead(([-math.pi, -0.5], [math.pi, 0.5]), 3, [0.4, 0.1])
    raw = torch.randn(5, head.out_dim) * 3
    dist = UniformMixture(*head(raw), ("rotation", "hue"))
    a = dist.sample((7,), generator=torch.Generator().manual_seed(3))
    b = dist.sample((7,), generator=torch.Generator().manual_seed(3))
    assert a.shape == (7, 5, 2) and torch.equal(a, b)
    assert bool((a[..., 0].abs() <= math.pi).all() and (a[..., 1].abs() <= 0.5).all())
    assert bool(torch.isfinite(dist.log_prob(a)).all())
    assert float(dist.log_prob(torch.tensor([[4.0, 0.0]]).expand(5, 2))[0]) == -math.inf
    assert dist.mode().shape == (5, 2) and dist[1:3].batch_shape == (2,)


def test_head_starts_with_centres_spread_over_the_range():
    head = MixtureRangeHead(([-math.pi], [math.pi]), 3, [0.3])
    low, high, logits = head(torch.zeros(1, head.out_dim))
    centres = ((low + high) / 2)[0, :, 0]
    torch.testing.assert_close(centres, torch.tensor([-2 * math.pi / 3, 0.0, 2 * math.pi / 3]), atol=1e-5, rtol=0)
    torch.testing.assert_close(high - low, torch.full_like(low, 0.6), atol=1e-5, rtol=0)
    assert torch.equal(logits, torch.zeros(1, 3))


def test_symmetric_centres_are_the_rotations_of_every_order_dividing_the_divisions():
    third = math.pi / 3
    centres = symmetric_centres(-math.pi, math.pi, 6, 0.3)
    # 0, ±π/3, ±2π/3, and the seam ±π as two boxes touching the ends.
    expected = [-math.pi + 0.3, -2 * third, -third, 0.0, third, 2 * third, math.pi - 0.3]
    torch.testing.assert_close(centres, torch.tensor(expected, dtype=torch.float64))
    expected = torch.tensor([-2 * third, 0, 2 * third], dtype=torch.float64)
    torch.testing.assert_close(symmetric_centres(-math.pi, math.pi, 3, 0.3), expected)
    assert symmetric_centres(-math.pi, math.pi, 1, 0.3).tolist() == [0.0]
    for bad in (dict(divisions=0, half_width=0.3), dict(divisions=6, half_width=0.6), dict(divisions=6, half_width=0)):
        with pytest.raises(ValueError):
            symmetric_centres(-math.pi, math.pi, **bad)
    with pytest.raises(ValueError, match="strictly inside"):
        centre_offsets(torch.tensor([-math.pi, 0.0]), -math.pi, math.pi)


def test_head_started_at_symmetric_centres_samples_the_union_of_its_boxes():
    """A head whose offsets come from ``centre_offsets`` starts (zero raw output) with equal-weight boxes of width
    2h at the candidates; samples fill each box uniformly (chi-square over the 7 boxes and within them)."""
    half = 0.25
    centres = symmetric_centres(-math.pi, math.pi, 6, half)
    head = MixtureRangeHead(([-math.pi], [math.pi]), centres.shape[0], [half])
    with torch.no_grad():
        head.centre_offset.copy_(centre_offsets(centres, -math.pi, math.pi)[:, None])
    low, high, logits = head(torch.zeros(1, head.out_dim))
    torch.testing.assert_close(((low + high) / 2)[0, :, 0], centres.float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(high - low, torch.full_like(low, 2 * half), atol=1e-5, rtol=0)
    dist = UniformMixture(low.double(), high.double(), logits.double(), ("rotation",))
    samples = dist.sample((70_000,), generator=torch.Generator().manual_seed(0))[:, 0, 0]
    # Which box and which quarter of it every sample falls in: 28 cells of equal probability 1/28.
    box = torch.bucketize(samples, low[0, :, 0].double()) - 1
    quarter = ((samples - low[0, box, 0].double()) / (2 * half) * 4).floor().clamp(0, 3).long()
    counts = torch.bincount(box * 4 + quarter, minlength=28).double()
    assert counts.shape == (28,)
    chi2 = float(((counts - 2500) ** 2 / 2500).sum())
    assert chi2 < 55.5  # the 0.999 quantile of χ²(27)
    # The mass at the seam (±π together) is that of two components: the candidate π is covered from both sides.
    seam = float((samples.abs() > math.pi - 2 * half).double().mean())
    assert seam == pytest.approx(2 / 7, abs=0.01)


@pytest.mark.parametrize("distribution, part", [("mixture", UniformMixture), ("flow", FlowRanges)])
def test_mixture_and_flow_augmenters_compose_train_save_and_load(tmp_path, distribution, part):
    torch.manual_seed(0)
    aug = InstaAug(("crop", "rotation", "hue"), distribution=distribution, components=2, phi_size=(24, 24))
    x = torch.rand(4, 3, 24, 24)
    out = aug(x, n_copies=2)
    assert out.images.shape == (8, 3, 24, 24) and not out.reparameterized  # the crop part needs REINFORCE
    dist = aug.distribution(x)
    assert isinstance(dist, Product) and isinstance(dist.part(part), part)
    loss = aug.objective()(out.images.mean(dim=(1, 2, 3)), out).loss
    loss.backward()
    # φ's last layer gets a gradient at once; the flow's conditioners start with zero last layers (the identity
    # spline), so through them the first gradient reaches the flow's own parameters, and φ's from the next step.
    grads = [p.grad for p in [*aug.net.output.parameters(), *aug.head.parameters()] if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    aug.save(tmp_path / "aug")
    loaded = InstaAug.load(tmp_path / "aug")
    assert loaded.config.distribution == distribution
    expected = aug.eval()(x, generator=torch.Generator().manual_seed(5)).images
    torch.testing.assert_close(loaded.eval()(x, generator=torch.Generator().manual_seed(5)).images, expected)
    assert loaded.canonicalise(x).shape == x.shape


@pytest.mark.parametrize(
    "options, match",
    [
        ({"distribution": "gmm"}, "distribution"),
        ({"distribution": "mixture", "components": 0}, "components"),
        ({"distribution": "mixture", "components": 17}, "components"),
        ({"distribution": "mixture", "symmetric": True}, "symmetric"),
    ],
)
def test_bad_distribution_options_are_refused(options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        InstaAug(("rotation",), **options)


@pytest.mark.parametrize(
    "low_shape, high_shape, logits_shape, names, match",
    [
        ((2, 3, 1), (2, 3, 2), (2, 3), ("x",), "low and high"),
        ((2, 3), (2, 3), (2, 3), ("x",), "low and high"),
        ((2, 3, 1), (2, 3, 1), (2, 4), ("x",), "logits"),
        ((2, 3, 1), (2, 3, 1), (2, 3), ("x", "y"), "names"),
    ],
)
def test_mixture_rejects_mismatched_shapes(low_shape, high_shape, logits_shape, names, match):
    with pytest.raises(ValueError, match=match):
        UniformMixture(torch.zeros(low_shape), torch.ones(high_shape), torch.zeros(logits_shape), names)


def test_mixture_head_rejects_bad_arguments():
    with pytest.raises(ValueError, match="components"):
        MixtureRangeHead(([-1.0], [1.0]), 0, [0.2])
    with pytest.raises(ValueError, match="init_half_width"):
        MixtureRangeHead(([-1.0], [1.0]), 2, [2.0])
    with pytest.raises(ValueError, match="one entry per dimension"):
        MixtureRangeHead(([-1.0, -1.0], [1.0]), 2, [0.2])


def test_instaaug_mixture_can_start_at_the_symmetry_candidates_and_keeps_them_through_save_and_load(tmp_path):
    options = {"distribution": "mixture", "mixture_init": "symmetric", "components": 7, "init_half_width": (0.2, 0.05)}
    aug = InstaAug(("rotation", "hue"), **options)
    x = torch.rand(2, 3, 16, 16)
    dist = aug.distribution(x)
    centres = (dist.low + dist.high)[0] / 2  # (K, D) at φ's initial (zero) output
    want = symmetric_centres(-math.pi, math.pi, 6, 0.2).float()
    torch.testing.assert_close(centres[:, 0], want, atol=1e-5, rtol=0)  # rotation: the candidates
    torch.testing.assert_close(centres[:, 1], torch.zeros(7), atol=1e-6, rtol=0)  # hue: the identity
    aug.save(tmp_path)
    loaded = InstaAug.load(tmp_path)
    assert loaded.config.mixture_init == "symmetric"
    torch.testing.assert_close(loaded.distribution(x).low, dist.low)


@pytest.mark.parametrize(
    ("transforms", "options", "message"),
    [
        (("rotation",), {"distribution": "mixture", "mixture_init": "symmetric"}, "set components=7"),
        (
            ("rotation",),
            {"distribution": "mixture", "mixture_init": "symmetric", "symmetry_divisions": 4},
            "places 5 components .* set components=5",
        ),
        (
            ("hue",),
            {"distribution": "mixture", "mixture_init": "symmetric", "components": 7},
            "needs a periodic family",
        ),
        (("rotation",), {"mixture_init": "symmetric"}, "mixture_init is a mixture's option"),
        (("rotation",), {"distribution": "mixture", "mixture_init": "even"}, "mixture_init must be one of"),
    ],
)
def test_symmetric_start_refuses_what_it_cannot_do(transforms, options, message):
    with pytest.raises(ValueError, match=message):
        InstaAug(transforms, **options)
