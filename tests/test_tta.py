"""TTAWrapper: batched = per-view loop, chunking, merge modes, one model call, argument errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import perturb_output, structured_images, tiny_aug
from instaaug import DenseTTAWrapper, NoAugment, RandomAugment, TTAWrapper
from instaaug.models import build_classifier
from instaaug.tta import merge_predictions


def classifier() -> nn.Module:
    """A deterministic per-sample model (no batch statistics), so chunking cannot change its output."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))


def count_calls(model: nn.Module) -> dict[str, int]:
    calls = {"n": 0}
    model.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    return calls


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def setup():
    aug = perturb_output(tiny_aug(("rotation", "hue"))).eval()
    return classifier(), aug, structured_images(3, 3, 8)


def test_batched_output_equals_loop_over_views(setup):
    model, aug, x = setup
    n = 4
    tta = TTAWrapper(model, aug, n_copies=n)
    merged = tta(x, generator=gen(7))
    with torch.no_grad():
        out = aug(x, n_copies=n, generator=gen(7))
        per_view = torch.stack([model(out.images[i : i + 1])[0] for i in range(3 * n)])
    expected = per_view.view(3, n, 5).mean(1)
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=0)
    views = out.images.view(3, n, 3, 8, 8)
    assert (views[:, 0] - views[:, 1]).abs().max() > 1e-3  # the views really differ


@pytest.mark.parametrize("chunk", [1, 3, 5, 100])
def test_chunking_does_not_change_predictions(setup, chunk):
    model, aug, x = setup
    full = TTAWrapper(model, aug, n_copies=4)(x, generator=gen(1))
    chunked = TTAWrapper(model, aug, n_copies=4, chunk_size=chunk)(x, generator=gen(1))
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("chunk", "calls"), [(None, 1), (5, 3), (12, 1), (1, 12)])
def test_number_of_model_calls(setup, chunk, calls):
    model, aug, x = setup
    counter = count_calls(model)
    TTAWrapper(model, aug, n_copies=4, chunk_size=chunk)(x)
    assert counter["n"] == calls


def test_merge_modes(setup):
    model, aug, x = setup
    with torch.no_grad():
        out = aug(x, n_copies=3, generator=gen(2))
        logits = model(out.images).view(3, 3, 5)
    results = {
        m: TTAWrapper(model, aug, n_copies=3, merge=m)(x, generator=gen(2)) for m in ("logits", "probs", "log_probs")
    }
    torch.testing.assert_close(results["logits"], logits.mean(1))
    torch.testing.assert_close(results["probs"], F.softmax(logits, -1).mean(1))
    torch.testing.assert_close(results["probs"].sum(-1), torch.ones(3))
    torch.testing.assert_close(results["log_probs"], F.log_softmax(logits, -1).mean(1))
    assert not torch.allclose(results["probs"].log(), results["log_probs"], atol=1e-4)  # different merges


def test_merge_predictions_directly():
    logits = torch.tensor([[[0.0, 2.0], [2.0, 0.0]]])
    torch.testing.assert_close(merge_predictions(logits, "logits"), torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(merge_predictions(logits, "probs"), torch.tensor([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="merge"):
        merge_predictions(logits, "vote")


def test_identity_augmenter_gives_model_output():
    model = classifier()
    x = structured_images(2, 3, 8)
    tta = TTAWrapper(model, NoAugment(), n_copies=5)
    torch.testing.assert_close(tta(x), model(x), atol=1e-6, rtol=0)


def test_views_carry_no_gradient_to_phi(setup):
    model, aug, x = setup
    TTAWrapper(model, aug, n_copies=2)(x).sum().backward()
    assert aug.net.output.weight.grad is None
    assert model[1].weight.grad is not None


def test_modules_are_registered(setup):
    model, aug, _ = setup
    tta = TTAWrapper(model, aug)
    assert tta.model is model and tta.aug is aug
    tta.train()
    assert aug.training and model.training
    tta.eval()
    assert not aug.training and not model.training


def test_bad_arguments(setup):
    model, aug, _ = setup
    with pytest.raises(ValueError, match="merge"):
        TTAWrapper(model, aug, merge="median")
    with pytest.raises(ValueError, match="n_copies"):
        TTAWrapper(model, aug, n_copies=0)
    with pytest.raises(ValueError, match="chunk_size"):
        TTAWrapper(model, aug, chunk_size=0)
    with pytest.raises(TypeError, match="n_copies"):
        TTAWrapper(model, aug, n_copies=2.5)


def test_chunking_changes_nothing_but_the_calls(setup):
    model, aug, x = setup
    calls: list[int] = []
    counting = torch.nn.Sequential(model)
    counting.register_forward_pre_hook(lambda _, args: calls.append(args[0].shape[0]))
    outputs = {}
    for chunk in ("auto", None, 3):
        calls.clear()
        wrapper = TTAWrapper(counting, aug, n_copies=5, chunk_size=chunk)
        outputs[chunk] = wrapper(x, generator=torch.Generator().manual_seed(0))
        expected = {"auto": [max(x.shape[0], 5)] * (5 * x.shape[0] // max(x.shape[0], 5)), None: [5 * x.shape[0]]}
        if chunk in expected:
            assert calls == expected[chunk], chunk
        else:
            assert max(calls) == 3 and sum(calls) == 5 * x.shape[0]
    assert torch.allclose(outputs["auto"], outputs[None], atol=1e-5)
    assert torch.allclose(outputs[3], outputs[None], atol=1e-5)
    with pytest.raises(TypeError, match="chunk_size"):
        TTAWrapper(model, aug, chunk_size="big")


def test_ttach_merge_modes():
    # ttach's modes on per-view outputs (B, n, K): sum, mean, max, min, the geometric mean of probabilities and
    # temperature sharpening (probabilities to the power t, averaged).
    logits = torch.randn(2, 4, 3, generator=gen(5))
    probs = F.softmax(logits, dim=2)
    torch.testing.assert_close(
        merge_predictions(logits, "sum"), logits[:, 0] + logits[:, 1] + logits[:, 2] + logits[:, 3]
    )
    torch.testing.assert_close(merge_predictions(logits, "mean"), logits.sum(1) / 4)
    torch.testing.assert_close(
        merge_predictions(logits, "max"), torch.maximum(logits[:, :2].amax(1), logits[:, 2:].amax(1))
    )
    torch.testing.assert_close(merge_predictions(logits, "min"), -merge_predictions(-logits, "max"))
    geometric = probs.prod(1) ** (1 / 4)
    torch.testing.assert_close(merge_predictions(logits, "gmean"), geometric / geometric.sum(1, keepdim=True))
    torch.testing.assert_close(merge_predictions(logits, "tsharpen", temperature=0.5), probs.sqrt().mean(1))
    # Weighted: a view of weight 0 adds nothing to the sum; weight 2 counts twice.
    weights = torch.tensor([1.0, 0.0, 2.0, 1.0]).view(1, 4, 1).expand(2, 4, 1)
    torch.testing.assert_close(
        merge_predictions(logits, "sum", weights), logits[:, 0] + 2 * logits[:, 2] + logits[:, 3]
    )


def test_old_keyword_n_samples_still_sets_the_views_with_a_deprecation_warning():
    model, aug = build_classifier("small_cnn", 3, 2, width=4, depth=2), RandomAugment(("rotation",))
    with pytest.warns(DeprecationWarning, match="n_copies"):
        tta = TTAWrapper(model, aug, n_samples=3)
    assert tta.n_copies == tta.n_samples == 3
    with pytest.warns(DeprecationWarning, match="n_copies"):
        assert DenseTTAWrapper(model, aug, n_samples=2).n_copies == 2
