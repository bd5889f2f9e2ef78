"""The augmenters' hot path under ``torch.compile``: one graph (no breaks, so no host synchronisation) and the
same outputs and gradients as eager execution with the same random numbers."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch._dynamo
import torch._inductor.config

from conftest import legacy_crop, perturb_output, structured_images
from instaaug import InstaAug, RandomAugment
from instaaug.experiments.common import torch_threads
from instaaug.models import build_classifier
from instaaug.step import make_optimisers, step_loss, train_step
from instaaug.validation import trusted_inputs

UNIFORM = ("rotation", "hue", "saturation", "value", "contrast")


def _uniform() -> InstaAug:
    return perturb_output(InstaAug(UNIFORM, width=4, depth=2, n_copies=2))


def _crop() -> InstaAug:
    aug = legacy_crop(image_size=16, in_channels=3, levels=(1,), depth=2, width=4, global_crop=False, n_copies=2)
    with torch.no_grad():  # φ's heads start at zero (a uniform distribution); give the logits some shape
        for p in aug.net.heads.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return aug


def _crop_default_levels() -> InstaAug:
    # Multi-level instance-mode crops with a global crop: once refused by the compiler ("SymIntArrayRef expected
    # to contain only concrete integers", from boolean-mask indexing of the candidates).
    return perturb_crop(legacy_crop(image_size=16, width=4, n_copies=2))


def _composite() -> InstaAug:
    aug = InstaAug(
        ("crop", "rotation", "hue", "flip"), phi_size=16, levels=(0, 1), box_scale=1.0, global_crop=True, width=4
    )
    return perturb_output(perturb_crop(aug))


def perturb_crop(aug: InstaAug) -> InstaAug:
    with torch.no_grad():  # φ's heads start at zero (a uniform distribution); give the logits some shape
        for p in aug.net.heads.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return aug


def _run(aug, x: torch.Tensor, seed: int = 3) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Outputs (images, params, log_prob, entropy) of one call and the gradients of a loss through all of them."""
    aug.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = aug(x)
    loss = out.images.square().mean() + (out.score_log_prob * out.images.mean((1, 2, 3)).detach()).mean()
    (loss - out.entropy.mean()).backward()
    grads = [p.grad.clone() for p in aug.parameters() if p.grad is not None]
    return [out.images, out.params, out.log_prob, out.entropy], grads


def _compare(aug, backend: str, atol: float) -> None:
    x = structured_images(4, 3, 16)
    torch._dynamo.reset()
    compiled = torch.compile(aug, backend=backend, fullgraph=True)  # fullgraph: any graph break is an error
    got, got_grads = _run(compiled, x)
    want, want_grads = _run(aug, x)
    assert len(got_grads) == len(want_grads) > 0
    for a, b in zip(got + got_grads, want + want_grads, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)


@pytest.mark.parametrize(
    "make", [_uniform, _crop, _crop_default_levels, _composite], ids=["uniform", "crop", "crop-levels", "composite"]
)
def test_augmenter_traces_as_one_graph_and_matches_eager(make):
    # aot_eager captures forward and backward graphs exactly as inductor would, without generating C++.
    _compare(make(), "aot_eager", atol=0.0)


@pytest.mark.parametrize("make", [_uniform, _crop], ids=["uniform", "crop"])
def test_value_checks_neither_break_the_graph_nor_sync(make):
    # The input checks read values back to the host (a sync); under torch.compile they are skipped, inside
    # trusted_inputs() too, so both trace as one graph. (fullgraph=True turns any graph break into an error;
    # torch._dynamo.explain reports spurious "step_unsupported" breaks in nn.Module calls that fullgraph accepts.)
    aug = make()
    x = structured_images(2, 3, 16)
    for trusted in (False, True):
        torch._dynamo.reset()
        compiled = torch.compile(aug, backend="eager", fullgraph=True)
        with trusted_inputs() if trusted else contextlib.nullcontext():
            assert compiled(x).images.shape == (4, 3, 16, 16)


def test_random_augment_compiles():
    aug = RandomAugment(("rotation", "hue"))
    torch._dynamo.reset()
    compiled = torch.compile(aug, backend="aot_eager", fullgraph=True)
    x = structured_images(3, 3, 16)
    torch.manual_seed(0)
    got = compiled(x).images
    torch.manual_seed(0)
    torch.testing.assert_close(got, aug(x).images, atol=0.0, rtol=0.0)


def test_crop_augmenter_compiles_with_inductor():
    # fallback_random: inductor draws the same random numbers as eager, so outputs are comparable. Two threads:
    # inductor's multi-threaded CPU code once failed on the scatter-add of an indexing backward (now avoided).
    with torch._inductor.config.patch(fallback_random=True), torch_threads(2):
        _compare(_crop(), "inductor", atol=1e-5)


@pytest.mark.slow
def test_uniform_augmenter_compiles_with_inductor():
    with torch._inductor.config.patch(fallback_random=True):
        _compare(_uniform(), "inductor", atol=1e-5)


def _step_parts(device: str = "cpu") -> tuple[torch.nn.Module, InstaAug, torch.nn.Module]:
    """A small classifier and a composite augmenter (crop + rotation + hue + flip: score-function and
    reparameterised parts) with its objective."""
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 3, 4, width=4, depth=2).to(device)
    aug = _composite().to(device)
    return model, aug, aug.objective().to(device)


def test_training_step_forward_traces_as_one_graph_and_matches_eager():
    # The forward half of train_step (augment, classify, objective with its λ controller) in one graph: no
    # graph break, hence no host synchronisation; the same loss and gradients as eager execution.
    x, y = structured_images(4, 3, 16), torch.tensor([0, 1, 2, 3])
    results = []
    for compiled in (True, False):
        model, aug, objective = _step_parts()
        torch._dynamo.reset()
        forward = torch.compile(step_loss, backend="aot_eager", fullgraph=True) if compiled else step_loss
        torch.manual_seed(3)
        out = forward(model, aug, objective, x, y)
        out.loss.backward()
        grads = [p.grad for p in [*model.parameters(), *aug.parameters()] if p.grad is not None]
        results.append(([out.loss, *out.metrics.values(), out.logits, out.finite], grads, objective.controller.lam))
    (got, got_grads, got_lam), (want, want_grads, want_lam) = results
    model, aug, _ = _step_parts()
    assert len(got_grads) == len(want_grads) == len([*model.parameters(), *aug.parameters()])  # f's and φ's
    for a, b in zip(got + got_grads + [got_lam], want + want_grads + [want_lam], strict=True):
        torch.testing.assert_close(a, b, atol=0.0, rtol=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_full_training_step_makes_no_host_synchronisation_on_cuda():
    """``train_step`` (augment, classify, objective, backward, both optimisers) on the device, with the value checks
    at their defaults (skipped for accelerator tensors): any device-to-host synchronisation is an error."""
    model, aug, objective = _step_parts("cuda")
    optimisers = make_optimisers(model, aug)
    x = structured_images(4, 3, 16).cuda()
    y = torch.tensor([0, 1, 2, 3], device="cuda")
    train_step(model, aug, objective, optimisers, x, y)  # warm-up outside the check (lazy initialisation)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            out = train_step(model, aug, objective, optimisers, x, y)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert bool(out.finite)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augmenters_and_a_training_step_make_no_host_synchronisation_on_cuda():
    """Every augmenter's forward, the objective, the controller and the backward pass run without a device
    synchronisation (the value checks skip accelerator tensors by default)."""
    import torch.nn.functional as F

    from instaaug.models import build_classifier

    device = torch.device("cuda")
    x = torch.rand(8, 3, 32, 32, device=device)
    y = torch.randint(0, 4, (8,), device=device)
    model = build_classifier("small_cnn", 3, 4).to(device)
    augs = [
        InstaAug(("crop", "rotation", "hue", "flip"), phi_size=(32, 32), levels=(1,), n_copies=2).to(device),
        InstaAug(("rotation", "saturation", "value")).to(device),
        RandomAugment(("crop", "rotation", "flip")).to(device),
    ]
    objectives = [augs[0].objective().to(device), augs[1].objective().to(device), None]
    for aug, objective in zip(augs, objectives, strict=True):
        out = aug(x)  # warm-up outside the check (lazy CUDA initialisation)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = aug(x)
            per_view = F.cross_entropy(model(out.images), out.repeat(y), reduction="none")
            loss = objective(per_view, out).loss if objective is not None else per_view.mean()
            loss.backward()
        finally:
            torch.cuda.set_sync_debug_mode(0)
