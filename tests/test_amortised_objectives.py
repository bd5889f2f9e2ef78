"""The SSL objectives of amortised pre-training: NT-Xent, MoCo's per-corner queues, loss and momentum encoder, and
the projection heads."""

from __future__ import annotations

import pytest
import torch

from instaaug.amortised import CornerQueues, MomentumEncoder, ProjectionHeads, moco_loss, nt_xent


def test_nt_xent_matches_a_hand_computed_case():
    # Two images, 2-d projections already unit length: z1 = (e1, e2), z2 = (e1, e2 rotated by 90° → -e1).
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    t = 0.5
    # Anchor order: z1[0], z1[1], z2[0], z2[1]; cosine similarities by hand.
    sim = torch.tensor([[1, 0, 1, -1], [0, 1, 0, 0], [1, 0, 1, -1], [-1, 0, -1, 1]], dtype=torch.float)
    positives = [2, 3, 0, 1]
    losses = []
    for a in range(4):
        others = [b for b in range(4) if b != a]  # 2N − 2 = 2 negatives and one positive
        logits = sim[a, others] / t
        losses.append(-(sim[a, positives[a]] / t - torch.logsumexp(logits, 0)))
    expected = torch.stack(losses).mean()
    assert torch.allclose(nt_xent(z1, z2, t), expected, atol=1e-6)
    # Scale-invariant (projections are normalised inside).
    assert torch.allclose(nt_xent(3 * z1, 0.5 * z2, t), expected, atol=1e-6)


def test_nt_xent_gradients_flow_through_both_views():
    z1 = torch.randn(5, 4, requires_grad=True)
    z2 = torch.randn(5, 4, requires_grad=True)
    nt_xent(z1, z2).backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="N ≥ 2"):
        nt_xent(torch.randn(1, 4), torch.randn(1, 4))


def test_corner_queues_enqueue_per_corner_with_wrap_around():
    queues = CornerQueues(num_corners=3, dim=2, size=5)
    before = queues.queues.clone()
    keys = torch.arange(8.0).view(4, 2)
    queues.enqueue(1, keys)
    assert torch.equal(queues.queues[1, :4], keys) and torch.equal(queues.queues[1, 4], before[1, 4])
    assert torch.equal(queues.queues[0], before[0]) and torch.equal(queues.queues[2], before[2])  # others untouched
    assert queues.pointers.tolist() == [0, 4, 0]
    more = -torch.arange(1.0, 7.0).view(3, 2)
    queues.enqueue(1, more)  # slots 4, 0, 1: the oldest entries are overwritten
    assert torch.equal(queues.queues[1, 4], more[0]) and torch.equal(queues.queues[1, :2], more[1:])
    assert torch.equal(queues.queues[1, 2:4], keys[2:4]) and queues.pointers[1] == 2
    queues.enqueue(2, torch.arange(14.0).view(7, 2))  # more keys than slots: the last five are kept
    assert sorted(queues.queues[2, :, 0].tolist()) == [4.0, 6.0, 8.0, 10.0, 12.0]
    assert torch.equal(queues.negatives(2), queues.queues[2])


def test_moco_loss_and_momentum_encoder():
    q = torch.tensor([[1.0, 0.0]], requires_grad=True)
    k = torch.tensor([[1.0, 0.0]])
    negatives = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    t = 0.5
    expected = -(1 / t - torch.logsumexp(torch.tensor([1 / t, 0.0, -1 / t]), 0))
    loss = moco_loss(q, k, negatives, t)
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    assert q.grad is not None
    encoder = torch.nn.Linear(2, 2)
    ema = MomentumEncoder(encoder, momentum=0.9)
    assert not any(p.requires_grad for p in ema.encoder.parameters())
    old = ema.encoder.weight.clone()
    with torch.no_grad():
        encoder.weight.add_(1.0)
    ema.update(encoder)
    assert torch.allclose(ema.encoder.weight, 0.9 * old + 0.1 * encoder.weight)


def test_projection_heads_shared_or_per_corner():
    h = torch.randn(4, 8)
    per = ProjectionHeads(8, 3, hidden=6, out_dim=5)
    assert len(per.heads) == 3 and per(h, 0).shape == (4, 5)
    assert not torch.allclose(per(h, 0), per(h, 1))
    shared = ProjectionHeads(8, 3, hidden=6, out_dim=5, shared=True)
    assert len(shared.heads) == 1 and torch.equal(shared(h, 0), shared(h, 2))
