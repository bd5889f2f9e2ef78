"""instaaug.distributions.product: independent parts of one transform distribution."""

from __future__ import annotations

import torch

from conftest import example_distributions as _distributions
from instaaug import UniformRanges


def test_product_sums_the_parts_and_splits_the_score_function_term():
    parts = _distributions()
    product = parts["product"]
    crop, uniform, flip = product.parts
    value = product.sample((6,))
    want = crop.log_prob(value[..., :4]) + uniform.log_prob(value[..., 4:6]) + flip.log_prob(value[..., 6:])
    torch.testing.assert_close(product.log_prob(value), want)
    torch.testing.assert_close(product.entropy(), crop.entropy() + uniform.entropy() + flip.entropy())
    drawn = product.draw((6,), torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        drawn.score_log_prob, crop.log_prob(drawn.value[..., :4]) + flip.log_prob(drawn.value[..., 6:])
    )
    assert not product.has_rsample and product.part(UniformRanges) is uniform
