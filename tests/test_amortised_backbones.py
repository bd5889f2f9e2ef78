"""Conditioned backbones: their checks of i and of the inputs, features that depend on i, the mixture convolution,
parameter counts, save/load, the deprecated builder name and the README's amortised example."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import structured_images, tiny_resnet, tiny_vit
from instaaug.amortised import (
    ConditionedNorm,
    ConditionedResNet,
    ConditionedViT,
    MixtureConv2d,
    build_backbone,
    build_conditioned_backbone,
    image_space,
    load_backbone,
)
from instaaug.validation import trusted_inputs


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


def film_resnet() -> ConditionedResNet:
    """A tiny ResNet with FiLM normalisations whose scales and shifts are non-zero (they start at zero)."""
    net = tiny_resnet(film=True)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, ConditionedNorm):
                m.film.weight.normal_(0, 0.5)
                m.film.bias.normal_(0, 0.1)
    return net


@pytest.mark.parametrize("make", [tiny_resnet, tiny_vit, film_resnet])
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


def test_film_norm_is_the_plain_norm_scaled_and_shifted_by_linear_functions_of_i():
    norm = ConditionedNorm("layer", 4, invariance_dim=2)
    h = torch.randn(3, 4, 5, 5)
    i = torch.tensor([0.2, 0.9])
    assert torch.equal(norm(h, i), norm.norm(h))  # zero-initialised: the plain normalisation
    with torch.no_grad():
        norm.film.weight.normal_()
        norm.film.bias.normal_()
    w, b = norm.film.weight, norm.film.bias
    gamma, beta = (w[:4] @ i + b[:4]).view(1, 4, 1, 1), (w[4:] @ i + b[4:]).view(1, 4, 1, 1)
    assert torch.allclose(norm(h, i), F.group_norm(h, 1) * (1 + gamma) + beta, atol=1e-5)
    rows = torch.stack([i, torch.tensor([1.0, 0.0]), i])
    per_sample = norm(h, rows)
    assert torch.allclose(per_sample[0], norm(h, i)[0], atol=1e-6) and torch.allclose(per_sample[2], norm(h, i)[2])
    assert not torch.allclose(per_sample[1], norm(h, i)[1])


def test_film_resnet_starts_as_the_plain_resnet_and_learns_its_film_layers():
    torch.manual_seed(0)
    plain = tiny_resnet()
    film = tiny_resnet(film=True)
    norms = {name for name, m in film.named_modules() if isinstance(m, ConditionedNorm)}
    state = {}
    for key, value in plain.state_dict().items():  # a plain norm's "X.weight" is the FiLM layer's "X.norm.weight"
        owner, leaf = key.rsplit(".", 1)
        state[f"{owner}.norm.{leaf}" if owner in norms else key] = value
    missing, unexpected = film.load_state_dict(state, strict=False)
    assert not unexpected and missing and all(".film." in k for k in missing)
    x = structured_images(4, 3, 8)
    assert torch.allclose(film(x, [0.3, 0.7]), plain(x, [0.3, 0.7]), atol=1e-6)
    film(x, [0.3, 0.7]).pow(2).sum().backward()
    grads = [m.film.weight.grad for m in film.modules() if isinstance(m, ConditionedNorm)]
    # the stem's norm, two in the first block, three in the second (its shortcut's): channels 4, 4, 4, 8, 8, 8
    assert len(grads) == 6 and all(g is not None and g.abs().sum() > 0 for g in grads)
    # each FiLM layer is Linear(M = 2 → 2C): 6C parameters, all counted as conditioning
    extra = film.parameter_counts()["conditioning"] - plain.parameter_counts()["conditioning"]
    assert extra == 6 * (4 + 4 + 4 + 8 + 8 + 8)
    with pytest.raises(TypeError, match="film must be a bool"):
        tiny_resnet(film="yes")


def test_parameter_counts_are_reported():
    counts = ConditionedResNet(widths=(8, 16), blocks=(1, 1), num_kernels=4, hidden=8).parameter_counts()
    assert counts["total"] > counts["conditioning"] > 0
    # Every conv carries K = 4 basis kernels of its generated kernel's size, plus its MLP.
    assert counts["conditioning"] > 4 * counts["generated_kernel"]
    assert tiny_vit(prompt_tokens=3).parameter_counts()["conditioning"] > tiny_vit().parameter_counts()["conditioning"]


@pytest.mark.parametrize("make", [tiny_resnet, tiny_vit, film_resnet])
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


def test_no_value_checks_inside_trusted_inputs():
    net = tiny_resnet()
    with trusted_inputs():  # the loops use this: no host round trips for values
        assert net(torch.rand(2, 3, 8, 8), torch.tensor([2.0, 0.0])).shape == (2, 8)


def test_old_build_backbone_name_still_works_with_a_deprecation_warning():
    options = {"widths": (4, 8), "blocks": (1, 1), "num_kernels": 3, "hidden": 4}
    with pytest.warns(DeprecationWarning, match="build_conditioned_backbone"):
        old = build_backbone("resnet", **options)
    new = build_conditioned_backbone("resnet", **options)
    assert type(old) is type(new) is ConditionedResNet
    assert old.state_dict().keys() == new.state_dict().keys()


def test_a_backbone_saved_before_the_film_option_loads_unchanged(tmp_path):
    net = tiny_resnet()
    net.save(tmp_path / "net")
    meta = json.loads((tmp_path / "net" / "config.json").read_text())
    del meta["config"]["film"]  # what an older release wrote
    (tmp_path / "net" / "config.json").write_text(json.dumps(meta))
    loaded = load_backbone(tmp_path / "net")
    x = structured_images(2, 3, 8)
    assert loaded.config.film is False and torch.equal(loaded(x, [0.2, 0.8]), net.eval()(x, [0.2, 0.8]))
