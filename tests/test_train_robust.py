"""Mixed precision, non-finite values stopping a run (before any checkpoint), and a long run staying finite."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from _resume_script import components, config, dataset, state, without_time
from instaaug import EntropyController, InstaAug, InstaAugObjective
from instaaug.models import build_classifier
from instaaug.train import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    channels_last_hazards,
    read_train_checkpoint,
    to_channels_last,
    train,
)


def test_bf16_autocast_on_cpu_trains_close_to_fp32():
    runs = {}
    for amp in (False, True):
        model, aug, objective = components()
        before = state(model, aug)
        history = train(model, aug, objective, dataset(), config(epochs=1, amp=amp))
        runs[amp] = (history, before, state(model, aug))
    (h32, _, after32), (h16, before, after16) = runs[False], runs[True]
    assert all(math.isfinite(v) for r in h16 for k, v in r.items() if isinstance(v, float))
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after16[k])]
    assert any(k.startswith("0.") for k in changed) and any(k.startswith("1.") for k in changed)  # f and φ learn
    assert h16[0]["task_loss"] == pytest.approx(h32[0]["task_loss"], rel=0.02)
    assert h16[0]["entropy"] == pytest.approx(h32[0]["entropy"], rel=0.05)
    # Adam's steps are ~lr whatever the gradient's size, so compare directions: f moves the same way in bf16
    keys = [k for k in before if k.startswith("0.") and before[k].is_floating_point() and "running" not in k]
    step32 = torch.cat([(after32[k] - before[k]).flatten() for k in keys])
    step16 = torch.cat([(after16[k] - before[k]).flatten() for k in keys])
    assert F.cosine_similarity(step32, step16, dim=0) > 0.8
    assert all(after16[k].dtype == before[k].dtype for k in before)  # parameters stay in fp32


def nan_at(step: int):
    """Cross-entropy, NaN at its ``step``-th call (1-based)."""
    calls = [0]

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        out = F.cross_entropy(logits, y, reduction="none")
        return out * float("nan") if calls[0] == step else out

    return loss


def test_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    model, aug, objective = components()
    with pytest.raises(FloatingPointError, match=r"at step 6 \(epoch 2, step 2 of the epoch\)"):
        # 4 steps per epoch; the host looks at the flag only every 3 steps (at step 6 here)
        train(model, aug, objective, dataset(), config(epochs=3, log_every=3), out_dir=tmp_path, task_loss=nan_at(6))
    ckpt = read_train_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert (ckpt["epoch"], ckpt["global_step"]) == (0, 4)  # the epoch-1 checkpoint, nothing after it
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert len((tmp_path / METRICS_FILE).read_text().splitlines()) == 1


def test_nan_is_caught_before_a_mid_epoch_checkpoint(tmp_path):
    model, aug, objective = components()
    with pytest.raises(FloatingPointError, match=r"at step 2 \(epoch 1, step 2 of the epoch\), found before a"):
        train(model, aug, objective, dataset(), config(checkpoint_every=3), out_dir=tmp_path, task_loss=nan_at(2))
    assert not (tmp_path / CHECKPOINT_FILE).exists()


def test_non_finite_phi_output_stops_the_run(tmp_path):
    model, aug, objective = components()

    def break_phi(epoch: int) -> dict:
        with torch.no_grad():
            aug.net.output.weight.fill_(float("nan"))  # φ's intervals are NaN from the next step on
        return {}

    with pytest.raises(FloatingPointError, match=r"at step 5 \(epoch 2, step 1 of the epoch\)"):
        train(model, aug, objective, dataset(), config(), out_dir=tmp_path, evaluate_fn=break_phi)
    assert read_train_checkpoint(tmp_path / CHECKPOINT_FILE)["global_step"] == 4


def test_a_long_run_keeps_lambda_and_entropy_finite():
    """1008 steps (126 epochs of 8 steps of 4 images), fast learning rates, an eager λ controller; a tiny f and φ."""
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 3, 2, width=2, depth=1)
    aug = InstaAug(("rotation",), width=2, depth=1)
    objective = InstaAugObjective(EntropyController(*aug.entropy_range, lam_init=0.05, rate=1.2))
    x, y = dataset(32)
    lams: list[torch.Tensor] = []
    update = objective.controller.update
    objective.controller.update = lambda h: lams.append(update(h).clone()) or lams[-1]  # type: ignore[method-assign]
    history = train(model, aug, objective, (x, y), config(epochs=126, batch_size=4, lr=0.05, aug_lr=0.05))
    lam = torch.stack(lams)
    assert lam.shape == (1008,)
    c = objective.controller
    assert torch.isfinite(lam).all() and ((lam >= c.lam_min) & (lam <= c.lam_max)).all()
    assert all(math.isfinite(r["entropy"]) and math.isfinite(r["lam"]) for r in history)
    assert torch.isfinite(c.running_entropy) and torch.isfinite(aug.distribution(x).entropy()).all()
    assert all(torch.isfinite(p).all() for p in [*model.parameters(), *aug.parameters()])


def test_channels_last_trains_like_the_default_layout_and_resumes_exactly(tmp_path):
    runs = {}
    for channels_last in (False, True):
        model, aug, objective = components()
        history = train(model, aug, objective, dataset(), config(channels_last=channels_last))
        runs[channels_last] = (history, state(model, aug), model, aug)
    (h0, s0, _, _), (h1, s1, model, aug) = runs[False], runs[True]
    convs = [m.weight for m in (*model.modules(), *aug.modules()) if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not all(w.is_contiguous() for w in convs)  # the layout really changed
    for r0, r1 in zip(without_time(h0), without_time(h1), strict=True):  # float rounding only
        numbers = [k for k, v in r0.items() if isinstance(v, float)]
        assert {k: r1[k] for k in numbers} == pytest.approx({k: r0[k] for k in numbers}, rel=1e-3, abs=1e-5)
    for k in s0:
        assert torch.allclose(s0[k].float(), s1[k].float(), atol=1e-4), k
    # interrupted in its second epoch and resumed from the first epoch's checkpoint: the uninterrupted result
    calls = [0]

    def stop_in_epoch_2(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 6:
            raise KeyboardInterrupt
        return F.cross_entropy(logits, y, reduction="none")

    model, aug, objective = components()
    with pytest.raises(KeyboardInterrupt):
        train(model, aug, objective, dataset(), config(channels_last=True), out_dir=tmp_path, task_loss=stop_in_epoch_2)
    model, aug, objective = components()
    train(model, aug, objective, dataset(), config(channels_last=True), out_dir=tmp_path, resume=True)
    assert all(torch.equal(s1[k], v) for k, v in state(model, aug).items())


def test_to_channels_last_converts_conv_weights_and_refuses_non_modules():
    model = build_classifier("small_cnn", 3, 2, width=4, depth=2)  # 1 input channel: NHWC = NCHW strides
    to_channels_last(model)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    with pytest.raises(TypeError, match="torch modules"):
        to_channels_last(torch.zeros(1, 2, 3, 4))


def test_channels_last_refuses_the_layers_torch_corrupts_memory_on(tmp_path):
    # A strided 1×1 convolution with ≤ 8 input channels: torch 2.13's CPU channels-last backward corrupts the heap
    # for odd batches, so converting such a model is refused before anything changes.
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 8, 1, stride=2))
    assert channels_last_hazards(model) == ["1 (1×1 stride-2 Conv2d, 4 in)"]
    with pytest.raises(ValueError, match=r"1 \(1×1 stride-2 Conv2d, 4 in\).*corrupts memory"):
        to_channels_last(model)
    assert all(m.weight.is_contiguous() for m in model)  # nothing converted
    # wider, unstrided or 3×3 layers are fine, and a PreAct ResNet-18's shortcuts have ≥ 64 input channels
    safe = torch.nn.Sequential(
        torch.nn.Conv2d(16, 32, 1, stride=2), torch.nn.Conv2d(4, 8, 1), torch.nn.Conv2d(4, 8, 3, stride=2)
    )
    assert channels_last_hazards(safe) == [] and channels_last_hazards(build_classifier("preact_resnet18", 3, 10)) == []
    # train() refuses such a classifier when asked for channels-last, before any step
    _, aug, objective = components()
    hazardous = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1, stride=2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2)
    )
    with pytest.raises(ValueError, match="channels_last cannot be used"):
        train(hazardous, aug, objective, dataset(), config(channels_last=True), out_dir=tmp_path)
    assert not any(tmp_path.iterdir())
