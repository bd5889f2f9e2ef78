"""One composable augmenter: every family with every other (crop and flip included), the distribution contract,
mixed reparameterised + REINFORCE gradients, one resampling, compile, save/load (current and release 0.1)."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch._dynamo
from safetensors.torch import load_file

from conftest import example_distributions as _distributions
from conftest import structured_images
from instaaug import (
    Augerino,
    Augmenter,
    AugmentOutput,
    CropCategorical,
    FlipBernoulli,
    InstaAug,
    InstaAugObjective,
    NoAugment,
    Product,
    RandomAugment,
    RandomCrop,
    TransformDistribution,
    UniformRanges,
)
from instaaug.transforms import FAMILIES, TransformStack, crop_resize

FIXTURES = Path(__file__).parent / "fixtures" / "augmenters_v1"
SRC = Path(__file__).parents[1] / "src" / "instaaug"


def tiny(transforms, **options) -> InstaAug:
    options = {"width": 4, "phi_size": 16, "levels": (1,), **options}
    return InstaAug(transforms, **options)


def shaped(aug: Augmenter, std: float = 0.5, seed: int = 1) -> Augmenter:
    """Random values for every parameter of φ (its output layers start at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in aug.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return aug


# ------------------------------------------------------------------------------------------------------------------
# The distribution contract: one conformance test for every implementation


@pytest.mark.parametrize("name", list(_distributions()))
def test_every_distribution_conforms_to_the_contract(name):
    dist = _distributions()[name]
    assert isinstance(dist, TransformDistribution)
    b, d = 3, len(dist.names)
    assert dist.batch_shape == (b,) and dist.event_shape == (d,)
    value = dist.sample((5,), torch.Generator().manual_seed(1))
    assert value.shape == (5, b, d) and not value.requires_grad
    again = dist.sample((5,), torch.Generator().manual_seed(1))
    torch.testing.assert_close(value, again)  # the generator makes it reproducible
    assert dist.log_prob(value).shape == (5, b) and torch.isfinite(dist.log_prob(value)).all()
    assert dist.entropy().shape == (b,)
    drawn = dist.draw((4,), torch.Generator().manual_seed(2))
    assert drawn.value.shape == (4, b, d) and drawn.log_prob.shape == drawn.score_log_prob.shape == (4, b)
    torch.testing.assert_close(drawn.log_prob, dist.log_prob(drawn.value.detach()), atol=1e-5, rtol=1e-5)
    if dist.has_rsample:
        assert dist.rsample((2,)).shape == (2, b, d)
        assert (drawn.score_log_prob == 0).all()
    else:
        with pytest.raises(NotImplementedError):
            dist.rsample()
    # Monte-Carlo entropy: -E[log p] over many samples matches the exact entropy (every family here is exact).
    many = dist.sample((40000,), torch.Generator().manual_seed(3))
    log_p = dist.log_prob(many)
    mc, se = -log_p.mean(0), log_p.std(0) / math.sqrt(many.shape[0])
    assert ((mc - dist.entropy()).abs() <= 5 * se + 1e-4).all(), (mc, dist.entropy(), se)
    sub = dist[torch.tensor([2, 0])]  # type: ignore[index]
    assert sub.batch_shape == (2,) and sub.names == dist.names


# ------------------------------------------------------------------------------------------------------------------
# Mixed gradients: the estimate of a small composite problem against its exact gradient


def test_composite_gradient_estimate_matches_the_exact_gradient():
    # E[L] for L(k, u, f) = c_k + a·u + e·f, with k ~ softmax(θ), u ~ U(low, high), f ~ Bernoulli(σ(β)):
    # ∇θ = p ⊙ (c - p·c), ∂low = ∂high = a/2, ∂β = e·σ'(β). The objective must use pathwise gradients for u and
    # REINFORCE for k and f, each once (a REINFORCE term on u would double its gradient).
    rows, n = 4000, 4
    theta = torch.tensor([0.3, -0.5, 0.8]).expand(rows, 3).clone().requires_grad_(True)
    low = torch.full((rows, 1), -0.4, requires_grad=True)
    high = torch.full((rows, 1), 0.6, requires_grad=True)
    beta = torch.full((rows,), 0.2, requires_grad=True)
    boxes = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    costs, a, e = torch.tensor([1.0, 3.0, 0.5]), 2.0, -1.5
    dist = Product([CropCategorical(theta, boxes), UniformRanges(low, high, ("rotation",)), FlipBernoulli(beta)])
    value, log_prob, score = dist.draw((n,), torch.Generator().manual_seed(0))
    params = value.transpose(0, 1).reshape(rows * n, -1)
    k = (params[:, None, :4] - boxes).abs().sum(-1).argmin(-1)
    losses = costs[k] + a * params[:, 4] + e * params[:, 5]
    out = AugmentOutput(
        torch.zeros(rows * n, 1, 1, 1),
        params,
        log_prob.transpose(0, 1).reshape(-1),
        dist.entropy(),
        n,
        dist.has_rsample,
        dist,
        score.transpose(0, 1).reshape(-1),
    )
    loss = InstaAugObjective(lam=0.0)(losses, out).loss * rows  # per-row estimates, summed
    g_theta, g_low, g_high, g_beta = torch.autograd.grad(loss, (theta, low, high, beta))
    p = torch.softmax(theta[0].detach(), -1)
    exact = {
        "theta": p * (costs - (p * costs).sum()),
        "low": torch.tensor([a / 2]),
        "high": torch.tensor([a / 2]),
        "beta": e * torch.sigmoid(torch.tensor(0.2)) * (1 - torch.sigmoid(torch.tensor(0.2))),
    }
    for name, est in (("theta", g_theta), ("low", g_low), ("high", g_high), ("beta", g_beta[:, None])):
        mean, se = est.mean(0), est.std(0) / math.sqrt(rows)
        assert ((mean - exact[name]).abs() < 5 * se + 1e-6).all(), (name, mean, exact[name], se)


# ------------------------------------------------------------------------------------------------------------------
# Composition: one φ pass, one resampling, targets of every family


def test_composite_augmenter_is_an_instaaug_with_one_distribution_from_one_phi_pass():
    aug = shaped(tiny(("crop", "rotation", "hue", "flip")))
    assert type(aug) is InstaAug
    assert aug.names == ("crop_x", "crop_y", "crop_w", "crop_h", "rotation", "hue", "flip")
    calls = []
    aug.net.backbone.register_forward_hook(lambda *args: calls.append(1))
    x = structured_images(3, 3, 24)
    out = aug(x, n_copies=2)
    assert calls == [1]  # crops, intervals and the flip all come from one backbone pass
    assert isinstance(out.distribution, Product) and not out.reparameterized
    assert out.images.shape == (6, 3, 24, 24) and out.params.shape == (6, 7)
    crop, uniform, flip = out.distribution.parts
    torch.testing.assert_close(out.entropy, crop.entropy() + uniform.entropy() + flip.entropy())
    assert set(out.params[:, 6].tolist()) <= {0.0, 1.0}
    assert aug.entropy_range[0] < aug.entropy_range[1]
    loss = out.images.mean() + (out.score_log_prob * torch.rand(6)).mean() - out.entropy.mean()
    loss.backward()
    assert aug.net.heads[0].weight.grad.abs().sum() > 0  # crop logits (score function)
    assert aug.net.output.weight.grad.abs().sum() > 0  # intervals (pathwise) and flip (score function)


def test_crop_geometry_and_flip_are_one_resampling():
    x = structured_images(2, 3, 16)
    box = torch.tensor([[0.4, 0.6, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    stack = TransformStack(("crop", "rotation", "flip"))
    zero, one = torch.zeros(2, 1), torch.ones(2, 1)
    # Each family alone matches its own op.
    torch.testing.assert_close(stack(x, torch.cat([box, zero, zero], 1)), crop_resize(x, box), atol=1e-6, rtol=0)
    full = box.new_tensor([0.5, 0.5, 1.0, 1.0]).expand(2, 4)
    torch.testing.assert_close(stack(x, torch.cat([full, zero, one], 1)), x.flip(-1), atol=1e-6, rtol=0)
    angle = torch.tensor([[0.7], [-0.4]])
    rotation_only = TransformStack(("rotation",))(x, angle)
    torch.testing.assert_close(stack(x, torch.cat([full, angle, zero], 1)), rotation_only, atol=1e-6, rtol=0)
    # A crop rotated by π: the same pixels as the crop turned upside down (one resampling, no double blur).
    half_turn = torch.full((2, 1), math.pi)
    turned = stack(x, torch.cat([box, half_turn, zero], 1))
    torch.testing.assert_close(turned, crop_resize(x, box).flip(-1, -2), atol=1e-5, rtol=0)


def test_planted_point_lands_where_crop_then_rotation_send_it():
    # A bright 2×2 block at pixels (x, y) = (20–21, 8–9) of a 32×32 image: centre (21, 9) in edge units.
    x = torch.zeros(1, 1, 32, 32)
    x[..., 8:10, 20:22] = 1.0
    box = torch.tensor([[0.625, 0.375, 0.5, 0.5]])  # the 16×16 quarter around pixel (20, 12) … (4–12, 28–…)
    angle = math.pi / 2  # counter-clockwise as displayed: right of the centre goes up
    view = TransformStack(("crop", "rotation"))(x, torch.cat([box, torch.tensor([[angle]])], 1))
    # In the crop (2× zoom, origin at pixel (12, 4)), the block's centre is at ((21 - 12)·2, (9 - 4)·2) = (18, 10);
    # relative to the view centre (16, 16): (+2, -6); a quarter turn counter-clockwise sends (dx, dy) to (dy, -dx)
    # = (-6, -2): the view pixel (10, 14).
    ys, xs = torch.nonzero(view[0, 0] > 0.5, as_tuple=True)
    assert abs(xs.float().mean().item() + 0.5 - 10) <= 0.5 and abs(ys.float().mean().item() + 0.5 - 14) <= 0.5


def test_every_random_baseline_composes():
    aug = RandomAugment(("crop", "flip", "rotation", "hue"), {"crop": (0.6, 0.9), "flip": 0.5, "rotation": 0.3})
    assert aug.names == ("crop_x", "crop_y", "crop_w", "crop_h", "rotation", "hue", "flip")
    out = aug(structured_images(4, 3, 16), n_copies=3)
    assert out.images.shape == (12, 3, 16, 16) and isinstance(out.distribution, Product)
    assert ((out.params[:, 2] >= 0.6) & (out.params[:, 2] <= 0.9)).all() and (out.params[:, 4].abs() <= 0.3).all()
    with pytest.raises(ValueError, match="Augerino learns interval families only"):
        Augerino(("crop", "rotation"))
    with pytest.raises(ValueError, match="crop scales"):
        RandomAugment(("crop",), {"crop": (0.9, 0.5)})


# ------------------------------------------------------------------------------------------------------------------
# Save / load: one registry, current and release-0.1 formats


@pytest.mark.parametrize(
    "make",
    [
        lambda: shaped(tiny(("crop", "rotation", "hue", "flip"))),
        lambda: shaped(Augerino(("rotation", "value"), width=4, depth=2)),
        lambda: RandomAugment(("crop", "flip", "rotation"), {"crop": (0.5, 0.8), "flip": 0.3}),
        lambda: RandomCrop(0.7, output_size=8, in_channels=1),
        lambda: NoAugment(in_channels=1),
    ],
    ids=["instaaug-composite", "augerino", "random-augment", "random-crop", "none"],
)
def test_every_augmenter_saves_and_loads_as_its_own_class(make, tmp_path):
    aug = make().eval()
    aug.save(tmp_path)
    loaded = Augmenter.load(tmp_path).eval()
    assert type(loaded) is type(aug) and loaded.config == aug.config
    x = structured_images(2, aug.in_channels, 16)
    a = aug(x, generator=torch.Generator().manual_seed(0))
    b = loaded(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.images, b.images)
    torch.testing.assert_close(a.entropy, b.entropy)


def test_augmenters_saved_by_release_0_1_still_load():
    expected = load_file(FIXTURES / "expected.safetensors")
    x = expected["x"]
    uniform = InstaAug.load(FIXTURES / "instaaug_uniform").eval()
    dist = uniform.distribution(x)
    torch.testing.assert_close(dist.low, expected["uniform_low"])
    torch.testing.assert_close(dist.high, expected["uniform_high"])
    augerino = InstaAug.load(FIXTURES / "augerino").eval()
    torch.testing.assert_close(augerino.distribution(x).high, expected["augerino_high"])
    crop = InstaAug.load(FIXTURES / "instaaug_crop").eval()
    assert type(crop) is InstaAug
    dist = crop.distribution(x)
    torch.testing.assert_close(dist.logits, expected["crop_logits"])
    torch.testing.assert_close(dist.boxes, expected["crop_boxes"])
    # The whole-image candidate (last) is now jittered within the coarsest level's cell, not the whole image.
    torch.testing.assert_close(dist.jitter[:-1], expected["crop_jitter"][:-1])
    coarsest = dist.jitter[:-1, :2].amax(0)
    torch.testing.assert_close(dist.jitter[-1, :2], coarsest)
    assert (expected["crop_jitter"][-1, :2] > coarsest).all()
    n = dist.num_candidates
    shift = crop.jitter_entropy  # release 0.1's default band, [0.5, 0.6]·log N + the jitter's entropy at the start
    assert shift == InstaAug(**dataclasses.asdict(crop.config)).jitter_entropy
    assert crop.entropy_range == pytest.approx((0.5 * math.log(n) + shift, 0.6 * math.log(n) + shift))


def test_composite_trains_saves_loads_and_compiles(tmp_path):
    torch.manual_seed(0)
    aug = InstaAug(("crop", "rotation", "hue"), width=4)  # the library defaults (φ at 48×48)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, 2), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(3)
    )
    x, y = structured_images(8, 3, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    model(x)
    objective = aug.objective()
    opt = torch.optim.Adam([*model.parameters(), *aug.parameters()], 1e-2)
    before = aug.net.heads[0].weight.detach().clone()
    for _ in range(3):
        out = aug(x)
        losses = torch.nn.functional.cross_entropy(model(out.images), out.repeat(y), reduction="none")
        opt.zero_grad()
        objective(losses, out).loss.backward()
        opt.step()
    assert not torch.equal(before, aug.net.heads[0].weight)  # φ's crop head learned
    aug.save(tmp_path)
    loaded = InstaAug.load(tmp_path)
    torch.testing.assert_close(loaded.distribution(x).parts[0].logits, aug.distribution(x).parts[0].logits)
    torch._dynamo.reset()
    compiled = torch.compile(loaded, backend="aot_eager", fullgraph=True)
    torch.manual_seed(1)
    got = compiled(x)
    torch.manual_seed(1)
    want = loaded(x)
    torch.testing.assert_close(got.images, want.images)


def test_presets_are_instaaugs_with_the_recipe():
    crop = InstaAug.preset("crop")
    assert crop.net.phi_size == (48, 48) and crop.config.levels == (2,) and crop.config.box_scale == 1.4
    controller = crop.controller()
    assert float(controller.lam) == 0.25 and controller.rate == 1.005 and controller.lam_min == 0.1
    lo, hi = crop.entropy_range
    assert (lo, hi) == pytest.approx((0.6 + crop.jitter_entropy, 1.0 + crop.jitter_entropy))
    both = InstaAug.preset("crop-colour-flip", width=8)
    assert "flip" in both.families and both.config.width == 8
    with pytest.raises(ValueError, match="unknown preset"):
        InstaAug.preset("nope")


# ------------------------------------------------------------------------------------------------------------------
# Structure: no import cycle, no import inside a function to dodge one


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = [target] + [f"{target}.{alias.name}" for alias in node.names]
    return [n for n in names if n.startswith("instaaug")]


def test_no_import_cycle_and_no_import_inside_functions():
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        deps: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                deps |= {d for d in _resolve(name, path.name == "__init__.py", node) if d in modules}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
        graph[name] = deps - {name}
        # Lazy imports are allowed only in the CLI (start-up time), never to dodge a cycle.
        if name != "instaaug.cli":
            for fn in ast.walk(tree):
                if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                    for node in ast.walk(fn):
                        if isinstance(node, ast.ImportFrom) and (
                            node.level or (node.module or "").startswith("instaaug")
                        ):
                            pytest.fail(f"{name}: import of {node.module} inside {fn.name}()")
    # A package's __init__ re-exports its submodules: edges into a package stand for its __init__ alone.
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            if state.get(dep) == 1 and not (node.startswith(dep + ".") or dep.startswith(node + ".")):
                pytest.fail(f"import cycle: {' → '.join([*stack[stack.index(dep) :], dep])}")
            if dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: InstaAug(("crop", "crop")), ValueError, "must not repeat"),
        (lambda: InstaAug(("crop", "blur")), ValueError, "unknown transform 'blur'"),
        (lambda: InstaAug(("rotation",), width=10**9), ValueError, "width must be at most"),
        (lambda: InstaAug(("crop",), phi_size=(48, 48, 3)), ValueError, "phi_size"),
        (lambda: InstaAug(("flip",), flip_init=1.5), ValueError, "flip_init"),
        (lambda: InstaAug(("crop",), global_crop="yes"), TypeError, "global_crop"),
        (lambda: InstaAug(("crop",), levels=(7,)), ValueError, "crop levels"),
        (lambda: RandomAugment(("flip",), {"flip": 1.5}), ValueError, "flip probability"),
        (lambda: RandomAugment(("rotation",), {"crop": 0.5}), ValueError, "not in"),
        (lambda: FlipBernoulli(torch.zeros(2, 1)), ValueError, "logits must be"),
        (lambda: Product([FlipBernoulli(torch.zeros(2)), FlipBernoulli(torch.zeros(3))]), ValueError, "batch shape"),
    ],
)
def test_bad_options_are_refused_with_a_clear_error(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_loading_refuses_nan_weights_and_unknown_classes(tmp_path):
    aug = tiny(("rotation",))
    with torch.no_grad():
        aug.net.output.bias.fill_(float("nan"))
    aug.save(tmp_path / "nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        Augmenter.load(tmp_path / "nan")
    tiny(("rotation",)).save(tmp_path / "other")
    config = tmp_path / "other" / "config.json"
    config.write_text(config.read_text().replace('"class": "InstaAug"', '"class": "os.system"'))
    with pytest.raises(ValueError, match="unknown augmenter class"):
        Augmenter.load(tmp_path / "other")


def test_entropy_widths_set_each_familys_share_of_the_band(tmp_path):
    aug = InstaAug(("rotation", "value"), entropy_widths=(("rotation", 0.5, 1.0),))
    value = FAMILIES["value"].entropy_widths
    assert aug.entropy_range == pytest.approx((math.log(0.5) + math.log(value[0]), math.log(1.0) + math.log(value[1])))
    aug.save(tmp_path)
    assert InstaAug.load(tmp_path).entropy_range == pytest.approx(aug.entropy_range)
    assert InstaAug(("rotation",), entropy_widths={"rotation": (0.2, 0.4)}).entropy_range == pytest.approx(
        (math.log(0.2), math.log(0.4))
    )
    for bad, match in (
        ((("hue", 0.1, 0.2),), "not an interval family"),
        ((("rotation", 0.4, 0.2),), "entropy_widths"),
        ((("rotation", 0.0, 0.2),), "entropy_widths"),
        (("rotation",), "triples"),
    ):
        with pytest.raises(ValueError, match=match):
            InstaAug(("rotation",), entropy_widths=bad)
