"""instaaug.linear_probe: linear readouts of frozen features, chosen on held-out data, with view averaging."""

from __future__ import annotations

import pytest
import torch

from instaaug.linear_probe import Readout, select_readouts


def test_linear_probe_chooses_c_on_held_out_features_and_averages_views():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    features = torch.randn(200, 4, generator=g) + 3 * labels[:, None].float() * torch.tensor([1.0, 0, 0, 0])
    # Views: the features plus noise; the mean over 8 views recovers the label better than one noisy view.
    views = features[:, None] + 2 * torch.randn(200, 8, 4, generator=g)
    clean, tta, chosen = select_readouts(
        (features[:150], labels[:150]), (features[150:], views[150:], labels[150:]), (0.01, 1.0)
    )
    assert chosen["c"] in (0.01, 1.0) and chosen["held_out_accuracy"] > 0.9
    assert tta.accuracy(views[150:], labels[150:]) > tta.accuracy(views[150:, 0], labels[150:])
    log_p = clean.log_probs(features[:3])
    assert log_p.shape == (3, 2) and torch.allclose(log_p.exp().sum(-1), torch.ones(3), atol=1e-5)
    assert isinstance(clean, Readout)
    with pytest.raises(ValueError, match="C values"):
        select_readouts((features, labels), (features, views, labels), (0.0,))
