"""Contrastive InstaAug: NT-Xent (hand-computed, multi-positive, gathered over 2 processes), φ's REINFORCE estimate
against an exact gradient, and SimCLR through ``train``."""

from __future__ import annotations

import itertools
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from instaaug import InstaAug
from instaaug.contrastive import InstanceContrast, ProjectedEncoder, nt_xent, nt_xent_per_view, positive_top1
from instaaug.controller import AnnealedEntropyPull
from instaaug.io import load_tensors, save_tensors
from instaaug.objective import ContrastiveInstaAugObjective, InstaAugObjective
from instaaug.schedules import warmup_factor
from instaaug.train import TrainConfig, train
from instaaug.views import AugmentOutput


def test_nt_xent_per_view_matches_a_hand_computed_case():
    # Two inputs, two views each, in view order (input 0: rows 0, 1; input 1: rows 2, 3); unit vectors.
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
    ids = torch.tensor([0, 0, 1, 1])
    t = 0.5
    sim = z @ z.T
    expected = []
    for a, p in ((0, 1), (1, 0), (2, 3), (3, 2)):
        others = [k for k in range(4) if k != a]
        expected.append(math.log(sum(math.exp(sim[a, k] / t) for k in others)) - sim[a, p].item() / t)
    got = nt_xent_per_view(z, ids, t)
    assert torch.allclose(got, torch.tensor(expected), atol=1e-5)
    # The two-tensor form is the mean over the same anchors (z1 = first views, z2 = second views).
    assert torch.allclose(nt_xent(z[0::2], z[1::2], t), got.mean(), atol=1e-6)


def test_multi_positive_form_averages_over_the_positives_and_no_positive_is_nan():
    torch.manual_seed(0)
    z = torch.randn(6, 5)
    ids = torch.tensor([0, 0, 0, 1, 1, 2])
    log_p = (torch.nn.functional.normalize(z) @ torch.nn.functional.normalize(z).T / 0.2).fill_diagonal_(-math.inf)
    log_p = log_p.log_softmax(1)
    got = nt_xent_per_view(z, ids, 0.2)
    assert torch.allclose(got[0], -(log_p[0, 1] + log_p[0, 2]) / 2, atol=1e-5)
    assert torch.allclose(got[3], -log_p[3, 4], atol=1e-5)
    assert torch.isnan(got[5])  # input 2 has one view only


def test_positive_top1_counts_anchors_whose_nearest_view_is_their_positive():
    z = torch.tensor([[1.0, 0.0], [0.95, 0.05], [0.0, 1.0], [0.7, 0.7]])
    ids = torch.tensor([0, 0, 1, 1])
    # Cosines: (0,1) 0.999, (0,3) 0.707, (1,3) 0.743, (2,3) 0.707, (1,2) 0.053: anchors 0, 1 and 2 find their
    # positive; anchor 3's nearest other view is 1, a negative.
    assert int(positive_top1(z, ids)) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [({"temperature": 0}, "temperature"), ({"temperature": "hot"}, "temperature")],
)
def test_instance_contrast_rejects_a_bad_temperature(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InstanceContrast(**kwargs)


def test_nt_xent_per_view_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="ids"):
        nt_xent_per_view(torch.randn(4, 3), torch.arange(3))


# --- gathered negatives under 2 processes ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank: int, port: int, z: torch.Tensor, ids: torch.Tensor, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        n = z.shape[0] // 2
        local = z[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        loss = nt_xent_per_view(local, ids[rank * n : (rank + 1) * n], 0.3).mean()
        loss.backward()
        save_tensors(f"{out}/rank{rank}.safetensors", {"loss": loss.detach(), "grad": local.grad})
    finally:
        dist.destroy_process_group()


def test_gathered_loss_and_gradients_under_two_processes_match_one_process_on_the_global_batch(tmp_path):
    torch.manual_seed(0)
    z = torch.randn(8, 6)
    ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    single = z.clone().requires_grad_(True)
    loss = nt_xent_per_view(single, ids, 0.3).mean()
    loss.backward()
    mp.spawn(_gather_worker, args=(_free_port(), z, ids, str(tmp_path)), nprocs=2, join=True)
    saved = [load_tensors(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    results = [(r, float(s["loss"]), s["grad"]) for r, s in enumerate(saved)]
    # The global loss is the mean of the ranks' means (equal shards); DDP averages the ranks' gradients, and each
    # rank's gradient holds every rank's loss's dependence on its rows (the backward all-reduce).
    assert math.isclose((results[0][1] + results[1][1]) / 2, loss.item(), rel_tol=1e-5)
    grads = torch.cat([g for _, _, g in results]) / 2
    assert torch.allclose(grads, single.grad, atol=1e-6)
    # Without the gather each rank sees only its own negatives: a different (larger-batch-blind) loss.
    local = nt_xent_per_view(z[:4], ids[:4], 0.3, gather=False).mean().item()
    assert not math.isclose(local, results[0][1], rel_tol=1e-3)


# --- φ's gradient estimate against the exact gradient ------------------------------------------------------------


def _output(log_prob: torch.Tensor, inputs: int) -> AugmentOutput:
    """An ``AugmentOutput`` of 2 views per input carrying only the views' score-function log-probabilities."""
    n = log_prob.shape[0]
    return AugmentOutput(
        torch.zeros(n, 1, 1, 1), torch.zeros(n, 1), log_prob, torch.zeros(inputs), 2, False, score_log_prob=log_prob
    )


def _pair_losses(table: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """Per-view NT-Xent (B·2,) of views that are rows ``table[b, choice[b, v]]`` (B inputs × 2 views)."""
    b = table.shape[0]
    z = table[torch.arange(b)[:, None], choice].reshape(2 * b, -1)
    return nt_xent_per_view(z, torch.arange(b).repeat_interleave(2), 0.5)


def test_contrastive_reinforce_estimate_matches_the_exact_gradient_of_each_inputs_expected_pair_loss():
    # 2 inputs, each with a categorical distribution over 3 "crops" whose projections are fixed vectors; 2 views
    # per input. Target: ∇θ Σ_b E[Σ_{v∈b} ℓ_v] / (B·n) with the other inputs' views held fixed (in distribution).
    torch.manual_seed(0)
    batch, k = 2, 3
    table = torch.randn(batch, k, 4)
    logits = torch.randn(batch, k, requires_grad=True)
    exact = torch.zeros(batch, k)
    log_p = logits.log_softmax(-1)
    for combo in itertools.product(range(k), repeat=2 * batch):
        choice = torch.tensor(combo).view(batch, 2)
        losses = _pair_losses(table, choice).view(batch, 2).detach()
        for b in range(batch):
            # p(τ_b; θ_b) with gradient × p(τ_-b) without: the other inputs' draws are held fixed in distribution.
            own = log_p[b, choice[b]].sum().exp()
            others = torch.stack([log_p[o, choice[o]].sum() for o in range(batch) if o != b]).sum().exp().detach()
            (own * others * losses[b].sum() / (batch * 2)).backward(retain_graph=True)
            exact += logits.grad
            logits.grad = None
    objective = ContrastiveInstaAugObjective(lam=0.0)
    # Set the running baseline to a constant first (the surrogate uses the value from before this step's rewards).
    warm = torch.zeros(2 * batch, requires_grad=True)
    objective.reinforce_surrogate(torch.full((2 * batch,), 2.0), _output(warm, batch))
    assert objective.running_loss.item() == 4.0
    # Many independent batches at once: draws × B inputs, 2 views each, every batch with its own negatives.
    draws = 20000
    g = torch.Generator().manual_seed(1)
    probs = logits.detach().softmax(-1).repeat(draws, 1)
    choice = torch.multinomial(probs, 2, replacement=True, generator=g).view(draws, batch, 2)
    z = table[torch.arange(batch)[None, :, None], choice].reshape(draws, 2 * batch, -1)
    ids = torch.arange(batch).repeat_interleave(2)
    losses = torch.func.vmap(lambda zi: nt_xent_per_view(zi, ids, 0.5, gather=False))(z).reshape(-1)
    per_draw = logits.detach().repeat(draws, 1, 1).requires_grad_(True)
    lp = per_draw.log_softmax(-1).gather(2, choice).reshape(-1)
    surrogate = objective.reinforce_surrogate(losses, _output(lp, draws * batch))
    # The surrogate is the mean over all draws: each draw's own estimate is draws × its share of the gradient.
    (estimates,) = torch.autograd.grad(surrogate, per_draw, retain_graph=True)
    estimates = estimates * draws
    mean, stderr = estimates.mean(0), estimates.std(0) / math.sqrt(draws)
    assert ((mean - exact).abs() <= 4 * stderr + 1e-4).all(), (mean, exact, stderr)
    assert exact.abs().max() > 10 * stderr.max()  # the check has power: the gradient is far from zero
    # Each view's own anchor loss alone (the reference code's reward) misses the partner's loss: biased.
    anchor = ContrastiveInstaAugObjective(reward="anchor")
    (own,) = torch.autograd.grad(anchor.reinforce_surrogate(losses, _output(lp, draws * batch)), per_draw)
    own = own * draws
    assert ((own.mean(0) - exact).abs() > 4 * own.std(0) / math.sqrt(draws)).any()


def test_anchor_reward_ignores_the_partner_and_needs_two_views():
    objective = ContrastiveInstaAugObjective(reward="anchor")
    lp = torch.zeros(4, requires_grad=True)
    out = AugmentOutput(torch.zeros(4, 1, 1, 1), torch.zeros(4, 1), lp, torch.zeros(2), 2, False, score_log_prob=lp)
    objective.reinforce_surrogate(torch.tensor([1.0, 2.0, 3.0, 4.0]), out).backward()
    # First call: baseline 0, advantage = each view's own loss, mean over 4 views.
    assert torch.allclose(lp.grad, torch.tensor([1.0, 2.0, 3.0, 4.0]) / 4)
    single = AugmentOutput(torch.zeros(2, 1, 1, 1), torch.zeros(2, 1), lp[:2], torch.zeros(2), 1, False)
    with pytest.raises(ValueError, match="n_copies"):
        ContrastiveInstaAugObjective().reinforce_surrogate(torch.ones(2), single)
    with pytest.raises(ValueError, match="reward"):
        ContrastiveInstaAugObjective(reward="pair")


def test_group_reward_gives_both_views_of_an_input_the_same_advantage():
    objective = ContrastiveInstaAugObjective()
    lp = torch.zeros(4, requires_grad=True)
    out = AugmentOutput(torch.zeros(4, 1, 1, 1), torch.zeros(4, 1), lp, torch.zeros(2), 2, False, score_log_prob=lp)
    objective.reinforce_surrogate(torch.tensor([1.0, 2.0, 3.0, 4.0]), out).backward()
    assert torch.allclose(lp.grad, torch.tensor([3.0, 3.0, 7.0, 7.0]) / 4)
    assert isinstance(objective, InstaAugObjective)


# --- the reference code's entropy pull and φ freeze ---------------------------------------------------------------


def test_annealed_entropy_pull_has_the_quadratic_pulls_gradient():
    pull = AnnealedEntropyPull(start=2.0, end=1.0, steps=4, weight=0.5)
    h = torch.tensor(1.7)
    lam = pull.update(h)  # step 1 of 4: target 2 - 0.25 = 1.75
    assert math.isclose(pull.target().item(), 1.75)
    entropy = h.clone().requires_grad_(True)
    (-lam * entropy).backward()
    quadratic = h.clone().requires_grad_(True)
    (0.5 * (quadratic - 1.75) ** 2).backward()
    assert math.isclose(entropy.grad.item(), quadratic.grad.item(), rel_tol=1e-6)
    for _ in range(10):
        pull.update(h)
    assert math.isclose(pull.target().item(), 1.0)  # annealed, then held
    with pytest.raises(ValueError, match="steps"):
        AnnealedEntropyPull(1.0, 0.5, 0)
    with pytest.raises(ValueError, match="weight"):
        AnnealedEntropyPull(1.0, 0.5, 3, weight=0)


def test_aug_frozen_epochs_hold_phi_then_warm_up():
    assert [warmup_factor(s, 2, 8, cosine=False, frozen=4) for s in range(8)] == [0, 0, 0, 0, 0.5, 1, 1, 1]
    with pytest.raises(ValueError, match="aug_frozen_epochs"):
        TrainConfig(aug_frozen_epochs=-1)


# --- composition and SimCLR through train() ---------------------------------------------------------------------


def _tiny_encoder() -> ProjectedEncoder:
    encoder = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    return ProjectedEncoder(encoder, 4, hidden=8, out_dim=4)


def test_simclr_with_learned_views_trains_through_train_and_reports_positive_retrieval():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 48, 48)
    aug = InstaAug(("crop", "value", "flip"), in_channels=1, n_copies=2, output_size=(16, 16), depth=4, width=4)
    objective = ContrastiveInstaAugObjective(aug.controller())
    model = _tiny_encoder()
    before = [p.detach().clone() for p in aug.parameters()]
    history = train(
        model,
        aug,
        objective,
        (x, torch.arange(64)),
        TrainConfig(epochs=2, batch_size=32, lr=1e-2, aug_lr=1e-2, progress=False),
        task_loss=InstanceContrast(0.5),
    )
    assert "train_positive_top1" in history[-1] and 0 <= history[-1]["train_positive_top1"] <= 1
    assert math.isfinite(history[-1]["task_loss"]) and history[-1]["surrogate"] != 0
    assert any(not torch.equal(b, a) for b, a in zip(before, aug.parameters(), strict=True))  # φ learned


def test_phi_stays_put_while_frozen():
    torch.manual_seed(0)
    aug = InstaAug(("crop", "value"), in_channels=1, n_copies=2, output_size=(16, 16), depth=4, width=4)
    before = [p.detach().clone() for p in aug.parameters()]
    train(
        _tiny_encoder(),
        aug,
        ContrastiveInstaAugObjective(aug.controller()),
        (torch.rand(32, 1, 48, 48), torch.arange(32)),
        TrainConfig(epochs=1, batch_size=16, aug_frozen_epochs=1, progress=False),
        task_loss=InstanceContrast(),
    )
    assert all(torch.equal(b, a) for b, a in zip(before, aug.parameters(), strict=True))


def test_part_controllers_keep_each_part_in_its_own_band():
    torch.manual_seed(0)
    aug = InstaAug(("crop", "value", "flip"), in_channels=1, n_copies=2, output_size=(16, 16), depth=4, width=4)
    controllers = aug.part_controllers(rate=2.0, lam_init=0.1, horizon=0.0)
    assert [tuple(c.h_min for c in controllers.parts)] == [tuple(b[0] for b in aug.part_entropy_ranges())]
    objective = InstaAugObjective(controllers)
    out = aug(torch.rand(4, 1, 48, 48))
    parts = out.distribution.parts
    terms = objective(torch.rand(8), out)
    # The entropy bonus is Σ λ_i·H_i with the λs before this step's update.
    expected = sum(0.1 * p.entropy().mean() for p in parts)
    bonus = terms.task_loss + terms.surrogate - terms.loss
    assert torch.allclose(bonus, expected, atol=1e-5)
    # Each λ moved by its own part's entropy against its own band (×2 below, ÷2 above, else unchanged).
    for c, p in zip(controllers.parts, parts, strict=True):
        h = float(p.entropy().mean().detach())
        if min(abs(h - c.h_min), abs(h - c.h_max)) < 1e-3:
            continue  # at an edge of the band (a fair coin's flip entropy is log 2, the band's top)
        factor = 2.0 if h < c.h_min else 0.5 if h > c.h_max else 1.0
        assert math.isclose(float(c.lam), 0.1 * factor, rel_tol=1e-6)
    with pytest.raises(ValueError, match="part entropies"):
        controllers.update(torch.zeros(2))
    with pytest.raises(ValueError, match="part"):
        InstaAugObjective(controllers)(
            torch.rand(8), InstaAug(("value",), in_channels=1, n_copies=2)(torch.rand(4, 1, 8, 8))
        )
    with pytest.raises(ValueError, match="entropy_range"):
        InstaAug(("crop", "value"), in_channels=1, entropy_range=(0.0, 1.0)).part_controllers()
