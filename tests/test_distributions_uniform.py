"""UniformRanges: support, uniformity, reparameterisation gradients, log_prob, entropy, shapes, errors."""

from __future__ import annotations

import math

import pytest
import torch

from instaaug.distributions import DEFAULT_MIN_WIDTH, UniformRanges

NAMES = ("rotation", "hue")


def make_dist(requires_grad: bool = False) -> UniformRanges:
    low = torch.tensor([[-1.0, -0.1], [-0.5, -0.3], [0.2, -0.05]], requires_grad=requires_grad)
    high = torch.tensor([[2.0, 0.1], [0.5, 0.0], [0.3, 0.4]], requires_grad=requires_grad)
    return UniformRanges(low, high, NAMES)


def test_samples_lie_inside_intervals():
    dist = make_dist()
    s = dist.sample((2000,), generator=torch.Generator().manual_seed(0))
    assert s.shape == (2000, 3, 2)
    assert (s >= dist.low).all() and (s <= dist.high).all()


def test_samples_are_uniform_ks_and_chi_square():
    dist = make_dist()
    n = 5000
    s = dist.sample((n,), generator=torch.Generator().manual_seed(1))
    u = ((s - dist.low) / dist.width).reshape(n, -1).double()  # each column should be U(0, 1)
    # Kolmogorov–Smirnov statistic by hand; critical value at α = 0.001 is 1.95 / √n.
    sorted_u, _ = u.sort(dim=0)
    i = torch.arange(1, n + 1, dtype=torch.float64)[:, None]
    ks = torch.maximum(i / n - sorted_u, sorted_u - (i - 1) / n).max(dim=0).values
    assert (ks < 1.95 / math.sqrt(n)).all(), ks
    # χ² over 10 equal bins, 9 degrees of freedom: 27.88 is the 0.999 quantile.
    counts = torch.stack([torch.histc(col, bins=10, min=0, max=1) for col in u.T])
    chi2 = ((counts - n / 10) ** 2 / (n / 10)).sum(dim=1)
    assert (chi2 < 27.88).all(), chi2


def test_a_skewed_sampler_would_fail_the_ks_check():
    # Guard for the test above: u² (not uniform) must be rejected by the same statistic.
    n = 5000
    u = torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64).square().sort().values
    i = torch.arange(1, n + 1, dtype=torch.float64)
    ks = torch.maximum(i / n - u, u - (i - 1) / n).max()
    assert ks > 1.95 / math.sqrt(n)


def test_rsample_gradient_wrt_low_and_high():
    dist = make_dist(requires_grad=True)
    s = dist.rsample((7,), generator=torch.Generator().manual_seed(3))
    s.sum().backward()
    u = torch.rand((7, 3, 2), generator=torch.Generator().manual_seed(3))  # the same uniforms
    torch.testing.assert_close(dist.low.grad, (1 - u).sum(0))
    torch.testing.assert_close(dist.high.grad, u.sum(0))


def test_sample_has_no_gradient():
    dist = make_dist(requires_grad=True)
    assert not dist.sample((3,)).requires_grad
    assert dist.rsample((3,)).requires_grad


def test_generator_gives_reproducible_samples():
    dist = make_dist()
    a = dist.sample((5,), generator=torch.Generator().manual_seed(11))
    b = dist.rsample((5,), generator=torch.Generator().manual_seed(11))
    c = dist.sample((5,), generator=torch.Generator().manual_seed(12))
    torch.testing.assert_close(a, b.detach(), atol=0, rtol=0)
    assert not torch.equal(a, c)


def test_entropy_is_sum_of_log_widths_and_matches_monte_carlo():
    dist = make_dist()
    expected = torch.log(dist.high - dist.low).sum(-1)
    torch.testing.assert_close(dist.entropy(), expected)
    s = dist.sample((500,), generator=torch.Generator().manual_seed(4))
    mc = -dist.log_prob(s).mean(0)
    torch.testing.assert_close(mc, expected, atol=1e-5, rtol=0)
    assert dist.entropy().shape == (3,)


def test_entropy_gradient_is_one_over_width():
    dist = make_dist(requires_grad=True)
    dist.entropy().sum().backward()
    width = (dist.high - dist.low).detach()
    torch.testing.assert_close(dist.high.grad, 1 / width)
    torch.testing.assert_close(dist.low.grad, -1 / width)


def test_log_prob_inside_and_outside():
    dist = make_dist()
    inside = dist.mean
    torch.testing.assert_close(dist.log_prob(inside), -torch.log(dist.width).sum(-1))
    outside = inside.clone()
    outside[0, 0] = dist.low[0, 0] - 1e-3
    outside[1, 1] = dist.high[1, 1] + 1e-3
    lp = dist.log_prob(outside)
    assert lp[0] == -math.inf and lp[1] == -math.inf and torch.isfinite(lp[2])
    assert dist.log_prob(dist.sample((4,))).shape == (4, 3)


def test_entropy_floor_for_degenerate_widths():
    low = torch.tensor([[0.0, -1e-5], [-0.2, 0.1]])
    high = torch.tensor([[0.0, 1e-5], [0.2, 0.1]])
    dist = UniformRanges(low, high, NAMES)
    h = dist.entropy()
    assert torch.isfinite(h).all()
    assert h[0].item() == pytest.approx(2 * math.log(DEFAULT_MIN_WIDTH), rel=1e-5)
    assert h[1].item() == pytest.approx(math.log(0.4) + math.log(DEFAULT_MIN_WIDTH), rel=1e-5)
    assert torch.isfinite(dist.log_prob(dist.mean)).all()
    coarse = UniformRanges(low, high, NAMES, min_width=0.01)
    assert coarse.entropy()[0].item() == pytest.approx(2 * math.log(0.01), rel=1e-5)


def test_names_shapes_mean_width_and_indexing():
    dist = make_dist()
    assert dist.names == NAMES
    assert dist.batch_shape == (3,) and dist.event_shape == (2,)
    torch.testing.assert_close(dist.mean, (dist.low + dist.high) / 2)
    torch.testing.assert_close(dist.width, dist.high - dist.low)
    one = dist[1]
    assert one.batch_shape == (1,) and one.names == NAMES
    torch.testing.assert_close(one.low, dist.low[1:2])
    two = dist[torch.tensor([0, 2])]
    torch.testing.assert_close(two.entropy(), dist.entropy()[[0, 2]])


@pytest.mark.parametrize(
    ("low", "high", "names", "match"),
    [
        (torch.zeros(3), torch.ones(3), ("a", "b", "c"), "must both be"),
        (torch.zeros(2, 3), torch.ones(2, 2), ("a", "b", "c"), "must both be"),
        (torch.zeros(2, 3), torch.ones(2, 3), ("a", "b"), "names"),
    ],
)
def test_bad_constructor_arguments(low, high, names, match):
    with pytest.raises(ValueError, match=match):
        UniformRanges(low, high, names)


def test_min_width_must_be_positive():
    with pytest.raises(ValueError, match="min_width"):
        UniformRanges(torch.zeros(1, 1), torch.ones(1, 1), ("a",), min_width=0.0)


def test_float64_and_sample_shape():
    dist = UniformRanges(torch.zeros(2, 1, dtype=torch.float64), torch.ones(2, 1, dtype=torch.float64), ("v",))
    s = dist.rsample((3, 4))
    assert s.shape == (3, 4, 2, 1) and s.dtype == torch.float64
    assert dist.log_prob(s).shape == (3, 4, 2)
