"""Amortised invariance learning: the invariance space, conditioned backbones, SSL objectives, the probe, io."""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import structured_images
from instaaug.amortised import (
    ConditionedResNet,
    ConditionedViT,
    CornerQueues,
    CornerSampler,
    InvarianceProbe,
    InvarianceSpace,
    MixtureConv2d,
    MomentumEncoder,
    PretrainConfig,
    ProbeConfig,
    ProjectionHeads,
    audio_space,
    build_backbone,
    build_conditioned_backbone,
    evaluate_fixed,
    grid_search,
    image_space,
    load_backbone,
    moco_loss,
    nt_xent,
    pretrain,
    score,
)
from instaaug.step import optimiser_step
from instaaug.validation import trusted_inputs


def tiny_resnet(**options) -> ConditionedResNet:
    return ConditionedResNet(**{"widths": (4, 8), "blocks": (1, 1), "num_kernels": 3, "hidden": 4, **options})


def tiny_vit(**options) -> ConditionedViT:
    return ConditionedViT(**{"image_size": (8, 8), "patch_size": 4, "dim": 16, "depth": 1, "heads": 2, **options})


# ---------------------------------------------------------------------------------------------------------------
# Invariance space


def test_space_defaults_meaning_and_corners():
    space = image_space()
    assert space.names == ("spatial", "appearance") and space.dim == 2
    assert space.corner_keys() == ["0,1", "1,0", "1,1"]  # the all-off corner is a degenerate contrastive task
    meaning = space.describe()
    assert meaning["spatial"]["ops"] == ["crop", "flip", "translation"]
    assert meaning["appearance"]["ops"] == ["colour_jitter", "greyscale", "blur"]
    five = InvarianceSpace(("spatial", "appearance", "time", "frequency", "gain"), min_active=2)
    assert len(five.corners) == 26  # the paper's SimCLR setting: M = 5, corners with ≥ 2 groups on
    assert InvarianceSpace(("spatial", "appearance"), corners=[(1, 1)]).corner_keys() == ["1,1"]


def test_space_rejects_bad_groups_and_corners():
    with pytest.raises(ValueError, match="unknown augmentation group 'rotate'"):
        InvarianceSpace(("spatial", "rotate"))
    with pytest.raises(ValueError, match="must not repeat"):
        InvarianceSpace(("spatial", "spatial"))
    with pytest.raises(ValueError, match="every corner must be 2 values"):
        InvarianceSpace(("spatial", "appearance"), corners=[(1, 0, 1)])
    with pytest.raises(ValueError, match="every corner must be 2 values"):
        InvarianceSpace(("spatial", "appearance"), corners=[(1, 2)])


def test_views_apply_only_the_corners_groups():
    space = image_space()
    calls = []
    for group in space.groups:
        original = group.augment
        object.__setattr__(group, "augment", lambda v, g=None, o=original, n=group.name: calls.append(n) or o(v, g))
    sampler = CornerSampler(space)
    colour = torch.tensor([0.9, 0.3, 0.1])
    x = colour[None, :, None, None].expand(6, 3, 16, 16).contiguous()  # one uniform colour
    v1, v2 = sampler.views(x, space.corner_keys().index("1,0"), torch.Generator().manual_seed(0))
    assert calls == ["spatial"]  # the appearance views were not built
    assert v1.shape == v2.shape == x.shape
    # Spatial only: every pixel is the colour or a blend of it with the black padding; its hue never changes.
    for v in (v1, v2):
        pixels = v.permute(0, 2, 3, 1).reshape(-1, 3)
        lit = pixels[pixels.norm(dim=1) > 0.05]
        assert torch.allclose(F.normalize(lit, dim=1), F.normalize(colour, dim=0).expand_as(lit), atol=1e-4)
    calls.clear()
    v1, _ = sampler.views(x, space.corner_keys().index("0,1"), torch.Generator().manual_seed(0))
    assert calls == ["appearance"]
    assert (v1 - x).abs().amax() > 0.2


def test_appearance_views_keep_geometry_and_change_colour():
    space = image_space()
    x = structured_images(32, 3, 16)
    v1, v2 = CornerSampler(space).views(x, space.corner_keys().index("0,1"), torch.Generator().manual_seed(1))
    assert v1.min() >= 0 and v1.max() <= 1
    # Hue shifts up to half a turn: the mean colour of the two views differs a lot for most images.
    assert (v1.mean((2, 3)) - v2.mean((2, 3))).abs().sum(1).median() > 0.05


def test_corner_sequence_is_the_same_on_every_process():
    space = image_space()
    torch.manual_seed(1)
    a = [CornerSampler(space, seed=7).corner(t) for t in range(50)]
    torch.manual_seed(2)  # another process: another global random state
    b = [CornerSampler(space, seed=7).corner(t) for t in range(50)]
    assert a == b and set(a) == {0, 1, 2}
    assert a != [CornerSampler(space, seed=8).corner(t) for t in range(50)]


def test_audio_groups_are_batched_and_do_what_they_say():
    space = audio_space()
    assert space.names == ("time", "frequency", "gain")
    x = torch.rand(8, 1, 12, 20) + 0.5
    g = torch.Generator().manual_seed(0)
    gain = space.groups[2].augment(x, g)
    ratio = gain / x
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-5)  # one factor per sample
    assert ratio.amin() >= math.exp(-0.7) - 1e-5 and ratio.amax() <= math.exp(0.7) + 1e-5
    freq = space.groups[1].augment(x, g)
    changed_rows = (freq != x).any(-1)[:, 0]  # (N, F): masked bins are whole rows
    assert ((freq != x).sum(-1)[:, 0] % 20 == 0).all() and changed_rows.sum(1).max() <= 3
    shifted = space.groups[0].augment(x, g)
    assert shifted.shape == x.shape


@pytest.mark.parametrize(
    ("i", "message"),
    [
        (torch.tensor([0.5, 1.5]), r"must lie in \[0, 1\]"),
        (torch.tensor([-0.1, 0.5]), r"must lie in \[0, 1\]"),
        (torch.tensor([0.5, 0.5, 0.5]), r"shape \(2,\) or \(B, 2\)"),
        (torch.tensor([[0.5, 0.5]] * 3), r"\(4, 2\) to match the batch"),
        ({"spatial": 1.0, "colour": 0.0}, r"unknown group name\(s\) \['colour'\]"),
        ({"spatial": 1.0}, r"missing \['appearance'\]"),
        (torch.tensor([math.nan, 0.5]), "NaN"),
    ],
)
def test_backbones_reject_bad_invariance_vectors(i, message):
    x = torch.rand(4, 3, 8, 8)
    for net in (tiny_resnet(), tiny_vit()):
        with pytest.raises(ValueError, match=message):
            net(x, i)
    with pytest.raises(TypeError, match="floating-point"):
        tiny_resnet()(x, torch.tensor([1, 0]))


def test_backbones_reject_bad_inputs():
    net = tiny_resnet()
    with pytest.raises(ValueError, match="3 channel"):
        net(torch.rand(2, 1, 8, 8), [1.0, 0.0])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        net(torch.rand(3, 8, 8), [1.0, 0.0])
    with pytest.raises(ValueError, match=r"must be \(8, 8\) for this ViT"):
        tiny_vit()(torch.rand(2, 3, 12, 12), [1.0, 0.0])
    with pytest.raises(ValueError, match="unknown backbone 'mlp'"):
        build_conditioned_backbone("mlp")
    with pytest.raises(ValueError, match=r"unknown resnet config key\(s\) \['depth'\]"):
        build_conditioned_backbone("resnet", depth=3)


# ---------------------------------------------------------------------------------------------------------------
# Conditioned backbones


@pytest.mark.parametrize("make", [tiny_resnet, tiny_vit])
def test_features_depend_on_i_with_nonzero_gradient(make):
    net = make()
    x = structured_images(4, 3, 8)
    corners = image_space().corners
    feats = [net(x, c) for c in corners]
    assert feats[0].shape == (4, net.feature_dim)
    for a in range(3):
        for b in range(a + 1, 3):
            assert (feats[a] - feats[b]).abs().mean() > 1e-3 * feats[a].abs().mean()
    i = torch.tensor([0.3, 0.7], requires_grad=True)
    net(x, i).pow(2).sum().backward()
    assert i.grad is not None and torch.isfinite(i.grad).all() and i.grad.abs().min() > 0
    # Named entries equal the vector in the space's order.
    assert torch.allclose(net(x, {"appearance": 0.7, "spatial": 0.3}), net(x, i.detach()))


@pytest.mark.parametrize("make", [tiny_resnet, tiny_vit])
def test_per_sample_i_equals_one_call_per_sample(make):
    net = make().eval()
    x = structured_images(3, 3, 8)
    i = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.25, 0.5]])
    batched = net(x, i)
    single = torch.cat([net(x[k : k + 1], i[k]) for k in range(3)])
    assert torch.allclose(batched, single, atol=1e-5)


def test_mixture_conv_is_base_plus_weighted_basis():
    conv = MixtureConv2d(2, 3, 3, 1, invariance_dim=2, num_kernels=4, hidden=5)
    i = torch.tensor([0.2, 0.9])
    c = conv.coefficients(i)
    expected = conv.base + sum(c[k] * conv.basis[k] for k in range(4))
    assert torch.allclose(conv.kernel(i), expected, atol=1e-6)
    x = torch.randn(2, 2, 6, 6)
    assert torch.allclose(conv(x, i), F.conv2d(x, expected, padding=1), atol=1e-5)


def test_parameter_counts_are_reported():
    counts = ConditionedResNet(widths=(8, 16), blocks=(1, 1), num_kernels=4, hidden=8).parameter_counts()
    assert counts["total"] > counts["conditioning"] > 0
    # Every conv carries K = 4 basis kernels of its generated kernel's size, plus its MLP.
    assert counts["conditioning"] > 4 * counts["generated_kernel"]
    assert tiny_vit(prompt_tokens=3).parameter_counts()["conditioning"] > tiny_vit().parameter_counts()["conditioning"]


@pytest.mark.parametrize("make", [tiny_resnet, tiny_vit])
def test_save_load_round_trip(tmp_path, make):
    net = make()
    x = structured_images(2, 3, 8)
    net.save(tmp_path / "net")
    loaded = load_backbone(tmp_path / "net")
    assert type(loaded) is type(net) and loaded.config == net.config and not loaded.training
    assert torch.equal(loaded(x, [0.2, 0.8]), net.eval()(x, [0.2, 0.8]))
    assert type(net).load(tmp_path / "net").config == net.config


def test_load_rejects_missing_foreign_and_mismatched_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_backbone(tmp_path / "nothing")
    tiny_resnet().save(tmp_path / "a")
    with pytest.raises(ValueError, match="not a ConditionedViT"):
        ConditionedViT.load(tmp_path / "a")
    tiny_resnet(widths=(4, 16)).save(tmp_path / "b")
    (tmp_path / "a" / "weights.safetensors").write_bytes((tmp_path / "b" / "weights.safetensors").read_bytes())
    with pytest.raises(ValueError, match="does not match its config"):
        load_backbone(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text('{"kind": "mlp", "config": {}}')
    with pytest.raises(ValueError, match="not a conditioned-backbone config"):
        load_backbone(tmp_path / "a")


# ---------------------------------------------------------------------------------------------------------------
# Objectives


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


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_pretrain_runs_both_objectives_and_draws_one_corner_per_step(method):
    space = image_space()
    net = tiny_resnet()
    x = structured_images(24, 3, 8)
    before = [p.clone() for p in net.parameters()]
    config = PretrainConfig(method=method, epochs=2, batch_size=8, queue_size=16, proj_dim=8, proj_hidden=8)
    result = pretrain(net, space, x, config)
    assert len(result.history) == 2 and all(math.isfinite(h["loss"]) for h in result.history)
    steps = [CornerSampler(space, 0).corner(t) for t in range(6)]
    counts = result.history[0]["corner_steps"]
    assert counts == {key: steps[:3].count(c) for c, key in enumerate(space.corner_keys())}
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert not net.training
    if method == "moco":  # each step enqueued its 8 keys into its own corner's queue of 16
        expected = [8 * steps.count(c) % 16 for c in range(3)]
        assert result.queues is not None and result.queues.pointers.tolist() == expected


def test_pretrain_rejects_mismatched_space_and_config():
    with pytest.raises(ValueError, match="differ from the backbone"):
        pretrain(tiny_resnet(), audio_space(), torch.rand(4, 3, 8, 8))
    with pytest.raises(ValueError, match="method must be one of"):
        PretrainConfig(method="byol")
    with pytest.raises(ValueError, match="batch_size must be ≥ 2"):
        PretrainConfig(batch_size=1)


# ---------------------------------------------------------------------------------------------------------------
# Probe


def test_score_accuracy_and_r2_over_the_whole_set():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert score(logits, torch.tensor([0, 1, 1]), "classification") == pytest.approx(2 / 3)
    y = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 5.0]])
    assert score(y, y, "regression") == pytest.approx(1.0)
    assert score(y.mean(0).expand(3, 2), y, "regression") == pytest.approx(0.0, abs=1e-6)
    pred = y.clone()
    pred[0, 0] = 2.0  # SSE 1 against SST 2 on the first output; perfect on the second
    assert score(pred, y, "regression") == pytest.approx((0.5 + 1.0) / 2)


def _colour_task(n: int, seed: int):
    """Images whose label is their dominant colour channel: a probe needs appearance information."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.2 * torch.rand(n, 3, 8, 8, generator=g)
    x[torch.arange(n), y] += 0.6
    return x.clamp(0, 1), y


def test_probe_keeps_the_backbone_frozen_and_in_eval_mode():
    net = tiny_resnet(norm="batch")
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    train, val = _colour_task(48, 0), _colour_task(24, 1)
    probe = InvarianceProbe(net, "classification", 3, ProbeConfig(epochs=2, batch_size=16, readout_steps=20))
    probe.train()
    assert not net.training and probe.readout.training
    history = probe.fit(train, val)
    assert len(history) == 2 and not net.training
    assert all(not p.requires_grad for p in net.parameters())
    for key, value in net.state_dict().items():  # weights and BatchNorm running statistics unchanged
        assert torch.equal(value, state[key]), key
    assert probe.theta.requires_grad
    i = probe.invariance
    assert i.shape == (2,) and (i >= 0).all() and (i <= 1).all()
    assert set(probe.learned_i()) == {"spatial", "appearance"}
    assert probe.predict(val[0]).shape == (24, 3)


def test_probe_learns_i_with_separate_learning_rates_and_parametrisations():
    net = tiny_resnet()
    train, val = _colour_task(48, 0), _colour_task(24, 1)
    frozen = InvarianceProbe(net, "classification", 3, ProbeConfig(epochs=1, i_lr=0.0, readout_steps=10))
    frozen.fit(train, val)
    assert torch.allclose(frozen.invariance, torch.full((2,), 0.5))
    for parametrisation in ("clamp", "sigmoid"):
        config = ProbeConfig(epochs=2, batch_size=8, i_lr=0.5, parametrisation=parametrisation, readout_steps=10)
        probe = InvarianceProbe(net, "classification", 3, config)
        probe.fit(train, val)
        i = probe.invariance
        assert not torch.allclose(i, torch.full((2,), 0.5)) and (i >= 0).all() and (i <= 1).all()


def test_probe_selects_the_best_validation_epoch():
    net = tiny_resnet()
    train, val = _colour_task(48, 0), _colour_task(24, 1)
    probe = InvarianceProbe(net, "classification", 3, ProbeConfig(epochs=3, batch_size=8, i_lr=0.3, refit=False))
    history = probe.fit(train, val)
    best = max(history, key=lambda h: h["val"])
    assert probe.learned_i() == pytest.approx(best["i"])
    assert probe.score(*val) == pytest.approx(best["val"])


def test_probe_regression_and_baselines():
    net = tiny_resnet()
    x = structured_images(60, 3, 8, seed=3)
    y = torch.stack((x[:, 0].mean((1, 2)), x[:, 1].mean((1, 2))), 1)  # mean red and green: a regression target
    train, val, test = (x[:30], y[:30]), (x[30:45], y[30:45]), (x[45:], y[45:])
    config = ProbeConfig(epochs=1, batch_size=10, loss="l1", readout_steps=50)
    probe = InvarianceProbe(net, "regression", 2, config)
    probe.fit(train, val)
    assert probe.predict(test[0]).shape == (15, 2) and math.isfinite(probe.score(*test))
    fixed = evaluate_fixed(net, [1.0, 0.0], train, val, test, "regression", 2, config)
    assert set(fixed) == {"val", "test"}
    grid = grid_search(net, train, val, test, "regression", 2, points=2, config=config)
    assert len(grid["grid"]) == 4 and grid["i"] in [g[0] for g in grid["grid"]]
    assert grid["val"] == max(v for _, v in grid["grid"])


def test_pretraining_and_probing_step_through_the_shared_optimiser_step(monkeypatch):
    calls = []

    def counting(loss, optimisers, **options):
        calls.append(loss.detach())
        optimiser_step(loss, optimisers, **options)

    # the module, not the function ``pretrain`` that the package exports under the same name
    monkeypatch.setattr(importlib.import_module("instaaug.amortised.pretrain"), "optimiser_step", counting)
    monkeypatch.setattr(importlib.import_module("instaaug.amortised.probe"), "optimiser_step", counting)
    net = tiny_resnet()
    pretrain(net, image_space(), structured_images(24, 3, 8), PretrainConfig(epochs=2, batch_size=8, proj_dim=8))
    assert len(calls) == 6  # 2 epochs × 3 batches
    config = ProbeConfig(epochs=2, batch_size=16, readout_steps=20)
    InvarianceProbe(net, "classification", 3, config).fit(_colour_task(48, 0), _colour_task(24, 1))
    assert len(calls) == 6 + 2 * 3 + 20  # the joint epochs' steps, then the refitted readout's
    with pytest.raises(dataclasses.FrozenInstanceError):  # settings are values: nothing changes them in place
        config.epochs = 3  # type: ignore[misc]


def test_probe_rejects_bad_tasks_and_targets():
    net = tiny_resnet()
    with pytest.raises(ValueError, match="task must be one of"):
        InvarianceProbe(net, "segmentation", 2)
    with pytest.raises(ValueError, match="loss must be one of"):
        InvarianceProbe(net, "classification", 2, ProbeConfig(loss="l1"))
    with pytest.raises(ValueError, match="parametrisation must be one of"):
        ProbeConfig(parametrisation="tanh")
    with pytest.raises(ValueError, match="init must lie in"):
        ProbeConfig(init=1.5)
    probe = InvarianceProbe(net, "classification", 3)
    x = torch.rand(8, 3, 8, 8)
    with pytest.raises(ValueError, match=r"training targets must lie in \[0, 3\)"):
        probe.fit((x, torch.full((8,), 5)), (x, torch.zeros(8, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"validation targets must be integer labels of shape \(8,\)"):
        probe.fit((x, torch.zeros(8, dtype=torch.long)), (x, torch.zeros(8, 2)))
    with pytest.raises(ValueError, match="3 channel"):
        probe.fit((x[:, :1], torch.zeros(8, dtype=torch.long)), (x, torch.zeros(8, dtype=torch.long)))


def test_no_value_checks_inside_trusted_inputs():
    net = tiny_resnet()
    with trusted_inputs():  # the loops use this: no host round trips for values
        assert net(torch.rand(2, 3, 8, 8), torch.tensor([2.0, 0.0])).shape == (2, 8)


# ---------------------------------------------------------------------------------------------------------------
# Audio-style inputs


def _tones(n: int, seed: int):
    """Spectrogram-like (N, 1, 12, 16): a horizontal line (a tone) in one of three frequency bands, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.1 * torch.rand(n, 1, 12, 16, generator=g)
    rows = 4 * y + torch.randint(0, 4, (n,), generator=g)
    x[torch.arange(n), 0, rows] += 1.0
    return x, y


@pytest.mark.parametrize("make", ["resnet", "vit"])
def test_audio_pretrain_and_probe_a_tiny_model(make):
    space = audio_space()
    if make == "resnet":
        net = tiny_resnet(groups=space.names, in_channels=1, input_mean=0.0, input_std=1.0)
    else:
        net = tiny_vit(groups=space.names, in_channels=1, image_size=(12, 16), input_mean=0.0, input_std=1.0)
    x, _ = _tones(64, 0)
    result = pretrain(net, space, x, PretrainConfig(epochs=2, batch_size=16, proj_dim=8, proj_hidden=8))
    assert set(result.history[0]["corner_steps"]) == {"0,0,1", "0,1,0", "0,1,1", "1,0,0", "1,0,1", "1,1,0", "1,1,1"}
    train, val = _tones(48, 1), _tones(24, 2)
    probe = InvarianceProbe(net, "classification", 3, ProbeConfig(epochs=2, batch_size=16, readout_steps=100))
    probe.fit(train, val)
    assert set(probe.learned_i()) == {"time", "frequency", "gain"}
    assert probe.score(*_tones(48, 3)) > 0.5  # chance is 1/3; the band is easy to read off


def test_readme_amortised_example_runs(tmp_path, monkeypatch):
    """The README's amortised example (once merged into README.md) runs as written."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S) if "amortised" in b]
    if not blocks:
        pytest.skip("the README has no amortised example yet")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], str(readme), "exec"), namespace)
    assert (tmp_path / "my_backbone" / "weights.safetensors").is_file()


def test_old_build_backbone_name_still_works_with_a_deprecation_warning():
    options = {"widths": (4, 8), "blocks": (1, 1), "num_kernels": 3, "hidden": 4}
    with pytest.warns(DeprecationWarning, match="build_conditioned_backbone"):
        old = build_backbone("resnet", **options)
    new = build_conditioned_backbone("resnet", **options)
    assert type(old) is type(new) is ConditionedResNet
    assert old.state_dict().keys() == new.state_dict().keys()
